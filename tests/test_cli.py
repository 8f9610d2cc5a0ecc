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
    result = runner.invoke(app, ["prune", "--model", "bert-base-uncased", "-o", str(tmp_path / "x"), "--no-progress"])
    assert result.exit_code == 2 and "never downloads" in result.output
    result = runner.invoke(app, _prune_args(tiny_model_dir, tmp_path / "y", "--task", "squad"))
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
