"""Token-classification and QA heads through export -> load -> compile -> verify (compact BERT and DistilBERT)."""
import json

import pytest
import torch

from artifact_forge import resign
from task_models import make_task_checkpoint
from sparsekit import kernels as cpu_kernels
from sparsekit.compiler import compile as sk_compile
from sparsekit.export.artifact import ArtifactError, export, load, verify
from sparsekit.export.compact import compact
from sparsekit.export.heads import QA, SEQUENCE, TOKEN, auto_class, head_output, task_type_of_config
from sparsekit.models import load_tokenizer

PAIRS = (["where is the film", "who is it"], ["the film is great , the story is good", "it is a movie"])
CASES = [("bert", TOKEN), ("bert", QA), ("distilbert", TOKEN), ("distilbert", QA)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-heads")
    return {(m, t): make_task_checkpoint(root / f"{m}-{t}", t, m) for m, t in CASES}


def _outputs(model, tokenizer, task_type):
    batch = tokenizer(*PAIRS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return head_output(model(**batch), task_type)


@pytest.mark.parametrize("model_type,task_type", CASES)
def test_export_load_compile_equal(checkpoints, tmp_path, model_type, task_type):
    path = checkpoints[(model_type, task_type)]
    model = auto_class(task_type).from_pretrained(str(path)).eval()
    tokenizer = load_tokenizer(path)
    result = export(path, tmp_path / "art", formats="csr")
    loaded = load(tmp_path / "art")
    manifest = loaded.manifest
    assert manifest["task_type"] == task_type == task_type_of_config(model.config)
    assert manifest["labels"] == ([] if task_type == QA else list(model.config.id2label.values()))
    assert manifest["metric"] is None
    ref = _outputs(model, tokenizer, task_type)
    assert ref.shape[:2] == (2, tokenizer(*PAIRS, padding=True, return_tensors="pt")["input_ids"].shape[1])
    torch.testing.assert_close(_outputs(loaded, loaded.tokenizer, task_type), ref, rtol=0, atol=1e-5)
    if model_type == "bert":  # exact compaction removed rows and the emptied head of layer 0
        assert type(loaded).__name__ == "CompactModel" and loaded.head_uses_pooler is False
        assert result.report.layers[0]["heads_removed"] == [0]
        assert "layout" not in manifest
    else:
        assert manifest["layout"] == "modules"
    backend = "csr-cpu" if cpu_kernels.available() else "torch-sparse"  # a build without the C++ kernels
    report = sk_compile(loaded, tokens=16, repeats=1, warmup=0, verbose=False, force=backend)
    head = "qa_outputs" if task_type == QA else "classifier"
    assert report.layers and not any(head in c.name for c in report.layers)  # the head stays as it is
    assert {c.backend for c in report.layers} == {backend}
    # The fused runtime (compacted BERT) never computes padding positions: compare the real tokens.
    real = tokenizer(*PAIRS, padding=True, return_tensors="pt")["attention_mask"].bool()
    torch.testing.assert_close(_outputs(loaded, loaded.tokenizer, task_type)[real], ref[real], rtol=0, atol=1e-4)
    check = verify(tmp_path / "art")
    assert check["ok"] and check["task_type"] == task_type and check["samples"] >= 3


@pytest.mark.parametrize("task_type", [TOKEN, QA])
def test_compaction_is_exact_for_the_heads(checkpoints, task_type):
    model = auto_class(task_type).from_pretrained(str(checkpoints[("bert", task_type)])).eval()
    compacted, report = compact(model)
    assert compacted.task_type == task_type and report.params()[1] < report.params()[0]
    tokenizer = load_tokenizer(checkpoints[("bert", task_type)])
    torch.testing.assert_close(_outputs(compacted, tokenizer, task_type), _outputs(model, tokenizer, task_type),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_type,task_type", [("bert", TOKEN), ("distilbert", QA)])
def test_verify_detects_a_tampered_sample(checkpoints, tmp_path, model_type, task_type):
    art = tmp_path / "art"
    export(checkpoints[(model_type, task_type)], art)
    samples = json.loads((art / "samples.json").read_text())
    samples["logits"][1][2][0] += 0.5  # one token's output of the second sample
    (art / "samples.json").write_text(json.dumps(samples))
    resign(art)
    check = verify(art)
    assert not check["ok"] and check["max_abs_error"] == pytest.approx(0.5, abs=1e-3)
    samples["logits"][1] = samples["logits"][1][:-1]  # a token fewer: the shape no longer matches
    (art / "samples.json").write_text(json.dumps(samples))
    resign(art)
    with pytest.raises(ArtifactError, match="sample 1"):
        verify(art)


def test_manifest_task_fields_are_checked(checkpoints, tmp_path):
    from artifact_forge import rewrite_manifest

    art = tmp_path / "art"
    export(checkpoints[("bert", TOKEN)], art)
    for edit, message in ((lambda m: m.update(task_type="ner"), "task_type must be one of"),
                          (lambda m: m.update(labels=["O"]), "labels must list"),
                          (lambda m: m.pop("metric"), "task_type, labels and metric together"),
                          (lambda m: m.update(head_uses_pooler=True), "head_uses_pooler must be False")):
        rewrite_manifest(art, edit)
        with pytest.raises(ArtifactError, match=message):
            load(art)
        export(checkpoints[("bert", TOKEN)], art, overwrite=True)


def test_an_artifact_without_task_type_loads_as_a_sequence_classifier(tiny_model_dir, tmp_path):
    """Artifacts from before task types: no task_type / labels / metric, the sequence-classification samples."""
    from artifact_forge import rewrite_manifest
    from conftest import random_sparse_classifier

    art = tmp_path / "art"
    model = random_sparse_classifier(tiny_model_dir, 0.3)
    export((model, load_tokenizer(tiny_model_dir)), art)
    assert json.loads((art / "manifest.json").read_text())["task_type"] == SEQUENCE
    rewrite_manifest(art, lambda m: [m.pop(k) for k in ("task_type", "labels", "metric")])
    loaded = load(art)
    assert "task_type" not in loaded.manifest and loaded.task_type == SEQUENCE
    assert verify(art)["ok"]


def test_info_lists_the_task_heads():
    from sparsekit.info import task_types_info

    assert task_types_info() == {SEQUENCE: "AutoModelForSequenceClassification",
                                 TOKEN: "AutoModelForTokenClassification", QA: "AutoModelForQuestionAnswering"}


def test_lossy_evaluation_is_for_sequence_classifiers(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="sparsekit evaluate"):
        export(checkpoints[("bert", QA)], tmp_path / "art", min_row_weights=2, task="sst2")
    assert not (tmp_path / "art").exists()


def test_pad_layout_follows_the_model_device(checkpoints, tmp_path):
    """A loaded artifact moved to another device (a GPU; here "meta", which needs none) pads on that device:
    a FormatLinear's format stays where it was loaded, so its densified weight must follow the model."""
    export(checkpoints[("bert", TOKEN)], tmp_path / "art", formats="csr")
    model = load(tmp_path / "art").to("meta")
    model.pad_layout()
    placed = [t.device.type for layer in model.layers for t in (*layer.parameters(), *layer.buffers())]
    assert placed and set(placed) == {"meta"}
