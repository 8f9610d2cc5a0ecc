"""Adapting-by-Pruning (Gao, Colombo & Wang 2021; spec methods-abp-cap-lpaf.md §1).

The pre-trained weights stay frozen and bit-identical; one real logit theta per prunable weight is
learned together with the task head. The mask is ``sigmoid(t_l * theta)`` in the forward pass (t_l =
1e5: effectively ``1[theta > 0]``) with a small-temperature surrogate gradient (binarizers.abp_mask).
After every optimizer step a constant drift gamma is subtracted from every theta (Eq. 7), and the run
stops as soon as the fraction of non-positive theta reaches the target sparsity ``1 - keep``.

sparsekit choices (not from the paper): theta is trained with the engine's AdamW rather than SGD, at the
paper's selected maximum LR for theta, alpha = 2e-5. AdamW's step is about the LR whatever the gradient's size,
so the LR sets how far theta (which starts at ~0.01) moves per step: at 5e-4 (sparsekit's default before) 1.6% of
theta were <= 0 after 50 steps and 4.6% after 100 while the drift had moved them by only 0.0014 / 0.0028 (less
than any theta's start), and the 600-step SST-2 run at 10% ended at the majority class (50.9% dev accuracy,
benchmarks/results/accuracy_sst2_issue7_cpu.md);
at 2e-5 no theta reached 0 before step ~200, the drift then pruned in the order the training had set, and the
same run reached 75.3% (seed 42; benchmarks/results/abp_lr_sst2_cpu.md). Further:
gamma defaults to ``init_mean / (drift_fraction * total_steps)`` so a CPU-sized run reaches the target
(the paper tunes gamma by grid, 2e-7 at ~25k SGD steps); the paper's "max" learning rate / drift
implies an unstated schedule, so ``abp_gamma_schedule="follow-lr"`` (gamma scaled like the learning rate)
is offered as an UNVERIFIED option next to the default ``"constant"``. Only the encoder's six matrix
types are masked (the paper also masks the embeddings), so densities compare with the other methods'.
If a run ends before the target is reached, the remaining drift is applied at once: theta is shifted
uniformly to the global threshold that leaves ``keep`` of the weights, and the report says so. When the
last step's drift overshoots the target (theta crowded near 0), the drift is stopped at the exact
crossing point instead (a uniform shift back up), so the density is exactly ``keep`` in both cases.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsekit.prune.binarizers import kept_count
from sparsekit.prune.extensions import Extension, TrainContext
from sparsekit.prune.options import METHODS, option

ABP_GAMMA_SCHEDULES = ("constant", "follow-lr")


@dataclass
class AbPOptions:
    """The abp_* settings of a run (method abp); PruneConfig inherits them as flat fields."""

    abp_gamma: float | None = option(None, "AbP drift per step [init mean / (0.6 * steps)].", panel=METHODS)
    abp_gamma_schedule: str = option("constant", "AbP drift: constant | follow-lr (UNVERIFIED).", panel=METHODS)
    abp_t_forward: float = option(1e5, "AbP forward temperature t_l.", panel=METHODS)
    abp_t_backward: float = option(1.0, "AbP backward (surrogate) temperature t_s.", panel=METHODS)


def init_logits(scores: list[torch.Tensor], mean: float, std: float, seed: int) -> None:
    """Fill each theta ``[out, in]`` with N(mean, std), clamped to >= mean/10 so every mask starts at 1.

    The paper writes N(0.01, variance 0.001), which would make ~38% of theta negative at step 0; it also
    says every mask starts at 1 and negative entries harm. sparsekit reads 0.001 as the standard deviation.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in scores:
            values = torch.randn(s.shape, generator=g) * std + mean
            s.copy_(values.clamp_min(mean / 10).to(s.device, s.dtype))


def negative_fraction(scores: list[torch.Tensor]) -> float:
    """Fraction of theta <= 0 over all tensors (the pruned fraction of the hard mask)."""
    with torch.no_grad():
        pruned = sum(int((s <= 0).sum()) for s in scores)
        total = sum(s.numel() for s in scores)
    return pruned / max(total, 1)


def shift_to_keep(scores: list[torch.Tensor], keep: float) -> float:
    """The uniform shift c such that exactly ``kept_count(keep, n)`` of all ``theta - c`` are > 0.

    Returns 0.0 when that count already holds (or when it cannot be reached because of ties).
    """
    with torch.no_grad():
        flat = torch.cat([s.detach().reshape(-1) for s in scores])
        n = flat.numel()
        kept = kept_count(keep, n)
        if kept >= n or int((flat > 0).sum()) == kept:
            return 0.0
        return float(flat.kthvalue(n - kept).values) if kept < n else 0.0


