"""Storage / compute formats for one pruned weight matrix.

The exporter converts every pruned ``nn.Linear`` weight ``W`` (PyTorch layout: float32, shape
``[out, in]``, the layer computes ``y = x @ W.T + b``) into one of the formats below, chosen per
layer. Kernels (C++, Triton, CUDA) are written against the layouts documented here, so every class
docstring states its fields, dtypes, shapes and index semantics exactly. The bias is *not* part of
a format: the exporter stores it next to the format.

Conventions shared by all formats
---------------------------------
* ``shape == (out, in)`` is always the true (unpadded) shape of ``W``.
* All tensors are CPU, C-contiguous (row-major) and, once written by safetensors, little-endian.
* Value dtypes are ``torch.float32`` or ``torch.bfloat16`` (:data:`VALUE_DTYPES`). Every stored value
  is finite (no NaN / inf); loaders reject anything else.
* Index tensors are signed integers and all indices are zero-based. Pointer arrays are int32, so a
  single matrix holds at most ``2**31 - 1`` stored values / blocks.
* ``nnz`` is the number of stored weight values that lie inside the matrix: dense ``out*in``;
  CSR ``len(values)``; BSR the in-bounds positions of the stored blocks (edge padding excluded);
  low-rank the parameter count ``r * (out + in)``. ``density = nnz / (out * in)`` (0.0 for a
  matrix with no elements; may exceed 1 only for a low-rank factorisation larger than dense).
  ``count_nonzero()`` gives the number of truly non-zero entries of the represented matrix.
* ``nbytes`` is the exact byte count of all tensors returned by ``tensors()`` (values, indices,
  pointers, permutations, padding).
* ``tensors()`` gives the tensors to store (names are per format, see each class) and ``meta()`` a
  JSON-serialisable dict (always with ``format_version``, ``kind``, ``shape`` and ``value_dtype``).
  :func:`from_tensors` rebuilds a format from these two and validates everything, raising
  :class:`FormatError` (a ``ValueError``) that says what is wrong. It is the entry point for
  loading untrusted artifacts.

Formats (``kind``)
------------------
* ``"dense"``   -- :class:`DenseFormat`: the matrix as is.
* ``"csr"``     -- :class:`CSRFormat`: compressed sparse rows, int16/int32 columns, row swizzle.
* ``"bsr"``     -- :class:`BSRFormat`: block-sparse rows, ``br x bc`` blocks, edges zero-padded.
* ``"lowrank"`` -- :class:`LowRankFormat`: ``W ~= u @ v`` from a truncated SVD.

Use :func:`to_format` to pack a weight and :func:`from_tensors` to load one.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

__all__ = [
    "BSRFormat",
    "CSRFormat",
    "DenseFormat",
    "FORMATS",
    "FORMAT_VERSION",
    "FormatError",
    "INT16_MAX_COLS",
    "LowRankFormat",
    "MatrixFormat",
    "VALUE_DTYPES",
    "from_tensors",
    "to_format",
]

#: Version of the layouts below, stored as ``meta()["format_version"]``. Bump on any layout change.
FORMAT_VERSION = 1

#: Allowed dtypes of stored weight values (dense weight, CSR values, BSR blocks, low-rank factors).
VALUE_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)

#: CSR column indices are int16 iff ``in_features <= INT16_MAX_COLS`` (largest index 32767), else int32.
INT16_MAX_COLS = 32768

_INT32_MAX = 2**31 - 1
_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.float64: "float64",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
}
_VALUE_DTYPE_BY_NAME = {_DTYPE_NAMES[d]: d for d in VALUE_DTYPES}


class FormatError(ValueError):
    """A format is invalid or a stored artifact is corrupt. ``problem`` holds the bare reason."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem if problem is not None else message


class _Invalid(Exception):
    """Internal: raised by validators with the bare problem; wrapped into FormatError."""


def _dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _check(cond: bool, problem: str) -> None:
    if not cond:
        raise _Invalid(problem)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_tensor(t: Any, name: str, *, ndim: int, dtypes: tuple[torch.dtype, ...]) -> None:
    _check(isinstance(t, torch.Tensor), f"{name} must be a torch.Tensor, got {type(t).__name__}")
    _check(t.dtype in dtypes,
           f"{name} has dtype {_dtype_name(t.dtype)}, expected {' or '.join(_dtype_name(d) for d in dtypes)}")
    _check(t.dim() == ndim, f"{name} must be {ndim}-D, got shape {list(t.shape)}")
    _check(t.layout == torch.strided, f"{name} must be a strided (dense) tensor, got layout {t.layout}")


def _check_finite(t: torch.Tensor, name: str) -> None:
    if t.numel():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            _check(False, f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf)")


def _check_shape(shape: Any) -> tuple[int, int]:
    _check(isinstance(shape, (tuple, list)) and len(shape) == 2 and all(_is_int(s) for s in shape),
           f"shape must be two integers [out, in], got {shape!r}")
    out, inp = int(shape[0]), int(shape[1])
    _check(0 <= out <= _INT32_MAX and 0 <= inp <= _INT32_MAX,
           f"shape {[out, inp]} out of range (each dimension must be in [0, 2**31-1])")
    return out, inp


