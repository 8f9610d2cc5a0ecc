"""The Pruner: puts MaskedLinear layers into a BERT-family model and drives their masks.

It owns the choice of *masking function* (how scores become masks, and how the per-step keep
ratio is shared among matrices) and the score regulariser. Recipes (recipes.py) pick one.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

from sparsekit.models import prunable_matrices, set_submodule
from sparsekit.prune import binarizers
from sparsekit.prune.blocks import UNSTRUCTURED, Block
from sparsekit.prune.masked_linear import MaskedLinear

#: masking function -> MaskedLinear kind
MASKINGS = {
    "local": "topk",        # same keep ratio in every matrix (movement / SMP-L)
    "smp-s": "topk",        # per-layer ratios from score mass (SMP-S, Eq. 4)
    "global": "threshold",  # one score threshold over all matrices (global TopK)
    "sigmoid": "threshold", # sigmoid(S) > tau (soft movement)
    "magnitude": "magnitude",
    "l0": "l0",
    "abp": "abp",           # 1[theta > 0], sigmoid-relaxed (Adapting-by-Pruning; sparsity from the drift)
}


class Pruner:
    """Masks the encoder matrices of ``model`` in place.

    Args:
        model: a BERT-family model (see sparsekit.models.SUPPORTED_MODEL_TYPES).
        masking: one of MASKINGS.
        score_init: initial value of every score (0 for movement / SMP; 2.197 = logit(0.9) for L0), or
            "magnitude" (|W| / mean|W| per matrix, see masked_linear.initial_scores).
        smp_temperature: SMP-S temperature p in R(S) = mean(sigmoid(S / p)).
        global_every: recompute the global TopK threshold every this many steps (movement code: 25).
        min_kept_fraction: per-matrix floor for the threshold maskings (movement code: 0.005).
        block: prune whole blocks (blocks.py; masked_linear.BLOCK_KINDS maskings): one score per block, the
            keep ratios count weights for TopK (SMP-S's per-layer ratios come from the block scores' mass); the
            global and sigmoid thresholds count blocks, which is the same fraction of weights wherever the
            block divides the matrices.
    """

    def __init__(self, model: nn.Module, masking: str, score_init: float | str = 0.0, smp_temperature: float = 1.0,
                 global_every: int = 25, min_kept_fraction: float = 0.005, block: Block = UNSTRUCTURED) -> None:
        if masking not in MASKINGS:
            raise ValueError(f"unknown masking {masking!r}; expected one of {sorted(MASKINGS)}")
        self.model = model
        self.masking = masking
        self.block = block
        self.smp_temperature = smp_temperature
        self.global_every = global_every
        self.matrices = prunable_matrices(model)
        self.modules: dict[str, MaskedLinear] = {}
        for m in self.matrices:
            linear = model.get_submodule(m.name)
            masked = linear if isinstance(linear, MaskedLinear) else MaskedLinear.from_linear(
                linear, MASKINGS[masking], score_init, block)
            if masking in ("global", "sigmoid") and min_kept_fraction > 0:  # in scores: blocks
                masked.min_kept = math.ceil((math.floor(min_kept_fraction * masked.weight.numel()) + 1) / block.area)
            set_submodule(model, m.name, masked)
            self.modules[m.name] = masked
        self.by_type: dict[str, list[MaskedLinear]] = defaultdict(list)
        for m in self.matrices:
            self.by_type[m.type].append(self.modules[m.name])
        self._global_value: float | None = None

    # -- parameters -------------------------------------------------------------------------
    def score_parameters(self) -> list[nn.Parameter]:
        """The score tensors (empty for magnitude pruning)."""
        return [m.mask_scores for m in self.modules.values() if m.mask_scores is not None]

    # -- per-step control -------------------------------------------------------------------
    @torch.no_grad()
    def update(self, keep: float, step: int = 0, threshold: float | None = None, final: bool = False) -> None:
        """Set the masks' state for this step.

        ``keep``: target keep ratio v_t (fraction of weights remaining) for the TopK-style maskings.
        ``threshold``: tau_t for ``"sigmoid"`` masking (mask = sigmoid(S) > tau).
        ``final``: the call that fixes the masks after training (global TopK recomputes its threshold).
        """
        if self.masking in ("local", "magnitude"):
            for m in self.modules.values():
                m.keep_ratio = keep
        elif self.masking == "smp-s":
            for layers in self.by_type.values():
                ratios = binarizers.smp_s_keep_ratios([m.mask_scores for m in layers], keep, self.smp_temperature)
                for m, r in zip(layers, ratios):
                    m.keep_ratio = r
        elif self.masking == "global":
            if final or self._global_value is None or step % self.global_every == 0:
                self._global_value = binarizers.global_threshold(self.score_parameters(), keep)
            for m in self.modules.values():
                m.threshold = self._global_value
        elif self.masking == "sigmoid":
            if threshold is None:
                raise ValueError("sigmoid masking needs the threshold tau for this step")
            value = float("-inf") if threshold <= 0 else math.log(threshold / (1 - threshold))
            for m in self.modules.values():
                m.threshold = value

    @torch.no_grad()
    def steer_threshold(self, keep: float, step: int = 0, final: bool = False) -> float:
        """Sigmoid masking with tau chosen by the density: sigmoid(S) > tau keeps ~``keep`` of all weights.

        Soft movement's adaptive mode calls this in the cool-down and for the final masks (train.py explains
        why). tau is one value shared by every matrix, as in the scheduled mode; it is recomputed every
        ``global_every`` steps and on the ``final`` call, so the final density is ``keep`` (plus the per-matrix
        floor ``min_kept``, where a matrix would otherwise keep fewer). Returns tau.
        """
        if self.masking != "sigmoid":
            raise ValueError(f"steering the threshold needs sigmoid masking, not {self.masking!r}")
        if final or self._global_value is None or step % self.global_every == 0:
            self._global_value = binarizers.global_threshold(self.score_parameters(), keep)
        for m in self.modules.values():
            m.threshold = self._global_value
        return float(torch.sigmoid(torch.tensor(self._global_value, dtype=torch.float64)))

    def state_dict(self) -> dict:
        """Non-parameter state that a checkpoint must keep for an exact resume."""
        return {"global_value": self._global_value}

    def load_state_dict(self, state: dict) -> None:
        self._global_value = state.get("global_value")

    # -- losses -----------------------------------------------------------------------------
    def regularization(self) -> torch.Tensor:
        """R̄(S): mean over matrices of mean(sigmoid(S)) (spec §2.1/§3.4); the expected-L0 term for L0.

        Zero (no gradient) for magnitude pruning.
        """
        scores = [m.mask_scores for m in self.modules.values() if m.mask_scores is not None]
        if not scores:
            return torch.zeros(())
        if self.masking == "l0":
            return torch.stack([binarizers.l0_penalty(s) for s in scores]).mean()
        return torch.stack([torch.sigmoid(s).mean() for s in scores]).mean()

    # -- inspection and finishing -----------------------------------------------------------
    @torch.no_grad()
    def masks(self) -> dict[str, torch.Tensor]:
        """Current eval-mode masks as bool tensors ``[out, in]``, keyed by module name."""
        out = {}
        for name, m in self.modules.items():
            was_training = m.training
            m.eval()
            out[name] = m.mask() > 0
            m.train(was_training)
        return out

    @torch.no_grad()
    def density(self) -> float:
        """Fraction of prunable weights currently kept."""
        kept = total = 0
        for mask in self.masks().values():
            kept += int(mask.sum())
            total += mask.numel()
        return kept / max(total, 1)

    @torch.no_grad()
    def finalize(self) -> dict[str, torch.Tensor]:
        """Bake masks into the weights and put plain ``nn.Linear`` layers back.

        After this the model is a standard Hugging Face model whose pruned weights are exact zeros
        (L0's continuous eval mask scales the kept weights, so the function is preserved exactly).
        Returns the binary masks (bool ``[out, in]``) by module name.
        """
        masks = {}
        for name, m in self.modules.items():
            m.eval()
            mask = m.mask()
            linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                               device=m.weight.device, dtype=m.weight.dtype)
            linear.weight = nn.Parameter(m.weight.detach() * mask, requires_grad=m.weight.requires_grad)
            if m.bias is not None:
                linear.bias = m.bias
            set_submodule(self.model, name, linear)
            masks[name] = mask > 0
        self.modules = {}
        self.by_type = defaultdict(list)
        return masks
