"""Every architecture end to end on random tiny configs: prune a few steps -> export -> load -> compile ->
logits equal to the masked dense model; predict, serve's predictor and verify on each artifact."""
import json

import pytest
import torch

from sparsekit.architectures import COMPACTION_RULES, MODERNBERT, architecture_for
from sparsekit.backends.runner import PackedLinear
from sparsekit.compiler import compile
from sparsekit.data.inputs import build_inputs
from sparsekit.export.artifact import ArtifactError, FormatLinear, export, load, verify
from sparsekit.export.predict import Predictor
from sparsekit.models import load_classifier, prunable_matrices
from sparsekit.prune.config import PruneConfig
from sparsekit.prune.output import load_pruned
from sparsekit.prune.train import prune

ARCHS = ("distilbert-tiny", "deberta-v2-tiny", "modernbert-tiny")
TEXTS = ["a charming and often affecting journey.", "the story goes nowhere, boring and bad",
         ("a good film", "it is good")]


def _prune(name: str, out, method: str = "smp-s") -> None:
    prune(PruneConfig(model=f"random:{name}", method=method, keep=0.1, steps=3, train_samples=32, eval_samples=16,
                      batch_size=8, max_length=24, progress=False, output_dir=str(out)))


@pytest.fixture(scope="module", params=ARCHS)
def pruned_and_exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    _prune(request.param, root / "run")
    result = export(root / "run", root / "artifact")
    return request.param, root / "run", root / "artifact", result


def test_prune_export_load_compile_equals_masked_dense(pruned_and_exported):
    name, run, artifact, result = pruned_and_exported
    pruned = load_pruned(run)
    assert 0.05 < sum(int(m.sum()) for m in pruned.masks.values()) / sum(m.numel() for m in pruned.masks.values()) < 0.2
    model = load(artifact)
    assert type(model).__name__ == type(pruned.model).__name__  # the Hugging Face class, structure kept
    assert all(isinstance(model.get_submodule(m.name), FormatLinear) for m in prunable_matrices(pruned.model))
    inputs = build_inputs(pruned.tokenizer, TEXTS[:2], 32)
    with torch.no_grad():
        expected = pruned.model(**inputs).logits
        assert torch.allclose(model(**inputs).logits, expected, atol=1e-4)
        report = compile(model, tokens=32, warmup=1, repeats=2, verbose=False, force="csr-cpu")
        assert {c.backend for c in report.layers} == {"csr-cpu"}  # the kernels run every architecture's matrices
        layers = model.config.num_hidden_layers if name != "distilbert-tiny" else model.config.n_layers
        # every family: the fused runtime, four fused matrices per layer (Q, K and V stacked)
        assert report.runtime == "fused" and len(report.layers) == 4 * layers
        modules = compile(model, tokens=32, warmup=1, repeats=2, verbose=False, force="csr-cpu", fused=False)
        assert modules.runtime == "modules" and len(modules.layers) == len(prunable_matrices(pruned.model))
        assert all(isinstance(model.get_submodule(c.name), PackedLinear) for c in modules.layers)
        assert torch.allclose(model(**inputs).logits, expected, atol=1e-4)
    assert verify(artifact)["ok"]


def test_bench_rebuilds_the_masked_dense_model(pruned_and_exported):
    from sparsekit.bench.reconstruct import dense_from_artifact

    _, run, artifact, _ = pruned_and_exported
    pruned = load_pruned(run)
    dense = dense_from_artifact(load(artifact))
    assert all(isinstance(dense.get_submodule(m.name), torch.nn.Linear) for m in prunable_matrices(pruned.model))
    inputs = build_inputs(pruned.tokenizer, TEXTS[:2], 32)
    with torch.no_grad():
        assert torch.allclose(dense(**inputs).logits, pruned.model(**inputs).logits, atol=1e-5)


def test_manifest_and_report_say_what_was_kept_and_why(pruned_and_exported):
    name, _, artifact, result = pruned_and_exported
    manifest = json.loads((artifact / "manifest.json").read_text())
    arch = architecture_for(load_pruned(pruned_and_exported[1]).model.config)
    assert manifest["layout"] == "modules" and manifest["architecture"] == arch.name
    assert set(manifest["skipped_rules"]) == set(COMPACTION_RULES) - set(arch.compaction)
    assert all(why for why in manifest["skipped_rules"].values())
    assert {m["format"]["kind"] for m in manifest["modules"]} <= {"csr", "dense"}
    report = json.loads((artifact / "report.json").read_text())
    assert report["skipped_rules"] == manifest["skipped_rules"]
    assert any("skipped" in note for note in result.report.notes)
    assert all(m["before"] == m["after"] for m in report["compaction"]["matrices"])


