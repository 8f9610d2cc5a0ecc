"""Adapting-by-Pruning: why the method collapsed at the CPU budget, measured (issue 17).

Three runs of MiniLM on SST-2 at 10% remaining, the CPU budget of benchmarks/accuracy.py (16,000 seeded train
examples, batch 32, inputs up to 64 tokens, seed 42), that differ only in theta's learning rate (AdamW):

- ``lr5e-4``: 600 steps at 5e-4, sparsekit's default before this benchmark;
- ``lr2e-5``: 600 steps at 2e-5, the paper's selected alpha (sparsekit's default now);
- ``lr5e-4-100``: the first 100 steps of the 5e-4 run, with the same drift per step as the 600-step runs
  (gamma 2.78e-5, set explicitly), to see whether theta reaches 0 before the drift can bring it there.

Reported: dev accuracy, the fraction of theta <= 0 every 50 steps (``negative_fraction_history``), the step the
target was reached, and the final shift when it was not. Finished runs are reused; each run takes 5-50 minutes
on 2 cores (more when shared).

    python benchmarks/abp_score_lr.py [--work-dir runs/diag]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sparsekit.machine import machine_info
from sparsekit.prune import PruneConfig, prune
from sparsekit.versions import library_versions

from results_io import RESULTS, write_result  # benchmarks/ is on sys.path when run as a script

BUDGET = dict(method="abp", keep=0.1, task="sst2", train_samples=16000, batch_size=32, max_length=64, seed=42,
              progress=False)
RUNS = {"lr5e-4": dict(score_lr=5e-4, steps=600), "lr2e-5": dict(score_lr=2e-5, steps=600),
        "lr5e-4-100": dict(score_lr=5e-4, steps=100, abp_gamma=0.01 / (0.6 * 600))}


def run(name: str, work: Path) -> dict:
    """Run (or reuse) one configuration; its row."""
    out = work / f"abp-{name}"
    settings = {**BUDGET, **RUNS[name]}
    if (out / "metrics.json").is_file():
        saved = json.loads((out / "recipe.json").read_text())["config"]
        if any(saved.get(k) != v for k, v in settings.items() if k != "progress"):
            raise SystemExit(f"{out} holds a run with other settings; use another --work-dir")
    else:
        prune(PruneConfig(output_dir=str(out), overwrite=out.exists(), **settings))
    metrics = json.loads((out / "metrics.json").read_text())
    abp = json.loads((out / "recipe.json").read_text())["extensions"]["abp"]
    return {"run": name, "settings": RUNS[name], "accuracy": metrics["accuracy"], "density": metrics["density"],
            "steps": metrics["steps"], "train_seconds": metrics["train_seconds"], "gamma": abp["gamma"],
            "stopped_at_step": abp["stopped_at_step"], "fallback_shift": abp["fallback_shift"],
            "negative_fraction_history": abp["negative_fraction_history"], "run_dir": str(out)}


def markdown(result: dict) -> str:
    lines = ["# Adapting-by-Pruning: theta's learning rate (MiniLM, SST-2, 10% remaining, CPU budget, seed 42)", "",
             f"Command: `{result['command']}`  ",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores (shared with other jobs while "
             "these ran: train times are not speed figures)  ",
             f"Versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}  ",
             f"Date: {result['date']}", "",
             "| run | theta LR | steps | dev accuracy | remaining | target reached at step | final shift | "
             "theta <= 0 at steps 50 / 100 / 150 / ... |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        history = " / ".join(f"{100 * f:.2f}%" for _, f in r["negative_fraction_history"])
        shift = "—" if r["fallback_shift"] is None else f"{r['fallback_shift']:.4f}"
        lines.append(f"| {r['run']} | {r['settings']['score_lr']:g} | {r['steps']} | {100 * r['accuracy']:.2f} | "
                     f"{100 * r['density']:.2f}% | {r['stopped_at_step'] or 'not reached'} | {shift} | {history} |")
    lines += ["", "Single seed (42): the accuracies are not a comparison between methods; the collapse to the "
              "majority class (about 50.9%) or not is the finding.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("runs/diag"))
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=tuple(RUNS))
    args = parser.parse_args(argv)
    rows = [run(name, args.work_dir) for name in args.runs]
    result = {"benchmark": "abp_score_lr", "command": " ".join(["python"] + sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(), "versions": library_versions(),
              "rows": rows}
    write_result(RESULTS / "abp_lr_sst2_cpu", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
