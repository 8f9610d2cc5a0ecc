"""Artifacts: export -> load -> identical outputs, verify, and every bad-artifact case refused clearly."""
import json

import pytest
import torch

from artifact_forge import resign, rewrite_manifest, rewrite_tensors
from conftest import random_sparse_classifier
from sparsekit.export.artifact import ArtifactError, export, load, verify
from sparsekit.models import load_tokenizer

TEXTS = ["the film is great", "a boring story", "not good , not bad"]


@pytest.fixture(scope="module")
def pruned_tiny(tiny_model_dir):
    return random_sparse_classifier(tiny_model_dir, 0.15), load_tokenizer(tiny_model_dir)


def _logits(model, tokenizer):
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("formats", ["auto", "dense", "csr", "bsr"])
def test_export_load_identical_outputs(pruned_tiny, tmp_path, formats):
    model, tokenizer = pruned_tiny
    result = export((model, tokenizer), tmp_path / "art", formats=formats, block=(4, 8))
    loaded = load(tmp_path / "art")
    torch.testing.assert_close(_logits(loaded, loaded.tokenizer), _logits(model, tokenizer), rtol=0, atol=1e-5)
    assert verify(tmp_path / "art")["ok"]
    assert result.bytes_exported > 0 and set(result.formats.values()) <= {"dense", "csr", "bsr"}
    if formats != "auto":
        assert set(result.formats.values()) == {formats}
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert len(manifest["layers"]) == 2 and manifest["version"] == 1
    assert (tmp_path / "art" / "tokenizer_config.json").is_file()


def test_lowrank_export_is_lossy_but_loads(pruned_tiny, tmp_path):
    model, tokenizer = pruned_tiny
    export((model, tokenizer), tmp_path / "art", formats="lowrank", rank=4)
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["layers"][0]["matrices"]["ffn_in"]["kind"] == "lowrank"
    assert verify(tmp_path / "art")["ok"]  # samples were recorded with the low-rank model itself


