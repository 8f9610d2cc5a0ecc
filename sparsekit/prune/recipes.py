"""Pruning methods as recipes: which masking, what trains, learning rates, regulariser, schedule.

All recipes share one training loop (train.py). Defaults follow methods-smp-movement.md; values a
CPU-sized run needs differently (few steps) are noted where they differ from the papers.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """How one method trains.

    masking: Pruner masking function (None = dense fine-tuning, nothing masked).
    train_encoder: whether pre-trained encoder weights train (False for SMP: only scores + new head).
    weight_lr / score_lr / head_lr: AdamW learning rates of the three parameter groups.
    regularizer_lambda: final lambda of the sigmoid (or L0) score regulariser; 0 disables it.
    lambda_ramp: "whole-run" (SMP code: lambda_t = lambda_f (1 - (1 - t/T)^3)), "follow-threshold"
        (movement paper: lambda_t = lambda_f * tau_t / tau_f), "constant", or "adaptive" (sparsekit's soft movement:
        lambda is steered, bounded, so the density follows the cubic keep schedule, and in the cool-down tau is the
        value that leaves the target fraction, so the run ends on it; see train.py).
    score_init: initial score value, or "magnitude" (scores start as |W| / mean|W| of their matrix).
    warmup / cooldown: fractions of the run with keep = 1 at the start / keep = v_f at the end.
    blocks: whether ``--block`` applies (blocks.py): the mask is a TopK or a threshold of per-weight scores or
        magnitudes, which become one score per block. Not for L0 / AbP (their masks are sampled or drift per
        weight), LPAF (it factorises the pruned matrices) or dense fine-tuning.
    """

    name: str
    description: str
    masking: str | None
    train_encoder: bool
    weight_lr: float
    score_lr: float
    head_lr: float
    regularizer_lambda: float = 0.0
    lambda_ramp: str = "whole-run"
    score_init: float | str = 0.0
    warmup: float = 0.0
    cooldown: float = 0.3
    soft_threshold: float = 0.1  # final tau of sigmoid masking
    extension: str | None = None  # "abp", "lpaf" or "structured": the method's training-loop extension
    blocks: bool = False


RECIPES: dict[str, Recipe] = {
    "smp-s": Recipe(
        "smp-s", "Static Model Pruning, SMP-S: weights frozen, scores learn the mask; per-layer budgets "
        "reallocated by score mass (Eq. 4)",
        masking="smp-s", train_encoder=False, weight_lr=0.0, score_lr=2e-2, head_lr=1e-3,
        regularizer_lambda=400.0, lambda_ramp="whole-run", blocks=True),
    "smp-l": Recipe(
        "smp-l", "Static Model Pruning, SMP-L: weights frozen, local TopK of learned scores in every matrix",
        masking="local", train_encoder=False, weight_lr=0.0, score_lr=2e-2, head_lr=1e-3,
        regularizer_lambda=400.0, lambda_ramp="whole-run", blocks=True),
    "movement": Recipe(
        "movement", "Hard movement pruning: local TopK of scores, weights fine-tuned; scores start at |W| / mean|W| "
        "(the paper's constant 0 is --score-init 0)",
        masking="local", train_encoder=True, weight_lr=5e-5, score_lr=1e-2, head_lr=5e-5,
        warmup=0.1, cooldown=0.2, score_init="magnitude", blocks=True),
    "soft-movement": Recipe(
        "soft-movement", "Soft movement pruning: sigmoid(S) > tau with the sigmoid regulariser, weights "
        "fine-tuned; lambda adapts so the density follows the keep schedule and tau lands it on the target "
        "in the cool-down",
        masking="sigmoid", train_encoder=True, weight_lr=5e-5, score_lr=1e-2, head_lr=5e-5,
        regularizer_lambda=400.0, lambda_ramp="adaptive", warmup=0.1, cooldown=0.2, blocks=True),
    "magnitude": Recipe(
        "magnitude", "Magnitude pruning with the cubic (AGP) schedule: TopK of |W|, weights fine-tuned",
        masking="magnitude", train_encoder=True, weight_lr=5e-5, score_lr=0.0, head_lr=5e-5,
        warmup=0.1, cooldown=0.2, blocks=True),
    "l0": Recipe(
        "l0", "L0 regularisation with hard-concrete masks (continuous), weights fine-tuned",
        masking="l0", train_encoder=True, weight_lr=5e-5, score_lr=0.1, head_lr=5e-5,
        regularizer_lambda=125.0, lambda_ramp="constant", score_init=2.197, warmup=0.0, cooldown=0.0),
    "smp-struct": Recipe(
        "smp-struct", "Structure-aware SMP: SMP-S whose scores are coupled within FFN neurons, V/O and Q/K "
        "dimensions and heads, so masks empty whole rows / columns / heads that exact compaction removes",
        masking="smp-s", train_encoder=False, weight_lr=0.0, score_lr=2e-2, head_lr=1e-3,
        regularizer_lambda=400.0, lambda_ramp="whole-run", extension="structured", blocks=True),
    "abp": Recipe(
        "abp", "Adapting-by-Pruning: weights frozen, mask = 1[theta > 0] learned with a sigmoid surrogate "
        "gradient and a constant drift; stops when the target sparsity is reached",
        masking="abp", train_encoder=False, weight_lr=0.0, score_lr=2e-5, head_lr=1e-3, cooldown=0.0,
        extension="abp"),
    "lpaf": Recipe(
        "lpaf", "LPAF: first-order (movement) pruning, then each pruned matrix factorised into u @ v by a "
        "sparsity-aware SVD under the same parameter budget and fine-tuned with mixed-rank fine-tuning; scores "
        "start at |W| / mean|W| as hard movement's",
        masking="local", train_encoder=True, weight_lr=5e-5, score_lr=1e-2, head_lr=5e-5,
        regularizer_lambda=400.0, lambda_ramp="whole-run", score_init="magnitude", warmup=0.1, cooldown=0.5,
        extension="lpaf"),
    "finetune": Recipe(
        "finetune", "Dense fine-tuning (no pruning): the teacher and the dense baseline",
        masking=None, train_encoder=True, weight_lr=5e-5, score_lr=0.0, head_lr=5e-5, cooldown=0.0),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (see RECIPES); ValueError listing the known ones otherwise."""
    key = name.lower().replace("_", "-")
    if key not in RECIPES:
        raise ValueError(f"unknown pruning method {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[key]
