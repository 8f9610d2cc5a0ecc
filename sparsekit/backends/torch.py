"""Backends on PyTorch's own ops: dense ``F.linear`` (the fallback every layer can use), ``torch.sparse`` CSR,
and 2:4 semi-structured sparsity (``torch.sparse.to_sparse_semi_structured``: cuSPARSELt / CUTLASS)."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from sparsekit.backends.base import Backend, LayerSpec
from sparsekit.backends.runner import PackedLinear

#: ``torch.sparse`` 2:4 shape rule (CUTLASS, the stricter of its two backends): rows and columns multiples of these.
SEMI24_MULTIPLE = (32, 64)


class DenseBackend(Backend):
    name = "dense"
    description = "PyTorch F.linear (BLAS)"

    def build(self, weight, bias):
        return PackedLinear(weight.detach().contiguous().clone(), bias, F.linear, weight.dtype)


def torch_sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x Wᵀ + b`` with ``torch.sparse.mm`` for x ``[..., in]`` and a sparse CSR ``weight [out, in]``."""
    out_features, in_features = weight.shape
    y = torch.sparse.mm(weight, x.reshape(-1, in_features).t()).t()
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], out_features)


class TorchSparseBackend(Backend):
    """``torch.sparse.mm`` with a CSR weight (PyTorch's own sparse path; a baseline, rarely the fastest)."""

    name = "torch-sparse"
    description = "torch.sparse.mm with a CSR weight"
    devices = ("cpu",)
    dtypes = (torch.float32,)
    max_density = 0.5
    max_density_why = "never faster than dense there"

    def build(self, weight, bias):
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            packed = weight.detach().to_sparse_csr()
        return PackedLinear(packed, bias, torch_sparse_linear, weight.dtype)


def is_2_4_sparse(weight: torch.Tensor) -> bool:
    """Whether every run of 4 consecutive weights in a row of ``weight [out, in]`` holds at most 2 non-zeros
    (False when ``in % 4 != 0``)."""
    out, inp = weight.shape
    return inp % 4 == 0 and bool(((weight != 0).reshape(out, inp // 4, 4).sum(dim=2) <= 2).all())


def semi24_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x Wᵀ + b`` for x ``[..., in]`` and a semi-structured (2:4) ``weight [out, in]`` (a 2-D product inside)."""
    out_features, in_features = weight.shape
    return F.linear(x.reshape(-1, in_features), weight, bias).reshape(*x.shape[:-1], out_features)


class Semi24Backend(Backend):
    name = "semi24-torch"
    description = "torch.sparse 2:4 semi-structured (cuSPARSELt / CUTLASS sparse tensor cores)"
    devices = ("cuda",)
    dtypes = (torch.bfloat16, torch.float16)
    min_capability = (8, 0)
    max_density = 0.5
    max_density_why = "cannot be 2:4 sparse"

    def extra_reasons(self, spec: LayerSpec) -> list[str]:
        rm, cm = SEMI24_MULTIPLE
        if spec.out_features % rm or spec.in_features % cm or not spec.out_features or not spec.in_features:
            return [f"shape {spec.out_features}x{spec.in_features} is not a multiple of {rm}x{cm}"]
        return []

    def build(self, weight, bias):
        from torch.sparse import to_sparse_semi_structured

        if not is_2_4_sparse(weight):
            raise ValueError("the weight is not 2:4 sparse (some run of 4 weights holds more than 2 non-zeros)")
        return PackedLinear(to_sparse_semi_structured(weight.detach().contiguous()), bias, semi24_linear,
                            weight.dtype)
