"""Cubic keep-ratio schedule with warm-up / cool-down, and the regulariser's lambda ramp.

Spec: methods-smp-movement.md §2.2 (movement, with warm-up and cool-down) and §3.4-3.5 (SMP:
no warm-up, cubic until step N, lambda ramped cubically over the whole run).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CubicSchedule:
    """Keep ratio v_t over ``total_steps`` optimisation steps.

    - ``t <= warmup_steps``: v_t = initial (1.0 for pruning: nothing is pruned yet);
    - then cubic decay ``v_f + (v_i - v_f) * (1 - (t - w) / (T - w - c))**3``;
    - the last ``cooldown_steps`` steps: v_t = final (the mask count is fixed, which weights are kept can
      still change).

    The same shape schedules soft movement's sigmoid threshold (initial 0, final 0.1).
    """

    total_steps: int
    final: float
    initial: float = 1.0
    warmup_steps: int = 0
    cooldown_steps: int = 0

    def __post_init__(self) -> None:
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {self.total_steps}")
        if self.warmup_steps < 0 or self.cooldown_steps < 0:
            raise ValueError("warm-up and cool-down steps must be >= 0")
        if self.warmup_steps + self.cooldown_steps > self.total_steps:
            raise ValueError(
                f"warm-up ({self.warmup_steps}) + cool-down ({self.cooldown_steps}) steps exceed the "
                f"{self.total_steps} total steps; shorten them or train longer"
            )

    def __call__(self, step: int) -> float:
        w, c, T = self.warmup_steps, self.cooldown_steps, self.total_steps
        if step <= w:
            return self.initial
        span = T - w - c
        if span <= 0 or step > T - c:
            return self.final
        frac = 1.0 - (step - w) / span
        return self.final + (self.initial - self.final) * frac**3

    @classmethod
    def from_fractions(cls, total_steps: int, final: float, warmup: float = 0.0, cooldown: float = 0.0,
                       initial: float = 1.0) -> "CubicSchedule":
        """Schedule whose warm-up / cool-down are given as fractions of the total steps."""
        for name, f in (("warm-up", warmup), ("cool-down", cooldown)):
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"{name} fraction must be in [0, 1], got {f}")
        return cls(total_steps, final, initial, round(warmup * total_steps), round(cooldown * total_steps))


def cubic_ramp(step: int, ramp_steps: int, final: float) -> float:
    """``final * (1 - (1 - t/K)**3)`` for t < K, then ``final`` (SMP code's lambda ramp, spec §3.4)."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return final
    return final * (1.0 - (1.0 - step / ramp_steps) ** 3)
