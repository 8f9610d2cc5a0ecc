"""CPU sparse x dense Linear kernels: weight packing, the ``torch.library`` ops and their C++ backend.

Computes ``y = x @ W.T + bias`` for a sparse weight ``W [out, in]`` and dense float32 activations
``x [..., in]`` (tokens in the leading dimensions), as an ``nn.Linear`` does::

    from sparsekit import kernels
    packed = kernels.pack_csr(csr_format)          # or a dense [out, in] weight; once, offline
    y = kernels.csr_linear(x, packed, bias)        # x [..., in] float32 -> y [..., out] float32

Ops (declared here, once, with ``torch.library.custom_op`` and a fake implementation, so they work in
eager mode, under ``torch.compile(fullgraph=True)`` and with ``torch.library.opcheck``)::

    sparsekit::csr_linear(Tensor x, Tensor ptr, Tensor col, Tensor val, int in_features,
                          int out_features, int chunk, Tensor? bias=None) -> Tensor
    sparsekit::bsr_linear(Tensor x, Tensor ptr, Tensor col, Tensor val, int in_features,
                          int out_features, int group_rows, int chunk, Tensor? bias=None) -> Tensor

Their CPU implementation is the C++ extension ``sparsekit._C_cpu`` (``csrc/spmm_cpu``): AVX-512, AVX2
and scalar code paths chosen at run time from the CPU, or forced with the environment variable
``SPARSEKIT_ISA=avx512|avx2|scalar`` (or :func:`force_isa`). The ops are registered for every device;
on a device other than CPU they raise ``ValueError`` until a backend registers a kernel for it
(``torch.library.register_kernel("sparsekit::csr_linear", "cuda", ...)``).

The extension is loaded lazily, on first use. If it is missing (built with ``SPARSEKIT_SKIP_CPP=1``, no
compiler, a failed build, a torch version mismatch), ``import sparsekit`` still works, ``AVAILABLE`` is
False, ``UNAVAILABLE_REASON`` says why, and the ops fall back to the pure-torch reference
(:mod:`sparsekit.kernels.reference`) with one ``RuntimeWarning``.

Packed layout (see ``csrc/spmm_cpu/spmm_cpu.h``): rows in groups of ``R`` (1 for CSR; 1, 2 or 4 for
BSR), columns in chunks of ``chunk`` (1..256); per (chunk, group) a run of entries, stored chunk-major,
each an 8-bit column offset inside the chunk and ``R`` float32 values. bf16 weights are widened to float32
at pack time.

Safety: the ops never read out of bounds, whatever tensors they are given. Every call checks, in C++ before
touching memory, the dtypes, layouts, devices and sizes of all arguments and the contents of every index
the kernels use (``ptr[0] == 0``, ``ptr`` non-decreasing, ``ptr[-1] == len(col)``, each column offset inside
its chunk and below ``in_features``) -- a vectorised O(entries) scan, measured at <= 0.9% of the op at 128
tokens on BERT-base shapes (up to ~5% for 1 token; ``benchmarks/results/op_validation_cost.md``). Bad arguments raise ``ValueError`` / ``TypeError``
naming what is wrong, also for packed weights modified after packing.

Semantics, the same for CSR and BSR and for every backend: ``y = x @ W.T + bias`` where ``W`` holds the
stored non-zero weights and all others are *absent*: a NaN / inf in ``x`` reaches an output only through a
stored non-zero weight of its row. Pruned weights, and explicit zeros stored inside a group or block, never
contribute ``0 * NaN = NaN``. NaN / inf in ``val`` or ``bias`` propagate. (The kernels run their fast path
and recompute exactly the non-finite outputs of tokens whose ``x`` holds a NaN / inf.)

Inference only: the ops have no autograd formula. Kernel tuning (chunk, tile and GEMV thresholds) was
measured on a 2-core AVX-512 Xeon (Sapphire-Rapids class); see the constants in ``spmm_cpu.cpp``.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from sparsekit.kernels import reference
from sparsekit.kernels.extension import LazyExtension

__all__ = [
    "ISA_ENV",
    "ISAS",
    "PackedBSR",
    "PackedCSR",
    "PackedWeight",
    "available",
    "bsr_linear",
    "choose_chunk",
    "csr_linear",
    "force_isa",
    "isa",
    "pack_bsr",
    "parallel_threads",
    "pack_csr",
    "supported_isas",
    "unavailable_reason",
]

#: Environment variable that forces an ISA path: ``avx512``, ``avx2``, ``scalar`` (or ``auto``).
ISA_ENV = "SPARSEKIT_ISA"
#: ISA paths, fastest first.
ISAS: tuple[str, ...] = ("avx512", "avx2", "scalar")
#: Largest column chunk (column offsets are 8-bit).
MAX_CHUNK = 256
_EXTENSION = "sparsekit._C_cpu"
_INT32_MAX = 2**31 - 1

# =============================================================================================
# Extension loading (lazy)
# =============================================================================================
_warned_unavailable = False


def _describe_load_error(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name == _EXTENSION:
        return ("the C++ extension sparsekit._C_cpu is not built (installed with SPARSEKIT_SKIP_CPP=1, without "
                "torch or a C++ compiler at build time, or its build failed); reinstall with "
                "`pip install --no-build-isolation -e .` and read the build log")
    return (f"the C++ extension sparsekit._C_cpu failed to load ({type(exc).__name__}: {exc}); it must be built "
            f"against the installed torch {torch.__version__}: reinstall with `pip install --no-build-isolation -e .`")


_EXT = LazyExtension(_EXTENSION, _describe_load_error)


def __getattr__(name: str) -> Any:  # AVAILABLE / UNAVAILABLE_REASON load the extension on first access
    return _EXT.module_getattr(__name__, name)


def available() -> bool:
    """Whether the C++ kernels are built and load (the ops fall back to the torch reference if not)."""
    return _EXT.load() is not None


def unavailable_reason() -> str | None:
    """Why the C++ kernels are unavailable, or None if they are available."""
    return _EXT.reason


def _warn_unavailable() -> None:
    global _warned_unavailable
    if not _warned_unavailable:
        _warned_unavailable = True
        warnings.warn(f"sparsekit CPU kernels unavailable, using the slow pure-torch reference: {_EXT.reason}",
                      RuntimeWarning, stacklevel=4)  # the caller of csr_linear / bsr_linear


# =============================================================================================
# ISA selection
# =============================================================================================
_isa_cache: dict[Optional[str], str] = {}


def supported_isas() -> tuple[str, ...]:
    """ISA paths this CPU can run, fastest first (empty if the extension is unavailable)."""
    ext = _EXT.load()
    return tuple(ext.supported_isas()) if ext is not None else ()


def parallel_threads(n: int | None = None) -> int:
    """How many distinct threads the kernels' parallel loop really runs on, over ``n`` work items (default:
    ``torch.get_num_threads()``). 1 with several torch threads means the extension was built without OpenMP and
    every kernel runs serially; 0 if the extension is unavailable."""
    ext = _EXT.load()
    if ext is None:
        return 0
    return int(ext.parallel_threads(torch.get_num_threads() if n is None else int(n)))


def _resolve_isa() -> str:
    requested = os.environ.get(ISA_ENV)
    hit = _isa_cache.get(requested)
    if hit is not None:
        return hit
    supported = supported_isas()
    want = (requested or "").strip().lower()
    if want in ("", "auto"):
        chosen = supported[0]
    elif want not in ISAS:
        raise ValueError(f"{ISA_ENV}={requested!r} is not an ISA path; expected one of {', '.join(ISAS)} or auto")
    elif want in supported:
        chosen = want
    else:
        chosen = next(i for i in ISAS[ISAS.index(want):] if i in supported)
        warnings.warn(f"{ISA_ENV}={want}: this CPU does not support it; using {chosen}", RuntimeWarning,
                      stacklevel=4)
    _isa_cache[requested] = chosen
    return chosen


def isa() -> str:
    """The ISA path the kernels use here and now: ``avx512``, ``avx2``, ``scalar``, or ``reference`` when the
    C++ extension is unavailable. Honours ``SPARSEKIT_ISA``."""
    return _resolve_isa() if available() else "reference"


@contextlib.contextmanager
def force_isa(name: str | None) -> Iterator[None]:
    """Context manager: run the kernels on ISA path ``name`` (``avx512``, ``avx2``, ``scalar``; None = auto)
    by setting ``SPARSEKIT_ISA`` (process-wide) for the duration of the block."""
    if name is not None and name not in ISAS + ("auto",):
        raise ValueError(f"unknown ISA {name!r}; expected one of {', '.join(ISAS)} or auto")
    old = os.environ.get(ISA_ENV)
    if name is None:
        os.environ.pop(ISA_ENV, None)
    else:
        os.environ[ISA_ENV] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ISA_ENV, None)
        else:
            os.environ[ISA_ENV] = old


# =============================================================================================
# Packed weights
# =============================================================================================
def choose_chunk(density: float) -> int:
    """Columns per chunk for a weight of this density: enough stored entries per (row, chunk) run that the
    per-run accumulator load / store stays small, while a chunk of transposed activations stays near L1
    (64..256). Thresholds measured on BERT-base FFN shapes at 64 and 128 tokens, 2 threads."""
    if density > 0.3:
        return 64
    if density > 0.12:
        return 128
    return 256


def _check_chunk(chunk: Any) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int):
        raise TypeError(f"chunk must be an int, got {type(chunk).__name__}")
    if not 1 <= chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be in [1, {MAX_CHUNK}] (8-bit column offsets), got {chunk}")
    return chunk


def _check_packed_tensor(t: Any, name: str, dtype: torch.dtype, numel: int | None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    if t.dim() != 1 or t.layout != torch.strided or not t.is_contiguous():
        raise ValueError(f"{name} must be a 1-D contiguous tensor, got shape {list(t.shape)}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, got {t.device}")
    if numel is not None and t.numel() != numel:
        raise ValueError(f"{name} has {t.numel()} elements, expected {numel}")


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class PackedWeight:
    """A weight ``[out, in]`` packed once for the CPU kernels (layout in the module docstring).

    Fields: ``shape = (out, in)``, ``group_rows`` (R), ``chunk`` (Kc), ``ptr`` int32
    ``[ceil(in/Kc) * ceil(out/R) + 1]``, ``col`` uint8 ``[nent]``, ``val`` float32 ``[nent * R]``.
    Construction validates everything (dtypes, sizes, pointer monotonicity, column ranges, finiteness) and
    raises ``TypeError`` / ``ValueError``. Immutable by convention; the ops re-check the indices on every
    call all the same, so tensors modified after packing raise instead of being read out of bounds.
    """

    kind: ClassVar[str] = ""
    shape: tuple[int, int]
    group_rows: int
    chunk: int
    ptr: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor

    def __post_init__(self) -> None:
        shape = self.shape
        if not (isinstance(shape, (tuple, list)) and len(shape) == 2
                and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= _INT32_MAX for s in shape)):
            raise ValueError(f"shape must be two ints [out, in] in [0, 2**31-1], got {shape!r}")
        object.__setattr__(self, "shape", (int(shape[0]), int(shape[1])))
        if self.group_rows not in (1, 2, 4) or isinstance(self.group_rows, bool):
            raise ValueError(f"group_rows must be 1, 2 or 4, got {self.group_rows!r}")
        _check_chunk(self.chunk)
        out, inp = self.shape
        R, Kc = self.group_rows, self.chunk
        ng, nch = self.ngroups, self.nchunks
        _check_packed_tensor(self.ptr, "ptr", torch.int32, nch * ng + 1)
        _check_packed_tensor(self.col, "col", torch.uint8, None)
        nent = self.col.numel()
        _check_packed_tensor(self.val, "val", torch.float32, nent * R)
        p = self.ptr.to(torch.int64)
        if int(p[0]) != 0 or int(p[-1]) != nent:
            raise ValueError(f"ptr must start at 0 and end at {nent} (the number of entries), "
                             f"got {int(p[0])} .. {int(p[-1])}")
        counts = p[1:] - p[:-1]
        if counts.numel() and bool((counts < 0).any()):
            raise ValueError("ptr is not non-decreasing")
        if nent:
            chunk_of = torch.repeat_interleave(torch.arange(nch * ng) // ng, counts)
            cols = chunk_of * Kc + self.col.to(torch.int64)
            if bool((self.col.to(torch.int64) >= Kc).any()) or int(cols.max()) >= inp:
                bad = int(torch.nonzero((cols >= inp) | (self.col.to(torch.int64) >= Kc))[0, 0])
                raise ValueError(f"column index out of range: entry {bad} is column {int(cols[bad])} "
                                 f"(offset {int(self.col[bad])} in chunk {int(chunk_of[bad])} of {Kc} columns), "
                                 f"allowed [0, {inp - 1}]")
            if not bool(torch.isfinite(self.val).all()):
                raise ValueError("val contains NaN or inf")
            if out % R:  # rows past the matrix edge must be zero
                last = torch.repeat_interleave(torch.arange(nch * ng) % ng, counts) == ng - 1
                pad = self.val.view(nent, R)[last][:, out % R:]
                if bool(pad.any()):
                    raise ValueError(f"values stored for rows >= out ({out}) in the last group")

    # --- derived -------------------------------------------------------------------------------
    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]

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

    @property
    def nnz(self) -> int:
        """Stored non-zero weights."""
        return int(self.val.count_nonzero())

    @property
    def density(self) -> float:
        out, inp = self.shape
        return self.nnz / (out * inp) if out * inp else 0.0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def tensors(self) -> dict[str, torch.Tensor]:
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
class PackedCSR(PackedWeight):
    """A CSR weight packed for :func:`csr_linear` (``group_rows == 1``)."""

    kind: ClassVar[str] = "csr"
    group_rows: int = 1

    def __post_init__(self) -> None:
        if self.group_rows != 1:
            raise ValueError(f"PackedCSR has group_rows 1, got {self.group_rows!r}")
        super().__post_init__()


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class PackedBSR(PackedWeight):
    """A BSR weight packed for :func:`bsr_linear`; ``block`` is the source block shape (informational)."""

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


def pack_csr(weight: Any, *, chunk: int | None = None) -> PackedCSR:
    """Pack a weight once for :func:`csr_linear`.

    Args:
        weight: a :class:`sparsekit.export.formats.CSRFormat` (its tensors are re-validated), or a dense
            ``[out, in]`` floating-point tensor (packed through ``CSRFormat.pack``: its non-zeros).
            Values may be float32 or bfloat16 (widened to float32); explicit zeros are dropped.
        chunk: columns per chunk (1..256); default :func:`choose_chunk` of the density.
    Returns:
        a :class:`PackedCSR`. Raises ``TypeError`` / ``ValueError`` (``FormatError``) for bad input.
    """
    from sparsekit.export.formats import CSRFormat

    if isinstance(weight, torch.Tensor):
        fmt = CSRFormat.pack(weight)
    elif isinstance(weight, CSRFormat):
        fmt = CSRFormat(shape=weight.shape, row_ptr=weight.row_ptr, col_idx=weight.col_idx, values=weight.values,
                        row_order=weight.row_order)  # validates dtypes, pointers, index ranges, finiteness
    else:
        raise TypeError(f"pack_csr expects a CSRFormat or a dense weight tensor, got {type(weight).__name__}")
    out, inp = fmt.shape
    rows = torch.repeat_interleave(torch.arange(out), fmt.row_lengths())
    cols = fmt.col_idx.to(torch.int64)
    vals = fmt.values.to(torch.float32)
    keep = vals != 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    Kc = _check_chunk(chunk) if chunk is not None else choose_chunk(vals.numel() / (out * inp) if out * inp else 0.0)
    return PackedCSR(shape=(out, inp), chunk=Kc, **_group_pack(out, inp, 1, Kc, rows, cols, vals[:, None]))


def pack_bsr(weight: Any, *, block: tuple[int, int] = (4, 1), chunk: int | None = None) -> PackedBSR:
    """Pack a weight once for :func:`bsr_linear`.

    Args:
        weight: a :class:`sparsekit.export.formats.BSRFormat` of any block shape (re-validated), or a dense
            ``[out, in]`` floating-point tensor, packed through ``BSRFormat.pack(weight, block=block)``.
        block: ``(br, bc)`` for a dense ``weight`` (ignored for a BSRFormat). The kernel groups ``R`` rows
            that share columns: R = 4 if ``br`` is a multiple of 4, else 2 if even, else 1 (plain CSR).
            ``(4, 1)``, ``(8, 1)``, ``(16, 1)`` and ``(4, 4)`` run fastest.
        chunk: columns per chunk (1..256); default :func:`choose_chunk` of the density of stored entries.
    Returns:
        a :class:`PackedBSR`. Block padding beyond the matrix edges and all-zero columns of a block are
        dropped. Raises ``TypeError`` / ``ValueError`` (``FormatError``) for bad input.
    """
    from sparsekit.export.formats import BSRFormat

    if isinstance(weight, torch.Tensor):
        fmt = BSRFormat.pack(weight, block=block)
    elif isinstance(weight, BSRFormat):
        fmt = BSRFormat(shape=weight.shape, block=weight.block, block_row_ptr=weight.block_row_ptr,
                        block_col_idx=weight.block_col_idx, blocks=weight.blocks)  # validates
    else:
        raise TypeError(f"pack_bsr expects a BSRFormat or a dense weight tensor, got {type(weight).__name__}")
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
    Kc = _check_chunk(chunk) if chunk is not None else choose_chunk(density)
    return PackedBSR(shape=(out, inp), group_rows=R, chunk=Kc, block=(br, bc),
                     **_group_pack(out, inp, R, Kc, g, c, vals))


# =============================================================================================
# Ops
# =============================================================================================
def _check_x_bias(op: str, x: Any, bias: Any, in_features: int, out_features: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{op}: x must be float32, got {x.dtype} (convert with x.float())")
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise ValueError(f"{op}: x must have shape [..., {in_features}] (in_features), got {list(x.shape)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"{op}: bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dtype != torch.float32:
            raise TypeError(f"{op}: bias must be float32, got {bias.dtype}")
        if bias.dim() != 1 or bias.shape[0] != out_features:
            raise ValueError(f"{op}: bias must have shape [{out_features}] (out_features), got {list(bias.shape)}")


def _check_op_args(op: str, x: Any, ptr: Any, col: Any, val: Any, in_features: int, out_features: int,
                   group_rows: int, chunk: int, bias: Any) -> None:
    """Shape / dtype checks shared by the real and the fake implementations (no data access)."""
    _check_x_bias(op, x, bias, in_features, out_features)
    if group_rows not in (1, 2, 4):
        raise ValueError(f"{op}: group_rows must be 1, 2 or 4, got {group_rows}")
    if not 1 <= chunk <= MAX_CHUNK:
        raise ValueError(f"{op}: chunk must be in [1, {MAX_CHUNK}], got {chunk}")
    if in_features < 0 or out_features < 0:
        raise ValueError(f"{op}: negative in_features / out_features")
    for name, t, dtype in (("ptr", ptr, torch.int32), ("col", col, torch.uint8), ("val", val, torch.float32)):
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.dim() != 1:
            raise TypeError(f"{op}: {name} must be a 1-D {dtype} tensor (use pack_csr / pack_bsr), "
                            f"got {getattr(t, 'dtype', type(t).__name__)}")
    ng = -(-out_features // group_rows)
    nch = -(-in_features // chunk)
    if ptr.shape[0] != nch * ng + 1 or val.shape[0] != col.shape[0] * group_rows:
        raise ValueError(f"{op}: packed tensors do not match in_features={in_features}, "
                         f"out_features={out_features}, group_rows={group_rows}, chunk={chunk}")


def _run(op: str, x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
         out_features: int, group_rows: int, chunk: int, bias: Optional[torch.Tensor],
         packed_ok: bool = False) -> torch.Tensor:
    """The CPU implementation of both ops. ``packed_ok``: ptr / col / val come from a validated PackedWeight."""
    if packed_ok:
        _check_x_bias(op, x, bias, in_features, out_features)
        tensors = (("x", x), ("bias", bias))
    else:
        _check_op_args(op, x, ptr, col, val, in_features, out_features, group_rows, chunk, bias)
        tensors = (("x", x), ("ptr", ptr), ("col", col), ("val", val), ("bias", bias))
    for name, t in tensors:
        if t is not None and t.device.type != "cpu":
            raise ValueError(f"{op}: {name} is on {t.device}; sparsekit's kernels for this op run on the CPU "
                             f"only (move the tensors with .cpu())")
    ext = _EXT.load()
    x2 = x if x.dim() == 2 else x.reshape(-1, in_features)
    if ext is None:
        _warn_unavailable()
        y = reference.bsr_linear(x2, ptr, col, val, in_features, out_features, group_rows, chunk, bias)
    else:
        y = ext.linear(x2, ptr, col, val, in_features, out_features, group_rows, chunk, bias, _resolve_isa())
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], out_features)


@torch.library.custom_op("sparsekit::csr_linear", mutates_args=())
def _csr_linear_op(x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
                   out_features: int, chunk: int, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sparsekit::csr_linear``: ``x [..., in]`` float32 -> ``[..., out]`` for a packed weight (``group_rows``
    1). Any tensors are safe to pass: all are validated (module docstring, "Safety"); NaN / inf semantics:
    module docstring, "Semantics"."""
    return _run("sparsekit::csr_linear", x, ptr, col, val, in_features, out_features, 1, chunk, bias)


