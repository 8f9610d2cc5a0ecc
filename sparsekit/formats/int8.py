"""The INT8 storage format: int8 weights with one float32 scale per output row, in 1x4 blocks along the input.

One home for the quantisation rule (:func:`quantize_rows`) and the block rule (a 1x4 block is stored when it holds a
non-zero weight); the CPU INT8 kernels' packed layout (:mod:`sparsekit.kernels.cpu_int8_layout`) is built from this
format, so an artifact's stored ints are exactly the ints the kernel multiplies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sparsekit.formats.base import MatrixFormat, prepare_weight
from sparsekit.formats.csr import csr_index_dtype
from sparsekit.formats.validate import (
    INT32_MAX,
    check,
    check_compressed_rows,
    check_finite,
    check_shape,
    check_stored_tensor,
    dtype_name,
    entry_rows,
    is_int,
)

__all__ = ["BLOCK", "WEIGHT_BITS", "Int8BlockFormat", "quantize_rows", "weight_qmax"]

#: Input features per block (the 4 bytes of one dot-product word).
BLOCK = 4
#: Weight widths quantize_rows offers: 8 bits (``q`` in ``[-127, 127]``) and 7 bits (``[-63, 63]``: the width the
#: AVX2 / AVX-512BW kernels multiply without the sign trick, one instruction fewer per product; see
#: ``csrc/spmm_cpu_int8/spmm_cpu_int8.h``, "ISA paths").
WEIGHT_BITS = (8, 7)


def weight_qmax(weight_bits: int) -> int:
    """The largest ``|q|`` of ``weight_bits``-bit symmetric weights: 127 for 8, 63 for 7. ValueError otherwise."""
    if weight_bits not in WEIGHT_BITS:
        raise ValueError(f"weight_bits must be one of {WEIGHT_BITS}, got {weight_bits!r}")
    return 2 ** (weight_bits - 1) - 1


def quantize_rows(weight: torch.Tensor, weight_bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantisation of a float ``weight [out, in]``: ``(q int8 [out, in], scale float32
    [out])`` with ``qmax = weight_qmax(weight_bits)`` (127 or 63), ``scale = max|W[o, :]| / qmax`` and
    ``q = clamp(round_half_even(W / scale), -qmax, qmax)`` (``q = 0`` and ``scale = 0`` for an all-zero row)."""
    qmax = weight_qmax(weight_bits)
    w = weight.to(torch.float32)
    amax = w.abs().amax(dim=1) if w.shape[1] else w.new_zeros(w.shape[0])
    scale = amax / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / safe[:, None]).clamp_(-qmax, qmax)
    q = torch.where((scale > 0)[:, None], q, torch.zeros_like(q))
    return q.to(torch.int8), scale