def _check_ptr(ptr: torch.Tensor, name: str, length: int, end: int, end_what: str) -> torch.Tensor:
    """Validate an int32 pointer array: length, ptr[0] == 0, non-decreasing, ptr[-1] == end."""
    _check_tensor(ptr, name, ndim=1, dtypes=(torch.int32,))
    _check(ptr.numel() == length, f"{name} has length {ptr.numel()}, expected {length}")
    p = ptr.to(torch.int64)
    _check(int(p[0]) == 0, f"{name}[0] is {int(p[0])}, expected 0")
    d = p[1:] - p[:-1]
    if d.numel() and bool((d < 0).any()):
        i = int(torch.nonzero(d < 0)[0, 0])
        _check(False, f"{name} is not monotone non-decreasing ({name}[{i}]={int(p[i])} > "
                      f"{name}[{i + 1}]={int(p[i + 1])})")
    _check(int(p[-1]) == end, f"{name}[-1] is {int(p[-1])}, expected {end} ({end_what})")
    return p


def _check_sorted_unique(idx: torch.Tensor, ptr: torch.Tensor, idx_name: str, row_word: str) -> None:
    """Indices must be strictly increasing within each segment [ptr[r], ptr[r+1])."""
    n = idx.numel()
    if n < 2:
        return
    starts = torch.zeros(n + 1, dtype=torch.bool)
    starts[ptr[1:-1]] = True  # ptr values are in [0, n] after _check_ptr
    d = idx[1:] - idx[:-1]
    bad = (d <= 0) & ~starts[1:n]
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        r = int(torch.searchsorted(ptr, torch.tensor([k], dtype=ptr.dtype), right=True)[0]) - 1
        what = "duplicate" if int(d[k]) == 0 else "unsorted"
        _check(False, f"{idx_name} in {row_word} {r} are not strictly increasing ({what}: "
                      f"{idx_name}[{k}]={int(idx[k])}, {idx_name}[{k + 1}]={int(idx[k + 1])})")


def _prepare_weight(weight: Any, value_dtype: torch.dtype) -> torch.Tensor:
    """Validate a weight to pack and return it detached, on CPU, contiguous, in ``value_dtype``."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if value_dtype not in VALUE_DTYPES:
        raise ValueError(f"value_dtype must be one of {[_dtype_name(d) for d in VALUE_DTYPES]}, "
                         f"got {value_dtype}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {list(weight.shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must be a floating-point tensor, got dtype {_dtype_name(weight.dtype)}")
    if weight.layout != torch.strided:
        raise ValueError(f"weight must be a strided (dense) tensor, got layout {weight.layout}")
    out, inp = weight.shape
    if out > _INT32_MAX or inp > _INT32_MAX:
        raise ValueError(f"weight shape {list(weight.shape)} too large (int32 indices)")
    w = weight.detach().cpu()
    if w.numel() and not bool(torch.isfinite(w).all()):
        raise ValueError(f"weight contains {int((~torch.isfinite(w)).sum())} NaN/inf value(s)")
    w = w.to(value_dtype).contiguous()
    if w.numel() and not bool(torch.isfinite(w).all()):
        raise ValueError(f"weight overflows {_dtype_name(value_dtype)} (values too large to represent)")
    return w


def _as_x(x: torch.Tensor, inp: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != inp:
        raise ValueError(f"x must have shape [..., {inp}], got {list(x.shape)}")
    return x.to(torch.float32)


class MatrixFormat(ABC):
    """Base class of all formats (see the module docstring for the shared conventions).

    Subclasses are frozen dataclasses (immutable by convention: do not modify their tensors in
    place). Every subclass has ``kind`` (class attribute), ``shape``, ``nnz``, ``density``,
    ``nbytes``, ``value_dtype``, ``count_nonzero()``, ``to_dense()``, ``matmul_reference(x)``,
    ``tensors()``, ``meta()``, and the classmethods ``pack(weight, ...)`` and
    ``from_tensors(meta, tensors)``.
    """

    kind: ClassVar[str] = ""
    shape: tuple[int, int]

    # --- subclass API -------------------------------------------------------------------------
    @abstractmethod
    def _validate(self) -> None:
        """Raise _Invalid(problem) if the fields are inconsistent."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors to store, by name (see the class docstring)."""

    @abstractmethod
    def _meta_extra(self) -> dict:
        ...

    @classmethod
    @abstractmethod
    def _from_parts(cls, meta: Mapping, tensors: Mapping[str, torch.Tensor],
                    shape: tuple[int, int]) -> MatrixFormat:
        """Build from validated-looking meta + tensors; field validation happens in __post_init__."""

    @property
    @abstractmethod
    def nnz(self) -> int:
        ...

    @property
    @abstractmethod
    def value_dtype(self) -> torch.dtype:
        ...

    @abstractmethod
    def to_dense(self) -> torch.Tensor:
        """The represented matrix as a new float32 tensor of shape ``[out, in]``."""

    # --- shared -------------------------------------------------------------------------------
    _tensor_names: ClassVar[tuple[str, ...]] = ()
    _optional_tensor_names: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        try:
            self._normalize()
            self._validate()
        except _Invalid as e:
            raise FormatError(f"invalid {type(self).__name__}: {e}", str(e)) from None

    def _normalize(self) -> None:
        """Make tensor fields contiguous and the shape a tuple of ints (before validation)."""
        for name in self._tensor_names + self._optional_tensor_names:
            t = getattr(self, name, None)
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and not t.is_contiguous():
                object.__setattr__(self, name, t.contiguous())

    @property
    def density(self) -> float:
        """``nnz / (out * in)``; 0.0 for a matrix with no elements."""
        out, inp = self.shape
        return self.nnz / (out * inp) if out * inp else 0.0

    @property
    def nbytes(self) -> int:
        """Exact number of bytes of all tensors in ``tensors()``."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def count_nonzero(self) -> int:
        """Number of non-zero entries of the represented matrix."""
        return int(self.to_dense().count_nonzero())

    def matmul_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Reference ``x @ W.T`` (no bias) in float32: ``x [..., in]`` -> ``[..., out]``.

        ``x`` is converted to float32 and stored values are widened to float32 first. Kernels are
        tested against this.
        """
        x = _as_x(x, self.shape[1])
        return x @ self.to_dense().T

    def meta(self) -> dict:
        """JSON-serialisable description (plain ints, floats, strings, lists, bools)."""
        m = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "shape": [int(self.shape[0]), int(self.shape[1])],
            "value_dtype": _dtype_name(self.value_dtype),
        }
        m.update(self._meta_extra())
        return m

    @classmethod
    def from_tensors(cls, meta: Mapping, tensors: Mapping[str, torch.Tensor], *,
                     name: str | None = None) -> MatrixFormat:
        """Rebuild this format from ``meta()`` and ``tensors()``, validating everything.

        Raises :class:`FormatError` (a ``ValueError``) naming the problem if the artifact is corrupt.
        """
        fmt = from_tensors(meta, tensors, name=name)
        if not isinstance(fmt, cls):
            raise FormatError(f"expected a {cls.kind!r} matrix artifact, got kind {fmt.kind!r}")
        return fmt

    def __repr__(self) -> str:
        out, inp = self.shape
        extra = "".join(f", {k}={v}" for k, v in self._repr_extra().items())
        return (f"{type(self).__name__}(shape=({out}, {inp}), nnz={self.nnz}, density={self.density:.4f}, "
                f"value_dtype={_dtype_name(self.value_dtype)}{extra}, nbytes={self.nbytes})")

    def _repr_extra(self) -> dict:
        return {}


