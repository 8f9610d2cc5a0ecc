"""Backends on sparsekit's C++ CPU kernels (``sparsekit.kernels.cpu``): CSR and 4x1 block-sparse, float32."""
from __future__ import annotations

import torch

from sparsekit.backends.base import Backend
from sparsekit.backends.runner import PackedLinear
from sparsekit.kernels import cpu
from sparsekit.kernels.cpu_layout import pack_cpu_bsr, pack_cpu_csr


class _CpuKernelBackend(Backend):
    devices = ("cpu",)
    dtypes = (torch.float32,)
    max_density = 0.5
    max_density_why = "dense BLAS is faster there"

    def requirement(self) -> str | None:
        return None if cpu.available() else f"C++ kernels not built: {cpu.unavailable_reason()}"


class CpuCsrBackend(_CpuKernelBackend):
    name = "csr-cpu"
    description = "sparsekit C++ CSR kernel (column-chunked, broadcast-FMA over token tiles)"

    def build(self, weight, bias):
        return PackedLinear(pack_cpu_csr(weight.detach().float()), bias, cpu.csr_linear, torch.float32)


class CpuBsrBackend(_CpuKernelBackend):
    name = "bsr-cpu"
    description = "sparsekit C++ block-sparse kernel, 4x1 blocks"

    def build(self, weight, bias):
        return PackedLinear(pack_cpu_bsr(weight.detach().float(), block=(4, 1)), bias, cpu.bsr_linear, torch.float32)
