"""The one module every backend builds: ``x Wᵀ + b`` through an op on a weight packed once."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class PackedLinear(nn.Module):
    """``y = op(x, packed, bias)`` for x ``[..., in]`` -> y ``[..., out]``; what ``sparsekit.compile`` swaps in.

    packed: the weight in the op's layout, anything with ``shape == (out, in)``: a dense tensor (kept as a buffer,
        so it follows ``.to()`` / ``state_dict``), a torch sparse tensor, or a kernel's packed weight.
    bias: ``[out]`` or None; stored once as a contiguous ``dtype`` buffer (the dtype the op computes in).
    op: ``op(x, packed, bias) -> y``, e.g. ``F.linear`` or ``sparsekit.kernels.cpu.csr_linear``.
    """

    def __init__(self, packed: Any, bias: torch.Tensor | None, op: Callable[..., torch.Tensor],
                 dtype: torch.dtype) -> None:
        super().__init__()
        if type(packed) is torch.Tensor and packed.layout == torch.strided:
            self.register_buffer("packed", packed)
        else:
            self.packed = packed
        self.op = op
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype).contiguous().clone())
        self.out_features, self.in_features = packed.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, self.packed, self.bias)

    def extra_repr(self) -> str:
        if isinstance(self.packed, torch.Tensor):
            op = getattr(self.op, "__name__", self.op)
            return f"out_features={self.out_features}, in_features={self.in_features}, op={op}"
        return repr(self.packed)
