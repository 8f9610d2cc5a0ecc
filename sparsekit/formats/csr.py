"""The CSR storage format: compressed sparse rows with int16 / int32 columns and a row swizzle."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sparsekit.formats.base import VALUE_DTYPES, MatrixFormat, prepare_weight
from sparsekit.formats.validate import (
    INT32_MAX,
    check,
    check_compressed_rows,
    check_finite,
    check_row_order,
    check_shape,
    check_stored_tensor,
    dtype_name,
    entry_rows,
    is_int,
)

__all__ = ["CSRFormat", "INT16_MAX_COLS", "csr_index_dtype", "length_order"]

#: CSR column indices are int16 iff ``in_features <= INT16_MAX_COLS`` (largest index 32767), else int32.
INT16_MAX_COLS = 32768


def csr_index_dtype(in_features: int) -> torch.dtype:
    """Column index dtype of a CSR matrix with ``in_features`` columns: int16 up to :data:`INT16_MAX_COLS`."""
    return torch.int16 if in_features <= INT16_MAX_COLS else torch.int32


def length_order(lengths: torch.Tensor) -> torch.Tensor:
    """The row swizzle: int32 permutation listing rows by ``lengths``, longest first (ties: ascending row)."""
    return torch.sort(lengths, descending=True, stable=True).indices.to(torch.int32)


@dataclass(frozen=True, eq=False, repr=False)
class CSRFormat(MatrixFormat):
    """Compressed sparse rows over ``W [out, in]``.

    Fields:
        shape: ``(out, in)``.
        row_ptr: ``int32 [out + 1]``; ``row_ptr[0] == 0``, non-decreasing, ``row_ptr[out] == nnz``.
            Row ``r`` owns the entries ``k`` in ``[row_ptr[r], row_ptr[r + 1])``; an empty row has
            ``row_ptr[r] == row_ptr[r + 1]``.
        col_idx: ``[nnz]``, dtype **int16 when ``in <= 32768``** (indices ``0..32767``, never
            negative, so kernels may zero-extend), **int32 otherwise** (:data:`INT16_MAX_COLS`).
            ``col_idx[k]`` is the column of entry ``k``; within a row strictly increasing (sorted
            ascending, no duplicates); every index in ``[0, in)``.
        values: ``float32`` or ``bfloat16 [nnz]``; ``W[r, col_idx[k]] = values[k]``. Positions not
            stored are zero. Packing stores exactly the non-zeros (after conversion to the value
            dtype); a loaded artifact may also hold explicit zeros.
        row_order: ``int32 [out]`` or ``None`` -- the "row swizzle": a permutation of ``0..out-1``
            listing rows by number of stored entries, longest first (ties: ascending row index).
            ``row_order[i]`` is the row that the i-th work item (warp / thread block) processes;
            output row ``row_order[i]`` is written by that item. Always present after packing.

    Semantics: ``y[..., r] = sum_{k in row r} values[k] * x[..., col_idx[k]]``.

    Tensors: ``row_ptr, col_idx, values`` and ``row_order`` if present.
    ``meta()``: ``format_version, kind="csr", shape, value_dtype, index_dtype, nnz, has_row_order``.
    ``nbytes = 4*(out+1) + index_bytes*nnz + value_bytes*nnz + 4*out`` (the last term only with
    ``row_order``), where ``index_bytes`` is 2 (int16) or 4 (int32) and ``value_bytes`` 4 or 2.
    """

    kind: ClassVar[str] = "csr"
    _values_name: ClassVar[str] = "values"
    _tensor_names: ClassVar[tuple[str, ...]] = ("row_ptr", "col_idx", "values")
    _optional_tensor_names: ClassVar[tuple[str, ...]] = ("row_order",)
    shape: tuple[int, int]
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    row_order: torch.Tensor | None = None

    @classmethod
    def pack(cls, weight: torch.Tensor, *, value_dtype: torch.dtype = torch.float32) -> CSRFormat:
        w = prepare_weight(weight, value_dtype)
        out, inp = w.shape
        nz = w != 0
        rows, cols = torch.nonzero(nz, as_tuple=True)  # row-major order: sorted by row, then column
        if rows.numel() > INT32_MAX:
            raise ValueError(f"too many non-zeros for int32 row pointers: {rows.numel()}")
        counts = nz.sum(dim=1, dtype=torch.int64)
        row_ptr = torch.zeros(out + 1, dtype=torch.int64)
        torch.cumsum(counts, dim=0, out=row_ptr[1:])
        return cls(
            shape=(int(out), int(inp)),
            row_ptr=row_ptr.to(torch.int32),
            col_idx=cols.to(csr_index_dtype(inp)),
            values=w[rows, cols].contiguous(),
            row_order=length_order(counts),
        )

    def _normalize(self) -> None:
        super()._normalize()
        object.__setattr__(self, "shape", check_shape(self.shape))

    def _validate(self) -> None:
        out, inp = self.shape
        check_stored_tensor(self.values, "values", ndim=1, dtypes=VALUE_DTYPES)
        nnz = self.values.numel()
        check(nnz <= INT32_MAX, f"nnz {nnz} exceeds int32 range")
        check_stored_tensor(self.row_ptr, "row_ptr", ndim=1, dtypes=(torch.int32,), length=out + 1)
        check_stored_tensor(self.col_idx, "col_idx", ndim=1, dtypes=(csr_index_dtype(inp),), length=nnz,
                            length_what=" (the number of values)")
        p = check_compressed_rows(self.row_ptr, self.col_idx, ncols=inp)
        check_finite(self.values, "values")
        if self.row_order is not None:
            check_stored_tensor(self.row_order, "row_order", ndim=1, dtypes=(torch.int32,), length=out)
            check_row_order(self.row_order, p[1:] - p[:-1])

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def index_dtype(self) -> torch.dtype:
        return self.col_idx.dtype

    def row_lengths(self) -> torch.Tensor:
        """``int64 [out]``: stored entries per row (``row_ptr[1:] - row_ptr[:-1]``)."""
        p = self.row_ptr.to(torch.int64)
        return p[1:] - p[:-1]

    def to_dense(self) -> torch.Tensor:
        out, inp = self.shape
        w = torch.zeros(out, inp, dtype=torch.float32)
        if self.nnz:
            rows = entry_rows(self.row_ptr)
            w[rows, self.col_idx.to(torch.int64)] = self.values.to(torch.float32)
        return w

    def tensors(self) -> dict[str, torch.Tensor]:
        t = {"row_ptr": self.row_ptr, "col_idx": self.col_idx, "values": self.values}
        if self.row_order is not None:
            t["row_order"] = self.row_order
        return t

    def _meta_extra(self) -> dict:
        return {"index_dtype": dtype_name(self.col_idx.dtype), "nnz": self.nnz,
                "has_row_order": self.row_order is not None}

    def _repr_extra(self) -> dict:
        return {"index_dtype": dtype_name(self.col_idx.dtype)}

    @classmethod
    def _from_parts(cls, meta, tensors, shape):
        check("index_dtype" in meta, "meta lacks 'index_dtype'")
        check(meta["index_dtype"] in ("int16", "int32"),
              f"meta index_dtype {meta['index_dtype']!r} must be 'int16' or 'int32'")
        expected = dtype_name(csr_index_dtype(shape[1]))
        check(meta["index_dtype"] == expected,
              f"meta index_dtype is {meta['index_dtype']!r}, expected {expected!r} for in_features={shape[1]}")
        has_ro = meta.get("has_row_order", "row_order" in tensors)
        check(isinstance(has_ro, bool), f"meta has_row_order must be a bool, got {has_ro!r}")
        check(has_ro == ("row_order" in tensors),
              f"meta has_row_order={has_ro} but tensor row_order is "
              f"{'present' if 'row_order' in tensors else 'missing'}")
        fmt = cls(shape=shape, row_ptr=tensors["row_ptr"], col_idx=tensors["col_idx"],
                  values=tensors["values"], row_order=tensors.get("row_order"))
        if "nnz" in meta:
            check(is_int(meta["nnz"]) and meta["nnz"] == fmt.nnz,
                  f"meta nnz {meta['nnz']!r} does not match the {fmt.nnz} stored values")
        return fmt