def test_predict_on_each_artifact(pruned_and_exported):
    _, _, artifact, _ = pruned_and_exported
    predictor = Predictor.from_artifact(artifact)
    predictions = predictor.predict(TEXTS[:2]) + predictor.predict(TEXTS[2:])
    assert len(predictions) == 3 and all(p.label in ("negative", "positive") for p in predictions)
    assert all(abs(sum(p.scores) - 1) < 1e-5 for p in predictions)


def _drop_first_module(m):
    m["modules"] = m["modules"][1:]


def _list_first_module_twice(m):
    m["modules"].append(m["modules"][0])


def _mislabel_first_module(m):
    m["modules"][0]["matrix"] = "ffn_out"  # the first module is the Q of layer 0 (or the fused QKV)


def _unknown_layout(m):
    m["layout"] = "graph"


def _no_skipped_reasons(m):
    m["skipped_rules"] = {}


def _wrong_shape(m):
    m["modules"][0]["format"]["shape"] = [1, 1]


def _remote_code(m):
    m["config"]["auto_map"] = {"AutoModel": "x.Y"}


@pytest.mark.parametrize("edit, message", [
    (_drop_first_module, "lists the modules"), (_list_first_module_twice, "listed twice"),
    (_mislabel_first_module, "is not the"), (_unknown_layout, "layout must be"),
    (_no_skipped_reasons, "skipped_rules"), (_wrong_shape, "shape"), (_remote_code, "never code"),
])
def test_modules_manifest_schema_refuses_forgeries(pruned_and_exported, tmp_path, edit, message):
    import shutil

    from artifact_forge import rewrite_manifest

    _, _, artifact, _ = pruned_and_exported
    copy = tmp_path / "a"
    shutil.copytree(artifact, copy)
    rewrite_manifest(copy, edit)
    with pytest.raises(ArtifactError, match=message):
        load(copy)


def test_modules_weights_are_checked_before_use(pruned_and_exported, tmp_path):
    import shutil

    from artifact_forge import rewrite_tensors

    _, _, artifact, _ = pruned_and_exported
    copy = tmp_path / "a"
    shutil.copytree(artifact, copy)
    name = next(k for k in json.loads((artifact / "manifest.json").read_text())["modules"])["name"]

    def edit(tensors):
        key = next(k for k in tensors if "embeddings" in k and k.endswith("weight"))
        tensors[key] = tensors[key][:1].contiguous()
        tensors.pop(next(k for k in tensors if k.startswith(name + ".")))
    rewrite_tensors(copy, edit)
    with pytest.raises(ArtifactError, match="the config requires F32"):
        load(copy)


def test_structure_aware_smp_on_fused_modules(tmp_path):
    """smp-struct splits ModernBERT's fused Wqkv / GLU Wi into their logical matrices by row slices."""
    _prune("modernbert-tiny", tmp_path / "run", method="smp-struct")
    pruned = load_pruned(tmp_path / "run")
    assert any(MODERNBERT.match(name) == (0, "ffn_in+ffn_gate") for name in pruned.masks)
    assert 0.05 < json.loads((tmp_path / "run" / "metrics.json").read_text())["density"] < 0.2


@pytest.mark.parametrize("name", ["random:distilbert-tiny", "random:modernbert-tiny"])
def test_every_masking_finds_the_matrices(name):
    from sparsekit.prune.pruner import MASKINGS, Pruner

    for masking in MASKINGS:
        model = load_classifier(name, 2)
        pruner = Pruner(model, masking, score_init=2.0 if masking == "l0" else 0.0)
        pruner.update(0.5, threshold=0.5)
        model(**build_inputs_for(model))
        assert len(pruner.finalize()) == len(prunable_matrices(model))


def build_inputs_for(model):
    from sparsekit.models import load_tokenizer

    return build_inputs(load_tokenizer("random:tiny"), TEXTS[:2], 16)


def test_serve_and_info_on_each_artifact(pruned_and_exported):
    from fastapi.testclient import TestClient

    from sparsekit.serve import create_app

    _, _, artifact, _ = pruned_and_exported
    predictor = Predictor.from_artifact(artifact)
    with TestClient(create_app(predictor, name="arch")) as client:
        response = client.post("/predict", json={"texts": TEXTS[:2]})
        assert response.status_code == 200, response.text
        assert [p["label"] for p in response.json()["predictions"]] == [p.label for p in predictor.predict(TEXTS[:2])]


def test_cap_and_distillation_without_a_pooler(tmp_path):
    """CAP's contrastive modules and the teacher run on a family with no pooler (its [CLS] state is used)."""
    prune(PruneConfig(model="random:modernbert-tiny", method="smp-s", keep=0.3, steps=2, train_samples=32,
                      eval_samples=16, batch_size=8, max_length=24, progress=False, output_dir=str(tmp_path / "run"),
                      cap="prc,snc,fic", teacher="random:modernbert-tiny"))
    recipe = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert recipe["model"]["source"] == "random:modernbert-tiny" and "cap" in recipe["extensions"]