# =============================================================================================
# Dense
# =============================================================================================
@dataclass(frozen=True, eq=False, repr=False)
class DenseFormat(MatrixFormat):
    """The matrix stored as is.

    Fields / tensors:
        weight: ``float32`` or ``bfloat16``, shape ``[out, in]``, row-major, ``weight[o, i] = W[o, i]``.

    ``nnz = out * in`` (all positions are stored). ``meta()``: ``format_version, kind="dense",
    shape, value_dtype``.
    """

    kind: ClassVar[str] = "dense"
    _tensor_names: ClassVar[tuple[str, ...]] = ("weight",)
    weight: torch.Tensor

    @classmethod
    def pack(cls, weight: torch.Tensor, *, value_dtype: torch.dtype = torch.float32) -> DenseFormat:
        return cls(_prepare_weight(weight, value_dtype))

    def _validate(self) -> None:
        _check_tensor(self.weight, "weight", ndim=2, dtypes=VALUE_DTYPES)
        _check_shape(list(self.weight.shape))
        _check_finite(self.weight, "weight")

    @property
    def shape(self) -> tuple[int, int]:  # type: ignore[override]
        return int(self.weight.shape[0]), int(self.weight.shape[1])

    @property
    def nnz(self) -> int:
        return self.weight.numel()

    @property
    def value_dtype(self) -> torch.dtype:
        return self.weight.dtype

    def count_nonzero(self) -> int:
        return int(self.weight.count_nonzero())

    def to_dense(self) -> torch.Tensor:
        return self.weight.to(torch.float32, copy=True)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight}

    def _meta_extra(self) -> dict:
        return {}

    @classmethod
    def _from_parts(cls, meta, tensors, shape):
        w = tensors["weight"]
        _check_tensor(w, "weight", ndim=2, dtypes=VALUE_DTYPES)
        _check(tuple(w.shape) == shape, f"weight has shape {list(w.shape)}, expected {list(shape)}")
        return cls(w)


