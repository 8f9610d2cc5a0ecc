"""Mask functions ("binarizers") that turn per-weight scores into masks.

All functions take and return tensors shaped like the weight they mask (``[out, in]``, float32), or, for
block pruning (blocks.py), like its block grid ``[out/R, ceil(in/C)]`` (one score per block).
Binary masks are returned as float tensors of 0.0 / 1.0 so they can multiply the weight directly.

The straight-through estimator (STE, spec methods-smp-movement.md §1.2) is applied where a
binarizer has no useful derivative: the backward pass treats the mask function as the identity,
so ``dL/dS = dL/dM = (dL/dW') * W`` for every entry, pruned ones included.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from sparsekit.prune.blocks import UNSTRUCTURED, Block

# Hard-concrete stretch constants and temperature (Louizos et al.; movement-pruning code).
L0_LEFT, L0_RIGHT, L0_BETA = -0.1, 1.1, 2.0 / 3.0


def kept_count(keep_ratio: float, numel: int) -> int:
    """Number of entries TopK keeps: floor(keep_ratio * numel), clipped to [0, numel].

    A tiny tolerance keeps products such as 0.29 * 100 = 28.999999999999996 from losing one entry.
    """
    if not 0.0 <= keep_ratio:
        raise ValueError(f"keep ratio must be >= 0, got {keep_ratio}")
    return max(0, min(numel, math.floor(keep_ratio * numel + 1e-9 * max(1, numel))))


def topk_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Float mask with exactly ``k`` ones at the largest entries of ``values`` (ties: arbitrary)."""
    flat = values.detach().reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(values)
    if k <= 0:
        return torch.zeros_like(values)
    # Select the smaller side: topk cost grows with k.
    if k <= n // 2:
        mask = torch.zeros_like(flat)
        mask[flat.topk(k, sorted=False).indices] = 1.0
    else:
        mask = torch.ones_like(flat)
        mask[flat.topk(n - k, largest=False, sorted=False).indices] = 0.0
    return mask.view_as(values)


def sized_topk_mask(values: torch.Tensor, sizes: torch.Tensor, budget: int) -> torch.Tensor:
    """Float mask over ``values`` keeping the highest entries whose ``sizes`` sum to at most ``budget``.

    Block pruning's TopK (blocks.py): ``values`` are block scores, ``sizes`` (int64, same shape) the real
    weights of each block, ``budget`` the weights to keep. Blocks are taken in decreasing value order while
    they fit, so the kept weights are never more than ``budget`` and fewer by less than one block. When every
    block has the same size ``a`` this is ``topk_mask(values, budget // a)``; otherwise (partial edge blocks) the
    longest prefix of the stably sorted order is kept.
    """
    flat_sizes = sizes.reshape(-1)
    size = int(flat_sizes[0]) if flat_sizes.numel() else 1
    if bool((flat_sizes == size).all()):
        return topk_mask(values, budget // size)
    flat = values.detach().reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    fits = int(torch.searchsorted(flat_sizes[order].cumsum(0), torch.tensor([budget], device=flat.device),
                                  right=True))
    mask = torch.zeros_like(flat)
    mask[order[:fits]] = 1.0
    return mask.view_as(values)


class _TopKSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, keep_ratio: float,  # type: ignore[override]
                sizes: torch.Tensor | None) -> torch.Tensor:
        if sizes is None:
            return topk_mask(scores, kept_count(keep_ratio, scores.numel()))
        return sized_topk_mask(scores, sizes, kept_count(keep_ratio, int(sizes.sum())))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None, None


def topk_binarize(scores: torch.Tensor, keep_ratio: float, sizes: torch.Tensor | None = None) -> torch.Tensor:
    """Local TopK with STE: keeps exactly floor(keep_ratio * numel) highest scores of this matrix.

    With ``sizes`` (block pruning: ``scores`` are block scores ``[out/R, ceil(in/C)]`` and ``sizes`` the real
    weights per block, blocks.Block.sizes), the budget is floor(keep_ratio * weights) *weights*, filled with
    whole blocks by ``sized_topk_mask``.
    """
    return _TopKSTE.apply(scores, keep_ratio, sizes)


class _ThresholdSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, threshold: float, min_kept: int) -> torch.Tensor:  # type: ignore[override]
        mask = (scores > threshold).to(scores.dtype)
        if min_kept > 0 and int(mask.sum()) < min_kept:
            mask = topk_mask(scores, min_kept)
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None, None


def threshold_binarize(scores: torch.Tensor, threshold: float, min_kept: int = 0) -> torch.Tensor:
    """Value-threshold mask ``S > threshold`` with STE.

    Used by soft movement (threshold = logit(tau), i.e. sigmoid(S) > tau) and by global TopK
    (threshold = one score value shared by all matrices). If fewer than ``min_kept`` entries pass,
    the ``min_kept`` highest scores are kept instead (movement-pruning's per-matrix floor).
    """
    return _ThresholdSTE.apply(scores, threshold, min_kept)