class AbPExtension(Extension):
    """Drift, stop criterion, recovery tracking and the final-threshold fallback of AbP."""

    name = "abp"

    def __init__(self, gamma: float | None, schedule: str, t_forward: float, t_backward: float,
                 init_mean: float = 0.01, init_std: float = 0.001, drift_fraction: float = 0.6) -> None:
        if schedule not in ABP_GAMMA_SCHEDULES:
            raise ValueError(f"unknown abp_gamma_schedule {schedule!r}; choose one of {', '.join(ABP_GAMMA_SCHEDULES)}")
        if gamma is not None and gamma < 0:
            raise ValueError(f"abp_gamma must be >= 0, got {gamma}")
        if t_forward <= 0 or t_backward <= 0:
            raise ValueError(f"AbP temperatures must be > 0, got t_l={t_forward}, t_s={t_backward}")
        self.gamma, self.schedule = gamma, schedule
        self.t_forward, self.t_backward = t_forward, t_backward
        self.init_mean, self.init_std, self.drift_fraction = init_mean, init_std, drift_fraction
        self.stopped_at: int | None = None
        self.fallback_shift: float | None = None
        self.stop_trim_shift: float | None = None
        self.ever_pruned: list[torch.Tensor] = []
        self.history: list[tuple[int, float]] = []

    @classmethod
    def from_options(cls, options: AbPOptions) -> "AbPExtension":
        """The extension for a run's abp_* settings (a PruneConfig); ValueError for bad values."""
        return cls(options.abp_gamma, options.abp_gamma_schedule, options.abp_t_forward, options.abp_t_backward)

    def setup(self, ctx: TrainContext) -> None:
        if ctx.pruner is None or ctx.pruner.masking != "abp":
            raise ValueError("AbP needs the abp masking (method abp)")
        scores = ctx.pruner.score_parameters()
        init_logits(scores, self.init_mean, self.init_std, ctx.config.seed)
        for m in ctx.pruner.modules.values():
            m.abp_temperatures = (self.t_forward, self.t_backward)
        if self.gamma is None:
            self.gamma = self.init_mean / (self.drift_fraction * ctx.total)
        self.ever_pruned = [torch.zeros(s.shape, dtype=torch.bool, device=s.device) for s in scores]

    def _gamma_at(self, ctx: TrainContext) -> float:
        if self.schedule == "constant" or ctx.scheduler is None:
            return self.gamma
        group = next(g for g in ctx.optimizer.param_groups if g.get("name") == "scores")
        base = group.get("initial_lr", group["lr"])
        return self.gamma * (group["lr"] / base if base else 0.0)

    def after_step(self, ctx: TrainContext, step: int) -> bool:
        scores = ctx.pruner.score_parameters()
        gamma = self._gamma_at(ctx)
        with torch.no_grad():
            for s, ever in zip(scores, self.ever_pruned):
                s.sub_(gamma)  # Eq. 7: theta <- theta - alpha g - gamma (the optimizer did the first part)
                ever |= s <= 0
        frac = negative_fraction(scores)
        if step % 50 == 0 or step == ctx.total:
            self.history.append((step, frac))
        if frac >= 1.0 - ctx.config.keep:
            self.stopped_at = step
            self.history.append((step, frac))
            return True
        return False

    def before_finalize(self, ctx: TrainContext) -> None:
        scores = ctx.pruner.score_parameters()
        shift = shift_to_keep(scores, ctx.config.keep)
        if shift == 0.0:
            return
        # Stopped: the last step's drift crossed the target; stop it at the exact crossing point (a uniform
        # shift of theta up). Not reached: apply the rest of the drift at once (a uniform shift down).
        with torch.no_grad():
            for s, ever in zip(scores, self.ever_pruned):
                s.sub_(shift)
                ever |= s <= 0
        if self.stopped_at is None:
            self.fallback_shift = shift
        else:
            self.stop_trim_shift = shift

    def record(self) -> dict:
        return {"gamma": self.gamma, "gamma_schedule": self.schedule, "t_forward": self.t_forward,
                "t_backward": self.t_backward, "init": {"mean": self.init_mean, "std": self.init_std},
                "stopped_at_step": self.stopped_at, "reached_target": self.stopped_at is not None,
                "fallback_shift": self.fallback_shift,
                "stop_trim_shift": self.stop_trim_shift, "negative_fraction_history": self.history}

    def report(self, ctx: TrainContext, masks: dict[str, torch.Tensor]) -> dict:
        kept = sum(int(m.sum()) for m in masks.values())
        pairs = zip(masks.values(), self.ever_pruned)
        recovered = sum(int((mask.to(ever.device) & ever).sum()) for mask, ever in pairs)
        return {"kept": kept, "recovered": recovered, "recovered_fraction_of_kept": recovered / kept if kept else 0.0,
                "stopped_at_step": self.stopped_at}

    def state_dict(self) -> dict:
        return {"gamma": self.gamma, "ever_pruned": [e.cpu() for e in self.ever_pruned], "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.gamma = state["gamma"]
        self.history = [tuple(h) for h in state["history"]]
        self.ever_pruned = [e.to(old.device) for e, old in zip(state["ever_pruned"], self.ever_pruned)]
