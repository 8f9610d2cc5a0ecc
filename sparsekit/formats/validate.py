"""Validation shared by the storage formats (:mod:`sparsekit.formats`) and the kernels' packed layouts.

One home for the rules every compressed-row structure obeys, whatever it indexes (CSR entries, BSR blocks, the
CPU kernels' (chunk, row group) runs) and wherever its tensors live (CPU or GPU):

* the pointer array starts at 0, never decreases and ends at the number of stored items;
* every index lies in ``[0, ncols)``;
* within a row the indices are strictly increasing (sorted, no duplicates);
* a row order, where there is one, is a permutation of the rows listing them longest first.

Two error types say whose data is wrong: :class:`FormatError` for a storage format (an artifact read from disk,
or a format built by hand), :class:`KernelInputError` for a kernel's packed layout or an op's arguments. Both
are ``ValueError``; a wrong Python type or tensor dtype of a kernel argument is a ``TypeError``, as usual.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = [
    "INT32_MAX",
    "FormatError",
    "KernelInputError",
    "check",
    "check_compressed_rows",
    "check_finite",
    "check_row_indices",
    "check_row_order",
    "check_row_ptr",
    "check_shape",
    "check_stored_tensor",
    "check_swizzled_rows",
    "check_vector",
    "dtype_name",
    "entry_rows",
    "is_int",
]

#: Largest value of the int32 pointers and offsets every layout uses (stored values / blocks per matrix).
INT32_MAX = 2**31 - 1

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.float64: "float64",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
}


class FormatError(ValueError):
    """A storage format is invalid or a stored artifact is corrupt. ``problem`` holds the bare reason."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem if problem is not None else message


class KernelInputError(ValueError):
    """A kernel's packed layout or an op's argument is invalid (the message names the op and the field)."""


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"`` (the names stored in format metadata)."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def is_int(x: Any) -> bool:
    """A Python int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def _fail(error: type[ValueError], where: Optional[str], problem: str) -> None:
    raise error(f"{where}: {problem}" if where else problem)


def check(cond: bool, problem: str, error: type[ValueError] = FormatError, where: Optional[str] = None) -> None:
    """Raise ``error(problem)`` (prefixed with ``where:``) unless ``cond``."""
    if not cond:
        _fail(error, where, problem)


# =============================================================================================
# Compressed rows
# =============================================================================================
def check_compressed_rows(ptr: torch.Tensor, idx: torch.Tensor, *, ncols: int, ptr_name: str = "row_ptr",
                          idx_name: str = "col_idx", index_word: str = "column", row_word: str = "row",
                          count_what: str = "the number of values", error: type[ValueError] = FormatError,
                          where: Optional[str] = None) -> torch.Tensor:
    """The one compressed-row check: ``ptr [nrows + 1]`` over ``idx [count]`` (any integer dtypes, one device).

    ``ptr[0] == 0``, non-decreasing, ``ptr[-1] == count``; every ``idx`` in ``[0, ncols)``; strictly increasing
    within each row ``[ptr[r], ptr[r + 1])``. The caller checks dtypes and lengths first. Raises ``error``
    naming the field (``where`` prefixes the message); returns ``ptr`` as int64. The two halves are
    :func:`check_row_ptr` and :func:`check_row_indices`.
    """
    p = check_row_ptr(ptr, idx.numel(), ptr_name=ptr_name, count_what=count_what, error=error, where=where)
    check_row_indices(p, idx, ncols=ncols, idx_name=idx_name, index_word=index_word, row_word=row_word, error=error,
                      where=where)
    return p


def check_row_ptr(ptr: torch.Tensor, count: int, *, ptr_name: str = "row_ptr",
                  count_what: str = "the number of values", error: type[ValueError] = FormatError,
                  where: Optional[str] = None) -> torch.Tensor:
    """``ptr[0] == 0``, non-decreasing, ``ptr[-1] == count``; returns ``ptr`` as int64."""
    p = ptr.to(torch.int64)
    rule = f"{ptr_name} must start at 0, be non-decreasing and end at {count}, {count_what}"
    check(int(p[0]) == 0, f"{ptr_name}[0] is {int(p[0])}, expected 0 ({rule})", error, where)
    d = p[1:] - p[:-1]
    if d.numel() and bool((d < 0).any()):
        i = int(torch.nonzero(d < 0)[0, 0])
        _fail(error, where, f"{ptr_name} is not monotone non-decreasing ({ptr_name}[{i}]={int(p[i])} > "
                            f"{ptr_name}[{i + 1}]={int(p[i + 1])})")
    check(int(p[-1]) == count, f"{ptr_name}[-1] is {int(p[-1])}, expected {count} ({rule})", error, where)
    return p


def entry_rows(ptr: torch.Tensor) -> torch.Tensor:
    """``int64 [ptr[-1]]``: the slot (row, block row, run ...) of every stored entry of a pointer array ``ptr``
    (``[slots + 1]``, non-decreasing from 0), on ``ptr``'s device."""
    p = ptr.to(torch.int64)
    return torch.repeat_interleave(torch.arange(p.numel() - 1, device=p.device), p[1:] - p[:-1])