# =============================================================================================
# CSR
# =============================================================================================
def _csr_index_dtype(in_features: int) -> torch.dtype:
    return torch.int16 if in_features <= INT16_MAX_COLS else torch.int32


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
    _tensor_names: ClassVar[tuple[str, ...]] = ("row_ptr", "col_idx", "values")
    _optional_tensor_names: ClassVar[tuple[str, ...]] = ("row_order",)
    shape: tuple[int, int]
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    row_order: torch.Tensor | None = None

    @classmethod
    def pack(cls, weight: torch.Tensor, *, value_dtype: torch.dtype = torch.float32) -> CSRFormat:
        w = _prepare_weight(weight, value_dtype)
        out, inp = w.shape
        nz = w != 0
        rows, cols = torch.nonzero(nz, as_tuple=True)  # row-major order: sorted by row, then column
        if rows.numel() > _INT32_MAX:
            raise ValueError(f"too many non-zeros for int32 row pointers: {rows.numel()}")
        counts = nz.sum(dim=1, dtype=torch.int64)
        row_ptr = torch.zeros(out + 1, dtype=torch.int64)
        torch.cumsum(counts, dim=0, out=row_ptr[1:])
        row_order = torch.sort(counts, descending=True, stable=True).indices
        return cls(
            shape=(int(out), int(inp)),
            row_ptr=row_ptr.to(torch.int32),
            col_idx=cols.to(_csr_index_dtype(inp)),
            values=w[rows, cols].contiguous(),
            row_order=row_order.to(torch.int32),
        )

    def _normalize(self) -> None:
        super()._normalize()
        object.__setattr__(self, "shape", _check_shape(self.shape))

    def _validate(self) -> None:
        out, inp = self.shape
        _check_tensor(self.values, "values", ndim=1, dtypes=VALUE_DTYPES)
        nnz = self.values.numel()
        _check(nnz <= _INT32_MAX, f"nnz {nnz} exceeds int32 range")
        p = _check_ptr(self.row_ptr, "row_ptr", out + 1, nnz, "the number of values")
        idx_dtype = _csr_index_dtype(inp)
        _check_tensor(self.col_idx, "col_idx", ndim=1, dtypes=(idx_dtype,))
        _check(self.col_idx.numel() == nnz,
               f"col_idx has length {self.col_idx.numel()}, expected {nnz} (the number of values)")
        c = self.col_idx.to(torch.int64)
        if nnz:
            lo, hi = int(c.min()), int(c.max())
            _check(lo >= 0 and hi < inp,
                   f"column index out of range: col_idx spans [{lo}, {hi}], allowed [0, {inp - 1}]")
        _check_sorted_unique(c, p, "column indices", "row")
        _check_finite(self.values, "values")
        if self.row_order is not None:
            ro = self.row_order
            _check_tensor(ro, "row_order", ndim=1, dtypes=(torch.int32,))
            _check(ro.numel() == out, f"row_order has length {ro.numel()}, expected {out}")
            r = ro.to(torch.int64)
            if out:
                _check(int(r.min()) >= 0 and int(r.max()) < out,
                       f"row_order entries must lie in [0, {out - 1}]")
                _check(bool((torch.bincount(r, minlength=out) == 1).all()),
                       "row_order is not a permutation of the rows (repeated or missing row)")
                lengths = (p[1:] - p[:-1])[r]
                _check(bool((lengths[1:] <= lengths[:-1]).all()),
                       "row_order does not list rows by non-increasing number of entries")

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def value_dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def index_dtype(self) -> torch.dtype:
        return self.col_idx.dtype

    def row_lengths(self) -> torch.Tensor:
        """``int64 [out]``: stored entries per row (``row_ptr[1:] - row_ptr[:-1]``)."""
        p = self.row_ptr.to(torch.int64)
        return p[1:] - p[:-1]

    def count_nonzero(self) -> int:
        return int(self.values.count_nonzero())

    def to_dense(self) -> torch.Tensor:
        out, inp = self.shape
        w = torch.zeros(out, inp, dtype=torch.float32)
        if self.nnz:
            rows = torch.repeat_interleave(torch.arange(out), self.row_lengths())
            w[rows, self.col_idx.to(torch.int64)] = self.values.to(torch.float32)
        return w

    def tensors(self) -> dict[str, torch.Tensor]:
        t = {"row_ptr": self.row_ptr, "col_idx": self.col_idx, "values": self.values}
        if self.row_order is not None:
            t["row_order"] = self.row_order
        return t

    def _meta_extra(self) -> dict:
        return {"index_dtype": _dtype_name(self.col_idx.dtype), "nnz": self.nnz,
                "has_row_order": self.row_order is not None}

    def _repr_extra(self) -> dict:
        return {"index_dtype": _dtype_name(self.col_idx.dtype)}

    @classmethod
    def _from_parts(cls, meta, tensors, shape):
        _check("index_dtype" in meta, "meta lacks 'index_dtype'")
        _check(meta["index_dtype"] in ("int16", "int32"),
               f"meta index_dtype {meta['index_dtype']!r} must be 'int16' or 'int32'")
        expected = _dtype_name(_csr_index_dtype(shape[1]))
        _check(meta["index_dtype"] == expected,
               f"meta index_dtype is {meta['index_dtype']!r}, expected {expected!r} for in_features={shape[1]}")
        has_ro = meta.get("has_row_order", "row_order" in tensors)
        _check(isinstance(has_ro, bool), f"meta has_row_order must be a bool, got {has_ro!r}")
        _check(has_ro == ("row_order" in tensors),
               f"meta has_row_order={has_ro} but tensor row_order is "
               f"{'present' if 'row_order' in tensors else 'missing'}")
        fmt = cls(shape=shape, row_ptr=tensors["row_ptr"], col_idx=tensors["col_idx"],
                  values=tensors["values"], row_order=tensors.get("row_order"))
        if "nnz" in meta:
            _check(_is_int(meta["nnz"]) and meta["nnz"] == fmt.nnz,
                   f"meta nnz {meta['nnz']!r} does not match the {fmt.nnz} stored values")
        return fmt


