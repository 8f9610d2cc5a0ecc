"""The multi-seed accuracy benchmark: statistics and seed-spread comparisons on hand-computed values, the
markdown / JSON / PNG writers, what the seed changes, and the benchmark's rows on the tiny model (distinct per
seed, reused when finished, resumed when interrupted)."""
import json
import math
import re
import signal
import sys

import pytest
import torch
from benchmark_scripts import load_script
from safetensors.torch import load_file
from scipy import stats

from sparsekit.bench import accuracy as report
from sparsekit.prune import prune


@pytest.fixture(scope="module")
def bench():
    module = load_script("accuracy", "accuracy_benchmark")
    yield module
    del sys.modules[module.__name__]


def test_summarize_uses_the_sample_std():
    s = report.summarize([1.0, 2.0, 3.0])
    assert s["n"] == 3 and s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["values"] == [1.0, 2.0, 3.0]
    assert report.summarize([0.5])["std"] is None


def test_compare_against_hand_computed_welch():
    a, b = [0.80, 0.82, 0.84], [0.70, 0.71, 0.72]
    c = report.compare(a, b)
    # std_a = 0.02, std_b = 0.01; Welch: t = 0.11 / sqrt(0.02²/3 + 0.01²/3), df = (va + vb)² / (va²/2 + vb²/2).
    va, vb = 0.02 ** 2 / 3, 0.01 ** 2 / 3
    t = 0.11 / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert c["difference"] == pytest.approx(0.11) and c["spread"] == pytest.approx(0.02)
    assert c["exceeds_spread"] and c["verdict"] == "supported"
    assert c["p_value"] == pytest.approx(2 * stats.t.sf(t, df), rel=1e-6)
    assert report.compare([0.80, 0.84], [0.79, 0.83])["verdict"] == "within spread"  # 0.01 < std 0.028
    assert report.compare(b, a)["verdict"] == "contradicted"
    assert report.compare([0.8], a)["verdict"] == "no spread measured"
    assert report.compare([0.8, 0.8], [0.7, 0.7])["p_value"] is None  # no variance: no t-test


def _rows():
    values = {("finetune", 1.0): [0.86, 0.87, 0.88], ("smp-s", 0.1): [0.80, 0.82, 0.84],
              ("movement", 0.1): [0.79, 0.81, 0.83], ("magnitude", 0.1): [0.70, 0.71, 0.72]}
    return [{"method": m, "target_keep": k, "seed": s, "density": k, "metrics": {"accuracy": v[i]},
             "train_seconds": 10.0 + i, "wall_seconds": 60.0 * (i + 1), "steps": 4, "run_dir": "x",
             "resumed_from": None}
            for (m, k), v in values.items() for i, s in enumerate((42, 43, 44))]


def _result(rows):
    configs = report.configurations(rows, ["accuracy"])
    return {"task": "sst2", "budget": "test budget", "seeds": [42, 43, 44], "metric_names": ["accuracy"],
            "command": "python benchmarks/accuracy.py", "date": "today",
            "machine": {"cpu": "cpu", "cores": 2, "torch_threads": 2, "gpu": None},
            "versions": {"torch": "t", "transformers": "tf", "sparsekit": "s"}, "configurations": configs,
            "closeness": report.closeness_checks(configs, "accuracy", [("smp-s", 0.1, 0.015)]),
            "inequalities": report.inequality_checks(configs, "accuracy")}


def test_configurations_and_checks():
    configs = report.configurations(_rows(), ["accuracy"])
    assert [(c["method"], c["seeds"]) for c in configs][1] == ("smp-s", [42, 43, 44])
    assert configs[1]["metrics"]["accuracy"]["mean"] == pytest.approx(0.82)
    assert configs[1]["wall_seconds"] == [60.0, 120.0, 180.0]
    checks = report.inequality_checks(configs, "accuracy")
    assert [(c["claim"], c["verdict"]) for c in checks] == [("smp-s >= movement @10%", "within spread"),
                                                            ("movement >= magnitude @10%", "supported")]
    close = report.closeness_checks(configs, "accuracy", [("smp-s", 0.1, 0.015)])
    assert not close[0]["met"] and close[0]["difference"] == pytest.approx(-0.05)


