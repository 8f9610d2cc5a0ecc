"""Backends on sparsekit's GPU kernels: Triton BSR on tensor cores, Triton and CUDA CSR for few tokens.

Importing this module needs neither Triton nor a GPU: the kernel modules are imported only when used.
"""
from __future__ import annotations

import importlib.util

import torch

from sparsekit.backends.base import Backend, LayerSpec
from sparsekit.backends.runner import PackedLinear


def _triton_missing() -> str | None:
    if importlib.util.find_spec("triton") is None:  # not imported here: importing Triton is slow
        return "triton is not installed (pip install triton; Linux x86-64 only)"
    return None


class _GpuKernelBackend(Backend):
    devices = ("cuda",)
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    min_capability = (7, 5)


class TritonBsrBackend(_GpuKernelBackend):
    """Triton block-sparse x dense on tensor cores (blocks of ``block x block``)."""

    max_density_why = "at least as many blocks stored, dense tensor cores are faster"  # block density >= density

    def __init__(self, block: int = 32, max_block_density: float = 0.5) -> None:
        from sparsekit.kernels.gpu_bsr_layout import BLOCK_SIZES

        if block not in BLOCK_SIZES:
            raise ValueError(f"block must be one of {BLOCK_SIZES}, got {block}")
        self.block, self.max_density = block, max_block_density
        self.name = f"bsr-triton-{block}"
        self.description = f"sparsekit Triton BSR kernel, {block}x{block} blocks, tensor cores"

    def requirement(self) -> str | None:
        return _triton_missing()

    def extra_reasons(self, spec: LayerSpec) -> list[str]:
        return ["empty weight"] if min(spec.out_features, spec.in_features) == 0 else []

    def build(self, weight, bias):
        from sparsekit.kernels.gpu_bsr_layout import pack_gpu_bsr
        from sparsekit.kernels.triton_bsr import triton_bsr_linear

        packed = pack_gpu_bsr(weight, block=(self.block, self.block), dtype=weight.dtype)
        if packed.block_density > self.max_density:
            raise ValueError(f"block density {packed.block_density:.2f} > {self.max_density} with "
                             f"{self.block}x{self.block} blocks: the sparsity is not block-structured")
        return PackedLinear(packed, bias, triton_bsr_linear, packed.dtype)


class _GpuCsrBackend(_GpuKernelBackend):
    """A CSR kernel for few tokens (memory-bound): the GPU CSR layout, its op given by ``op()``."""

    max_density = 0.3
    max_density_why = "reads more bytes than dense bf16"

    def op(self):
        """The op ``op(x, GpuCSRWeight, bias)`` (imported when a layer is built)."""
        raise NotImplementedError

    def build(self, weight, bias):
        from sparsekit.kernels.gpu_csr_layout import pack_gpu_csr

        packed = pack_gpu_csr(weight, dtype=weight.dtype)
        return PackedLinear(packed, bias, self.op(), packed.dtype)


class TritonCsrBackend(_GpuCsrBackend):
    """Triton CSR gather kernel for few tokens."""

    name = "csr-triton"
    description = "sparsekit Triton CSR kernel (row swizzle, few tokens)"

    def requirement(self) -> str | None:
        return _triton_missing()

    def op(self):
        from sparsekit.kernels.triton_csr import triton_csr_linear

        return triton_csr_linear


class CudaCsrBackend(_GpuCsrBackend):
    """CUDA C++ CSR kernel (Sputnik-style) for few tokens."""

    name = "csr-cuda"
    description = "sparsekit CUDA CSR kernel (row swizzle, subwarps, vector loads; few tokens)"
    min_capability = (7, 0)

    def requirement(self) -> str | None:
        from sparsekit.kernels import cuda

        return None if cuda.available() else f"CUDA kernel not built: {cuda.unavailable_reason()}"

    def op(self):
        from sparsekit.kernels.cuda import cuda_csr_linear

        return cuda_csr_linear