# =============================================================================================
# BSR
# =============================================================================================
@dataclass(frozen=True, eq=False, repr=False)
class BSRFormat(MatrixFormat):
    """Block-sparse rows: ``W [out, in]`` tiled into ``br x bc`` blocks; non-zero blocks are stored.

    The tiling covers ``nbr = ceil(out / br)`` block rows and ``nbc = ceil(in / bc)`` block
    columns. ``out`` and ``in`` need not be multiples of the block: edge blocks are conceptually
    padded, and the stored padding (rows ``>= out`` / columns ``>= in``) is always zero.

    Fields:
        shape: ``(out, in)``, the true unpadded shape.
        block: ``(br, bc)``, positive ints.
        block_row_ptr: ``int32 [nbr + 1]``; ``[0] == 0``, non-decreasing, ``[nbr] == nblocks``.
            Block row ``i`` (matrix rows ``i*br .. i*br+br-1``) owns stored blocks ``k`` in
            ``[block_row_ptr[i], block_row_ptr[i + 1])``.
        block_col_idx: ``int32 [nblocks]``; block ``k`` covers matrix columns
            ``block_col_idx[k]*bc .. +bc-1``. Strictly increasing within a block row, in ``[0, nbc)``.
        blocks: ``float32`` or ``bfloat16 [nblocks, br, bc]``, contiguous, row-major inside a block:
            ``blocks[k, a, b] = W[i*br + a, block_col_idx[k]*bc + b]`` (zero beyond the edges).
            Block ``k`` starts at element offset ``k*br*bc``.

    Packing stores a block iff it holds at least one non-zero (after conversion to the value
    dtype); a loaded artifact may also hold all-zero blocks.
    Semantics: ``y[..., i*br + a] += sum_b blocks[k, a, b] * x[..., block_col_idx[k]*bc + b]``
    (mask rows ``>= out`` and columns ``>= in``).

    Tensors: ``block_row_ptr, block_col_idx, blocks``. ``meta()``: ``format_version, kind="bsr",
    shape, value_dtype, block=[br, bc], nblocks``. ``nnz`` counts the in-bounds positions of
    stored blocks (padding excluded).
    """

    kind: ClassVar[str] = "bsr"
    _tensor_names: ClassVar[tuple[str, ...]] = ("block_row_ptr", "block_col_idx", "blocks")
    shape: tuple[int, int]
    block: tuple[int, int]
    block_row_ptr: torch.Tensor
    block_col_idx: torch.Tensor
    blocks: torch.Tensor

    @classmethod
    def pack(cls, weight: torch.Tensor, *, block: tuple[int, int] = (32, 32),
             value_dtype: torch.dtype = torch.float32) -> BSRFormat:
        try:
            br, bc = _check_block(block)
        except _Invalid as e:
            raise ValueError(str(e)) from None
        w = _prepare_weight(weight, value_dtype)
        out, inp = w.shape
        nbr, nbc = -(-out // br), -(-inp // bc)
        padded = torch.zeros(nbr * br, nbc * bc, dtype=w.dtype)
        padded[:out, :inp] = w
        tiles = padded.view(nbr, br, nbc, bc).permute(0, 2, 1, 3)  # [nbr, nbc, br, bc]
        keep = (tiles != 0).any(dim=3).any(dim=2)  # [nbr, nbc]
        brow, bcol = torch.nonzero(keep, as_tuple=True)  # sorted by block row, then block column
        if brow.numel() > _INT32_MAX:
            raise ValueError(f"too many blocks for int32 pointers: {brow.numel()}")
        ptr = torch.zeros(nbr + 1, dtype=torch.int64)
        torch.cumsum(keep.sum(dim=1, dtype=torch.int64), dim=0, out=ptr[1:])
        return cls(
            shape=(int(out), int(inp)),
            block=(br, bc),
            block_row_ptr=ptr.to(torch.int32),
            block_col_idx=bcol.to(torch.int32),
            blocks=tiles[brow, bcol].contiguous(),
        )

    def _normalize(self) -> None:
        super()._normalize()
        object.__setattr__(self, "shape", _check_shape(self.shape))
        object.__setattr__(self, "block", _check_block(self.block))

    @property
    def grid(self) -> tuple[int, int]:
        """``(nbr, nbc)``: number of block rows and block columns of the padded tiling."""
        (out, inp), (br, bc) = self.shape, self.block
        return -(-out // br), -(-inp // bc)

    @property
    def nblocks(self) -> int:
        return self.blocks.shape[0]

    def block_rows(self) -> torch.Tensor:
        """``int64 [nblocks]``: the block row of each stored block."""
        p = self.block_row_ptr.to(torch.int64)
        return torch.repeat_interleave(torch.arange(self.grid[0]), p[1:] - p[:-1])

    def _validate(self) -> None:
        out, inp = self.shape
        br, bc = self.block
        nbr, nbc = self.grid
        _check_tensor(self.blocks, "blocks", ndim=3, dtypes=VALUE_DTYPES)
        nb = self.blocks.shape[0]
        _check(tuple(self.blocks.shape[1:]) == (br, bc),
               f"blocks has shape {list(self.blocks.shape)}, expected [nblocks, {br}, {bc}]")
        p = _check_ptr(self.block_row_ptr, "block_row_ptr", nbr + 1, nb, "the number of blocks")
        _check_tensor(self.block_col_idx, "block_col_idx", ndim=1, dtypes=(torch.int32,))
        _check(self.block_col_idx.numel() == nb,
               f"block_col_idx has length {self.block_col_idx.numel()}, expected {nb} (the number of blocks)")
        c = self.block_col_idx.to(torch.int64)
        if nb:
            lo, hi = int(c.min()), int(c.max())
            _check(lo >= 0 and hi < nbc,
                   f"block index out of range: block_col_idx spans [{lo}, {hi}], allowed [0, {nbc - 1}]")
        _check_sorted_unique(c, p, "block column indices", "block row")
        _check_finite(self.blocks, "blocks")
        # Padding beyond the matrix edge must be zero.
        if nb and (out % br or inp % bc):
            rows = self.block_rows()
            if out % br:
                last = rows == nbr - 1
                _check(not bool(self.blocks[last, out % br:, :].any()),
                       f"blocks hold non-zero padding below row {out} (beyond the matrix edge)")
            if inp % bc:
                lastc = c == nbc - 1
                _check(not bool(self.blocks[lastc, :, inp % bc:].any()),
                       f"blocks hold non-zero padding right of column {inp} (beyond the matrix edge)")

    @property
    def nnz(self) -> int:
        if not self.nblocks:
            return 0
        (out, inp), (br, bc) = self.shape, self.block
        r0 = self.block_rows() * br
        c0 = self.block_col_idx.to(torch.int64) * bc
        h = torch.clamp(out - r0, max=br)
        w = torch.clamp(inp - c0, max=bc)
        return int((h * w).sum())

    @property
    def value_dtype(self) -> torch.dtype:
        return self.blocks.dtype

    def count_nonzero(self) -> int:
        return int(self.blocks.count_nonzero())

    def to_dense(self) -> torch.Tensor:
        out, inp = self.shape
        br, bc = self.block
        nbr, nbc = self.grid
        tiles = torch.zeros(nbr, nbc, br, bc, dtype=torch.float32)
        if self.nblocks:
            tiles[self.block_rows(), self.block_col_idx.to(torch.int64)] = self.blocks.to(torch.float32)
        return tiles.permute(0, 2, 1, 3).reshape(nbr * br, nbc * bc)[:out, :inp].contiguous()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"block_row_ptr": self.block_row_ptr, "block_col_idx": self.block_col_idx,
                "blocks": self.blocks}

    def _meta_extra(self) -> dict:
        return {"block": [int(self.block[0]), int(self.block[1])], "nblocks": self.nblocks}

    def _repr_extra(self) -> dict:
        return {"block": self.block, "nblocks": self.nblocks}

    @classmethod
    def _from_parts(cls, meta, tensors, shape):
        _check("block" in meta, "meta lacks 'block'")
        block = _check_block(meta["block"])
        fmt = cls(shape=shape, block=block, block_row_ptr=tensors["block_row_ptr"],
                  block_col_idx=tensors["block_col_idx"], blocks=tensors["blocks"])
        if "nblocks" in meta:
            _check(_is_int(meta["nblocks"]) and meta["nblocks"] == fmt.nblocks,
                   f"meta nblocks {meta['nblocks']!r} does not match the {fmt.nblocks} stored blocks")
        return fmt


def _check_block(block: Any) -> tuple[int, int]:
    _check(isinstance(block, (tuple, list)) and len(block) == 2 and all(_is_int(b) for b in block),
           f"block must be two integers (br, bc), got {block!r}")
    br, bc = int(block[0]), int(block[1])
    _check(br > 0 and bc > 0, f"block dimensions must be positive, got {[br, bc]}")
    _check(br * bc <= _INT32_MAX, f"block {[br, bc]} too large")
    return br, bc


# =============================================================================================
# Low rank
# =============================================================================================
@dataclass(frozen=True, eq=False, repr=False)
class LowRankFormat(MatrixFormat):
    """Low-rank factorisation ``W ~= u @ v`` (LPAF export), from a truncated SVD.

    With ``W = U diag(s) Vh`` (singular values ``s`` descending), the balanced split keeps the top
    ``r``: ``u = U[:, :r] * sqrt(s[:r])`` and ``v = sqrt(s[:r])[:, None] * Vh[:r]``. Component ``j``
    (column ``j`` of ``u``, row ``j`` of ``v``) belongs to the j-th largest singular value, so the
    leading ``r' < r`` components give the best rank-``r'`` approximation.

    Fields / tensors:
        u: ``float32`` or ``bfloat16 [out, r]``, row-major.
        v: same dtype as ``u``, ``[r, in]``, row-major. ``0 <= r <= min(out, in)``.
        relative_error: ``||W - u @ v||_F / ||W||_F`` of the stored (dtype-converted) factors against
            the packed weight (0.0 when ``W`` is all zero), or ``None`` if unknown.
        method: how the factors were computed (``"svd"``).

    Semantics (two Linears): ``y = (x @ v.T) @ u.T``, i.e. ``in -> r`` then ``r -> out``; the layer
    bias belongs to the second. ``nnz = r * (out + in)`` (the parameter count).
    ``meta()``: ``format_version, kind="lowrank", shape, value_dtype, rank, relative_error, method``.
    """

    kind: ClassVar[str] = "lowrank"
    _tensor_names: ClassVar[tuple[str, ...]] = ("u", "v")
    u: torch.Tensor
    v: torch.Tensor
    relative_error: float | None = None
    method: str = "svd"

    @classmethod
    def pack(cls, weight: torch.Tensor, *, rank: int | None = None, tol: float | None = None,
             value_dtype: torch.dtype = torch.float32) -> LowRankFormat:
        """Truncated SVD with a fixed ``rank``, or the smallest rank whose relative Frobenius error
        ``||W - W_r||_F / ||W||_F <= tol``. Exactly one of ``rank`` / ``tol`` must be given.

        The SVD runs in float64; ``relative_error`` is measured on the stored factors.
        """
        if (rank is None) == (tol is None):
            raise ValueError("lowrank packing needs exactly one of rank= or tol=")
        w = _prepare_weight(weight, torch.float32)  # validate; factors are converted at the end
        if value_dtype not in VALUE_DTYPES:
            raise ValueError(f"value_dtype must be one of {[_dtype_name(d) for d in VALUE_DTYPES]}, "
                             f"got {value_dtype}")
        out, inp = w.shape
        kmax = min(out, inp)
        if rank is not None:
            if not _is_int(rank) or rank < 0:
                raise ValueError(f"rank must be a non-negative int, got {rank!r}")
            if rank > kmax:
                raise ValueError(f"rank {rank} exceeds min(out, in) = {kmax} for shape {[out, inp]}")
        else:
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
                raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
        w64 = w.to(torch.float64)
        if kmax == 0:
            U = torch.zeros(out, 0, dtype=torch.float64)
            s = torch.zeros(0, dtype=torch.float64)
            Vh = torch.zeros(0, inp, dtype=torch.float64)
        else:
            U, s, Vh = torch.linalg.svd(w64, full_matrices=False)
        if rank is None:
            energy = s.square()
            total = float(energy.sum())
            if total == 0.0:
                rank = 0
            else:
                # tail[r] = ||W - W_r||_F^2 / ||W||_F^2 for r = 0..kmax
                tail = torch.cat([energy.flip(0).cumsum(0).flip(0), energy.new_zeros(1)]) / total
                ok = torch.nonzero(tail.sqrt() <= tol)
                rank = int(ok[0, 0]) if ok.numel() else kmax
        root = s[:rank].sqrt()
        u = (U[:, :rank] * root).to(value_dtype).contiguous()
        v = (root[:, None] * Vh[:rank]).to(value_dtype).contiguous()
        if not (bool(torch.isfinite(u).all()) and bool(torch.isfinite(v).all())):
            raise ValueError(f"low-rank factors overflow {_dtype_name(value_dtype)}")
        norm = float(torch.linalg.norm(w64))
        resid = float(torch.linalg.norm(w64 - u.to(torch.float64) @ v.to(torch.float64)))
        rel = resid / norm if norm > 0 else (0.0 if resid == 0 else float("inf"))
        return cls(u=u, v=v, relative_error=rel, method="svd")

    def _validate(self) -> None:
        _check_tensor(self.u, "u", ndim=2, dtypes=VALUE_DTYPES)
        _check_tensor(self.v, "v", ndim=2, dtypes=VALUE_DTYPES)
        _check(self.u.dtype == self.v.dtype,
               f"u and v must share a dtype, got {_dtype_name(self.u.dtype)} and {_dtype_name(self.v.dtype)}")
        out, r = self.u.shape
        r2, inp = self.v.shape
        _check(r == r2, f"rank mismatch: u has shape {list(self.u.shape)} but v has {list(self.v.shape)}")
        _check_shape([int(out), int(inp)])
        _check(r <= min(out, inp), f"rank {r} exceeds min(out, in) = {min(out, inp)}")
        _check_finite(self.u, "u")
        _check_finite(self.v, "v")
        re = self.relative_error
        _check(re is None or (isinstance(re, (int, float)) and not isinstance(re, bool) and re >= 0
                              and math.isfinite(re)),
               f"relative_error must be a finite number >= 0 or None, got {re!r}")
        _check(isinstance(self.method, str) and bool(self.method),
               f"method must be a non-empty string, got {self.method!r}")

    @property
    def shape(self) -> tuple[int, int]:  # type: ignore[override]
        return int(self.u.shape[0]), int(self.v.shape[1])

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])

    @property
    def nnz(self) -> int:
        out, inp = self.shape
        return self.rank * (out + inp)

    @property
    def value_dtype(self) -> torch.dtype:
        return self.u.dtype

    def to_dense(self) -> torch.Tensor:
        return (self.u.to(torch.float64) @ self.v.to(torch.float64)).to(torch.float32)

    def matmul_reference(self, x: torch.Tensor) -> torch.Tensor:
        """``(x @ v.T) @ u.T`` in float32 (the two-Linear computation)."""
        x = _as_x(x, self.shape[1])
        return (x @ self.v.to(torch.float32).T) @ self.u.to(torch.float32).T

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"u": self.u, "v": self.v}

    def _meta_extra(self) -> dict:
        re = None if self.relative_error is None else float(self.relative_error)
        return {"rank": self.rank, "relative_error": re, "method": self.method}

    def _repr_extra(self) -> dict:
        return {"rank": self.rank, "relative_error": self.relative_error}

    @classmethod
    def _from_parts(cls, meta, tensors, shape):
        u, v = tensors["u"], tensors["v"]
        _check_tensor(u, "u", ndim=2, dtypes=VALUE_DTYPES)
        _check_tensor(v, "v", ndim=2, dtypes=VALUE_DTYPES)
        _check("rank" in meta, "meta lacks 'rank'")
        r = meta["rank"]
        _check(_is_int(r) and r >= 0, f"meta rank must be a non-negative int, got {r!r}")
        _check(tuple(u.shape) == (shape[0], r), f"u has shape {list(u.shape)}, expected {[shape[0], r]}")
        _check(tuple(v.shape) == (r, shape[1]), f"v has shape {list(v.shape)}, expected {[r, shape[1]]}")
        return cls(u=u, v=v, relative_error=meta.get("relative_error"), method=meta.get("method", "svd"))