def test_markdown_json_and_plot(tmp_path):
    result = _result(_rows())
    md = report.to_markdown(result)
    assert "| smp-s | 10% | 10.00% | 82.00 ± 2.00 | 80.00, 82.00, 84.00 | 1.0, 2.0, 3.0 min |" in md
    assert "| smp-s >= movement @10% | accuracy | +1.00 | 2.00 |" in md and "no (within spread)" in md
    assert "| movement >= magnitude @10% | accuracy | +10.00 | 2.00 |" in md and "| yes |" in md
    assert "Seeds: 42, 43, 44" in md and "Command: `python benchmarks/accuracy.py`" in md
    assert json.loads(json.dumps(result)) == result
    rows = _rows()
    rows[0]["wall_seconds"] = None
    assert "| n/a, 2.0, 3.0 min |" in report.to_markdown(_result(rows))
    assert "other torch thread counts" not in md
    rows[4]["threads"], rows[5]["threads"] = [2], [1, 2]  # smp-s seed 43: the header's; seed 44: 1 and 2 threads
    assert "other torch thread counts than the header's (wall times not comparable with the others'): smp-s @10% " \
           "seed 44: 1/2." in report.to_markdown(_result(rows))
    png = report.plot(result, tmp_path / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_seed_changes_head_init_data_order_and_subset(tiny_model_dir):
    from sparsekit.data.glue import seeded_subset
    from sparsekit.models import load_classifier
    from sparsekit.prune.train import EpochSampler

    heads = [dict(load_classifier(tiny_model_dir, 2, seed=s).classifier.named_parameters())["weight"] for s in (0, 1)]
    assert not torch.equal(heads[0], heads[1])
    assert list(EpochSampler(100, 0)) != list(EpochSampler(100, 1))
    assert seeded_subset(list(range(100)), 10, 0) != seeded_subset(list(range(100)), 10, 1)


def _argv(tiny_model_dir, tmp_path, seeds):
    return ["--model", str(tiny_model_dir), "--steps", "4", "--train-samples", "32", "--batch-size", "8",
            "--max-length", "24", "--seeds", *map(str, seeds), "--keeps", "0.5", "--methods", "movement",
            "--work-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--quiet",
            "--save-every", "2", "--name", "acc"]


def test_rows_per_seed_reuse_and_resume(bench, tiny_model_dir, tmp_path, monkeypatch):
    sigterm = signal.getsignal(signal.SIGTERM)
    result = bench.main(_argv(tiny_model_dir, tmp_path, [0, 1]))
    assert [(r["method"], r["seed"]) for r in result["rows"]] == [("finetune", 0), ("movement", 0),
                                                                  ("finetune", 1), ("movement", 1)]
    work = tmp_path / "runs" / "sst2-cpu"
    a, b = (load_file(str(work / f"seed{s}" / "movement-0.5" / "model.safetensors")) for s in (0, 1))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert all(r["wall_seconds"] > 0 and r["sittings"] == 1 and r["threads"] == [torch.get_num_threads()]
               for r in result["rows"])
    assert signal.getsignal(signal.SIGTERM) is sigterm  # main's SIGTERM handler is restored
    for ext in ("json", "md", "png"):
        assert (tmp_path / "results" / f"acc.{ext}").is_file()
    assert json.loads((tmp_path / "results" / "acc.json").read_text())["seeds"] == [0, 1]

    # A second invocation reuses every finished row: no training at all.
    def no_training(config):
        raise AssertionError(f"trained {config.output_dir} again")

    monkeypatch.setattr(bench, "prune", no_training)
    again = bench.main(_argv(tiny_model_dir, tmp_path, [0, 1]))
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in result["rows"]]
    monkeypatch.setattr(bench, "prune", prune)

    # A row stopped mid-run (as a killed benchmark leaves it) continues from its checkpoint.
    args = bench.parse_args(_argv(tiny_model_dir, tmp_path, [2]))
    budget = bench.budget_for(args)
    config = bench.row_config("finetune", 1.0, 2, args, budget, work)
    config.stop_after = 2
    prune(config)
    assert (work / "seed2" / "finetune-1" / "checkpoints" / "step-2").is_dir()
    # A table of seed 2 alone would drop seeds 0 and 1 from acc.json: refused before any training.
    before = (tmp_path / "results" / "acc.json").read_text()
    with pytest.raises(SystemExit, match="writing it would drop them.*--name"):
        bench.main(_argv(tiny_model_dir, tmp_path, [2]))
    assert (tmp_path / "results" / "acc.json").read_text() == before
    resumed = bench.main(_argv(tiny_model_dir, tmp_path, [2]) + ["--name", "acc-seed2"])
    row = resumed["rows"][0]
    assert row["steps"] == 4 and row["resumed_from"] and row["resumed_from"].endswith("step-2")


