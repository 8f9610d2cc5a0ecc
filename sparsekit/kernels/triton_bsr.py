"""Triton block-sparse (BSR) x dense kernel for Linear layers, on tensor cores: ``y = x @ W.T + bias``.

``W [out, in]`` is stored as ``br x bc`` blocks (``br, bc`` in 16 / 32 / 64); only non-zero blocks are kept.
Each program computes a ``BLOCK_M x br`` tile of ``y`` (``BLOCK_M`` tokens, one block row of ``W``): it walks
the stored blocks of its block row, loads the matching ``BLOCK_M x bc`` slice of ``x`` and accumulates
``x_slice @ block.T`` with ``tl.dot`` in float32 (bf16 / fp16 operands run on tensor cores; float32 operands
use TF32 when ``torch.backends.cuda.matmul.allow_tf32`` is set, IEEE float32 otherwise, as cuBLAS does).
Programs take block rows longest first (``row_order``), so the longest rows start first and the tail is short.

    packed = pack_triton_bsr(weight_or_bsr_format, block=(32, 32), dtype=torch.bfloat16, device="cuda")
    y = triton_bsr_linear(x, packed, bias)      # x [..., in] bf16 / fp16 / fp32 -> y [..., out], x's dtype

Op (declared here, once; fake implementation for ``torch.compile``)::

    sparsekit::triton_bsr_linear(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor blocks_t, Tensor row_order,
                                 int in_features, int out_features, Tensor? bias=None) -> Tensor

Kernel layout (:class:`TritonBSRWeight`), ``nbr = ceil(out / br)``, ``nbc = ceil(in / bc)``:

* ``row_ptr`` int32 ``[nbr + 1]``: block row ``i`` owns stored blocks ``[row_ptr[i], row_ptr[i + 1])``.
* ``col_idx`` int32 ``[nblocks]``: block ``k`` covers columns ``col_idx[k]*bc .. col_idx[k]*bc + bc - 1``.
* ``blocks_t`` ``[nblocks, bc, br]`` (x's dtype), each block **transposed**:
  ``blocks_t[k, b, a] = W[i*br + a, col_idx[k]*bc + b]`` (zero beyond the matrix edges), so a block is
  already the ``K x N`` operand of ``tl.dot``.
* ``row_order`` int32 ``[nbr]``: a permutation of the block rows, most stored blocks first.

Index ranges are validated once, when a :class:`TritonBSRWeight` is built, and trusted by the op.

Where the kernels run: CUDA tensors (compiled, autotuned over a few tile / warp / stage configurations), or
CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is first imported, as
Triton's own library functions are built at import; one fixed configuration; for tests). The
runtime helpers at the top of this module (Triton availability, interpreter mode, lazy ``triton.jit``) are
shared with :mod:`sparsekit.kernels.triton_csr`.
"""
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton is optional: the packing, validation and references work without it
    triton = None
    tl = None

__all__ = [
    "BLOCK_SIZES",
    "DTYPES",
    "TritonBSRWeight",
    "interpreter_ready",
    "interpreting",
    "pack_triton_bsr",
    "reference_bsr_linear",
    "triton_available",
    "triton_bsr_linear",
    "triton_unavailable_reason",
]

#: Block edge lengths the kernel supports (``tl.dot`` needs every dimension >= 16).
BLOCK_SIZES: tuple[int, ...] = (16, 32, 64)
#: Activation / weight dtypes of the Triton kernels (accumulation is always float32).
DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16, torch.float32)
_INT32_MAX = 2**31 - 1


# =============================================================================================
# Triton runtime helpers (shared with triton_csr)
# =============================================================================================
def triton_available() -> bool:
    """Whether Triton is importable here."""
    return triton is not None


def triton_unavailable_reason() -> Optional[str]:
    """Why the Triton kernels cannot run at all (None when Triton is installed)."""
    return None if triton is not None else "triton is not installed (pip install triton; Linux x86-64 only)"


