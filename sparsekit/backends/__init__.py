"""Backends of ``sparsekit.compile``: each runs a Linear ``x Wᵀ + b`` its own way and says where it cannot.

``base.py`` (LayerSpec, Backend with declared capabilities), ``runner.py`` (PackedLinear, the module every backend
builds), one file per family: ``torch.py`` (dense, torch.sparse, 2:4), ``cpu.py`` (C++ CSR / BSR, INT8 1x4 blocks
-- the INT8 one is not a default backend), ``gpu.py``
(Triton BSR / CSR, CUDA CSR), and ``registry.py`` (``default_backends()``, ``choose()``). Adding a backend: one
class in the file of its family (or a new file), one entry in ``default_backends()``.
"""
from sparsekit.backends.base import Backend, LayerSpec
from sparsekit.backends.cpu import CpuBsrBackend, CpuCsrBackend, CpuInt8B4Backend
from sparsekit.backends.gpu import CudaCsrBackend, TritonBsrBackend, TritonCsrBackend
from sparsekit.backends.registry import choose, default_backends
from sparsekit.backends.runner import PackedLinear
from sparsekit.backends.torch import DenseBackend, Semi24Backend, TorchSparseBackend, is_2_4_sparse

__all__ = ["Backend", "CpuBsrBackend", "CpuCsrBackend", "CpuInt8B4Backend", "CudaCsrBackend", "DenseBackend",
           "LayerSpec", "PackedLinear", "Semi24Backend", "TorchSparseBackend", "TritonBsrBackend", "TritonCsrBackend",
           "choose", "default_backends", "is_2_4_sparse"]
