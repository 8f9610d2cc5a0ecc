"""GPU backends of ``sparsekit.compile`` (see sparsekit/backends.py for the pattern): Triton BSR on tensor cores,
Triton and CUDA CSR for few tokens, and 2:4 semi-structured through ``torch.sparse.to_sparse_semi_structured``.

Each backend lists why it cannot run a layer (no CUDA device, Triton or the CUDA extension missing, compute
capability, dtype, shape, density); ``compile`` measures the others against dense cuBLAS and keeps the fastest.
Weight-pattern conditions a LayerSpec cannot show (block density, the 2:4 pattern) are checked when a layer is
built: a ``ValueError`` there is reported by ``compile`` as a rejection with its message.
Importing this module needs neither Triton nor a GPU.
"""
from __future__ import annotations

import importlib.util

import torch
from torch import nn

from sparsekit.backends import Backend, LayerSpec

__all__ = ["CudaCsrBackend", "Semi24Backend", "TritonBsrBackend", "TritonCsrBackend", "gpu_backends"]

_HALF = (torch.bfloat16, torch.float16)
_ALL = (torch.bfloat16, torch.float16, torch.float32)


def _device_reasons(spec: LayerSpec, min_capability: tuple[int, int]) -> list[str]:
    if not torch.cuda.is_available():
        why = "torch is a CPU-only build" if torch.version.cuda is None else "torch.cuda.is_available() is False"
        return [f"no CUDA device ({why})"]
    if spec.device.type != "cuda":
        return [f"GPU only (layer is on {spec.device.type}; move the model with .cuda())"]
    cap = torch.cuda.get_device_capability(spec.device)
    if cap < min_capability:
        return [f"compute capability {cap[0]}.{cap[1]} < {min_capability[0]}.{min_capability[1]}"]
    return []


def _triton_reasons() -> list[str]:
    if importlib.util.find_spec("triton") is None:
        return ["triton is not installed (pip install triton; Linux x86-64 only)"]
    return []


def _dtype_reasons(spec: LayerSpec, dtypes: tuple[torch.dtype, ...], min_capability_bf16=(8, 0)) -> list[str]:
    if spec.dtype not in dtypes:
        return [f"dtype {spec.dtype} not supported ({', '.join(str(d) for d in dtypes)})"]
    if (spec.dtype == torch.bfloat16 and spec.device.type == "cuda" and torch.cuda.is_available()
            and torch.cuda.get_device_capability(spec.device) < min_capability_bf16):
        return ["bfloat16 needs compute capability >= 8.0"]
    return []


class KernelLinear(nn.Module):
    """``x Wᵀ + b`` through one of sparsekit's GPU ops; the weight is packed once, here."""

    def __init__(self, packed, bias: torch.Tensor | None, fn) -> None:
        super().__init__()
        self.packed, self.fn = packed, fn
        self.register_buffer("bias", None if bias is None else bias.detach().to(packed.dtype).contiguous().clone())
        self.out_features, self.in_features = packed.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.packed, self.bias)

    def extra_repr(self) -> str:
        return repr(self.packed)


class TritonBsrBackend(Backend):
    """Triton block-sparse x dense on tensor cores (blocks of ``block x block``)."""

    min_capability = (7, 5)

    def __init__(self, block: int = 32, max_block_density: float = 0.5) -> None:
        from sparsekit.kernels.gpu_bsr_layout import BLOCK_SIZES

        if block not in BLOCK_SIZES:
            raise ValueError(f"block must be one of {BLOCK_SIZES}, got {block}")
        self.block, self.max_block_density = block, max_block_density
        self.name = f"bsr-triton-{block}"
        self.description = f"sparsekit Triton BSR kernel, {block}x{block} blocks, tensor cores"

    def not_supported_reasons(self, spec: LayerSpec) -> list[str]:
        reasons = _device_reasons(spec, self.min_capability) + _triton_reasons() + _dtype_reasons(spec, _ALL)
        if min(spec.out_features, spec.in_features) == 0:
            reasons.append("empty weight")
        if spec.density > self.max_block_density:  # block density >= element density
            reasons.append(f"density {spec.density:.2f} > {self.max_block_density}: at least as many blocks stored, "
                           f"dense tensor cores are faster")
        return reasons

    def build(self, weight, bias):
        from sparsekit.kernels.gpu_bsr_layout import pack_gpu_bsr
        from sparsekit.kernels.triton_bsr import triton_bsr_linear

        packed = pack_gpu_bsr(weight, block=(self.block, self.block), dtype=weight.dtype)
        if packed.block_density > self.max_block_density:
            raise ValueError(f"block density {packed.block_density:.2f} > {self.max_block_density} with "
                             f"{self.block}x{self.block} blocks: the sparsity is not block-structured")
        return KernelLinear(packed, bias, triton_bsr_linear)


