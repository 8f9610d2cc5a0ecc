"""A Linear layer whose weight is multiplied by a mask computed from per-weight scores.

``y = x (W ⊙ M)ᵀ + b`` with ``M = f(S)`` (spec methods-smp-movement.md §1.2). Biases are never
masked. The layer is a subclass of ``nn.Linear`` and shares the original ``weight`` / ``bias``
Parameters, so model code that reads ``.weight`` keeps working and frozen weights stay the very
same tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.prune import binarizers
from sparsekit.prune.blocks import UNSTRUCTURED, Block

MASK_KINDS = ("topk", "threshold", "magnitude", "l0", "abp")
#: The kinds whose mask can be made of blocks (blocks.py): a TopK or a threshold of scores or magnitudes.
BLOCK_KINDS = ("topk", "threshold", "magnitude")


def initial_scores(weight: torch.Tensor, score_init: float | str, block: Block = UNSTRUCTURED) -> torch.Tensor:
    """Initial scores float32, one per block: ``block.grid(weight.shape)`` (``[out, in]`` unstructured).

    The constant ``score_init``, or ``"magnitude"``: the block's mean |W| over the matrix's mean |W| (``|W| /
    mean|W|`` unstructured), so the first TopK mask is the magnitude mask (binarizers.magnitude_mask with the
    same block) instead of an arbitrary tie-break among equal scores.
    """
    if score_init == "magnitude":
        w = weight.detach().float().abs()
        return block.pool(w) / w.mean().clamp_min(1e-12)
    return torch.full(block.grid(weight.shape), float(score_init), dtype=torch.float32, device=weight.device)


class MaskedLinear(nn.Linear):
    """``nn.Linear`` with a mask of kind:

    - ``"topk"``: TopK(S) with STE, keeping ``floor(keep_ratio * numel)`` weights (local TopK, SMP-L,
      SMP-S with a per-layer ``keep_ratio``);
    - ``"threshold"``: ``S > threshold`` with STE (soft movement, global TopK), at least ``min_kept`` kept;
    - ``"magnitude"``: TopK(|W|), no scores;
    - ``"l0"``: hard-concrete, continuous;
    - ``"abp"``: Adapting-by-Pruning, ``sigmoid(t_l S)`` forward with a ``t_s`` surrogate gradient, ``S > 0`` at eval.

    ``score_fn`` (optional, set by structure-aware SMP): a callable returning the *effective* scores fed to
    the binarizer instead of ``mask_scores`` (same shape, with a gradient path to the scores).

    ``block`` (blocks.py; kinds topk, threshold, magnitude): the mask is made of whole blocks. There is one
    score per block, TopK counts weights (``floor(keep_ratio * numel)`` at most, filled with whole blocks), a
    threshold and ``min_kept`` count blocks, and the block mask is expanded to ``[out, in]``, so the STE gradient
    of a block score is the sum of its weights' elementwise gradients.

    Shapes: weight ``[out, in]`` fp32; scores (``mask_scores``) ``block.grid([out, in])`` = ``[out/R,
    ceil(in/C)]`` (``[out, in]`` unstructured); mask ``[out, in]``; input ``[..., in]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, kind: str = "topk",
                 score_init: float | str = 0.0, device=None, dtype=None, block: Block = UNSTRUCTURED) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_mask_state(kind, score_init, block)

    @classmethod
    def from_linear(cls, linear: nn.Linear, kind: str, score_init: float | str = 0.0,
                    block: Block = UNSTRUCTURED) -> "MaskedLinear":
        """Wrap ``linear``, sharing (not copying) its weight and bias Parameters."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        layer._init_mask_state(kind, score_init, block)
        return layer

    def _init_mask_state(self, kind: str, score_init: float | str, block: Block) -> None:
        if kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
        if not block.unstructured and kind not in BLOCK_KINDS:
            raise ValueError(f"{kind} masks cannot be made of {block} blocks; blocks apply to {BLOCK_KINDS}")
        self.kind = kind
        self.block = block
        # Real weights per block (TopK's budget is in weights); not saved: it follows from the shape and block.
        sizes = None if block.unstructured else block.sizes(self.weight.shape, self.weight.device)
        self.register_buffer("block_sizes", sizes, persistent=False)
        self.keep_ratio = 1.0  # topk / magnitude: fraction kept, set by the Pruner every step
        self.threshold = float("-inf")  # threshold: score value, set by the Pruner
        self.min_kept = 0  # threshold: scores (blocks) always kept, set by the Pruner
        self.abp_temperatures = (1e5, 1.0)  # abp: (t_l forward, t_s backward)
        self.score_fn = None
        self.mask_scores = None if kind == "magnitude" else nn.Parameter(
            initial_scores(self.weight, score_init, block))

    def mask(self) -> torch.Tensor:
        """The current mask ``[out, in]`` (float 0/1, or in [0, 1] for L0), with its gradient path."""
        if self.kind == "magnitude":
            return binarizers.magnitude_mask(self.weight, self.keep_ratio, self.block)
        scores = self.mask_scores if self.score_fn is None else self.score_fn()
        if self.kind == "topk":
            return self.block.expand(binarizers.topk_binarize(scores, self.keep_ratio, self.block_sizes),
                                     self.weight.shape)
        if self.kind == "threshold":
            return self.block.expand(binarizers.threshold_binarize(scores, self.threshold, self.min_kept),
                                     self.weight.shape)
        if self.kind == "abp":
            return binarizers.abp_mask(scores, self.training, *self.abp_temperatures)
        return binarizers.hard_concrete_mask(scores, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask(), self.bias)

    def extra_repr(self) -> str:
        block = "" if self.block.unstructured else f", block={self.block}"
        return f"{super().extra_repr()}, kind={self.kind}{block}"
