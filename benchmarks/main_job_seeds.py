"""The main job's seed spread (issue 17): ``sparsekit run`` with the README's settings over several seeds.

Each seed is one whole main job (``sparsekit.pipeline.run_main_job`` with the CLI's ``MAIN_JOB`` settings: SMP-S,
MiniLM, SST-2, 10% remaining, 1000 steps, dense baseline 300 steps) in ``<work-dir>/seed<S>``; a finished seed
(its ``summary.json`` records that seed and the same settings) is reused, so the table can be completed over
several sittings. ``--reuse S=DIR`` takes an existing main-job directory for seed S (e.g. the README's
``runs/main-job`` for 42) after checking its recipe's seed and settings. Reports mean ± sample std and every value
of the pruned, compiled-artifact and dense-baseline dev accuracies, with the per-seed wall times. Writes
``benchmarks/results/main_job_seeds_cpu.{json,md}`` and the packaged record the main job's summary quotes as the
spread of its configuration (``sparsekit/main_job_spread.json``, ``sparsekit.pipeline.measured_spread``).

    python benchmarks/main_job_seeds.py --reuse 42=runs/main-job        # seeds 42 43 44
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from results_io import RESULTS, write_result  # benchmarks/ is on sys.path when run as a script

from sparsekit.pipeline import MainJobConfig

#: The dense fine-tune steps of every seed's main job (the main job's default).
DENSE_BASELINE_STEPS = MainJobConfig.dense_baseline_steps


def finished(run: Path, seed: int, settings: dict) -> dict | None:
    """The summary of a finished main job in ``run`` made with ``seed`` and ``settings``, else None."""
    summary_file, recipe_file = run / "summary.json", run / "recipe.json"
    if not (summary_file.is_file() and recipe_file.is_file()):
        return None
    config = json.loads(recipe_file.read_text()).get("config", {})
    if config.get("seed") != seed or any(config.get(k) != v for k, v in settings.items() if k != "model"):
        return None
    return json.loads(summary_file.read_text())


def run_seed(seed: int, out: Path, args) -> dict:
    from sparsekit.cli import MAIN_JOB
    from sparsekit.pipeline import MainJobConfig, run_main_job
    from sparsekit.prune import PruneConfig

    config = PruneConfig(**MAIN_JOB, output_dir=str(out), seed=seed, overwrite=True, progress=False,
                         data_dir=args.data_dir)
    return run_main_job(MainJobConfig(config, DENSE_BASELINE_STEPS, (1,), 128, 1.0),
                        log=lambda m: print(m, file=sys.stderr)).summary


def stats(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def main(argv: list[str] | None = None) -> dict:
    from sparsekit.cli import MAIN_JOB
    from sparsekit.machine import header

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    p.add_argument("--work-dir", type=Path, default=Path("runs/main-job-seeds"))
    p.add_argument("--reuse", nargs="*", default=[], help="SEED=DIR: an existing main-job directory for SEED")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    reuse = {int(k): Path(v) for k, v in (item.split("=", 1) for item in args.reuse)}
    settings = {k: v for k, v in MAIN_JOB.items()}
    rows = []
    for seed in args.seeds:
        run = reuse.get(seed, args.work_dir / f"seed{seed}")
        summary = finished(run, seed, settings)
        if summary is None:
            if seed in reuse:
                raise SystemExit(f"{run} is not a finished main job with seed {seed} and the settings {settings}")
            print(f"running seed {seed} in {run}", file=sys.stderr)
            started = time.time()
            summary = run_seed(seed, run, args)
            summary["timings_s"]["wall_s"] = time.time() - started
        else:
            print(f"reusing {run} (seed {seed})", file=sys.stderr)
        rows.append({"seed": seed, "run": str(run), "dev": summary["dev"],
                     "remaining_weights": summary["remaining_weights"],
                     "total_s": summary["timings_s"]["total_s"]})
    metrics = {k: stats([100 * r["dev"][k] for r in rows]) for k in ("pruned", "compiled_artifact", "dense_baseline")}
    result = {**header(), "command": "python benchmarks/main_job_seeds.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "settings": settings,
              "seeds": args.seeds, "rows": rows, "accuracy": metrics}
    write_result(RESULTS / "main_job_seeds_cpu", result, markdown(result))
    from sparsekit.pipeline import SPREAD_FILE

    SPREAD_FILE.write_text(json.dumps(spread_record(result), indent=2) + "\n")
    return result


def spread_record(result: dict) -> dict:
    """What ``sparsekit.pipeline.measured_spread`` reads (``sparsekit/main_job_spread.json``) from a result."""
    return {"what": "The seed spread of `sparsekit run`'s default configuration, as measured by "
                    "benchmarks/main_job_seeds.py (written by it; tests/test_pipeline_spread.py checks it against the "
                    "committed result). Dev accuracy, %.",
            "source": "benchmarks/results/main_job_seeds_cpu.md", "command": result["command"],
            "date": result["date"], "cpu": result["machine"]["cpu"], "settings": result["settings"],
            "dense_baseline_steps": DENSE_BASELINE_STEPS, "seeds": result["seeds"],
            "pruned": result["accuracy"]["pruned"], "dense_baseline": result["accuracy"]["dense_baseline"]}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# The main job over seeds (SST-2 dev accuracy, %)", "",
             f"Command: `{result['command']}`  ",
             f"Machine: {m['cpu']}, {m['cores']} cores; torch {result['versions']['torch']}  ",
             f"Settings (`sparsekit run`'s defaults): {result['settings']}, dense baseline 300 steps  ",
             f"Date: {result['date']}", "",
             "| | mean ± std (n-1) | per seed (" + ", ".join(str(s) for s in result["seeds"]) + ") |",
             "|---|---:|---|"]
    names = {"pruned": "SMP-S 10%, pruned", "compiled_artifact": "SMP-S 10%, compiled artifact",
             "dense_baseline": "dense fine-tune (300 steps)"}
    for key, label in names.items():
        s = result["accuracy"][key]
        std = "n/a" if s["std"] is None else f"{s['std']:.2f}"
        lines.append(f"| {label} | {s['mean']:.2f} ± {std} | " + ", ".join(f"{v:.2f}" for v in s["values"]) + " |")
    lines += ["", "Wall time per seed: " + ", ".join(f"{r['seed']}: {r['total_s'] / 60:.1f} min" for r in
                                                     result["rows"]) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