def check_row_indices(p: torch.Tensor, idx: torch.Tensor, *, ncols: int, idx_name: str = "col_idx",
                      index_word: str = "column", row_word: str = "row", error: type[ValueError] = FormatError,
                      where: Optional[str] = None) -> None:
    """Every ``idx`` in ``[0, ncols)`` and strictly increasing within each row of the valid int64 pointers ``p``."""
    count = idx.numel()
    if not count:
        return
    c = idx.to(torch.int64)
    lo, hi = int(c.min()), int(c.max())
    check(lo >= 0 and hi < ncols,
          f"{index_word} index out of range: {idx_name} spans [{lo}, {hi}], allowed [0, {ncols - 1}]", error, where)
    if count < 2:
        return
    starts = torch.zeros(count + 1, dtype=torch.bool, device=c.device)
    starts[p[1:-1]] = True  # row starts; every pointer is in [0, count]
    step = c[1:] - c[:-1]
    bad = (step <= 0) & ~starts[1:count]
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        r = int(torch.searchsorted(p, torch.tensor([k], dtype=p.dtype, device=p.device), right=True)[0]) - 1
        what = "duplicate" if int(step[k]) == 0 else "unsorted"
        _fail(error, where, f"{index_word} indices in {row_word} {r} are not strictly increasing ({what}: "
                            f"{idx_name}[{k}]={int(c[k])}, {idx_name}[{k + 1}]={int(c[k + 1])})")


def check_row_order(order: torch.Tensor, lengths: torch.Tensor, *, name: str = "row_order",
                    error: type[ValueError] = FormatError, where: Optional[str] = None) -> None:
    """``order`` (the caller checked dtype and length) must be a permutation of ``0..n-1`` listing the rows by
    non-increasing ``lengths`` (int64 ``[n]``, stored entries per row)."""
    n = lengths.numel()
    if not n:
        return
    r = order.to(torch.int64)
    check(int(r.min()) >= 0 and int(r.max()) < n, f"{name} entries must lie in [0, {n - 1}]", error, where)
    check(bool((torch.bincount(r, minlength=n) == 1).all()),
          f"{name} is not a permutation of the rows 0..{n - 1} (repeated or missing row)", error, where)
    ordered = lengths[r]
    check(bool((ordered[1:] <= ordered[:-1]).all()),
          f"{name} does not list rows by non-increasing number of entries", error, where)


