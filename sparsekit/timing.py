"""Latency measurement with warm-up and robust statistics (median, quartiles) over many runs."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from sparsekit.machine import cpu_time_counters, steal_share


def measure(fn: Callable[[], object], warmup: int = 5, repeats: int = 30, min_seconds: float = 0.0) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``repeats`` timed calls (and at least
    ``min_seconds`` in total). Returns seconds: ``median``, ``p25``, ``p75``, ``min``, ``mean`` and ``runs``; and
    ``steal``: the share of the machine's CPU time that the hypervisor took during the timed calls
    (:func:`sparsekit.machine.steal_share`; None off Linux) -- on a shared virtual machine this is what makes the
    same measurement drift between runs.

    Once CUDA is initialised in this process, the device is synchronised before each clock reading, so
    asynchronous GPU work is timed to its end (CPU-only work then pays a few microseconds per call).
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else _no_sync
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times: list[float] = []
        sync()
        counters = cpu_time_counters()
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median": statistics.median(times), "p25": q[0], "p75": q[2], "min": min(times),
            "mean": statistics.fmean(times), "runs": len(times), "steal": steal_share(counters, cpu_time_counters())}


def measure_interleaved(fns: dict[str, Callable[[], object]], rounds: int = 2, **kw) -> dict[str, dict]:
    """:func:`measure` every callable ``rounds`` times, alternating between them so that a drift of the machine
    affects all alike, and keep each one's least disturbed round (lowest median). ``kw`` goes to measure."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            r = measure(fn, **kw)
            if name not in best or r["median"] < best[name]["median"]:
                best[name] = r
    return best


def measure_cuda(calls: list[Callable[[], object]], repeats: int, graph: bool = False, warmup: int = 1) -> float:
    """Median seconds per call of ``calls`` on the current CUDA device, timed with CUDA events.

    Each timed batch runs every callable once (e.g. one per weight copy, rotated so weights do not stay in L2);
    ``graph``: the batch is captured once in a CUDA graph and replayed. ``warmup`` untimed batches first
    (autotuning, compilation, lazy initialisation).
    """
    def batch():
        for fn in calls:
            fn()

    for _ in range(warmup):
        batch()
    torch.cuda.synchronize()
    run = batch
    if graph:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            batch()
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            batch()
        run = g.replay
    run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / len(calls))
    return statistics.median(times)


def _no_sync() -> None:
    """CPU work is synchronous: nothing to wait for."""