@dataclass(frozen=True, eq=False, repr=False)
class Int8BlockFormat(MatrixFormat):
    """``W [out, in] ~= scale[:, None] * q``: int8 ``q`` in 1x4 blocks along the input, one float32 scale per row.

    Quantisation (:func:`quantize_rows`): symmetric per output row, ``q`` in ``[-127, 127]`` (never -128, so the
    kernels may negate it), ``scale[o] = max|W[o, :]| / 127`` (0 for an all-zero row). Lossy: ``to_dense()`` is the
    dequantised matrix, not the float weight that was packed.

    Blocks: block column ``b`` of row ``o`` covers input columns ``4b .. 4b+3``; ``nkb = ceil(in / 4)`` block
    columns, the last one zero-padded beyond ``in``. :meth:`pack` stores a block when any of its four float
    weights is non-zero (so a stored block may hold explicit zeros, even only zeros where small weights rounded
    to 0); :meth:`from_quantized` when any of its four ints is non-zero.

    Fields / tensors:
        row_ptr: ``int32 [out + 1]``; ``row_ptr[0] == 0``, non-decreasing, ``row_ptr[out] == nblocks``. Row ``o``
            owns the blocks ``k`` in ``[row_ptr[o], row_ptr[o + 1])``.
        block_col_idx: ``[nblocks]``, int16 when ``nkb <= 32768`` else int32 (as CSR's columns, see
            :func:`~sparsekit.formats.csr.csr_index_dtype`); strictly increasing within a row, in ``[0, nkb)``.
        values: ``int8 [nblocks, 4]`` in ``[-127, 127]``; ``q[o, 4 * block_col_idx[k] + j] = values[k, j]``.
            Positions ``>= in`` of the last block column are zero.
        scale: ``float32 [out]``, finite, ``>= 0``.

    Semantics: ``W[o, i] = scale[o] * q[o, i]`` (positions not stored are zero). ``value_dtype`` is int8.
    ``nnz``: the in-bounds positions of the stored blocks (padding excluded, as for BSR).
    ``meta()``: ``format_version, kind="int8-b4", shape, value_dtype="int8", index_dtype, nblocks``.
    ``nbytes = 4*(out+1) + index_bytes*nblocks + 4*nblocks + 4*out``.
    """

    kind: ClassVar[str] = "int8-b4"
    _values_name: ClassVar[str] = "values"
    value_dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.int8,)
    _tensor_names: ClassVar[tuple[str, ...]] = ("row_ptr", "block_col_idx", "values", "scale")
    shape: tuple[int, int]
    row_ptr: torch.Tensor
    block_col_idx: torch.Tensor
    values: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def pack(cls, weight: torch.Tensor, *, value_dtype: torch.dtype = torch.float32,
             weight_bits: int = 8) -> Int8BlockFormat:
        """Quantise a float ``weight [out, in]`` (finite; first rounded to ``value_dtype``, float32 or bfloat16) to
        ``weight_bits``-bit ints (:func:`quantize_rows`: 8 or 7)."""
        w = prepare_weight(weight, value_dtype).to(torch.float32)
        q, scale = quantize_rows(w, weight_bits)
        return cls._from_blocks(q, scale, keep=_blocks(w) != 0)

    @classmethod
    def from_quantized(cls, q: torch.Tensor, scale: torch.Tensor) -> Int8BlockFormat:
        """The format of quantised ``q`` (int8 ``[out, in]``, in ``[-127, 127]``) and ``scale`` (float32 ``[out]``),
        storing the blocks that hold a non-zero int; validated like a loaded artifact (FormatError)."""
        check_stored_tensor(q, "q", ndim=2, dtypes=(torch.int8,))
        q = q.contiguous()
        return cls._from_blocks(q, scale, keep=_blocks(q) != 0)

    @classmethod
    def _from_blocks(cls, q: torch.Tensor, scale: torch.Tensor, keep: torch.Tensor) -> Int8BlockFormat:
        """``keep`` bool ``[out, nkb, 4]``: the positions that make a block stored."""
        out, inp = q.shape
        kept = keep.any(dim=2)  # [out, nkb]
        rows, cols = torch.nonzero(kept, as_tuple=True)  # row-major: rows, then increasing block column
        if rows.numel() > INT32_MAX:
            raise ValueError(f"too many blocks for int32 row pointers: {rows.numel()}")
        ptr = torch.zeros(out + 1, dtype=torch.int64)
        torch.cumsum(kept.sum(dim=1, dtype=torch.int64), dim=0, out=ptr[1:])
        return cls(shape=(int(out), int(inp)), row_ptr=ptr.to(torch.int32),
                   block_col_idx=cols.to(csr_index_dtype(kept.shape[1])),
                   values=_blocks(q)[rows, cols].contiguous(), scale=scale.to(torch.float32).contiguous())

    def _normalize(self) -> None:
        super()._normalize()
        object.__setattr__(self, "shape", check_shape(self.shape))

    @property
    def nkb(self) -> int:
        """Block columns: ``ceil(in / 4)``."""
        return -(-self.shape[1] // BLOCK)

    @property
    def nblocks(self) -> int:
        return self.values.shape[0]

    @property
    def weight_bits(self) -> int:
        """The narrowest of :data:`WEIGHT_BITS` that holds every stored int (7 when all are within ``[-63, 63]``)."""
        return 7 if self.nblocks == 0 or int(self.values.abs().max()) <= weight_qmax(7) else 8

    def _validate(self) -> None:
        out, inp = self.shape
        nkb = self.nkb
        check_stored_tensor(self.values, "values", ndim=2, dtypes=(torch.int8,))
        nb = self.values.shape[0]
        check(self.values.shape[1] == BLOCK, f"values has shape {list(self.values.shape)}, expected [nblocks, {BLOCK}]")
        check(nb <= INT32_MAX, f"{nb} blocks exceed the int32 range")
        check_stored_tensor(self.row_ptr, "row_ptr", ndim=1, dtypes=(torch.int32,), length=out + 1)
        check_stored_tensor(self.block_col_idx, "block_col_idx", ndim=1, dtypes=(csr_index_dtype(nkb),), length=nb,
                            length_what=" (the number of blocks)")
        check_stored_tensor(self.scale, "scale", ndim=1, dtypes=(torch.float32,), length=out,
                            length_what=" (one scale per output row)")
        check_compressed_rows(self.row_ptr, self.block_col_idx, ncols=nkb, idx_name="block_col_idx",
                              index_word="block column", count_what="the number of blocks")
        if nb and bool((self.values == -128).any()):
            k = int(torch.nonzero(self.values == -128)[0, 0])
            check(False, f"values of block {k} hold -128; int8 values must lie in [-127, 127]")
        check_finite(self.scale, "scale")
        if out and bool((self.scale < 0).any()):
            check(False, f"scale holds {int((self.scale < 0).sum())} negative value(s); scales must be >= 0")
        if nb and inp % BLOCK:
            last = self.block_col_idx.to(torch.int64) == nkb - 1
            check(not bool(self.values[last, inp % BLOCK:].any()),
                  f"values hold non-zero padding right of column {inp} (beyond the matrix edge)")

    @property
    def nnz(self) -> int:
        if not self.nblocks:
            return 0
        inp = self.shape[1]
        width = torch.clamp(inp - self.block_col_idx.to(torch.int64) * BLOCK, max=BLOCK)
        return int(width.sum())

    @property
    def index_dtype(self) -> torch.dtype:
        return self.block_col_idx.dtype

    def block_rows(self) -> torch.Tensor:
        """``int64 [nblocks]``: the output row of each stored block."""
        return entry_rows(self.row_ptr)

    def to_int8(self) -> torch.Tensor:
        """The quantised weight ``q`` as a new dense int8 ``[out, in]`` tensor."""
        out, inp = self.shape
        q = torch.zeros(out, self.nkb, BLOCK, dtype=torch.int8)
        if self.nblocks:
            q[self.block_rows(), self.block_col_idx.to(torch.int64)] = self.values
        return q.reshape(out, self.nkb * BLOCK)[:, :inp].contiguous()

    def to_dense(self) -> torch.Tensor:
        """The dequantised weight ``scale[:, None] * q`` as a new float32 ``[out, in]`` tensor."""
        return self.scale[:, None] * self.to_int8().to(torch.float32)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"row_ptr": self.row_ptr, "block_col_idx": self.block_col_idx, "values": self.values,
                "scale": self.scale}

    def _meta_extra(self) -> dict:
        return {"index_dtype": dtype_name(self.block_col_idx.dtype), "nblocks": self.nblocks}

    def _repr_extra(self) -> dict:
        return {"nblocks": self.nblocks}

    @classmethod
    def _from_parts(cls, meta, tensors, shape):
        expected = dtype_name(csr_index_dtype(-(-shape[1] // BLOCK)))
        check(meta.get("index_dtype") == expected,
              f"meta index_dtype is {meta.get('index_dtype')!r}, expected {expected!r} for in_features={shape[1]}")
        fmt = cls(shape=shape, row_ptr=tensors["row_ptr"], block_col_idx=tensors["block_col_idx"],
                  values=tensors["values"], scale=tensors["scale"])
        check("nblocks" in meta and is_int(meta["nblocks"]) and meta["nblocks"] == fmt.nblocks,
              f"meta nblocks {meta.get('nblocks')!r} does not match the {fmt.nblocks} stored blocks")
        return fmt


def _blocks(t: torch.Tensor) -> torch.Tensor:
    """``t [out, in]`` zero-padded to ``4 * ceil(in / 4)`` columns, as ``[out, nkb, 4]``."""
    out, inp = t.shape
    nkb = -(-inp // BLOCK)
    return torch.nn.functional.pad(t, (0, nkb * BLOCK - inp)).reshape(out, nkb, BLOCK)
