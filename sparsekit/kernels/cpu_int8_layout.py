"""The CPU INT8 kernels' packed layout: a weight quantised and packed once for
:func:`sparsekit.kernels.cpu_int8.int8_b4_linear`::

    packed = pack_cpu_int8_b4(weight)     # dense float [out, in] or Int8BlockFormat -> CpuInt8B4Weight

Quantisation (one home: the storage format :class:`sparsekit.formats.Int8BlockFormat` and its
:func:`~sparsekit.formats.int8.quantize_rows`; a format is packed as stored, without re-quantising): symmetric, one
fp32 scale per output row, ``scale[o] = max|W[o, :]| / qmax``,
``q[o, i] = clamp(round_half_even(W[o, i] / scale[o]), -qmax, qmax)`` (``qmax`` 127 for 8-bit weights, 63 for 7-bit
ones, which the AVX2 / AVX-512BW kernels run faster; never -128; an all-zero row has scale 0), so
``W ~ scale[:, None] * q``. Sparsity: 1x4 blocks along the input dimension -- block column ``b`` of row ``o`` covers
input columns ``4b .. 4b+3`` (``in`` padded with zero columns to a multiple of 4); a block is stored when ANY of
its four fp32 weights is non-zero, and zeros inside a stored block are explicit zeros. Storage (exact layout:
``csrc/spmm_cpu_int8/spmm_cpu_int8.h``, reference: :func:`sparsekit.kernels.reference.int8_b4_to_dense`): a
row-wise CSR over blocks, ``ptr`` int32 ``[out + 1]``, ``col`` int16 ``[nblk]`` (block columns, strictly
increasing within a row), ``val`` int8 ``[nblk * 4]``, ``scale`` float32 ``[out]``, ``wsum`` int32 ``[out]`` (each
row's sum of values: the offset compensation of the vpdpbusd / 7-bit kernels, computed here once instead of on
every call; :func:`~sparsekit.kernels.reference.int8_b4_row_sums`). ``in_features`` is limited to
:data:`MAX_IN_FEATURES` (int32 accumulators cannot overflow; block columns fit an int16). Everything is validated
when a packed weight is built, and the op re-checks every index on each call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsekit.formats.base import density_of
from sparsekit.formats.int8 import BLOCK, Int8BlockFormat, quantize_rows
from sparsekit.formats.validate import (
    KernelInputError,
    check_finite,
    check_row_indices,
)
from sparsekit.kernels import reference
from sparsekit.kernels.cpu_packed import CpuPackedBase

__all__ = ["BLOCK", "MAX_IN_FEATURES", "CpuInt8B4Weight", "pack_cpu_int8_b4", "quantize_rows"]

#: Largest in_features: ``in * 127 * 127 < 2**31`` (exact int32 accumulators) and block columns fit an int16.
MAX_IN_FEATURES = 131072


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class CpuInt8B4Weight(CpuPackedBase):
    """An int8 weight ``[out, in]`` in 1x4 blocks, packed once for the CPU INT8 kernels (module docstring).

    Fields: ``shape = (out, in)``, ``ptr`` int32 ``[out + 1]``, ``col`` int16 ``[nblk]``, ``val`` int8
    ``[nblk * 4]`` in ``[-127, 127]``, ``scale`` float32 ``[out]`` (finite, >= 0), ``wsum`` int32 ``[out]`` (the
    row sums of ``val``). Construction validates everything (dtypes, sizes, pointers, block columns in range and
    strictly increasing per row, value range, zero padding columns, scales, row sums) and raises ``TypeError`` /
    :class:`~sparsekit.formats.KernelInputError`.
    Immutable by convention.
    """

    kind: ClassVar[str] = "int8-b4"
    scale: torch.Tensor
    wsum: torch.Tensor

    def _validate(self, op: str, out: int, inp: int) -> None:
        if inp > MAX_IN_FEATURES:
            raise KernelInputError(f"{op}: in_features {inp} > {MAX_IN_FEATURES} (int32 accumulators could overflow)")
        nblk, p = self._check_runs(op, out, torch.int16, torch.int8, BLOCK, "the number of blocks",
                                   more=(("scale", self.scale, torch.float32, out),
                                         ("wsum", self.wsum, torch.int32, out)))
        check_row_indices(p, self.col, ncols=self.nkb, idx_name="col", index_word="block column",
                          error=KernelInputError, where=op)
        check_finite(self.scale, "scale", KernelInputError, op)
        if out and bool((self.scale < 0).any()):
            raise KernelInputError(f"{op}: scale must be >= 0 (symmetric quantisation)")
        if nblk and bool((self.val == -128).any()):
            bad = int(torch.nonzero(self.val == -128)[0, 0])
            raise KernelInputError(f"{op}: val[{bad}] is -128; int8 values must be in [-127, 127]")
        if nblk and inp % BLOCK:  # the padding columns of the last block column must be zero
            last = (self.col.to(torch.int64) == self.nkb - 1)
            if bool(self.val.view(nblk, BLOCK)[last][:, inp % BLOCK:].any()):
                raise KernelInputError(f"{op}: values stored for padding columns >= in_features ({inp})")
        if not torch.equal(self.wsum, reference.int8_b4_row_sums(self.ptr, self.val)):
            raise KernelInputError(f"{op}: wsum must hold each row's sum of val (reference.int8_b4_row_sums)")

    # --- derived (and CpuPackedBase's out_features, in_features, nnz, density, nbytes) --------------
    @property
    def nkb(self) -> int:
        """Block columns: ``ceil(in / 4)``."""
        return -(-self.shape[1] // BLOCK)

    @property
    def nblocks(self) -> int:
        """Stored 1x4 blocks."""
        return self.col.numel()

    @property
    def block_density(self) -> float:
        """Stored blocks / all ``out * ceil(in / 4)`` blocks."""
        return density_of(self.nblocks, (self.shape[0], self.nkb))

    def tensors(self) -> dict[str, torch.Tensor]:
        """``{"ptr", "col", "val", "scale", "wsum"}``."""
        return {"ptr": self.ptr, "col": self.col, "val": self.val, "scale": self.scale, "wsum": self.wsum}

    def to_int8(self) -> torch.Tensor:
        """The quantised weight ``q`` as a dense int8 ``[out, in]`` tensor."""
        return reference.int8_b4_to_dense(self.ptr, self.col, self.val, self.shape[1], self.shape[0])

    def to_dense(self) -> torch.Tensor:
        """The dequantised weight ``scale[:, None] * q`` as a float32 ``[out, in]`` tensor."""
        return self.scale[:, None] * self.to_int8().to(torch.float32)

    def __repr__(self) -> str:
        out, inp = self.shape
        return (f"{type(self).__name__}(shape=({out}, {inp}), nblocks={self.nblocks}, "
                f"block_density={self.block_density:.3f}, nbytes={self.nbytes})")


def pack_cpu_int8_b4(weight: Any, weight_bits: int = 8) -> CpuInt8B4Weight:
    """Pack a weight once for :func:`sparsekit.kernels.cpu_int8.int8_b4_linear`.

    Args:
        weight: an :class:`~sparsekit.formats.Int8BlockFormat` (its stored ints, blocks and scales are packed as
            they are: no re-quantisation, bit-identical), or a dense ``[out, in]`` float32 / bfloat16 / float16
            tensor (on any device; packed on the CPU), finite, quantised through ``Int8BlockFormat.pack``.
            ``in <= MAX_IN_FEATURES``.
        weight_bits: 8 or 7, the width a dense weight is quantised to (:func:`~sparsekit.formats.int8.quantize_rows`;
            :func:`sparsekit.kernels.cpu_int8.preferred_weight_bits` says which runs faster here); a format keeps
            its stored ints.
    Returns:
        a :class:`CpuInt8B4Weight`: per-row scales, and the 1x4 blocks of the format (for a dense weight: those
        holding any non-zero fp32 weight; module docstring). Raises ``TypeError`` /
        :class:`~sparsekit.formats.KernelInputError` for bad input.
    """
    if isinstance(weight, Int8BlockFormat):
        fmt = weight
    elif isinstance(weight, torch.Tensor):
        if not weight.is_floating_point() or weight.dim() != 2 or weight.layout != torch.strided:
            raise TypeError(f"pack_cpu_int8_b4 expects a dense floating-point [out, in] tensor, got "
                            f"{weight.dtype} {list(weight.shape)} ({weight.layout})")
        w = weight.detach().to("cpu", torch.float32)
        check_finite(w, "weight", KernelInputError, "pack_cpu_int8_b4")
        if w.shape[1] > MAX_IN_FEATURES:
            raise KernelInputError(f"pack_cpu_int8_b4: in_features {w.shape[1]} > {MAX_IN_FEATURES}")
        fmt = Int8BlockFormat.pack(w, weight_bits=weight_bits)
    else:
        raise TypeError(f"pack_cpu_int8_b4 expects an Int8BlockFormat or a dense weight tensor, got "
                        f"{type(weight).__name__}")
    out, inp = fmt.shape
    if inp > MAX_IN_FEATURES:
        raise KernelInputError(f"pack_cpu_int8_b4: in_features {inp} > {MAX_IN_FEATURES}")
    val = fmt.values.reshape(-1)
    return CpuInt8B4Weight(shape=(out, inp), ptr=fmt.row_ptr, col=fmt.block_col_idx.to(torch.int16), val=val,
                           scale=fmt.scale, wsum=reference.int8_b4_row_sums(fmt.row_ptr, val))