@_csr_linear_op.register_fake
def _csr_linear_fake(x, ptr, col, val, in_features, out_features, chunk, bias=None):
    _check_op_args("sparsekit::csr_linear", x, ptr, col, val, in_features, out_features, 1, chunk, bias)
    return x.new_empty((*x.shape[:-1], out_features))


@torch.library.custom_op("sparsekit::bsr_linear", mutates_args=())
def _bsr_linear_op(x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
                   out_features: int, group_rows: int, chunk: int,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sparsekit::bsr_linear``: ``x [..., in]`` float32 -> ``[..., out]`` for a packed weight with ``group_rows``
    1, 2 or 4. Any tensors are safe to pass: all are validated (module docstring, "Safety"); NaN / inf
    semantics: module docstring, "Semantics" (explicit zeros inside a group do not propagate a NaN of x)."""
    return _run("sparsekit::bsr_linear", x, ptr, col, val, in_features, out_features, group_rows, chunk, bias)


@_bsr_linear_op.register_fake
def _bsr_linear_fake(x, ptr, col, val, in_features, out_features, group_rows, chunk, bias=None):
    _check_op_args("sparsekit::bsr_linear", x, ptr, col, val, in_features, out_features, group_rows, chunk, bias)
    return x.new_empty((*x.shape[:-1], out_features))


def _vmap_rule(op: Any, info: Any, in_dims: tuple, x: torch.Tensor, *args: Any) -> tuple[torch.Tensor, Optional[int]]:
    """vmap over x only: the ops take x [..., in], so a batch dimension of x is one more leading dimension."""
    if any(d is not None for d in in_dims[1:]):
        raise NotImplementedError("sparsekit ops support vmap over x only, not over the packed weight or the bias")
    if in_dims[0] is None:  # nothing batched
        return op(x, *args), None
    return op(x.movedim(in_dims[0], 0), *args), 0


_csr_linear_op.register_vmap(lambda info, in_dims, x, *args: _vmap_rule(_csr_linear_op, info, in_dims, x, *args))
_bsr_linear_op.register_vmap(lambda info, in_dims, x, *args: _vmap_rule(_bsr_linear_op, info, in_dims, x, *args))


def _plain_eager(x: Any, bias: Any) -> bool:
    """True when calling the implementation directly is equivalent to going through the dispatcher (which
    costs ~10-20 us per call): plain tensors, no autograd, no torch.compile / dispatch-mode tracing."""
    if torch.compiler.is_compiling() or type(x) is not torch.Tensor or torch._C._are_functorch_transforms_active():
        return False
    if bias is not None and type(bias) is not torch.Tensor:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
        return False
    try:
        return torch._C._len_torch_dispatch_stack() == 0
    except AttributeError:  # private API moved: always take the dispatcher
        return False


def csr_linear(x: torch.Tensor, packed: PackedCSR, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``y = x @ W.T + bias`` for a packed CSR weight ``W [out, in]`` (op ``sparsekit::csr_linear``).

    Args:
        x: float32 CPU tensor ``[..., in]`` (row-major; other layouts are copied).
        packed: from :func:`pack_csr`.
        bias: float32 ``[out]`` or None.
    Returns:
        float32 tensor ``[..., out]``. A NaN / inf in ``x`` reaches an output only through a stored non-zero
        weight of its row (module docstring, "Semantics"); the packed indices are re-checked on every call.
    """
    if not isinstance(packed, PackedCSR):
        raise TypeError(f"packed must be a PackedCSR (from pack_csr), got {type(packed).__name__}")
    out, inp = packed.shape
    if _plain_eager(x, bias):
        return _run("csr_linear", x, packed.ptr, packed.col, packed.val, inp, out, 1, packed.chunk, bias, True)
    return torch.ops.sparsekit.csr_linear(x, packed.ptr, packed.col, packed.val, inp, out, packed.chunk, bias)


def bsr_linear(x: torch.Tensor, packed: PackedBSR, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``y = x @ W.T + bias`` for a packed BSR weight ``W [out, in]`` (op ``sparsekit::bsr_linear``).

    Args:
        x: float32 CPU tensor ``[..., in]`` (row-major; other layouts are copied).
        packed: from :func:`pack_bsr`.
        bias: float32 ``[out]`` or None.
    Returns:
        float32 tensor ``[..., out]``. A NaN / inf in ``x`` reaches an output only through a stored non-zero
        weight of its row (module docstring, "Semantics"); the packed indices are re-checked on every call.
    """
    if not isinstance(packed, PackedBSR):
        raise TypeError(f"packed must be a PackedBSR (from pack_bsr), got {type(packed).__name__}")
    out, inp = packed.shape
    R = packed.group_rows
    if _plain_eager(x, bias):
        return _run("bsr_linear", x, packed.ptr, packed.col, packed.val, inp, out, R, packed.chunk, bias, True)
    return torch.ops.sparsekit.bsr_linear(x, packed.ptr, packed.col, packed.val, inp, out, R, packed.chunk, bias)
