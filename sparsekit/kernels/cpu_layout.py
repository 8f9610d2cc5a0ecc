"""The CPU kernels' packed layout: a weight packed once for :func:`sparsekit.kernels.cpu.csr_linear` /
:func:`~sparsekit.kernels.cpu.bsr_linear`::

    packed = pack_cpu_csr(csr_format_or_dense_weight)          # CpuCSRWeight
    packed = pack_cpu_bsr(bsr_format_or_dense_weight, block=(4, 1))   # CpuBSRWeight

Rows in groups of ``R`` (1 for CSR; 1, 2 or 4 for BSR), columns in chunks of ``chunk`` (1..:data:`MAX_CHUNK`);
per (chunk, group) a run of entries, stored chunk-major, each an 8-bit column offset inside the chunk and ``R``
float32 values (exact layout: :mod:`sparsekit.kernels.reference`, ``csrc/spmm_cpu/spmm_cpu.h``). The runs are
compressed rows over the columns ``chunk * Kc + col`` and obey the one compressed-row check of
:mod:`sparsekit.formats.validate`. Index ranges are validated when a packed weight is built, and the ops re-check
every index on each call (``sparsekit.kernels.cpu``, "Safety"). bf16 weights are widened to float32 at pack time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsekit.formats.bsr import BSRFormat
from sparsekit.formats.csr import CSRFormat
from sparsekit.formats.validate import (
    KernelInputError,
    check_finite,
    check_row_indices,
    entry_rows,
)
from sparsekit.kernels import reference
from sparsekit.kernels.cpu_packed import CpuPackedBase

__all__ = [
    "MAX_CHUNK",
    "CpuBSRWeight",
    "CpuCSRWeight",
    "CpuPackedWeight",
    "check_chunk",
    "choose_chunk",
    "pack_cpu_bsr",
    "pack_cpu_csr",
]

#: Largest column chunk (column offsets are 8-bit).
MAX_CHUNK = 256


def choose_chunk(density: float) -> int:
    """Columns per chunk for a weight of this density: enough stored entries per (row, chunk) run that the
    per-run accumulator load / store stays small, while a chunk of transposed activations stays near L1
    (64..256). Thresholds measured on BERT-base FFN shapes at 64 and 128 tokens, 2 threads."""
    if density > 0.3:
        return 64
    if density > 0.12:
        return 128
    return 256


def check_chunk(chunk: Any) -> int:
    """``chunk`` is an int in ``[1, MAX_CHUNK]`` (``TypeError`` / ``KernelInputError``)."""
    if isinstance(chunk, bool) or not isinstance(chunk, int):
        raise TypeError(f"chunk must be an int, got {type(chunk).__name__}")
    if not 1 <= chunk <= MAX_CHUNK:
        raise KernelInputError(f"chunk must be in [1, {MAX_CHUNK}] (8-bit column offsets), got {chunk}")
    return chunk


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class CpuPackedWeight(CpuPackedBase):
    """A weight ``[out, in]`` packed once for the CPU kernels (layout in the module docstring).

    Fields: ``shape = (out, in)``, ``group_rows`` (R), ``chunk`` (Kc), ``ptr`` int32
    ``[ceil(in/Kc) * ceil(out/R) + 1]``, ``col`` uint8 ``[nent]``, ``val`` float32 ``[nent * R]``.
    Construction validates everything (dtypes, sizes, the compressed runs, column ranges, finiteness) and
    raises ``TypeError`` / :class:`~sparsekit.formats.KernelInputError`; the ops re-check the indices on every call.
    Immutable by convention.
    """

    kind: ClassVar[str] = ""
    group_rows: int
    chunk: int

    def _validate(self, op: str, out: int, inp: int) -> None:
        if self.group_rows not in (1, 2, 4) or isinstance(self.group_rows, bool):
            raise KernelInputError(f"{op}: group_rows must be 1, 2 or 4, got {self.group_rows!r}")
        check_chunk(self.chunk)
        R, Kc = self.group_rows, self.chunk
        ng, nch = self.ngroups, self.nchunks
        # The runs of (chunk j, group g) are compressed rows over the columns j * Kc + col.
        nent, p = self._check_runs(op, nch * ng, torch.uint8, torch.float32, R, "the number of entries")
        if not nent:
            return
        offsets = self.col.to(torch.int64)
        if bool((offsets >= Kc).any()):
            bad = int(torch.nonzero(offsets >= Kc)[0, 0])
            raise KernelInputError(f"{op}: column index out of range: entry {bad} has offset {int(offsets[bad])} in a "
                                   f"chunk of {Kc} columns")
        run = entry_rows(p)
        check_row_indices(p, (run // ng) * Kc + offsets, ncols=inp, idx_name="chunk * chunk_size + col",
                          row_word="(chunk, row group) run", error=KernelInputError, where=op)
        check_finite(self.val, "val", KernelInputError, op)
        if out % R:  # rows past the matrix edge must be zero
            pad = self.val.view(nent, R)[run % ng == ng - 1][:, out % R:]
            if bool(pad.any()):
                raise KernelInputError(f"{op}: values stored for rows >= out ({out}) in the last group")

    # --- derived (and CpuPackedBase's out_features, in_features, nnz, density, nbytes) --------------
    @property
    def ngroups(self) -> int:
        return -(-self.shape[0] // self.group_rows)

    @property
    def nchunks(self) -> int:
        return -(-self.shape[1] // self.chunk)

    @property
    def nent(self) -> int:
        """Stored entries (each holds ``group_rows`` values)."""
        return self.col.numel()

    def tensors(self) -> dict[str, torch.Tensor]:
        """``{"ptr", "col", "val"}``."""
        return {"ptr": self.ptr, "col": self.col, "val": self.val}

    def to_dense(self) -> torch.Tensor:
        """The represented weight as a float32 ``[out, in]`` tensor."""
        return reference.packed_to_dense(self.ptr, self.col, self.val, self.shape[1], self.shape[0],
                                         self.group_rows, self.chunk)

    def __repr__(self) -> str:
        out, inp = self.shape
        return (f"{type(self).__name__}(shape=({out}, {inp}), group_rows={self.group_rows}, chunk={self.chunk}, "
                f"nent={self.nent}, nbytes={self.nbytes})")


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class CpuCSRWeight(CpuPackedWeight):
    """A CSR weight packed for :func:`sparsekit.kernels.cpu.csr_linear` (``group_rows == 1``)."""

    kind: ClassVar[str] = "csr"
    group_rows: int = 1

    def __post_init__(self) -> None:
        if self.group_rows != 1:
            raise KernelInputError(f"CpuCSRWeight has group_rows 1, got {self.group_rows!r}")
        super().__post_init__()


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class CpuBSRWeight(CpuPackedWeight):
    """A BSR weight packed for :func:`sparsekit.kernels.cpu.bsr_linear`; ``block`` is the source block shape
    (informational)."""

    kind: ClassVar[str] = "bsr"
    block: tuple[int, int] = (1, 1)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", block={tuple(self.block)})"


def _group_pack(out: int, inp: int, R: int, Kc: int, g: torch.Tensor, c: torch.Tensor,
                v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entries (group g, column c, values v [n, R]) in any order -> ptr / col / val, chunk-major."""
    ng = -(-out // R)
    nch = -(-inp // Kc)
    j = torch.div(c, Kc, rounding_mode="floor")
    key = j * ng + g
    order = torch.sort(c, stable=True).indices            # by column, then
    order = order[torch.sort(key[order], stable=True).indices]  # by (chunk, group): runs sorted by column
    ptr = torch.zeros(nch * ng + 1, dtype=torch.int64)
    if c.numel():
        torch.cumsum(torch.bincount(key, minlength=nch * ng), dim=0, out=ptr[1:])
    return {
        "ptr": ptr.to(torch.int32),
        "col": (c - j * Kc)[order].to(torch.uint8).contiguous(),
        "val": v[order].to(torch.float32).reshape(-1).contiguous(),
    }


def pack_cpu_csr(weight: Any, *, chunk: int | None = None) -> CpuCSRWeight:
    """Pack a weight once for :func:`sparsekit.kernels.cpu.csr_linear`.

    Args:
        weight: a :class:`sparsekit.formats.CSRFormat` (its tensors are re-validated), or a dense
            ``[out, in]`` floating-point tensor (packed through ``CSRFormat.pack``: its non-zeros).
            Values may be float32 or bfloat16 (widened to float32); explicit zeros are dropped.
        chunk: columns per chunk (1..256); default :func:`choose_chunk` of the density.
    Returns:
        a :class:`CpuCSRWeight`. Raises ``TypeError`` / ``ValueError`` (``FormatError``) for bad input.
    """
    if isinstance(weight, torch.Tensor):
        fmt = CSRFormat.pack(weight)
    elif isinstance(weight, CSRFormat):
        fmt = CSRFormat(shape=weight.shape, row_ptr=weight.row_ptr, col_idx=weight.col_idx, values=weight.values,
                        row_order=weight.row_order)  # validates dtypes, pointers, index ranges, finiteness
    else:
        raise TypeError(f"pack_cpu_csr expects a CSRFormat or a dense weight tensor, got {type(weight).__name__}")
    out, inp = fmt.shape
    rows = entry_rows(fmt.row_ptr)
    cols = fmt.col_idx.to(torch.int64)
    vals = fmt.values.to(torch.float32)
    keep = vals != 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    Kc = check_chunk(chunk) if chunk is not None else choose_chunk(vals.numel() / (out * inp) if out * inp else 0.0)
    return CpuCSRWeight(shape=(out, inp), chunk=Kc, **_group_pack(out, inp, 1, Kc, rows, cols, vals[:, None]))


def pack_cpu_bsr(weight: Any, *, block: tuple[int, int] = (4, 1), chunk: int | None = None) -> CpuBSRWeight:
    """Pack a weight once for :func:`sparsekit.kernels.cpu.bsr_linear`.

    Args:
        weight: a :class:`sparsekit.formats.BSRFormat` of any block shape (re-validated), or a dense
            ``[out, in]`` floating-point tensor, packed through ``BSRFormat.pack(weight, block=block)``.
        block: ``(br, bc)`` for a dense ``weight`` (ignored for a BSRFormat). The kernel groups ``R`` rows
            that share columns: R = 4 if ``br`` is a multiple of 4, else 2 if even, else 1 (plain CSR).
            ``(4, 1)``, ``(8, 1)``, ``(16, 1)`` and ``(4, 4)`` run fastest.
        chunk: columns per chunk (1..256); default :func:`choose_chunk` of the density of stored entries.
    Returns:
        a :class:`CpuBSRWeight`. Block padding beyond the matrix edges and all-zero columns of a block are
        dropped. Raises ``TypeError`` / ``ValueError`` (``FormatError``) for bad input.
    """
    if isinstance(weight, torch.Tensor):
        fmt = BSRFormat.pack(weight, block=block)
    elif isinstance(weight, BSRFormat):
        fmt = BSRFormat(shape=weight.shape, block=weight.block, block_row_ptr=weight.block_row_ptr,
                        block_col_idx=weight.block_col_idx, blocks=weight.blocks)  # validates
    else:
        raise TypeError(f"pack_cpu_bsr expects a BSRFormat or a dense weight tensor, got {type(weight).__name__}")
    out, inp = fmt.shape
    br, bc = fmt.block
    R = 4 if br % 4 == 0 else 2 if br % 2 == 0 else 1
    S = br // R  # groups per block row
    nb = fmt.nblocks
    vals = fmt.blocks.to(torch.float32).reshape(nb, S, R, bc).permute(0, 1, 3, 2)  # [nb, S, bc, R]
    g = (fmt.block_rows()[:, None, None] * S + torch.arange(S)[None, :, None]).expand(nb, S, bc)
    c = (fmt.block_col_idx.to(torch.int64)[:, None, None] * bc + torch.arange(bc)[None, None, :]).expand(nb, S, bc)
    vals, g, c = vals.reshape(-1, R), g.reshape(-1), c.reshape(-1)
    keep = (c < inp) & (vals != 0).any(dim=1)
    vals, g, c = vals[keep], g[keep], c[keep]
    density = g.numel() * R / (out * inp) if out * inp else 0.0
    Kc = check_chunk(chunk) if chunk is not None else choose_chunk(density)
    return CpuBSRWeight(shape=(out, inp), group_rows=R, chunk=Kc, block=(br, bc),
                        **_group_pack(out, inp, R, Kc, g, c, vals))