def check_swizzled_rows(where: str, row_ptr: Any, col_idx: Any, row_order: Any, stored: tuple[str, torch.Tensor], *,
                        nrows: int, ncols: int, index_dtypes: tuple[torch.dtype, ...], index_word: str = "column",
                        count_what: str = "the number of values") -> None:
    """A GPU kernel layout: compressed rows with a row order, all tensors on one device (:class:`KernelInputError`,
    ``TypeError`` for dtypes). ``row_ptr`` int32 ``[nrows + 1]``, ``col_idx [count]`` of ``index_dtypes``,
    ``row_order`` int32 ``[nrows]``; ``stored = (name, tensor)``: the values, one per entry / block along dim 0,
    finite. The structure is :func:`check_compressed_rows`, the order :func:`check_row_order`."""
    name, values = stored
    check_vector(where, "row_ptr", row_ptr, (torch.int32,), nrows + 1)
    check_vector(where, "col_idx", col_idx, index_dtypes, values.shape[0])
    check_vector(where, "row_order", row_order, (torch.int32,), nrows)
    devices = {t.device for t in (row_ptr, col_idx, values, row_order)}
    check(len(devices) == 1, f"all tensors must be on one device, got {sorted(map(str, devices))}",
          KernelInputError, where)
    p = check_compressed_rows(row_ptr, col_idx, ncols=ncols, index_word=index_word, count_what=count_what,
                              error=KernelInputError, where=where)
    check_finite(values, name, KernelInputError, where)
    check_row_order(row_order, p[1:] - p[:-1], error=KernelInputError, where=where)


def check_finite(t: torch.Tensor, name: str, error: type[ValueError] = FormatError,
                 where: Optional[str] = None) -> None:
    """Every value of ``t`` is finite (no NaN / inf)."""
    if t.numel():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            _fail(error, where, f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf)")


# =============================================================================================
# Tensors and shapes
# =============================================================================================
def check_stored_tensor(t: Any, name: str, *, ndim: int, dtypes: tuple[torch.dtype, ...], length: Optional[int] = None,
                        length_what: str = "") -> None:
    """A stored format tensor: a strided tensor of ``ndim`` dimensions and one of ``dtypes``, ``length`` long
    along dim 0 if given (FormatError; ``length_what`` explains the expected length)."""
    check(isinstance(t, torch.Tensor), f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check(t.dtype in dtypes,
          f"{name} has dtype {dtype_name(t.dtype)}, expected {' or '.join(dtype_name(d) for d in dtypes)}")
    check(t.dim() == ndim, f"{name} must be {ndim}-D, got shape {list(t.shape)}")
    check(t.layout == torch.strided, f"{name} must be a strided (dense) tensor, got layout {t.layout}")
    check(length is None or t.shape[0] == length, f"{name} has length {t.shape[0]}, expected {length}{length_what}")


def check_vector(where: str, name: str, t: Any, dtypes: tuple[torch.dtype, ...], numel: Optional[int] = None) -> None:
    """A kernel input: a 1-D contiguous tensor of one of ``dtypes`` (``TypeError``), of ``numel`` elements if
    given (:class:`KernelInputError`)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{where}: {name} must be {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if t.dim() != 1 or t.layout != torch.strided or not t.is_contiguous():
        raise KernelInputError(f"{where}: {name} must be a 1-D contiguous tensor, got shape {list(t.shape)}")
    if numel is not None and t.numel() != numel:
        raise KernelInputError(f"{where}: {name} has {t.numel()} elements, expected {numel}")


def check_shape(shape: Any, error: type[ValueError] = FormatError, where: Optional[str] = None) -> tuple[int, int]:
    """``shape`` is two ints ``[out, in]`` in ``[0, 2**31-1]``; returns them as a tuple."""
    check(isinstance(shape, (tuple, list)) and len(shape) == 2 and all(is_int(s) for s in shape),
          f"shape must be two integers [out, in], got {shape!r}", error, where)
    out, inp = int(shape[0]), int(shape[1])
    check(0 <= out <= INT32_MAX and 0 <= inp <= INT32_MAX,
          f"shape {[out, inp]} out of range (each dimension must be in [0, 2**31-1])", error, where)
    return out, inp
