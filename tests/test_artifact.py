"""Artifacts: export -> load -> identical outputs, verify, and every bad-artifact case refused clearly."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sparsekit.export.artifact import ArtifactError, export, load, verify
from conftest import random_sparse_classifier
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


def _rewrite_manifest(path, edit):
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _rewrite_tensors(path, edit):
    """Change tensors and re-sign the checksum, so only the deeper validation can catch it."""
    import hashlib

    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    _rewrite_manifest(path, lambda m: m["checksums"].__setitem__("model.safetensors", digest))


def test_bad_checksum(artifact):
    data = bytearray((artifact / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (artifact / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load(artifact)


def test_truncated_weights(artifact):
    data = (artifact / "model.safetensors").read_bytes()
    (artifact / "model.safetensors").write_bytes(data[: len(data) // 2])
    _rewrite_manifest(artifact, lambda m: m.pop("checksums"))
    with pytest.raises(ArtifactError, match="corrupt"):
        load(artifact)


def test_out_of_range_column_index(artifact):
    def edit(t):
        t["layers.0.query.col_idx"][0] = 10_000
    _rewrite_tensors(artifact, edit)
    with pytest.raises(ValueError, match="range|column"):
        load(artifact)


def test_shapes_disagree_with_manifest(artifact):
    _rewrite_manifest(artifact, lambda m: m["layers"][1].__setitem__("ffn", m["layers"][1]["ffn"] - 1))
    _rewrite_manifest(artifact, lambda m: m.pop("checksums"))
    with pytest.raises(ArtifactError, match="shape"):
        load(artifact)


def test_unknown_versions(artifact):
    _rewrite_manifest(artifact, lambda m: m.__setitem__("version", 99))
    with pytest.raises(ArtifactError, match="version 99"):
        load(artifact)


def test_unknown_matrix_format_version(artifact):
    _rewrite_manifest(artifact, lambda m: m["layers"][0]["matrices"]["key"].__setitem__("format_version", 7))
    with pytest.raises(ValueError, match="version"):
        load(artifact)


def test_extra_tensor_is_refused(artifact):
    _rewrite_tensors(artifact, lambda t: t.__setitem__("intruder", torch.zeros(3)))
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