def interpreting() -> bool:
    """Whether the Triton interpreter is requested (``TRITON_INTERPRET=1``): kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def interpreter_ready() -> bool:
    """Whether triton.language itself was imported under the interpreter (``TRITON_INTERPRET=1`` set before the
    first ``import triton``), which the interpreter needs for Triton's own ``@jit`` library functions."""
    if triton is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


@contextlib.contextmanager
def _interpret_env(value: bool) -> Iterator[None]:
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if value else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


def lazy_kernel(fn: Callable, make_tuned: Callable[[Any], Any]) -> Callable[[bool], Any]:
    """``get(interpret)`` -> the kernel ``fn`` jitted for the interpreter (``interpret=True``, untuned) or for
    the GPU (``make_tuned(jitted)``, e.g. wrapped in ``triton.autotune``), built on first use and cached.

    ``triton.jit`` decides at decoration time whether a function is interpreted, so decorating at import would
    tie the module to the ``TRITON_INTERPRET`` value of whoever imported it first; building per mode on first
    use does not.
    """
    cache: dict[bool, Any] = {}

    def get(interpret: bool) -> Any:
        if interpret not in cache:
            if triton is None:
                raise RuntimeError(triton_unavailable_reason())
            with _interpret_env(interpret):
                jitted = triton.jit(fn)
            cache[interpret] = jitted if interpret else make_tuned(jitted)
        return cache[interpret]

    return get


def launch_mode(op: str, tensors: dict[str, Optional[torch.Tensor]]) -> bool:
    """Check that every tensor is on one device where the Triton kernels run; returns ``interpret``."""
    if triton is None:
        raise RuntimeError(f"{op}: {triton_unavailable_reason()}")
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"{op}: all tensors must be on one device, got "
                         + ", ".join(f"{n} on {d}" for n, d in devices.items()))
    device = next(iter(devices.values()))
    if device.type == "cuda":
        return False
    if device.type == "cpu" and interpreting():
        if not interpreter_ready():
            raise RuntimeError(f"{op}: TRITON_INTERPRET=1 was set after triton was imported; Triton's own library "
                               f"functions were then built for the GPU. Set it before the first `import triton` "
                               f"(e.g. in the environment of the process)")
        return True
    raise ValueError(f"{op}: the Triton kernels run on CUDA tensors (or on CPU tensors under the Triton "
                     f"interpreter, TRITON_INTERPRET=1); the tensors are on {device}")


