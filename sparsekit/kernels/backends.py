"""The C++ CPU kernels as backends of ``sparsekit.compile`` (see sparsekit/backends.py for the pattern)."""
from __future__ import annotations

import torch
from torch import nn

from sparsekit.backends import Backend, LayerSpec
from sparsekit.kernels import cpu, cpu_layout


class PackedLinear(nn.Module):
    """``x Wᵀ + b`` through a packed C++ kernel; the weight is packed once, here."""

    def __init__(self, packed: cpu_layout.CpuPackedWeight, bias: torch.Tensor | None, op) -> None:
        super().__init__()
        self.packed, self.op = packed, op
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous().clone())
        self.out_features, self.in_features = packed.out_features, packed.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, self.packed, self.bias)

    def extra_repr(self) -> str:
        return repr(self.packed)


class _CpuKernelBackend(Backend):
    max_density = 0.5

    def not_supported_reasons(self, spec: LayerSpec) -> list[str]:
        reasons = []
        if not cpu.available():
            reasons.append(f"C++ kernels not built: {cpu.unavailable_reason()}")
        if spec.device.type != "cpu":
            reasons.append(f"CPU only (layer is on {spec.device.type})")
        if spec.dtype != torch.float32:
            reasons.append(f"float32 activations only (layer is {spec.dtype})")
        if spec.density > self.max_density:
            reasons.append(f"density {spec.density:.2f} > {self.max_density}: dense BLAS is faster there")
        return reasons


class CpuCsrBackend(_CpuKernelBackend):
    name = "csr-cpu"
    description = "sparsekit C++ CSR kernel (column-chunked, broadcast-FMA over token tiles)"

    def build(self, weight, bias):
        return PackedLinear(cpu_layout.pack_cpu_csr(weight.detach().float()), bias, cpu.csr_linear)


class CpuBsrBackend(_CpuKernelBackend):
    name = "bsr-cpu"
    description = "sparsekit C++ block-sparse kernel, 4x1 blocks"

    def build(self, weight, bias):
        return PackedLinear(cpu_layout.pack_cpu_bsr(weight.detach().float(), block=(4, 1)), bias, cpu.bsr_linear)


def cpu_backends() -> list[Backend]:
    """The CPU kernel backends (they report themselves unsupported when the extension is not built)."""
    return [CpuCsrBackend(), CpuBsrBackend()]
