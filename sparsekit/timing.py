"""Latency measurement with warm-up and robust statistics (median, quartiles) over many runs."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def measure(fn: Callable[[], object], warmup: int = 5, repeats: int = 30, min_seconds: float = 0.0) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``repeats`` timed calls (and at least
    ``min_seconds`` in total). Returns seconds: ``median``, ``p25``, ``p75``, ``min``, ``mean`` and ``runs``.

    Once CUDA is initialised in this process, the device is synchronised before each clock reading, so
    asynchronous GPU work is timed to its end (CPU-only work then pays a few microseconds per call).
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else _no_sync
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times: list[float] = []
        sync()
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median": statistics.median(times), "p25": q[0], "p75": q[2], "min": min(times),
            "mean": statistics.fmean(times), "runs": len(times)}


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


def _no_sync() -> None:
    """CPU work is synchronous: nothing to wait for."""