# =============================================================================================
# Registry, packing and loading
# =============================================================================================
#: kind -> format class.
FORMATS: dict[str, type[MatrixFormat]] = {
    c.kind: c for c in (DenseFormat, CSRFormat, BSRFormat, LowRankFormat)
}


def to_format(weight: torch.Tensor, kind: str, *, value_dtype: torch.dtype = torch.float32,
              block: tuple[int, int] = (32, 32), rank: int | None = None,
              tol: float | None = None) -> MatrixFormat:
    """Pack a weight ``[out, in]`` (any float dtype, finite) into the format ``kind``.

    ``block`` applies to ``"bsr"``; ``rank`` / ``tol`` (exactly one) to ``"lowrank"``.
    Raises ``ValueError`` for an unknown kind, a non-2-D / non-float / non-finite weight, a bad
    ``value_dtype``, or ``rank``/``tol`` given for a kind other than ``"lowrank"``.
    """
    if kind not in FORMATS:
        raise ValueError(f"unknown format kind {kind!r}; expected one of {sorted(FORMATS)}")
    if kind != "lowrank" and (rank is not None or tol is not None):
        raise ValueError(f"rank= and tol= only apply to kind='lowrank', not {kind!r}")
    if kind == "dense":
        return DenseFormat.pack(weight, value_dtype=value_dtype)
    if kind == "csr":
        return CSRFormat.pack(weight, value_dtype=value_dtype)
    if kind == "bsr":
        return BSRFormat.pack(weight, block=block, value_dtype=value_dtype)
    return LowRankFormat.pack(weight, rank=rank, tol=tol, value_dtype=value_dtype)