def magnitude_mask(weight: torch.Tensor, keep_ratio: float, block: Block = UNSTRUCTURED) -> torch.Tensor:
    """Top-|W| mask ``[out, in]`` (no gradient path): the magnitude-pruning / AGP mask of one matrix.

    With a ``block``, the blocks with the largest mean |W| over their real weights (the L1 norm of the block
    divided by its weight count, so a partial edge block is not penalised for its missing weights) are kept,
    floor(keep_ratio * numel) weights at most (``sized_topk_mask``); the mask is expanded to ``[out, in]``.
    """
    if block.unstructured:
        return topk_mask(weight.detach().abs(), kept_count(keep_ratio, weight.numel()))
    sizes = block.sizes(weight.shape, device=weight.device)
    grid = sized_topk_mask(block.pool(weight.detach().abs()), sizes, kept_count(keep_ratio, weight.numel()))
    return block.expand(grid, weight.shape)


def smp_s_keep_ratios(scores: Sequence[torch.Tensor], keep_ratio: float, temperature: float = 1.0) -> list[float]:
    """SMP-S budget reallocation across layers for ONE matrix type (spec §3.2, Eq. 4).

    ``scores``: the score tensors of one matrix type (e.g. all FFN-in matrices), one per layer,
    all of the same shape. Returns per-layer keep ratios ``v_l = v * L * R_l / sum(R)`` with
    ``R_l = mean(sigmoid(S_l / p))``; the ratios sum to ``L * v``. Ratios above 1 are returned as
    they are (the caller's TopK then keeps the whole matrix, so the real density ends a bit below v).
    Block pruning passes block scores: ``R_l`` is then the mean over blocks, and the ratios (fractions of
    weights) go to the block TopK (``sized_topk_mask``), which fills each with whole blocks.
    """
    if not scores:
        return []
    with torch.no_grad():
        mass = torch.stack([torch.sigmoid(s.detach().float() / temperature).mean() for s in scores])
        ratios = keep_ratio * len(scores) * mass / mass.sum()
    return [float(r) for r in ratios]


def global_threshold(scores: Sequence[torch.Tensor], keep_ratio: float) -> float:
    """The single score value above which ~keep_ratio of all scores lie (global TopK, spec §2.1).

    Returns the k-th smallest score with k = n - floor(n*v); masks are then ``S > value``.
    With v = 1 it returns -inf so every weight is kept.
    """
    with torch.no_grad():
        flat = torch.cat([s.detach().reshape(-1) for s in scores])
        n = flat.numel()
        k = n - kept_count(keep_ratio, n)
        if k <= 0:
            return float("-inf")
        return float(flat.kthvalue(k).values)


class _SigmoidSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta: torch.Tensor, t_forward: float, t_backward: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(theta)
        ctx.t_backward = t_backward
        return torch.sigmoid(t_forward * theta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (theta,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.t_backward * theta)
        return grad * ctx.t_backward * s * (1 - s), None, None


def abp_mask(theta: torch.Tensor, training: bool, t_forward: float = 1e5, t_backward: float = 1.0) -> torch.Tensor:
    """Adapting-by-Pruning relaxed mask (spec methods-abp-cap-lpaf.md §1.2).

    Training: forward ``sigmoid(t_l * theta)`` (binary for ``|theta| > ~10/t_l``), backward with the
    small-temperature surrogate ``dL/dtheta = dL/dm * t_s * sigmoid(t_s theta) (1 - sigmoid(t_s theta))``.
    Eval: the hard mask ``1[theta > 0]``. ``theta``: float32 ``[out, in]``; returns the same shape.
    """
    if not training:
        return (theta > 0).to(theta.dtype)
    return _SigmoidSurrogate.apply(theta, float(t_forward), float(t_backward))


def hard_concrete_mask(scores: torch.Tensor, training: bool) -> torch.Tensor:
    """L0 hard-concrete mask (continuous, in [0, 1]); differentiable, no STE.

    Training: a stretched, clamped sample ``clamp((r-l) * sigmoid((log u - log(1-u) + S)/b) + l, 0, 1)``.
    Eval: the deterministic ``clamp((r-l) * sigmoid(S) + l, 0, 1)``, which is NOT binary: entries in
    (0, 1) scale their weights (the L0 method keeps that; export binarises it at > 0).
    """
    if training:
        u = torch.rand_like(scores).clamp(1e-4, 1 - 1e-4)
        s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + scores) / L0_BETA)
    else:
        s = torch.sigmoid(scores)
    return (s * (L0_RIGHT - L0_LEFT) + L0_LEFT).clamp(0.0, 1.0)


def l0_penalty(scores: torch.Tensor) -> torch.Tensor:
    """Expected-L0 term of one matrix: mean(sigmoid(S - b * log(-l / r)))."""
    return torch.sigmoid(scores - L0_BETA * math.log(-L0_LEFT / L0_RIGHT)).mean()
