"""Backends on sparsekit's C++ CPU kernels: CSR and 4x1 block-sparse float32 (``sparsekit.kernels.cpu``), and
INT8 1x4 blocks (``sparsekit.kernels.cpu_int8``; not a default backend: it changes the numerics)."""
from __future__ import annotations

import torch

from sparsekit.backends.base import Backend
from sparsekit.backends.runner import PackedLinear
from sparsekit.backends.base import LayerSpec
from sparsekit.formats import Int8BlockFormat
from sparsekit.formats.int8 import weight_qmax
from sparsekit.kernels import cpu, cpu_int8
from sparsekit.kernels.cpu_int8_layout import MAX_IN_FEATURES, pack_cpu_int8_b4
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


class CpuInt8B4Backend(Backend):
    """INT8 weights (per output row) in 1x4 blocks along the input, activations quantised per token in the op.

    Not in :func:`~sparsekit.backends.registry.default_backends`: its output differs from float32 by the int8
    quantisation error, so it runs only where int8 precision was asked for. ``max_density`` is the density of
    the weight's 1x4 blocks (checked by ``build``, which sees the pattern): a weight whose non-zeros are spread
    over more blocks gains little from the block layout.
    """

    name = "int8-b4-cpu"
    description = "sparsekit C++ INT8 kernel, 1x4 blocks along the input (VNNI / AVX-512BW / AVX2 byte dot products)"
    devices = ("cpu",)
    dtypes = (torch.float32,)
    max_density = 0.5
    max_density_why = "dense int8 is faster there"

    def __init__(self, weight_bits: int = 8) -> None:
        """``weight_bits``: 8 or 7, the width ``build`` quantises a dense weight to
        (:func:`~sparsekit.kernels.cpu_int8.preferred_weight_bits` says which runs faster here)."""
        weight_qmax(weight_bits)  # ValueError for another width
        self.weight_bits = weight_bits

    def requirement(self) -> str | None:
        return None if cpu_int8.available() else f"INT8 C++ kernels not built: {cpu_int8.unavailable_reason()}"

    def extra_reasons(self, spec: LayerSpec) -> list[str]:
        if spec.in_features > MAX_IN_FEATURES:
            return [f"in_features {spec.in_features} > {MAX_IN_FEATURES} (int32 accumulators could overflow)"]
        return []

    def build(self, weight, bias):
        """``weight``: a dense float ``[out, in]`` tensor (quantised here to ``weight_bits``) or an
        :class:`~sparsekit.formats.Int8BlockFormat` (packed as stored)."""
        packed = pack_cpu_int8_b4(weight if isinstance(weight, Int8BlockFormat) else weight.detach().float(),
                                  self.weight_bits)
        if packed.block_density > self.max_density:
            raise ValueError(f"1x4 block density {packed.block_density:.2f} > {self.max_density}: the sparsity is not "
                             "1x4-block structured enough")
        return PackedLinear(packed, bias, cpu_int8.int8_b4_linear, torch.float32)