class TritonCsrBackend(Backend):
    """Triton CSR gather kernel for few tokens (memory-bound)."""

    name = "csr-triton"
    description = "sparsekit Triton CSR kernel (row swizzle, few tokens)"
    min_capability = (7, 5)
    max_density = 0.3

    def not_supported_reasons(self, spec: LayerSpec) -> list[str]:
        reasons = _device_reasons(spec, self.min_capability) + _triton_reasons() + _dtype_reasons(spec, _ALL)
        if spec.density > self.max_density:
            reasons.append(f"density {spec.density:.2f} > {self.max_density}: reads more bytes than dense bf16")
        return reasons

    def build(self, weight, bias):
        from sparsekit.kernels.gpu_csr_layout import pack_gpu_csr
        from sparsekit.kernels.triton_csr import triton_csr_linear

        return KernelLinear(pack_gpu_csr(weight, dtype=weight.dtype), bias, triton_csr_linear)


class CudaCsrBackend(Backend):
    """CUDA C++ CSR kernel (Sputnik-style) for few tokens."""

    name = "csr-cuda"
    description = "sparsekit CUDA CSR kernel (row swizzle, subwarps, vector loads; few tokens)"
    min_capability = (7, 0)
    max_density = 0.3

    def not_supported_reasons(self, spec: LayerSpec) -> list[str]:
        from sparsekit.kernels import cuda

        reasons = _device_reasons(spec, self.min_capability)
        if not cuda.available():
            reasons.append(f"CUDA kernel not built: {cuda.unavailable_reason()}")
        reasons += _dtype_reasons(spec, _ALL)
        if spec.density > self.max_density:
            reasons.append(f"density {spec.density:.2f} > {self.max_density}: reads more bytes than dense bf16")
        return reasons

    def build(self, weight, bias):
        from sparsekit.kernels.cuda import cuda_csr_linear
        from sparsekit.kernels.gpu_csr_layout import pack_gpu_csr

        return KernelLinear(pack_gpu_csr(weight, dtype=weight.dtype), bias, cuda_csr_linear)


#: ``torch.sparse`` 2:4 shape rule (CUTLASS, the stricter of its two backends): rows and columns multiples of these.
SEMI24_MULTIPLE = (32, 64)


def is_2_4_sparse(weight: torch.Tensor) -> bool:
    """Whether every run of 4 consecutive weights in a row of ``weight [out, in]`` holds at most 2 non-zeros
    (False when ``in % 4 != 0``)."""
    out, inp = weight.shape
    return inp % 4 == 0 and bool(((weight != 0).reshape(out, inp // 4, 4).sum(dim=2) <= 2).all())


class Semi24Linear(nn.Module):
    """``F.linear`` with a ``torch.sparse`` semi-structured (2:4) weight (cuSPARSELt or CUTLASS)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        from torch.sparse import to_sparse_semi_structured

        self.weight = to_sparse_semi_structured(weight.detach().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().to(weight.dtype).clone())
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.linear(x.reshape(-1, self.in_features), self.weight, self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)


class Semi24Backend(Backend):
    name = "semi24-torch"
    description = "torch.sparse 2:4 semi-structured (cuSPARSELt / CUTLASS sparse tensor cores)"
    min_capability = (8, 0)

    def not_supported_reasons(self, spec: LayerSpec) -> list[str]:
        reasons = _device_reasons(spec, self.min_capability)
        if spec.dtype not in _HALF:
            reasons.append(f"dtype {spec.dtype} not supported (bfloat16, float16)")
        rm, cm = SEMI24_MULTIPLE
        if spec.out_features % rm or spec.in_features % cm or not spec.out_features or not spec.in_features:
            reasons.append(f"shape {spec.out_features}x{spec.in_features} is not a multiple of {rm}x{cm}")
        if spec.density > 0.5:
            reasons.append(f"density {spec.density:.2f} > 0.5: cannot be 2:4 sparse")
        return reasons

    def build(self, weight, bias):
        if not is_2_4_sparse(weight):
            raise ValueError("the weight is not 2:4 sparse (some run of 4 weights holds more than 2 non-zeros)")
        return Semi24Linear(weight, bias)


def gpu_backends() -> list[Backend]:
    """The GPU backends (they report themselves unsupported where they cannot run)."""
    return [TritonBsrBackend(64), TritonBsrBackend(32), TritonBsrBackend(16), TritonCsrBackend(), CudaCsrBackend(),
            Semi24Backend()]