def test_a_finished_row_with_other_settings_is_not_reused(bench, tiny_model_dir, tmp_path):
    bench.main(_argv(tiny_model_dir, tmp_path, [0]))
    argv = _argv(tiny_model_dir, tmp_path, [0])
    argv[argv.index("--steps") + 1] = "6"
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(argv + ["--reuse-results", "none"])
    # The table's results file was made with the other budget too: it is not mixed in (nor overwritten).
    before = (tmp_path / "results" / "acc.json").read_text()
    with pytest.raises(SystemExit, match="holds another table.*budget"):
        bench.main(argv)
    assert (tmp_path / "results" / "acc.json").read_text() == before


def test_a_finished_row_whose_recipe_default_changed_is_not_reused(bench, tiny_model_dir, tmp_path, monkeypatch):
    """A row run before its recipe changed a default (here movement's initial scores) is a different experiment:
    refused, naming the setting, not reused silently."""
    from dataclasses import replace

    from sparsekit.prune import recipes

    bench.main(_argv(tiny_model_dir, tmp_path, [0]))
    monkeypatch.setitem(recipes.RECIPES, "movement", replace(recipes.RECIPES["movement"], score_init=0.0))
    with pytest.raises(SystemExit, match=r"score_init \(recipe default\): 'magnitude' -> 0.0"):
        bench.main(_argv(tiny_model_dir, tmp_path, [0]))


def test_a_results_file_row_whose_recipe_default_changed_is_trained_again(bench, tiny_model_dir, tmp_path,
                                                                        monkeypatch, capsys):
    """Rows record the settings their recipe resolved to; a row taken from a results file is not reused once its
    recipe's default changed (here movement's initial scores): it trains again, the others are still reused."""
    import shutil
    from dataclasses import replace

    from sparsekit.prune import recipes

    first = bench.main(_argv(tiny_model_dir, tmp_path, [0]))
    assert first["rows"][1]["resolved"]["score_init"] == "magnitude"
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.setitem(recipes.RECIPES, "movement", replace(recipes.RECIPES["movement"], score_init=0.0))
    trained = []

    def record(config):
        trained.append(config.method)
        return prune(config)

    monkeypatch.setattr(bench, "prune", record)
    again = bench.main(_argv(tiny_model_dir, tmp_path, [0]))
    assert trained == ["movement"] and again["rows"][0].get("reused_from")
    assert again["rows"][1]["resolved"]["score_init"] == 0.0 and not again["rows"][1].get("reused_from")
    assert "not reusing movement @0.5 seed 0" in capsys.readouterr().err


