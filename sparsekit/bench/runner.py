"""``run_bench``: time every variant of every model over the batch x sequence x threads sweep, write the results.

Per config (one model, batch, sequence length, thread count): ``sparsekit.compile`` is run for
``tokens = batch x seq`` (its per-layer measurements are kept: the layer-level view); every variant gets
one untimed first call (compile time for torch.compile, and the check of its logits against dense), then
it is timed with :func:`sparsekit.timing.measure` in ``rounds`` interleaved rounds; the round with the
lowest median is reported with its quartiles, and ``repeats`` / ``min_seconds`` are split over the rounds
(at least 3 runs per round).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sparsekit.bench import onnx, results, variants
from sparsekit.bench.config import VARIANT_DESCRIPTIONS, VARIANTS, BenchConfig
from sparsekit.bench.inputs import task_inputs
from sparsekit.bench.subjects import Subject, check_model, load_subjects
from sparsekit.export.heads import head_output
from sparsekit.timing import measure

Log = Callable[[str], None]


@dataclass
class BenchResult:
    """``data``: the result document (schema in results.py); ``paths``: the files written (json, csv, png)."""

    data: dict
    paths: dict[str, Path]


def _timed_first_call(variant: variants.Variant, inputs: variants.Inputs) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.inference_mode():
        out = variant.run(inputs)
    return out, time.perf_counter() - start


def _not_measured(variant: variants.Variant) -> dict:
    return {"status": variant.status, "reason": variant.reason, "description": VARIANT_DESCRIPTIONS[variant.name]}


def measure_variants(found: dict[str, variants.Variant], inputs: variants.Inputs, batch: int, seq: int,
                     config: BenchConfig) -> dict[str, dict]:
    """Stats of every variant on ``inputs`` (``found`` must hold a working "dense"); a variant that raises is
    recorded as failed. Times in ms; ``speedup`` = dense median / this median."""
    stats: dict[str, dict] = {}
    ready: dict[str, tuple[variants.Variant, float, float]] = {}
    ref, _ = _timed_first_call(found["dense"], inputs)
    for name in VARIANTS:
        variant = found.get(name)
        if variant is None:
            continue
        if variant.status != "ok":
            stats[name] = _not_measured(variant)
            continue
        try:
            out, first = _timed_first_call(variant, inputs)
        except Exception as exc:  # e.g. torch.compile without a working C++ compiler: a result, not a crash
            stats[name] = {**_not_measured(variant), "status": "failed", "reason": variants.describe_error(exc)}
            continue
        ready[name] = (variant, first, float((out.float() - ref.float()).abs().max()))
    # At least 3 runs per round: measure()'s quartiles (statistics.quantiles, exclusive method) extrapolate
    # beyond the data from 2 samples.
    per_round = max(3, math.ceil(config.repeats / config.rounds))
    rounds: dict[str, list[dict]] = {name: [] for name in ready}
    for _ in range(config.rounds):
        for name, (variant, _, _) in list(ready.items()):
            try:
                rounds[name].append(measure(lambda v=variant: v.run(inputs), config.warmup, per_round,
                                            config.min_seconds / config.rounds))
            except Exception as exc:
                stats[name] = {**_not_measured(variant), "status": "failed", "reason": variants.describe_error(exc)}
                del ready[name]
    for name, (variant, first, diff) in ready.items():
        best = min(rounds[name], key=lambda r: r["median"])
        median = best["median"]
        stats[name] = {
            "status": "ok", "description": VARIANT_DESCRIPTIONS[name],
            "median_ms": 1e3 * median, "p25_ms": 1e3 * best["p25"], "p75_ms": 1e3 * best["p75"],
            "min_ms": 1e3 * min(r["min"] for r in rounds[name]), "mean_ms": 1e3 * best["mean"],
            "runs": sum(r["runs"] for r in rounds[name]),
            "round_medians_ms": [1e3 * r["median"] for r in rounds[name]],
            "steal": max((r["steal"] for r in rounds[name] if r["steal"] is not None), default=None),
            "seq_per_s": batch / median, "tokens_per_s": batch * seq / median,
            "max_abs_diff": diff, "setup_s": variant.setup_s, "first_call_s": first, "info": variant.info,
        }
    if "dense" in ready:
        dense_ms = stats["dense"]["median_ms"]
        for s in stats.values():
            if s["status"] == "ok":
                s["speedup"] = dense_ms / s["median_ms"]
    return {name: stats[name] for name in VARIANTS if name in stats}


def _compile_json(variant: variants.Variant, report) -> dict:
    data = report.to_json()
    return {"tokens": data["tokens"], "threads": data["threads"], "setup_s": variant.setup_s,
            "backends_chosen": variant.info["backends_chosen"], "layers": data["layers"]}


def _check_seq(subject: Subject, seq: list[int]) -> None:
    too_long = [s for s in seq if s > subject.max_positions]
    if too_long:
        raise ValueError(f"--seq {too_long} exceeds {subject.id}'s max_position_embeddings "
                         f"({subject.max_positions})")


def _static_variants(subject: Subject, config: BenchConfig) -> tuple[dict[str, variants.Variant], onnx.OrtModel | None]:
    """The variants that do not depend on the config (built once per model), and the OrtModel or None."""
    found = {"dense": variants.dense(subject.dense),
             "torch-compile": variants.torch_compile(subject.dense, config.torch_compile),
             "torch-sparse": variants.torch_sparse(subject.dense)}
    if subject.kind == "artifact":
        found["artifact-eager"] = variants.artifact_eager(subject.sparse)
    ort_model, missing = onnx.build(subject.dense, subject.vocab_size)
    if missing is not None:
        found["onnxruntime"] = missing
    return found, ort_model


def bench_subject(subject: Subject, config: BenchConfig, log: Log) -> list[dict]:
    """The config entries (results.py schema) of one model over the whole sweep."""
    _check_seq(subject, config.seq)
    entries = []
    found, ort_model = ({}, None) if config.layers else _static_variants(subject, config)
    n, i = len(config.threads) * len(config.batch) * len(config.seq), 0
    try:
        for threads in config.threads:
            torch.set_num_threads(threads)
            for batch in config.batch:
                for seq in config.seq:
                    i += 1
                    log(f"[{i}/{n}] {subject.id}: batch {batch}, seq {seq}, {threads} threads")
                    sk, report = variants.sparsekit_compiled(subject.sparse, batch * seq, config.compile_repeats)
                    entry = {"id": results.config_id(subject.id, batch, seq, threads), "model": subject.id,
                             "sparsity": subject.sparsity, "density": subject.density, "batch": batch, "seq": seq,
                             "threads": threads, "tokens": batch * seq, "compile": _compile_json(sk, report)}
                    if not config.layers:
                        current = dict(found, sparsekit=sk)
                        current["sparsekit-int8"] = (
                            variants.sparsekit_compiled(subject.sparse, batch * seq, config.compile_repeats,
                                                        precision="int8")[0] if config.int8 else
                            variants.Variant("sparsekit-int8", "skipped", reason="opt-in: pass --int8"))
                        if ort_model is not None:
                            current["onnxruntime"] = ort_model.variant(threads)
                        inputs = task_inputs(batch, seq, subject.vocab_size, subject.task_type, config.seed,
                                             subject.type_vocab_size)
                        entry["variants"] = measure_variants(current, inputs, batch, seq, config)
                    entries.append(entry)
    finally:
        if ort_model is not None:
            ort_model.close()
    return entries


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine disturbs timings), None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


@torch.no_grad()
def run_bench(config: BenchConfig, command: list[str] | None = None, log: Log | None = None) -> BenchResult:
    """Run the benchmark ``config`` describes and write ``bench.json``, ``bench.csv`` and ``bench.png`` into
    ``config.output_dir``. Fails before any measurement (ValueError / FileNotFoundError / FileExistsError)
    on bad input or when an output file exists without ``overwrite``."""
    config = config.validated()
    log = log or (lambda _msg: None)
    paths = results.output_paths(config.output_dir)
    results.check_free(paths, config.overwrite)
    check_model(config.model, config.sparsity)
    old_threads = torch.get_num_threads()
    models, entries = [], []
    started, load_start = time.perf_counter(), _load_average()
    try:
        for subject in load_subjects(config.model, config.sparsity, config.seed, config.task_type):
            models.append(subject.to_json())
            if subject.kind == "artifact":
                inputs = task_inputs(2, min(16, subject.max_positions), subject.vocab_size, subject.task_type,
                                     config.seed, subject.type_vocab_size)
                with torch.inference_mode():
                    diff = (head_output(subject.dense(**inputs), subject.task_type)
                            - head_output(subject.sparse(**inputs), subject.task_type)).abs().max()
                models[-1]["dense_reference"]["max_abs_diff"] = float(diff)
            entries += bench_subject(subject, config, log)
            del subject
    finally:
        torch.set_num_threads(old_threads)
    data = results.document(config, models, entries, command, time.perf_counter() - started)
    data["load_average"] = {"start": load_start, "end": _load_average()}
    results.write(data, paths)
    return BenchResult(data, paths)
