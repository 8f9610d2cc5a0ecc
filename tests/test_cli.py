"""The `sparsekit` CLI: same code path as the API, clear errors with exit code 2."""
import json

from typer.testing import CliRunner

from sparsekit.cli import app

runner = CliRunner()


def _prune_args(model_dir, out, *extra):
    return ["prune", "--model", str(model_dir), "-o", str(out), "--method", "smp-s", "--keep", "0.3",
            "--steps", "3", "--train-samples", "32", "--eval-samples", "16", "--batch-size", "8",
            "--max-length", "24", "--no-progress", *extra]


def test_prune_report_evaluate(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, _prune_args(tiny_model_dir, out))
    assert result.exit_code == 0, result.output
    assert "Per-layer sparsity" in result.output and "dev accuracy" in result.output
    assert (out / "masks.bin").is_file()

    result = runner.invoke(app, ["report", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["matrices"]) == 12 and 0 < report["summary"]["density"] < 1

    result = runner.invoke(app, ["evaluate", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["eval_samples"] == 872 and 0 <= metrics["accuracy"] <= 1


def test_cli_errors_are_clear(tiny_model_dir, tmp_path):
    result = runner.invoke(app, ["prune", "--model", "sparsekit-tests/no-such-model", "-o", str(tmp_path / "x"),
                                 "--no-progress"], terminal_width=200)
    assert result.exit_code == 2 and "HF_HUB_OFFLINE" in result.output
    result = runner.invoke(app, _prune_args(tiny_model_dir, tmp_path / "y", "--task", "imdb"))
    assert result.exit_code == 2 and "sst2" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not a directory" in result.output
    result = runner.invoke(app, ["prune", "--method", "obs"])
    assert result.exit_code != 0


def test_tasks_lists_shipped_data():
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    for name in ("sst2", "mrpc", "rte", "stsb", "cola", "qnli", "mnli", "qqp"):
        assert name in result.output


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("prune", "run", "evaluate", "report", "tasks"):
        assert command in result.output


def test_export_verify_report_predict(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, _prune_args(tiny_model_dir, run)).exit_code == 0
    art = tmp_path / "art"
    result = runner.invoke(app, ["export", str(run), "-o", str(art), "--min-row-weights", "3", "--task", "sst2",
                                 "--eval-samples", "32"])
    assert result.exit_code == 0, result.output
    assert "dense parameters after compaction" in result.output and "change" in result.output
    result = runner.invoke(app, ["export", str(run), "-o", str(art)])
    assert result.exit_code == 2 and "overwrite" in result.output

    result = runner.invoke(app, ["verify", str(art)])
    assert result.exit_code == 0 and "OK" in result.output

    result = runner.invoke(app, ["evaluate", str(art), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["eval_samples"] == 872

    result = runner.invoke(app, ["report", str(art), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["compaction"]["lossy"]["min_row_weights"] == 3

    result = runner.invoke(app, ["predict", str(art), "the film is great", "a boring story", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2 and lines[0]["label"] in ("negative", "positive")

    (art / "samples.json").write_text("{}")
    result = runner.invoke(app, ["verify", str(art)])
    assert result.exit_code == 2 and "checksum" in result.output


def test_python_api_is_the_same_path(tiny_model_dir, tmp_path):
    import sparsekit

    result = sparsekit.prune(sparsekit.PruneConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "run"),
                                                   keep=0.3, steps=2, train_samples=16, eval_samples=8,
                                                   batch_size=8, max_length=16, progress=False))
    sparsekit.export_model(result.output_dir, tmp_path / "art")
    model = sparsekit.load(tmp_path / "art")
    assert sparsekit.verify(tmp_path / "art")["ok"]
    preds = sparsekit.Predictor(model).predict(["great", ("a", "pair")][:1])
    assert preds[0].label in ("negative", "positive")


def test_main_job_command_runs_end_to_end(tiny_model_dir, tmp_path, monkeypatch):
    """`sparsekit run` with the shipped defaults swapped for a tiny model and 2 steps."""
    from sparsekit import cli

    monkeypatch.setitem(cli.MAIN_JOB, "model", str(tiny_model_dir))
    monkeypatch.setitem(cli.MAIN_JOB, "eval_samples", 16)
    result = runner.invoke(app, ["run", "-o", str(tmp_path / "main"), "--steps", "2", "--train-samples", "32",
                                 "--dense-baseline-steps", "2", "--batch", "1", "--batch", "2", "--seq", "8",
                                 "--latency-seconds", "0.05", "--seed", "7", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "seed 7: one seed" in result.output
    for row in ("exact compaction", "dev accuracy: dense", "dev accuracy: pruned", "dev accuracy: compiled artifact",
                "latency 1x8", "latency 2x8", "compiled matrices (fused runtime)", "artifact"):
        assert row in result.output, row
    assert (tmp_path / "main" / "artifact" / "manifest.json").is_file()
    summary = json.loads((tmp_path / "main" / "summary.json").read_text())
    assert set(summary["latency"]) == {"1x8", "2x8"}
    for lat in summary["latency"].values():
        assert lat["masked_dense"]["median_ms"] > 0 and lat["compiled"]["speedup"] > 0
    assert summary["dev"]["dense_baseline"] is not None and summary["dev"]["compiled_artifact"] is not None
    # exact compaction + compile change nothing: the compiled artifact scores as the pruned model does
    assert summary["dev"]["compiled_artifact"] == summary["dev"]["pruned"]
    assert summary["machine"]["cores"] >= 1 and summary["versions"]["torch"]
    assert summary["seed"] == 7 and json.loads((tmp_path / "main" / "recipe.json").read_text())["config"]["seed"] == 7


def test_main_job_refuses_bad_options(tmp_path):
    result = runner.invoke(app, ["run", "-o", str(tmp_path / "main"), "--dense-baseline-steps", "-1"])
    assert result.exit_code == 2 and "--dense-baseline-steps" in result.output


def test_prune_options_are_the_config_fields(monkeypatch):
    """`sparsekit prune` offers every CLI field of PruneConfig and hands the parsed values over unchanged."""
    from dataclasses import fields

    from sparsekit import cli
    from sparsekit.prune import PruneConfig

    seen = []
    monkeypatch.setattr(cli, "_run_prune", seen.append)
    result = runner.invoke(app, ["prune", "--method", "abp", "--abp-gamma", "0.2", "-o", "out", "--data-dir", "d",
                                 "--score-init", "magnitude", "--no-progress", "--resume"])
    assert result.exit_code == 0, result.output
    assert seen == [PruneConfig(method="abp", abp_gamma=0.2, output_dir="out", data_dir="d", score_init="magnitude",
                                progress=False, resume=True)]
    help_text = runner.invoke(app, ["prune", "--help"], terminal_width=200).output
    for field in fields(PruneConfig):
        if field.metadata["cli"]:
            assert f"--{field.name.replace('_', '-')}" in help_text, field.name