def test_rows_are_reused_from_the_results_file_when_the_run_directories_are_gone(bench, tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    import shutil

    first = bench.main(_argv(tiny_model_dir, tmp_path, [0]))
    assert all(r["machine"] for r in first["rows"]) and "reused_from" not in first["rows"][0]
    shutil.rmtree(tmp_path / "runs")  # a fresh clone: only the committed results file is left

    trained = []

    def only_seed_1(config):
        assert "seed1" in config.output_dir, f"trained {config.output_dir} again"
        trained.append(config.output_dir)
        return prune(config)

    monkeypatch.setattr(bench, "prune", only_seed_1)
    result = bench.main(_argv(tiny_model_dir, tmp_path, [0, 1]))
    assert len(trained) == 2  # seed 1's finetune and movement rows; seed 0's come from the file
    reused = [r for r in result["rows"] if r.get("reused_from")]
    assert [(r["method"], r["seed"]) for r in reused] == [("finetune", 0), ("movement", 0)]
    assert [r["metrics"] for r in reused] == [r["metrics"] for r in first["rows"]]
    assert all(r["reused_from"] == str(tmp_path / "results" / "acc.json") for r in reused)  # outside the repo
    md = (tmp_path / "results" / "acc.md").read_text()
    assert "Rows taken from an earlier results file" in md and "movement @50% seed 0" in md
    # Rows keep the machine that trained them; a report of one machine does not list machines.
    assert "different machines" not in md
    data = json.loads((tmp_path / "results" / "acc.json").read_text())
    data["rows"][0]["machine"] = "another CPU"
    assert "**another CPU**: finetune @100% seed 0" in report.to_markdown(dict(_result(data["rows"]),
                                                                               rows=data["rows"]))

    # An interrupted run in the row's directory wins over the file: it resumes instead of being replaced.
    monkeypatch.setattr(bench, "prune", prune)
    args = bench.parse_args(_argv(tiny_model_dir, tmp_path, [0]))
    work = tmp_path / "runs" / "sst2-cpu"
    config = bench.row_config("finetune", 1.0, 0, args, bench.budget_for(args), work)
    config.stop_after = 2
    prune(config)
    again = bench.main(_argv(tiny_model_dir, tmp_path, [0, 1]))
    assert again["rows"][0]["resumed_from"].endswith("step-2") and "reused_from" not in again["rows"][0]
    assert again["rows"][1]["reused_from"]  # seed 0's movement row: still from the file
    with pytest.raises(SystemExit, match="no such file"):
        bench.main(_argv(tiny_model_dir, tmp_path, [0, 1]) + ["--reuse-results", str(tmp_path / "missing.json")])
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not an accuracy results file"):
        bench.main(_argv(tiny_model_dir, tmp_path, [0, 1]) + ["--reuse-results", str(tmp_path / "other.json")])
    assert not any(r.get("reused_from") for r in again["rows"][2:])  # seed 1's rows: from their directories


def test_block_rows_are_their_own_rows_beside_the_unstructured_ones(bench, tiny_model_dir, tmp_path, monkeypatch):
    bench.main(_argv(tiny_model_dir, tmp_path, [0]))
    trained = []

    def only_block_rows(config):
        assert config.block == "1x4", f"trained the unstructured row {config.output_dir} again"
        trained.append(config.output_dir)
        return prune(config)

    monkeypatch.setattr(bench, "prune", only_block_rows)
    result = bench.main(_argv(tiny_model_dir, tmp_path, [0]) + ["--block", "1x1", "1x4"])
    assert [r["method"] for r in result["rows"]] == ["finetune", "movement", "movement-b1x4"]
    work = tmp_path / "runs" / "sst2-cpu" / "seed0"
    assert trained == [str(work / "movement-b1x4-0.5")]
    assert json.loads((work / "movement-b1x4-0.5" / "recipe.json").read_text())["block"] == "1x4"


def test_score_lr_rows_are_their_own_rows_and_the_checks_follow_them(bench, tiny_model_dir, tmp_path, monkeypatch):
    bench.main(_argv(tiny_model_dir, tmp_path, [0]))
    trained = []

    def only_new_lr_rows(config):
        assert config.method != "finetune", "trained the finetune row again (it has no scores)"
        trained.append((config.output_dir, config.score_lr))
        return prune(config)

    monkeypatch.setattr(bench, "prune", only_new_lr_rows)
    monkeypatch.setitem(bench.CLOSENESS, "sst2", {"accuracy": [("movement", 0.5, 0.5)]})
    # Its budget differs (the score LR): not written over the recipe-rate table, whose rows it would mix in.
    with pytest.raises(SystemExit, match="holds another table"):
        bench.main(_argv(tiny_model_dir, tmp_path, [0]) + ["--score-lr", "0.05"])
    result = bench.main(_argv(tiny_model_dir, tmp_path, [0]) + ["--score-lr", "0.05", "--name", "acc-slr"])
    assert [r["method"] for r in result["rows"]] == ["finetune", "movement-slr0.05"]
    work = tmp_path / "runs" / "sst2-cpu" / "seed0"
    assert trained == [(str(work / "movement-slr0.05-0.5"), 0.05)]
    resolved = json.loads((work / "movement-slr0.05-0.5" / "recipe.json").read_text())["resolved"]
    assert resolved["learning_rates"]["scores"] == 0.05
    assert "score LR 0.05 for the pruning rows" in result["budget"]
    assert [c["target"] for c in result["closeness"]] == ["movement-slr0.05 @50% within 50.0 accuracy points of dense"]
    # Rows without scores are shared: magnitude keeps its name and is not trained again.
    assert bench.row_name("magnitude", score_lr=0.05) == "magnitude"
    assert bench.row_name("kd-smp-s", "1x4", 0.05) == "kd-smp-s-b1x4-slr0.05"
    assert bench.row_name("smp-s", score_lr=None) == "smp-s"


@pytest.mark.parametrize("extra, message", [(["--block", "1x4", "--methods", "abp"], "abp cannot prune in blocks"),
                                            (["--block", "1by4"], "block \\(--block\\) must be ROWSxCOLS")])
def test_bad_block_rows_are_refused_before_any_run(bench, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        bench.parse_args(["--work-dir", str(tmp_path)] + extra)
    assert re.search(message, capsys.readouterr().err)