def from_tensors(meta: Mapping, tensors: Mapping[str, torch.Tensor], *,
                 name: str | None = None) -> MatrixFormat:
    """Rebuild a format from ``fmt.meta()`` and ``fmt.tensors()`` (e.g. read back from disk).

    Validates the version, kind, shape, the exact set of tensor names, dtypes, shapes, pointer
    arrays, index ranges and ordering, permutations, zero padding and finiteness. Raises
    :class:`FormatError` (a ``ValueError``) saying what is wrong; ``name`` (e.g. the layer name)
    is included in the message.
    """
    where = f" for {name!r}" if name else ""

    def corrupt(problem: str) -> FormatError:
        kind = meta.get("kind") if isinstance(meta, Mapping) else None
        what = f"{kind!r} matrix artifact" if isinstance(kind, str) and kind in FORMATS else "matrix artifact"
        return FormatError(f"corrupt {what}{where}: {problem}", problem)

    if not isinstance(meta, Mapping):
        raise corrupt(f"meta must be a dict, got {type(meta).__name__}")
    if not isinstance(tensors, Mapping):
        raise corrupt(f"tensors must be a dict of name -> tensor, got {type(tensors).__name__}")
    version = meta.get("format_version")
    if version is None:
        raise corrupt("meta lacks 'format_version'")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise corrupt(f"unsupported format_version {version!r} (this sparsekit reads version {FORMAT_VERSION})")
    kind = meta.get("kind")
    if kind not in FORMATS:
        raise corrupt(f"unknown format kind {kind!r}; expected one of {sorted(FORMATS)}")
    cls = FORMATS[kind]
    try:
        _check("shape" in meta, "meta lacks 'shape'")
        shape = _check_shape(meta["shape"])
        names = set(tensors)
        required = set(cls._tensor_names)
        allowed = required | set(cls._optional_tensor_names)
        missing, extra = sorted(required - names), sorted(names - allowed)
        _check(not missing, f"missing tensor(s) {missing}")
        _check(not extra, f"unexpected tensor(s) {extra}")
        for tname in sorted(names):
            _check(isinstance(tensors[tname], torch.Tensor),
                   f"{tname} must be a torch.Tensor, got {type(tensors[tname]).__name__}")
        vd = meta.get("value_dtype")
        _check(vd in _VALUE_DTYPE_BY_NAME,
               f"meta value_dtype {vd!r} must be one of {sorted(_VALUE_DTYPE_BY_NAME)}")
        fmt = cls._from_parts(meta, tensors, shape)
        _check(fmt.shape == shape, f"tensors describe shape {list(fmt.shape)}, meta says {list(shape)}")
        _check(_dtype_name(fmt.value_dtype) == vd,
               f"value tensors have dtype {_dtype_name(fmt.value_dtype)}, meta value_dtype says {vd!r}")
    except _Invalid as e:
        raise corrupt(str(e)) from None
    except FormatError as e:
        raise corrupt(e.problem) from None
    return fmt
