"""The main job's summary quotes the measured seed spread of its configuration (issue 17)."""
import json
from pathlib import Path

from benchmark_scripts import load_script

from sparsekit.cli import MAIN_JOB
from sparsekit.pipeline import SPREAD_FILE, measured_spread, summary_rows

ROOT = Path(__file__).resolve().parents[1]


def test_the_packaged_spread_is_the_committed_measurement():
    committed = json.loads((ROOT / "benchmarks" / "results" / "main_job_seeds_cpu.json").read_text())
    assert json.loads(SPREAD_FILE.read_text()) == load_script("main_job_seeds").spread_record(committed)


def test_the_default_configuration_has_a_measured_spread_and_others_do_not(tmp_path):
    spread = measured_spread(dict(MAIN_JOB), 300)
    assert spread is not None and len(spread["seeds"]) >= 3
    assert spread["pruned"]["std"] > 0 and spread["dense_baseline"]["std"] > 0
    assert measured_spread({**MAIN_JOB, "steps": 2000}, 300) is None
    assert measured_spread({**MAIN_JOB, "method": "movement"}, 300) is None
    assert measured_spread(dict(MAIN_JOB), 0) is None
    bad = tmp_path / "spread.json"
    bad.write_text("{not json")
    assert measured_spread(dict(MAIN_JOB), 300, bad) is None
    assert measured_spread(dict(MAIN_JOB), 300, tmp_path / "missing.json") is None


def _summary(spread):
    return {"dev": {"pruned": 0.8394, "compiled_artifact": 0.8394, "dense_baseline": 0.8475,
                    "dense_baseline_steps": 300},
            "compaction": {"encoder_params_before": 10, "encoder_params_after": 9, "heads_removed": 0,
                           "verify_max_abs_logit_error": 0.0},
            "size_bytes": {"encoder_matrices_dense_fp32": 2**20, "encoder_matrices_stored": 2**19, "artifact": 2**21,
                           "dense_checkpoint": None},
            "metric": "accuracy", "model": "minilm", "task": "sst2", "method": "smp-s", "seed": 42, "steps": 1000,
            "remaining_weights": 0.1, "compile": {"backends": {"csr-cpu": 24}, "threads": 2, "runtime": "fused"},
            "latency": {}, "timings_s": {"total_s": 1.0, "prune_s": 1.0},
            "paths": {"artifact": "a", "report": "r", "summary": "s"}, "seed_spread": spread}


def test_the_summary_states_the_spread_or_that_none_was_measured():
    spread = measured_spread(dict(MAIN_JOB), 300)
    rows = dict(summary_rows(_summary(spread)))
    p = spread["pruned"]
    assert f"pruned {p['mean']:.2f} ± {p['std']:.2f}" in rows["seed spread"]
    assert Path(spread["source"]).name in rows["seed spread"]
    assert "seed 42" in rows["dev accuracy: pruned"]
    assert rows["seed spread"] != dict(summary_rows(_summary(None)))["seed spread"]
    assert "not measured for these settings" in dict(summary_rows(_summary(None)))["seed spread"]
