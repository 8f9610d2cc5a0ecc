"""sparsekit.timing: statistics of measure() and the interleaving of measure_interleaved()."""
import time
from pathlib import Path

from sparsekit.timing import measure, measure_interleaved


def test_measure_statistics_are_ordered():
    r = measure(lambda: time.sleep(0.001), warmup=1, repeats=5)
    assert r["runs"] == 5
    assert r["min"] <= r["p25"] <= r["median"] <= r["p75"]
    assert r["median"] >= 0.001


def test_steal_share_of_an_interval():
    from sparsekit.machine import cpu_time_counters, steal_share

    assert steal_share((10, 1000), (30, 1200)) == 0.1
    assert steal_share((10, 1000), (10, 1000)) is None  # too short to tell
    assert steal_share((10, 1000), (12, 1049)) is None and steal_share((10, 1000), (12, 1050)) == 0.04
    assert steal_share(None, (10, 1000)) is None
    now = cpu_time_counters()
    if Path("/proc/stat").exists():
        steal, total = now
        assert 0 <= steal <= total
    else:
        assert now is None
    r = measure(lambda: time.sleep(0.001), warmup=0, repeats=3)
    assert r["steal"] is None or 0 <= r["steal"] <= 1


def test_measure_interleaved_alternates_and_keeps_the_best_round():
    calls = []
    state = {"slow": True}

    def a():
        calls.append("a")
        time.sleep(0.004 if state["slow"] else 0.001)

    def b():
        calls.append("b")
        state["slow"] = False  # the machine gets quieter after b's first round

    best = measure_interleaved({"a": a, "b": b}, rounds=2, warmup=0, repeats=3)
    assert calls == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert best["a"]["median"] < 0.003  # the quiet second round is kept
    assert set(best) == {"a", "b"}


def test_measure_cuda_times_every_call_of_the_batch():
    import pytest
    import torch

    from sparsekit.timing import measure_cuda

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = torch.randn(1024, 1024, device="cuda")
    calls = [lambda: x @ x, lambda: x @ x]
    eager = measure_cuda(calls, repeats=5)
    graph = measure_cuda(calls, repeats=5, graph=True)
    assert eager > 0 and graph > 0