def check_activation(op: str, x: Any, bias: Any, in_features: int, out_features: int, dtype: torch.dtype) -> None:
    """``x [..., in]`` of the weight's dtype, ``bias [out]`` of that dtype or float32 (no data access)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(f"{op}: x is {x.dtype} but the packed weight is {dtype}; pack the weight with "
                        f"dtype={x.dtype} or convert x")
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise ValueError(f"{op}: x must have shape [..., {in_features}] (in_features), got {list(x.shape)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"{op}: bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dtype not in (dtype, torch.float32):
            raise TypeError(f"{op}: bias must be {dtype} or float32, got {bias.dtype}")
        if bias.dim() != 1 or bias.shape[0] != out_features:
            raise ValueError(f"{op}: bias must have shape [{out_features}] (out_features), got {list(bias.shape)}")


def check_1d(op: str, name: str, t: Any, dtypes: tuple[torch.dtype, ...], numel: Optional[int] = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{op}: {name} must be {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if t.dim() != 1 or not t.is_contiguous():
        raise ValueError(f"{op}: {name} must be a 1-D contiguous tensor, got shape {list(t.shape)}")
    if numel is not None and t.numel() != numel:
        raise ValueError(f"{op}: {name} has {t.numel()} elements, expected {numel}")


def length_order(lengths: torch.Tensor) -> torch.Tensor:
    """int32 permutation listing rows by length, longest first (ties: ascending row index)."""
    return torch.sort(lengths, descending=True, stable=True).indices.to(torch.int32)


def check_compressed_rows(op: str, row_ptr: torch.Tensor, col_idx: torch.Tensor, index_dtypes: tuple[torch.dtype, ...],
                          row_order: torch.Tensor, nrows: int, ncols: int, stored: tuple[str, torch.Tensor],
                          count_name: str) -> None:
    """Validate a compressed-row structure (CSR over entries or over blocks) once, at pack time.

    row_ptr int32 ``[nrows + 1]`` (0 .. count, non-decreasing); col_idx ``[count]`` of ``index_dtypes`` in
    ``[0, ncols)``; row_order int32 ``[nrows]`` a permutation; ``stored = (name, tensor)``: the values (one per
    entry or block along dim 0), finite; all tensors on one device. ValueError / TypeError naming the field.
    """
    name, values = stored
    count = values.shape[0]
    check_1d(op, "row_ptr", row_ptr, (torch.int32,), nrows + 1)
    check_1d(op, "col_idx", col_idx, index_dtypes, count)
    check_1d(op, "row_order", row_order, (torch.int32,), nrows)
    devices = {t.device for t in (row_ptr, col_idx, values, row_order)}
    if len(devices) != 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")
    p = row_ptr.to(torch.int64)
    if int(p[0]) != 0 or int(p[-1]) != count or bool((p[1:] < p[:-1]).any()):
        raise ValueError(f"{op}: row_ptr must start at 0, be non-decreasing and end at {count_name}={count}")
    if count:
        c = col_idx.to(torch.int64)
        if int(c.min()) < 0 or int(c.max()) >= ncols:
            raise ValueError(f"{op}: col_idx spans [{int(c.min())}, {int(c.max())}], allowed [0, {ncols - 1}]")
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"{op}: {name} holds NaN or inf")
    check_permutation(f"{op}: row_order", row_order, nrows)


def check_permutation(name: str, order: torch.Tensor, n: int) -> None:
    if n and not bool((torch.bincount(order.to(torch.int64).clamp(0, n - 1), minlength=n) == 1).all()
                      and int(order.min()) >= 0 and int(order.max()) < n):
        raise ValueError(f"{name} is not a permutation of 0..{n - 1}")


def _check_dtype(dtype: Any) -> torch.dtype:
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(str(d) for d in DTYPES)}, got {dtype}")
    return dtype


# =============================================================================================
# Packed weight
# =============================================================================================
@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class TritonBSRWeight:
    """A weight ``[out, in]`` in the kernel's BSR layout (module docstring). Construction validates dtypes,
    shapes, pointers, block indices, the row order and finiteness (``TypeError`` / ``ValueError``).

    Fields: ``shape = (out, in)``, ``block = (br, bc)``, ``row_ptr``, ``col_idx``, ``blocks_t``, ``row_order``.
    """

    kind: ClassVar[str] = "triton-bsr"
    shape: tuple[int, int]
    block: tuple[int, int]
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    blocks_t: torch.Tensor
    row_order: torch.Tensor

    def __post_init__(self) -> None:
        out, inp = self.shape
        br, bc = self.block
        if br not in BLOCK_SIZES or bc not in BLOCK_SIZES:
            raise ValueError(f"block must be two of {BLOCK_SIZES} (tl.dot needs >= 16), got {tuple(self.block)}")
        if out < 0 or inp < 0:
            raise ValueError(f"shape must be non-negative, got {tuple(self.shape)}")
        nbr, nbc = -(-out // br), -(-inp // bc)
        op = "TritonBSRWeight"
        if not isinstance(self.blocks_t, torch.Tensor) or self.blocks_t.dtype not in DTYPES:
            raise TypeError(f"{op}: blocks_t must be a tensor of {DTYPES}, "
                            f"got {getattr(self.blocks_t, 'dtype', None)}")
        bt = self.blocks_t
        if bt.dim() != 3 or tuple(bt.shape[1:]) != (bc, br) or not bt.is_contiguous():
            raise ValueError(f"{op}: blocks_t must be contiguous [nblocks, {bc}, {br}], got {list(bt.shape)}")
        if self.blocks_t.numel() > _INT32_MAX:  # the kernel's block offsets are int32
            raise ValueError(f"{op}: too many stored values for int32 offsets: {self.blocks_t.numel()}")
        check_compressed_rows(op, self.row_ptr, self.col_idx, (torch.int32,), self.row_order, nbr, nbc,
                              ("blocks_t", self.blocks_t), "nblocks")

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks_t.dtype

    @property
    def device(self) -> torch.device:
        return self.blocks_t.device

    @property
    def nblocks(self) -> int:
        return self.blocks_t.shape[0]

    @property
    def block_density(self) -> float:
        """Stored blocks over all blocks of the padded tiling (the fraction of tensor-core work kept)."""
        (out, inp), (br, bc) = self.shape, self.block
        total = -(-out // br) * -(-inp // bc)
        return self.nblocks / total if total else 0.0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.row_ptr, self.col_idx, self.blocks_t, self.row_order))

    def to_dense(self) -> torch.Tensor:
        """The represented weight, float32 ``[out, in]``, on the weight's device."""
        return _bsr_to_dense(self.row_ptr, self.col_idx, self.blocks_t, self.shape[1], self.shape[0])

    def __repr__(self) -> str:
        return (f"TritonBSRWeight(shape={tuple(self.shape)}, block={tuple(self.block)}, nblocks={self.nblocks}, "
                f"block_density={self.block_density:.3f}, dtype={self.dtype}, device={self.device})")


