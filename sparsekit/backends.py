"""Backends that can run one Linear layer, each saying why it cannot run a given layer.

The pattern is xformers' ``not_supported_reasons``: every backend inspects a LayerSpec and returns a
list of human-readable reasons (empty = it can run it). ``sparsekit.compile`` measures the backends that
can run a layer and keeps the fastest; "dense" can run everything, so there is always a fallback.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LayerSpec:
    """What a backend needs to know about a Linear: weight ``[out, in]``, its density, device and dtype."""

    out_features: int
    in_features: int
    density: float
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def of(cls, weight: torch.Tensor) -> "LayerSpec":
        numel = weight.numel()
        density = float((weight != 0).sum()) / numel if numel else 0.0
        return cls(weight.shape[0], weight.shape[1], density, weight.device, weight.dtype)


class Backend:
    """Base class. ``build(weight, bias)`` returns an ``nn.Module`` computing ``x Wᵀ + b`` for x ``[..., in]``."""

    name = "base"
    description = ""

    def not_supported_reasons(self, spec: LayerSpec) -> list[str]:
        return []

    def build(self, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        raise NotImplementedError


class DenseLinear(nn.Module):
    """``F.linear`` on a dense weight (the fallback every layer can use)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().contiguous().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class DenseBackend(Backend):
    name = "dense"
    description = "PyTorch F.linear (BLAS)"

    def build(self, weight, bias):
        return DenseLinear(weight, bias)


class TorchSparseLinear(nn.Module):
    """``torch.sparse.mm`` with a CSR weight (PyTorch's own sparse path; a baseline, rarely the fastest)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            self.weight = weight.detach().to_sparse_csr()
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class TorchSparseBackend(Backend):
    name = "torch-sparse"
    description = "torch.sparse.mm with a CSR weight"

    def not_supported_reasons(self, spec):
        reasons = []
        if spec.device.type != "cpu":
            reasons.append(f"CPU only (layer is on {spec.device.type})")
        if spec.dtype != torch.float32:
            reasons.append(f"float32 only (layer is {spec.dtype})")
        if spec.density > 0.5:
            reasons.append(f"density {spec.density:.2f} > 0.5: never faster than dense there")
        return reasons

    def build(self, weight, bias):
        return TorchSparseLinear(weight, bias)
