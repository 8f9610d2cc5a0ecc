"""The main job: prune -> export (exact compaction) -> compile -> evaluate -> benchmark, one summary.

``sparsekit run`` and :func:`run_main_job` are the same code path. On the shipped default (real MiniLM,
SST-2, SMP-S at 10% remaining) it takes about 10 minutes on 2 CPU cores and writes::

    <output_dir>/                the pruning run (masked weights, packed masks, recipe, report)
    <output_dir>/artifact/       the compact artifact (sparsekit.load), verified after writing
    <output_dir>/dense-baseline/ a dense fine-tune with a smaller budget (the accuracy reference; optional)
    <output_dir>/summary.json    everything in the final table, with machine and versions

Latency: the masked dense model (what pruning alone gives a user: zeros that run at dense speed) against
the compiled artifact, batch x 128 tokens, median of many runs after warm-up, the two interleaved, both in
this process with the same threads.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sparsekit.data.inputs import random_inputs
from sparsekit.timing import measure_interleaved

#: The measured seed spread of the default main job (written by benchmarks/main_job_seeds.py; see measured_spread).
SPREAD_FILE = Path(__file__).with_name("main_job_spread.json")


def measured_spread(config: dict, dense_baseline_steps: int, path: Path = SPREAD_FILE) -> dict | None:
    """The seed spread measured for a main job whose PruneConfig fields ``config`` hold every setting the record
    was measured with (its ``settings``: all but the seed) and with these dense-baseline steps:
    ``{"seeds", "pruned": {"mean", "std", "values"}, "dense_baseline", "source", ...}`` in accuracy points, or None
    when that configuration was not measured (or the file is unreadable)."""
    try:
        record = json.loads(path.read_text())
        settings = record["settings"]
        same = (bool(settings) and all(config.get(k) == v for k, v in settings.items())
                and record.get("dense_baseline_steps") == dense_baseline_steps)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return record if same else None


@dataclass
class MainJobConfig:
    """Settings of the main job. ``prune`` holds the PruneConfig of the pruning step."""

    prune: object  # sparsekit.prune.PruneConfig
    dense_baseline_steps: int = 300  # 0: no dense reference run
    batches: tuple[int, ...] = (1, 8)
    seq: int = 128
    min_seconds: float = 2.0  # timed seconds per model and batch (in two interleaved rounds)


@dataclass
class MainJobResult:
    output_dir: Path
    summary: dict = field(default_factory=dict)
    stats: list = field(default_factory=list)  # per-matrix sparsity of the pruning run (prune.report.MatrixStats)


def _dir_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compare_latency(models: dict, batch: int, seq: int, vocab: int, min_seconds: float) -> dict:
    """Median latency (ms) and spread of each model on ``batch x seq`` random tokens, interleaved in 2 rounds,
    best round kept; ``speedup`` of every model over the first one."""
    x = random_inputs(batch, seq, vocab, max_id=20000)
    best = measure_interleaved({name: (lambda m=model: m(**x)) for name, model in models.items()}, rounds=2,
                               warmup=3, repeats=10, min_seconds=min_seconds / 2)
    base = next(iter(best.values()))["median"]
    return {name: {"median_ms": 1e3 * r["median"], "p25_ms": 1e3 * r["p25"], "p75_ms": 1e3 * r["p75"],
                   "runs": r["runs"], "speedup": base / r["median"]} for name, r in best.items()}


def run_main_job(config: MainJobConfig, log=print) -> MainJobResult:
    """Run the whole pipeline; returns the summary (also written to ``<output_dir>/summary.json``).

    Raises what the steps raise for bad input (ValueError, FileNotFoundError, FileExistsError).
    """
    from sparsekit.compiler import compile as sparse_compile
    from sparsekit.data import EncodedDataset
    from sparsekit.data.source import DataSource, load_data
    from sparsekit.evaluate import evaluate
    from sparsekit.export.artifact import export, load, verify
    from sparsekit.machine import header
    from sparsekit.prune import PruneConfig, load_pruned, prune

    pc = config.prune
    started = time.perf_counter()
    timings: dict[str, float] = {}

    log(f"[1/5] pruning {pc.model} on {DataSource.from_config(pc).label} with {pc.method} to "
        f"{100 * pc.keep:g}% remaining")
    t0 = time.perf_counter()
    result = prune(pc)
    timings["prune_s"] = time.perf_counter() - t0
    out = Path(result.output_dir)

    log("[2/5] exporting with exact compaction, then verifying the artifact")
    t0 = time.perf_counter()
    exported = export(out, out / "artifact")
    check = verify(out / "artifact")
    timings["export_s"] = time.perf_counter() - t0
    before, after = exported.report.params()

    log("[3/5] compiling the artifact (fused runtime, fastest kernel per matrix measured here, plan saved)")
    t0 = time.perf_counter()
    artifact = load(out / "artifact")
    report = sparse_compile(artifact, tokens=config.seq, verbose=False)
    if report.runtime == "fused":  # serve / evaluate of this artifact on this machine reuse it without timing
        from sparsekit.runtime.plan import save_plan

        save_plan(report, out / "artifact", overwrite=True)
    timings["compile_s"] = time.perf_counter() - t0
    backends: dict[str, int] = {}
    for c in report.layers:
        backends[c.backend] = backends.get(c.backend, 0) + 1

    log("[4/5] evaluating the compiled artifact on the dev set")
    data = load_data(DataSource.from_config(pc), pc.train_samples, pc.eval_samples, pc.seed)
    task = data.spec
    dev_set = EncodedDataset(data.dev, artifact.tokenizer, pc.max_length, task.is_regression)
    compiled_metrics = evaluate(artifact, dev_set, artifact.tokenizer, task)

    log(f"[5/5] latency: masked dense vs compiled artifact, batch {list(config.batches)} x {config.seq} tokens")
    masked = load_pruned(out).model.eval()
    vocab = masked.config.vocab_size
    latency = {f"{b}x{config.seq}": compare_latency({"masked_dense": masked, "compiled": artifact}, b, config.seq,
                                                    vocab, config.min_seconds) for b in config.batches}

    dense = None
    if config.dense_baseline_steps > 0:
        log(f"[+] dense fine-tune for the accuracy reference ({config.dense_baseline_steps} steps)")
        t0 = time.perf_counter()
        dense_cfg = PruneConfig(method="finetune", keep=1.0, task=pc.task, model=pc.model,
                                output_dir=str(out / "dense-baseline"), train_samples=pc.train_samples,
                                steps=config.dense_baseline_steps, batch_size=pc.batch_size,
                                max_length=pc.max_length, seed=pc.seed, data_dir=pc.data_dir, overwrite=True,
                                eval_samples=pc.eval_samples, progress=pc.progress)
        dense = prune(dense_cfg).metrics
        timings["dense_baseline_s"] = time.perf_counter() - t0

    metric = task.main_metric
    summary = {
        **header(),
        "model": pc.model, "task": pc.task, "method": pc.method, "target_keep": pc.keep, "seed": pc.seed,
        "remaining_weights": result.density, "steps": result.steps, "metric": metric,
        "dev": {"pruned": result.metrics.get(metric), "compiled_artifact": compiled_metrics.get(metric),
                "dense_baseline": None if dense is None else dense.get(metric),
                "dense_baseline_steps": config.dense_baseline_steps or None},
        "compaction": {"encoder_params_before": before, "encoder_params_after": after,
                       "heads_removed": sum(len(layer["heads_removed"]) for layer in exported.report.layers),
                       "verify_max_abs_logit_error": check["max_abs_error"]},
        "size_bytes": {"dense_checkpoint": _dir_bytes(out / "model.safetensors") if (out / "model.safetensors").exists()
                       else None, "artifact": _dir_bytes(out / "artifact"),
                       "encoder_matrices_dense_fp32": exported.bytes_dense,
                       "encoder_matrices_stored": exported.bytes_exported},
        "compile": {"tokens": config.seq, "threads": torch.get_num_threads(), "backends": backends,
                    "runtime": report.runtime},
        "latency": latency, "timings_s": {**timings, "total_s": time.perf_counter() - started},
        "seed_spread": measured_spread(pc.to_dict(), config.dense_baseline_steps),
        "paths": {"run": str(out), "artifact": str(out / "artifact"), "report": str(out / "report.json"),
                  "summary": str(out / "summary.json")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return MainJobResult(out, summary, result.stats)


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """The final table of the main job as (what, value) rows."""
    d, c, s = summary["dev"], summary["compaction"], summary["size_bytes"]
    metric = summary["metric"]

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    dense = (f"{pct(d['dense_baseline'])} (dense fine-tune, {d['dense_baseline_steps']} steps)"
             if d["dense_baseline"] is not None else "not run (--dense-baseline-steps 0)")
    rows = [("model / task / method", f"{summary['model']} / {summary['task']} / {summary['method']}"),
            (f"dev {metric}: dense", dense),
            (f"dev {metric}: pruned", f"{pct(d['pruned'])} ({summary['steps']} steps, "
                                      + (f"seed {summary['seed']}: one seed" if "seed" in summary else "one seed")
                                      + ")"),
            (f"dev {metric}: compiled artifact", pct(d["compiled_artifact"]))]
    if "seed_spread" in summary:  # summaries written before it was recorded have none
        rows.append(("seed spread", _spread_text(summary["seed_spread"])))
    rows += [("remaining weights", f"{100 * summary['remaining_weights']:.2f}% of the encoder matrices"),
             ("exact compaction", f"{100 * c['encoder_params_after'] / max(c['encoder_params_before'], 1):.1f}% of "
                                  f"encoder params kept, {c['heads_removed']} heads removed, verify max |Δlogit| "
                                  f"{c['verify_max_abs_logit_error']:.1g}"),
             ("size", f"encoder matrices {s['encoder_matrices_dense_fp32'] / 2**20:.1f} MiB dense fp32 -> "
                      f"{s['encoder_matrices_stored'] / 2**20:.1f} MiB stored; whole artifact "
                      f"{s['artifact'] / 2**20:.1f} MiB"
                      + (f" (dense checkpoint {s['dense_checkpoint'] / 2**20:.1f} MiB)"
                         if s["dense_checkpoint"] else "")),
             (f"compiled matrices ({summary['compile'].get('runtime', 'modules')} runtime)",
              ", ".join(f"{k} {n}" for k, n in summary["compile"]["backends"].items())
              + f" ({summary['compile']['threads']} threads)")]
    for shape, lat in summary["latency"].items():
        rows.append((f"latency {shape}", f"masked dense {lat['masked_dense']['median_ms']:.1f} ms -> compiled "
                                         f"{lat['compiled']['median_ms']:.1f} ms: {lat['compiled']['speedup']:.2f}x"))
    t = summary["timings_s"]
    rows.append(("time", f"{t['total_s']:.0f} s (prune {t['prune_s']:.0f} s"
                         + (f", dense baseline {t['dense_baseline_s']:.0f} s" if "dense_baseline_s" in t else "")
                         + ")"))
    p = summary["paths"]
    rows += [("artifact", p["artifact"]), ("report", f"{p['report']}, {p['summary']}")]
    return rows


def _spread_text(spread: dict | None) -> str:
    """The summary's seed-spread row: the measured spread of this configuration, or that none was measured."""
    if not spread:
        return ("not measured for these settings: differences of about a point can be seed noise (run again with "
                "--seed to see)")
    seeds = ", ".join(map(str, spread["seeds"]))
    p, d = spread["pruned"], spread["dense_baseline"]
    # The file name only: a path does not wrap in the terminal table (the JSON summary keeps the whole record).
    return (f"seeds {seeds} ({Path(spread['source']).name}): pruned {p['mean']:.2f} ± {p['std']:.2f}, "
            f"dense {d['mean']:.2f} ± {d['std']:.2f}; differences inside that are seed noise")


def summary_markdown(summary: dict) -> str:
    """The summary table as markdown (for benchmarks/results and the README)."""
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary_rows(summary)]
    return "\n".join(lines) + "\n"


__all__ = ["MainJobConfig", "MainJobResult", "compare_latency", "run_main_job", "summary_markdown", "summary_rows"]