def pack_triton_bsr(weight: Any, *, block: tuple[int, int] = (32, 32), dtype: Optional[torch.dtype] = None,
                    device: Any = None) -> TritonBSRWeight:
    """Pack a weight once for :func:`triton_bsr_linear`.

    Args:
        weight: a dense ``[out, in]`` floating-point tensor (any device; packed there, a block is stored iff it
            holds a non-zero after conversion to ``dtype``), or a :class:`sparsekit.export.formats.BSRFormat`
            whose block is two of 16 / 32 / 64 (its stored blocks are kept as they are).
        block: ``(br, bc)``, each 16, 32 or 64; for a dense ``weight`` only.
        dtype: bfloat16, float16 or float32 (the activations' dtype). Default: a dense weight's own dtype if it
            is one of these (else float32); a BSRFormat's value dtype.
        device: where the packed tensors live (default: the weight's device).
    Returns:
        a validated :class:`TritonBSRWeight`. Raises ``TypeError`` / ``ValueError`` for bad input.
    """
    from sparsekit.export.formats import BSRFormat

    if isinstance(weight, BSRFormat):
        br, bc = weight.block
        dtype = _check_dtype(dtype or weight.value_dtype)
        (out, inp), nb = weight.shape, weight.nblocks
        if br not in BLOCK_SIZES or bc not in BLOCK_SIZES:
            raise ValueError(f"the BSRFormat's block {weight.block} is not two of {BLOCK_SIZES}; repack the dense "
                             f"weight with pack_triton_bsr(fmt.to_dense(), block=...)")
        blocks_t = weight.blocks.to(dtype).transpose(1, 2).contiguous()
        row_ptr, col_idx = weight.block_row_ptr, weight.block_col_idx
        lengths = row_ptr[1:].to(torch.int64) - row_ptr[:-1].to(torch.int64)
        if nb == 0:
            blocks_t = blocks_t.reshape(0, bc, br)
    elif isinstance(weight, torch.Tensor):
        if weight.dim() != 2 or not weight.is_floating_point():
            raise ValueError(f"weight must be a 2-D floating-point tensor [out, in], got {weight.dtype} "
                             f"{list(weight.shape)}")
        if (not isinstance(block, (tuple, list)) or len(block) != 2
                or any(isinstance(b, bool) or b not in BLOCK_SIZES for b in block)):
            raise ValueError(f"block must be two of {BLOCK_SIZES} (tl.dot needs >= 16), got {block!r}")
        br, bc = int(block[0]), int(block[1])
        dtype = _check_dtype(dtype or (weight.dtype if weight.dtype in DTYPES else torch.float32))
        w = weight.detach().to(dtype)
        if not bool(torch.isfinite(w).all()):
            raise ValueError("weight holds NaN or inf")
        out, inp = w.shape
        nbr, nbc = -(-out // br), -(-inp // bc)
        padded = w.new_zeros(nbr * br, nbc * bc)
        padded[:out, :inp] = w
        tiles = padded.view(nbr, br, nbc, bc).permute(0, 2, 3, 1)  # [nbr, nbc, bc, br]: each block transposed
        keep = (tiles != 0).flatten(2).any(dim=2)  # [nbr, nbc]
        brow, bcol = torch.nonzero(keep, as_tuple=True)  # sorted by block row, then block column
        lengths = keep.sum(dim=1, dtype=torch.int64)
        row_ptr = torch.zeros(nbr + 1, dtype=torch.int64, device=w.device)
        torch.cumsum(lengths, dim=0, out=row_ptr[1:])
        row_ptr, col_idx = row_ptr.to(torch.int32), bcol.to(torch.int32)
        blocks_t = tiles[brow, bcol].contiguous()
    else:
        raise TypeError(f"pack_triton_bsr expects a dense weight tensor or a BSRFormat, got {type(weight).__name__}")
    device = torch.device(device) if device is not None else blocks_t.device
    return TritonBSRWeight(shape=(int(out), int(inp)), block=(br, bc), row_ptr=row_ptr.to(device).contiguous(),
                           col_idx=col_idx.to(device).contiguous(), blocks_t=blocks_t.to(device),
                           row_order=length_order(lengths).to(device))


# =============================================================================================
# Reference (pure torch, the kernel layout)
# =============================================================================================
def _bsr_to_dense(row_ptr: torch.Tensor, col_idx: torch.Tensor, blocks_t: torch.Tensor, in_features: int,
                  out_features: int) -> torch.Tensor:
    nb, bc, br = blocks_t.shape
    nbr, nbc = -(-out_features // br), -(-in_features // bc)
    tiles = torch.zeros(nbr, nbc, br, bc, dtype=torch.float32, device=blocks_t.device)
    if nb:
        p = row_ptr.to(torch.int64)
        rows = torch.repeat_interleave(torch.arange(nbr, device=blocks_t.device), p[1:] - p[:-1])
        tiles[rows, col_idx.to(torch.int64)] = blocks_t.to(torch.float32).transpose(1, 2)
    return tiles.permute(0, 2, 1, 3).reshape(nbr * br, nbc * bc)[:out_features, :in_features]


def reference_bsr_linear(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, blocks_t: torch.Tensor,
                         row_order: torch.Tensor, in_features: int, out_features: int,
                         bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference of ``sparsekit::triton_bsr_linear`` (same arguments): ``x [..., in] -> [..., out]`` in
    float32, through the dense weight the layout represents. ``row_order`` does not change the result."""
    y = x.to(torch.float32) @ _bsr_to_dense(row_ptr, col_idx, blocks_t, in_features, out_features).T
    return y if bias is None else y + bias.to(torch.float32)


# =============================================================================================
# Kernel
# =============================================================================================
if tl is not None:

    def _bsr_linear_kernel(
        x_ptr,          # [M, in] activations, row stride stride_xm, unit column stride
        blocks_ptr,     # [nblocks, BC, BR] transposed blocks, contiguous
        col_ptr,        # [nblocks] int32 block column of each stored block
        row_ptr_ptr,    # [nbr + 1] int32 block-row pointers
        order_ptr,      # [nbr] int32 block rows, longest first
        bias_ptr,       # [out] bias (weight dtype or float32); unused without HAS_BIAS
        y_ptr,          # [M, out] output, row stride stride_ym
        M, N_OUT, K_IN,
        stride_xm, stride_ym,
        M_BUCKET,       # next power of two of M: the autotuning key (unused in the body)
        HAS_BIAS: tl.constexpr,
        BR: tl.constexpr, BC: tl.constexpr,
        BLOCK_M: tl.constexpr,
        UPCAST: tl.constexpr,           # the interpreter's tl.dot mishandles bf16: widen the operands there
        INPUT_PRECISION: tl.constexpr,  # "tf32" or "ieee" for float32 operands
    ):
        pid_m = tl.program_id(0)
        brow = tl.load(order_ptr + tl.program_id(1))
        start = tl.load(row_ptr_ptr + brow)
        end = tl.load(row_ptr_ptr + brow + 1)
        offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        offs_a = tl.arange(0, BR)
        offs_b = tl.arange(0, BC)
        m_mask = offs_m < M
        acc = tl.zeros((BLOCK_M, BR), dtype=tl.float32)
        for k in range(start, end):
            cols = tl.load(col_ptr + k) * BC + offs_b
            xs = tl.load(x_ptr + offs_m[:, None] * stride_xm + cols[None, :],
                         mask=m_mask[:, None] & (cols[None, :] < K_IN), other=0.0)
            w = tl.load(blocks_ptr + k * (BR * BC) + offs_b[:, None] * BR + offs_a[None, :])
            if UPCAST:
                acc += tl.dot(xs.to(tl.float32), w.to(tl.float32), input_precision="ieee")
            elif xs.dtype == tl.float32:
                acc = tl.dot(xs, w, acc, input_precision=INPUT_PRECISION)
            else:
                acc = tl.dot(xs, w, acc)
        rows = brow * BR + offs_a
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rows, mask=rows < N_OUT, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + offs_m[:, None] * stride_ym + rows[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=m_mask[:, None] & (rows[None, :] < N_OUT))

    def _prune_bsr_configs(configs, named_args, **kwargs):
        """Drop token tiles much larger than the token count (they only add masked work)."""
        m_cap = max(16, int(named_args["M_BUCKET"]))
        kept = [c for c in configs if c.kwargs["BLOCK_M"] <= m_cap]
        return kept or configs[:1]

    # (BLOCK_M, num_warps, num_stages): small tiles for few tokens, 128-wide tiles for many (H100 shapes).
    _BSR_CONFIGS = [(16, 4, 3), (32, 4, 3), (64, 4, 3), (64, 4, 4), (128, 4, 3), (128, 8, 3), (128, 8, 4),
                    (256, 8, 3)]

    _bsr_kernel = lazy_kernel(_bsr_linear_kernel, lambda jitted: triton.autotune(
        configs=[triton.Config({"BLOCK_M": bm}, num_warps=w, num_stages=s) for bm, w, s in _BSR_CONFIGS],
        key=["M_BUCKET", "N_OUT", "K_IN", "BR", "BC", "HAS_BIAS"],
        prune_configs_by={"early_config_prune": _prune_bsr_configs},
    )(jitted))

#: The fixed token tile under the interpreter (no autotuning there).
INTERPRET_BLOCK_M = 16


def _check_bsr_args(op: str, x: Any, row_ptr: Any, col_idx: Any, blocks_t: Any, row_order: Any, in_features: int,
                    out_features: int, bias: Any) -> None:
    """Dtype / shape checks shared by the real and the fake implementation (no data access)."""
    if not isinstance(blocks_t, torch.Tensor) or blocks_t.dim() != 3 or blocks_t.dtype not in DTYPES:
        raise TypeError(f"{op}: blocks_t must be a 3-D tensor [nblocks, bc, br] of {DTYPES} (use pack_triton_bsr)")
    nb, bc, br = blocks_t.shape
    if br not in BLOCK_SIZES or bc not in BLOCK_SIZES:
        raise ValueError(f"{op}: block ({br}, {bc}) is not two of {BLOCK_SIZES}")
    if in_features < 0 or out_features < 0:
        raise ValueError(f"{op}: negative in_features / out_features")
    nbr = -(-out_features // br)
    check_activation(op, x, bias, in_features, out_features, blocks_t.dtype)
    check_1d(op, "row_ptr", row_ptr, (torch.int32,), nbr + 1)
    check_1d(op, "col_idx", col_idx, (torch.int32,), nb)
    check_1d(op, "row_order", row_order, (torch.int32,), nbr)


@torch.library.custom_op("sparsekit::triton_bsr_linear", mutates_args=())
def _triton_bsr_linear_op(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, blocks_t: torch.Tensor,
                          row_order: torch.Tensor, in_features: int, out_features: int,
                          bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    op = "sparsekit::triton_bsr_linear"
    _check_bsr_args(op, x, row_ptr, col_idx, blocks_t, row_order, in_features, out_features, bias)
    interpret = launch_mode(op, {"x": x, "row_ptr": row_ptr, "col_idx": col_idx, "blocks_t": blocks_t,
                                 "row_order": row_order, "bias": bias})
    x2 = x.reshape(-1, in_features)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    y = torch.empty(m, out_features, dtype=x.dtype, device=x.device)
    _, bc, br = blocks_t.shape
    nbr = row_order.numel()
    if m and nbr:
        precision = "tf32" if (x.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32) else "ieee"
        args = (x2, blocks_t, col_idx, row_ptr, row_order, bias if bias is not None else x2, y, m, out_features,
                in_features, x2.stride(0), y.stride(0), triton.next_power_of_2(m))
        meta = dict(HAS_BIAS=bias is not None, BR=br, BC=bc, UPCAST=interpret and x.dtype == torch.bfloat16,
                    INPUT_PRECISION=precision)
        kernel = _bsr_kernel(interpret)
        if interpret:
            kernel[(triton.cdiv(m, INTERPRET_BLOCK_M), nbr)](*args, BLOCK_M=INTERPRET_BLOCK_M, **meta)
        else:
            with torch.cuda.device(x.device):
                kernel[lambda META: (triton.cdiv(m, META["BLOCK_M"]), nbr)](*args, **meta)
    return y.reshape(*x.shape[:-1], out_features)


@_triton_bsr_linear_op.register_fake
def _triton_bsr_linear_fake(x, row_ptr, col_idx, blocks_t, row_order, in_features, out_features, bias=None):
    _check_bsr_args("sparsekit::triton_bsr_linear", x, row_ptr, col_idx, blocks_t, row_order, in_features,
                    out_features, bias)
    return x.new_empty((*x.shape[:-1], out_features))


def triton_bsr_linear(x: torch.Tensor, packed: TritonBSRWeight, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y = x @ W.T + bias`` for a packed BSR weight ``W [out, in]`` (op ``sparsekit::triton_bsr_linear``).

    Args:
        x: ``[..., in]``, the packed weight's dtype (bf16 / fp16 / fp32) and device (CUDA, or CPU under
            ``TRITON_INTERPRET=1``); any leading dimensions (tokens).
        packed: from :func:`pack_triton_bsr`.
        bias: ``[out]`` of x's dtype or float32, or None; added in float32.
    Returns:
        ``[..., out]`` of x's dtype (float32 accumulation).
    """
    if not isinstance(packed, TritonBSRWeight):
        raise TypeError(f"packed must be a TritonBSRWeight (use pack_triton_bsr), got {type(packed).__name__}")
    out, inp = packed.shape
    return torch.ops.sparsekit.triton_bsr_linear(x, packed.row_ptr, packed.col_idx, packed.blocks_t,
                                                 packed.row_order, inp, out, bias)
