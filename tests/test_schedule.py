"""Cubic keep schedule and lambda ramp (spec §2.2, §3.4-3.5, §6.1 item 4)."""
import pytest

from sparsekit.prune.schedule import CubicSchedule, cubic_ramp


def test_pure_cubic_endpoints_midpoint_and_monotone():
    s = CubicSchedule(total_steps=1000, final=0.1)
    assert s(0) == 1.0
    assert s(1000) == pytest.approx(0.1)
    assert s(500) == pytest.approx(0.1 + 0.9 / 8)
    values = [s(t) for t in range(0, 1001)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_warmup_and_cooldown_are_flat():
    s = CubicSchedule(total_steps=100, final=0.03, warmup_steps=10, cooldown_steps=20)
    assert all(s(t) == 1.0 for t in range(0, 11))
    assert all(s(t) == 0.03 for t in range(80, 101))
    assert 0.03 < s(45) < 1.0


def test_from_fractions_and_threshold_direction():
    s = CubicSchedule.from_fractions(200, final=0.1, warmup=0.1, cooldown=0.25)
    assert (s.warmup_steps, s.cooldown_steps) == (20, 50)
    tau = CubicSchedule.from_fractions(200, final=0.1, initial=0.0)
    assert tau(0) == 0.0 and tau(200) == pytest.approx(0.1) and tau(100) < tau(150)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="exceed"):
        CubicSchedule(total_steps=10, final=0.1, warmup_steps=6, cooldown_steps=6)
    with pytest.raises(ValueError, match="total_steps"):
        CubicSchedule(total_steps=0, final=0.1)
    with pytest.raises(ValueError, match="fraction"):
        CubicSchedule.from_fractions(10, 0.1, warmup=1.5)


def test_smp_lambda_ramp():
    assert cubic_ramp(0, 1000, 400.0) == 0.0
    assert cubic_ramp(1000, 1000, 400.0) == 400.0
    assert cubic_ramp(500, 1000, 400.0) == pytest.approx(400 * (1 - 0.5**3))
    assert cubic_ramp(5000, 1000, 400.0) == 400.0