def test_never_overwrites_without_asking(pruned_tiny, tmp_path):
    model, tokenizer = pruned_tiny
    export((model, tokenizer), tmp_path / "art")
    before = (tmp_path / "art" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        export((model, tokenizer), tmp_path / "art", formats="dense")
    assert (tmp_path / "art" / "model.safetensors").read_bytes() == before
    export((model, tokenizer), tmp_path / "art", formats="dense", overwrite=True)
    assert json.loads((tmp_path / "art" / "manifest.json").read_text())["export"]["formats"] == "dense"


@pytest.fixture
def artifact(pruned_tiny, tmp_path):
    export(pruned_tiny, tmp_path / "art", formats="csr")
    return tmp_path / "art"


def test_bad_checksum(artifact):
    data = bytearray((artifact / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (artifact / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load(artifact)


def test_truncated_weights(artifact):
    data = (artifact / "model.safetensors").read_bytes()
    (artifact / "model.safetensors").write_bytes(data[: len(data) // 2])
    resign(artifact, ["model.safetensors"])
    with pytest.raises(ArtifactError, match="corrupt"):
        load(artifact)


def test_out_of_range_column_index(artifact):
    def edit(t):
        t["layers.0.query.col_idx"][0] = 10_000
    rewrite_tensors(artifact, edit)
    with pytest.raises(ValueError, match="range|column"):
        load(artifact)


def test_shapes_disagree_with_manifest(artifact):
    rewrite_manifest(artifact, lambda m: m["layers"][1].__setitem__("ffn", m["layers"][1]["ffn"] - 1))
    with pytest.raises(ArtifactError, match="shape"):
        load(artifact)


def test_unknown_versions(artifact):
    rewrite_manifest(artifact, lambda m: m.__setitem__("version", 99))
    with pytest.raises(ArtifactError, match="version 99"):
        load(artifact)


def test_unknown_matrix_format_version(artifact):
    rewrite_manifest(artifact, lambda m: m["layers"][0]["matrices"]["key"].__setitem__("format_version", 7))
    with pytest.raises(ValueError, match="version"):
        load(artifact)


def test_extra_tensor_is_refused(artifact):
    rewrite_tensors(artifact, lambda t: t.__setitem__("intruder", torch.zeros(3)))
    with pytest.raises(ArtifactError, match="unexpected"):
        load(artifact)


def test_missing_files_and_not_an_artifact(artifact, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load(tmp_path / "nope")
    (artifact / "samples.json").unlink()
    with pytest.raises(ArtifactError, match="samples.json"):
        load(artifact)
    (tmp_path / "other").mkdir()
    for name in ("manifest.json", "model.safetensors", "samples.json"):
        (tmp_path / "other" / name).write_text("{}")
    with pytest.raises(ArtifactError, match="not a sparsekit artifact"):
        load(tmp_path / "other")


def test_roberta_family_exports_and_reloads(tmp_path):
    """Heads that read the sequence output (RoBERTa) instead of the pooler compact and reload too."""
    from conftest import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path / "roberta", "roberta")
    model = random_sparse_classifier(model_dir, 0.1, seed=1)
    tokenizer = load_tokenizer(model_dir)
    export((model, tokenizer), tmp_path / "art")
    loaded = load(tmp_path / "art")
    assert loaded.pooler is None and loaded.manifest["config"]["model_type"] == "roberta"
    torch.testing.assert_close(_logits(loaded, loaded.tokenizer), _logits(model, tokenizer), rtol=0, atol=1e-5)


def test_integrity_covers_manifest_and_every_file(artifact):
    """Unsigned edits of the manifest, a missing checksums block and a changed tokenizer are all refused."""
    rewrite_manifest(artifact, lambda m: m["config"].__setitem__("hidden_act", "relu"), sign=False)
    with pytest.raises(ArtifactError, match="own checksum"):
        load(artifact)
    rewrite_manifest(artifact, lambda m: (m["config"].__setitem__("hidden_act", "gelu"), m.pop("checksums")))
    with pytest.raises(ArtifactError, match="no checksums"):
        load(artifact)


def test_tokenizer_is_covered_and_must_load(artifact):
    (artifact / "tokenizer.json").write_text("{}")
    with pytest.raises(ArtifactError, match="tokenizer.json does not match its checksum"):
        load(artifact)
    resign(artifact)  # a forger: the garbage tokenizer is signed, but it still has to load with the recorded size
    with pytest.raises(ArtifactError, match="tokenizer"):
        load(artifact)
    (artifact / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="tokenizer.json is missing"):
        load(artifact)


def test_relabelled_config_is_noticed_by_verify(artifact):
    rewrite_manifest(artifact, lambda m: m["config"].update(id2label={"0": "LABEL_1", "1": "LABEL_0"},
                                                            label2id={"LABEL_1": 0, "LABEL_0": 1}))
    result = verify(artifact)
    assert not result["ok"] and result["label_mismatches"] == result["samples"] and result["max_abs_error"] == 0


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["config"].__setitem__("num_attention_heads", -12), "num_attention_heads"),
    (lambda m: m.__setitem__("version", True), "version"),
    (lambda m: m["layers"][0]["qk_widths"].__setitem__(0, "8"), "qk_widths"),
    (lambda m: m["layers"][0].__setitem__("ffn", 63.9), "ffn"),
    (lambda m: m["checksums"].__setitem__("/dev/zero", "0" * 64), "plain file name"),
    (lambda m: m["checksums"].__setitem__("../../etc/passwd", "0" * 64), "plain file name"),
    (lambda m: m["config"].__setitem__("vocab_size", 10_000_000), "word_embeddings"),
    (lambda m: m["layers"][0].__setitem__("ffn", 10_000_000), "ffn"),
])
def test_hostile_manifest_fields(artifact, edit, match):
    rewrite_manifest(artifact, edit)
    with pytest.raises(ArtifactError, match=match):
        load(artifact)


@pytest.mark.parametrize("name, value", [("embeddings.LayerNorm.weight", float("nan")),
                                         ("layers.0.query.bias", float("inf")),
                                         ("embeddings.word_embeddings.weight", float("-inf"))])
def test_non_finite_tensors_refused(artifact, name, value):
    rewrite_tensors(artifact, lambda t: t[name].view(-1).__setitem__(0, value))
    with pytest.raises(ArtifactError, match="NaN/inf"):
        load(artifact)


def test_integer_tensor_refused(artifact):
    rewrite_tensors(artifact, lambda t: t.__setitem__("classifier.bias", t["classifier.bias"].to(torch.int32)))
    with pytest.raises(ArtifactError, match="F32"):
        load(artifact)
