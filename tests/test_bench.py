"""`sparsekit bench`: the CLI runs on tiny models, the result files (JSON schema, CSV, PNG), --compare,
no overwriting, the artifact's dense reference, recorded failures, and clear errors for bad input."""
import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import random_sparse_classifier
from sparsekit.bench import VARIANTS, BenchConfig, compare_files, run_bench
from sparsekit.bench import onnx as bench_onnx
from sparsekit.bench.cliargs import expand_multi_values
from sparsekit.bench.reconstruct import dense_from_artifact
from sparsekit.bench.results import LAYER_CSV_COLUMNS, MODEL_CSV_COLUMNS, SCHEMA_VERSION
from sparsekit.bench.subjects import density
from sparsekit.cli import app
from sparsekit.export.artifact import export, load
from sparsekit.models import load_tokenizer, prunable_matrices

runner = CliRunner()
FAST = ["--repeats", "2", "--rounds", "1", "--min-seconds", "0", "--warmup", "1", "--compile-repeats", "1"]
FAST_KW = dict(repeats=2, rounds=1, min_seconds=0.0, warmup=1, compile_repeats=1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def artifact(tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench-art") / "art"
    export((random_sparse_classifier(tiny_model_dir, 0.15), load_tokenizer(tiny_model_dir)), path)
    return path


@pytest.fixture(scope="module")
def random_result(tmp_path_factory):
    """One CLI run on random:tiny with a sparsity and a batch sweep (shared by the schema / CSV / PNG tests)."""
    out = tmp_path_factory.mktemp("bench-random") / "out"
    result = runner.invoke(app, ["bench", "random:tiny", "--sparsity", "0.5", "0.9", "--batch", "1", "2", "--seq", "8",
                                 "--threads", "1", "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    return out, result.output


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000


def test_cli_random_tiny_result_schema(random_result):
    out, output = random_result
    assert "speedup over dense" in output and "bench.png" in output
    data = json.loads((out / "bench.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["kind"] == "sparsekit-bench" and data["mode"] == "model"
    assert data["command"][:3] == ["sparsekit", "bench", "random:tiny"] and "--batch" in data["command"]
    assert {"machine", "versions"} <= set(data["header"]) and data["header"]["versions"]["torch"] == torch.__version__
    assert data["settings"]["batch"] == [1, 2] and data["settings"]["sparsity"] == [0.5, 0.9]
    assert [m["id"] for m in data["models"]] == ["random:tiny@0.5", "random:tiny@0.9"]
    for m in data["models"]:
        assert m["kind"] == "random" and abs(m["density"] - (1 - m["sparsity"])) < 1e-3
    assert len(data["configs"]) == 4
    for c in data["configs"]:
        assert isinstance(c["id"], str) and c["tokens"] == c["batch"] * c["seq"] and c["threads"] == 1
        assert set(c["variants"]) <= set(VARIANTS) and list(c["variants"])[0] == "dense"
        assert sum(c["compile"]["backends_chosen"].values()) == len(c["compile"]["layers"]) == 8  # 2 fused layers x 4
        for name, s in c["variants"].items():
            assert s["status"] in ("ok", "skipped", "unavailable", "failed")
            if s["status"] == "ok":
                for key in ("median_ms", "p25_ms", "p75_ms", "min_ms", "mean_ms", "seq_per_s", "tokens_per_s",
                            "speedup", "max_abs_diff", "setup_s"):
                    assert isinstance(s[key], float) and s[key] >= 0, (name, key)
                assert s["p25_ms"] <= s["median_ms"] <= s["p75_ms"] and s["runs"] >= 2
                assert s["steal"] is None or 0 <= s["steal"] <= 1
                assert s["max_abs_diff"] < 1e-4  # every variant computes the same logits
            else:
                assert isinstance(s["reason"], str) and s["reason"]
        assert c["variants"]["dense"]["speedup"] == 1.0
        assert c["variants"]["sparsekit"]["status"] == c["variants"]["torch-sparse"]["status"] == "ok"
        assert c["variants"]["torch-compile"]["status"] == "skipped"
        assert "--torch-compile" in c["variants"]["torch-compile"]["reason"]
        assert c["variants"]["sparsekit-int8"]["status"] == "skipped" and "--int8" in c["variants"]["sparsekit-int8"][
            "reason"]
        assert "artifact-eager" not in c["variants"]  # only for artifacts


def test_notes_warn_when_the_hypervisor_took_cpu_time():
    from sparsekit.bench import tables

    def doc(steal):
        return {"header": {"machine": {"cores": 2}}, "configs": [
            {"id": "m b1 s8 t1", "tokens": 8, "compile": {"backends_chosen": {"dense": 1}},
             "variants": {"dense": {"status": "ok", "steal": steal}, "old": {"status": "ok"}}}]}

    assert not [line for line in tables.notes(doc(0.01)) if "hypervisor" in line]
    assert not [line for line in tables.notes(doc(None)) if "hypervisor" in line]  # unknown, or an old file
    assert [line for line in tables.notes(doc(0.2)) if "took up to 20% of this machine's CPU time" in line]


def test_cli_random_tiny_csv_and_png(random_result):
    out, _ = random_result
    with (out / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == MODEL_CSV_COLUMNS
    assert len(rows) == 4 * 6  # configs x variants (dense, torch-compile, torch-sparse, onnxruntime, sparsekit,
    #                              sparsekit-int8; the skipped ones are rows with their reason)
    dense = [r for r in rows if r["variant"] == "dense"]
    assert all(float(r["speedup"]) == 1.0 and float(r["median_ms"]) > 0 for r in dense)
    _check_png(out / "bench.png")


def test_artifact_bench_uses_an_exact_dense_reference(artifact, tmp_path):
    result = run_bench(BenchConfig(str(artifact), tmp_path / "out", batch=[2], seq=[8], threads=[1], **FAST_KW))
    model = result.data["models"][0]
    assert model["kind"] == "artifact" and model["dense_reference"]["max_abs_diff"] < 1e-5
    assert 0.1 < model["density"] < 0.2
    variants = result.data["configs"][0]["variants"]
    for name in ("dense", "torch-sparse", "artifact-eager", "sparsekit"):
        assert variants[name]["status"] == "ok" and variants[name]["max_abs_diff"] < 1e-4, name
    _check_png(result.paths["png"])


@torch.no_grad()
def test_dense_from_artifact_after_real_compaction(tiny_model_dir, tmp_path):
    """Heads, V / Q·K dimensions and FFN neurons removed by compaction come back as zeros: same logits."""
    model = random_sparse_classifier(tiny_model_dir, 0.5, seed=1)
    layer = model.bert.encoder.layer[0]
    layer.attention.self.value.weight[8:16] = 0  # head 1 (head_dim 8) loses every V dimension: removed
    layer.attention.self.key.weight[0:3] = 0     # three Q·K dimensions of head 0
    layer.intermediate.dense.weight[:20] = 0     # 20 FFN neurons (bias folded into FFN-out)
    export((model, load_tokenizer(tiny_model_dir)), tmp_path / "art")
    art = load(tmp_path / "art")
    assert art.manifest["compaction"]["fraction_after"] < 1
    dense = dense_from_artifact(art)
    assert [tuple(dense.get_submodule(m.name).weight.shape) for m in prunable_matrices(dense)] == \
        [tuple(model.get_submodule(m.name).weight.shape) for m in prunable_matrices(model)]
    batch = art.tokenizer(["the film is great", "a boring story , not good"], padding=True, return_tensors="pt")
    torch.testing.assert_close(dense(**batch).logits, model(**batch).logits, rtol=0, atol=1e-5)
    # weights that compaction removed as irrelevant (Q rows of empty K rows, FFN-out columns of folded neurons, ...)
    # stay zero: the reconstruction holds exactly the artifact's weights
    summary = art.manifest["compaction"]
    assert abs(density(dense) - summary["nnz_after"] / summary["dense_params_before"]) < 1e-9
    assert density(dense) < density(model)


def _save_run(tiny_model_dir, path):
    from sparsekit.prune.output import save_pruned

    model = random_sparse_classifier(tiny_model_dir, 0.2)
    masks = {m.name: model.get_submodule(m.name).weight != 0 for m in prunable_matrices(model)}
    path.mkdir()
    save_pruned(path, model, load_tokenizer(tiny_model_dir), masks, {"method": "test"}, {}, {})
    return path


def test_cli_layer_mode_on_a_run_dir(tiny_model_dir, tmp_path):
    run = _save_run(tiny_model_dir, tmp_path / "run")
    out = tmp_path / "out"
    result = runner.invoke(app, ["bench", str(run), "--layers", "--batch", "2", "--seq", "8", "--threads", "1",
                                 "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "median ms per backend" in result.output
    data = json.loads((out / "bench.json").read_text())
    assert data["mode"] == "layers" and data["models"][0]["kind"] == "run"
    config = data["configs"][0]
    assert "variants" not in config and len(config["compile"]["layers"]) == 8  # fused: qkv, attn_out, ffn_in, ffn_out
    for layer in config["compile"]["layers"]:
        assert layer["timings_ms"]["dense"] > 0 and layer["backend"] in layer["timings_ms"]
    with (out / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == LAYER_CSV_COLUMNS
    assert len(rows) == sum(len(layer["timings_ms"]) for layer in config["compile"]["layers"])
    assert sum(r["chosen"] == "True" for r in rows) == 8
    _check_png(out / "bench.png")


def _variant_result(path, data, edit=None):
    data = json.loads(json.dumps(data))
    if edit:
        edit(data)
    path.write_text(json.dumps(data))
    return path


def test_compare(random_result, tmp_path):
    out, _ = random_result
    a = out / "bench.json"
    data = json.loads(a.read_text())

    def slower(d):  # B: dense twice as slow, one config renamed (present in only one file)
        for c in d["configs"]:
            c["variants"]["dense"]["median_ms"] *= 2
        d["configs"][0]["id"] = "other-model b1 s8 t1"

    b = _variant_result(tmp_path / "b.json", data, slower)
    md = tmp_path / "cmp.md"
    result = runner.invoke(app, ["bench", "--compare", str(a), str(b), "--markdown", str(md)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "only in A (1 configs" in result.output and "only in B (1 configs" in result.output
    assert "random:tiny@0.5 b1 s8 t1" in result.output and "other-model b1 s8 t1" in result.output
    text = md.read_text()
    assert text.startswith("# sparsekit bench") and "| config | variant |" in text and "0.500" in text
    comparison = compare_files(a, b)
    dense = [r for r in comparison.rows if r["item"] == "dense"]
    assert len(dense) == 3 and all(abs(r["ratio"] - 0.5) < 1e-9 for r in dense)
    assert {r["item"] for r in comparison.rows} >= {"dense", "sparsekit", "torch-sparse"}

    # the markdown file is not overwritten without --overwrite
    result = runner.invoke(app, ["bench", "--compare", str(a), str(b), "--markdown", str(md)])
    assert result.exit_code == 2 and "--overwrite" in result.output

    disjoint = _variant_result(tmp_path / "c.json", data, lambda d: [c.update(id=f"x {i}") for i, c in
                                                                      enumerate(d["configs"])])
    result = runner.invoke(app, ["bench", "--compare", str(a), str(disjoint)], terminal_width=300)
    assert result.exit_code == 2 and "no config" in result.output and "x 0" in result.output
    layers = _variant_result(tmp_path / "l.json", data, lambda d: d.update(mode="layers"))
    result = runner.invoke(app, ["bench", "--compare", str(a), str(layers)])
    assert result.exit_code == 2 and "same mode" in result.output
    (tmp_path / "bad.json").write_text("{not json")
    result = runner.invoke(app, ["bench", "--compare", str(a), str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    result = runner.invoke(app, ["bench", "--compare", str(a), str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_never_overwrites_without_asking(artifact, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.csv").write_text("keep me")
    args = ["bench", str(artifact), "--batch", "1", "--seq", "8", "--threads", "1", "-o", str(out), *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--overwrite" in result.output and "bench.csv" in result.output
    assert (out / "bench.csv").read_text() == "keep me" and not (out / "bench.json").exists()
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (out / "bench.csv").read_text().startswith("model,sparsity")


@pytest.mark.parametrize("args, message", [
    (["./no/such/dir", "--sparsity", "0.9"], "does not exist"),
    (["random:huge", "--sparsity", "0.9"], "unknown random model shape"),
    (["sparsekit-tests/no-such-model", "--sparsity", "0.9"], "HF_HUB_OFFLINE"),
    (["random:tiny"], "pass --sparsity"),
    (["random:tiny", "--sparsity", "1.5"], "[0, 1)"),
    (["random:tiny", "--sparsity", "0.9", "--batch", "0", "4"], "positive integers"),
    (["random:tiny", "--sparsity", "0.9", "--seq", "-8"], "positive integers"),
    (["random:tiny", "--sparsity", "0.9", "--repeats", "0"], "--repeats"),
    (["random:tiny", "--sparsity", "0.9", "--batch", "x"], "--batch"),
])
def test_bad_inputs_give_clear_errors(args, message, tmp_path):
    result = runner.invoke(app, ["bench", *args, "-o", str(tmp_path / "out")], terminal_width=200)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out" / "bench.json").exists()


def test_bad_inputs_for_saved_models(artifact, tmp_path):
    result = runner.invoke(app, ["bench", str(artifact), "--sparsity", "0.9", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "own masks" in result.output
    result = runner.invoke(app, ["bench", str(artifact), "--seq", "4096", "--threads", "1", "-o",
                                 str(tmp_path / "o"), *FAST], terminal_width=200)
    assert result.exit_code == 2 and "max_position_embeddings" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["bench", str(tmp_path / "empty"), "-o", str(tmp_path / "o")], terminal_width=200)
    assert result.exit_code == 2 and "neither a sparsekit artifact" in result.output
    result = runner.invoke(app, ["bench", "random:tiny", "--sparsity", "0.9"])
    assert result.exit_code == 2 and "-o OUTDIR" in result.output


def test_failures_are_recorded_not_raised(tmp_path, monkeypatch):
    """torch.compile that fails and an ONNX Runtime that is missing become results with the reason."""
    def broken_compile(model, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("inductor: no working C++ compiler\nlong traceback")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(bench_onnx, "unavailable_reason", lambda: "onnxruntime is not installed (test)")
    result = run_bench(BenchConfig("random:tiny", tmp_path / "out", sparsity=[0.9], batch=[1], seq=[8], threads=[1],
                                   torch_compile=True, **FAST_KW))
    variants = result.data["configs"][0]["variants"]
    assert variants["torch-compile"] == {**variants["torch-compile"], "status": "failed",
                                         "reason": "RuntimeError: inductor: no working C++ compiler"}
    assert variants["onnxruntime"]["status"] == "unavailable" and "(test)" in variants["onnxruntime"]["reason"]
    assert variants["sparsekit"]["status"] == "ok"
    _check_png(result.paths["png"])


def test_expand_multi_values():
    flags = ("--batch", "--seq")
    assert expand_multi_values(["m", "--batch", "1", "8", "--seq", "128", "-o", "x"], flags) == \
        ["m", "--batch", "1", "--batch", "8", "--seq", "128", "-o", "x"]
    assert expand_multi_values(["--batch", "1", "8", "random:tiny"], flags) == \
        ["--batch", "1", "--batch", "8", "random:tiny"]
    assert expand_multi_values(["--batch=2", "4", "--other", "5"], flags) == \
        ["--batch=2", "--batch", "4", "--other", "5"]
    assert expand_multi_values(["--batch", "x", "8"], flags) == ["--batch", "x", "--batch", "8"]


def test_int8_variant_is_opt_in_and_measured(tmp_path):
    """--int8 adds sparsekit.compile(precision="int8") as the variant sparsekit-int8 (skipped, with the reason,
    without it); its logits differ from dense by the int8 quantisation error only."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["bench", "random:tiny", "--sparsity", "0.9", "--batch", "1", "--seq", "8",
                                 "--threads", "1", "--int8", "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    variant = json.loads((out / "bench.json").read_text())["configs"][0]["variants"]["sparsekit-int8"]
    assert variant["status"] == "ok" and variant["info"]["precision"] == "int8"
    assert variant["max_abs_diff"] < 0.1  # random:tiny's logits are O(1): an int8 error, not a mismatch


def test_notes_state_an_instruction_set_limit():
    from sparsekit.bench import tables

    def doc(limits):
        return {"header": {"machine": {"cores": 2, **({"isa_limits": limits} if limits is not None else {})}},
                "configs": []}

    assert not [line for line in tables.notes(doc(None)) + tables.notes(doc({})) if "instruction set" in line]
    line, = [line for line in tables.notes(doc({"SPARSEKIT_ISA": "avx2"})) if "instruction set" in line]
    assert "SPARSEKIT_ISA=avx2" in line and "ONNX Runtime has no such switch" in line
