"""Triton CSR x dense kernel for Linear layers with few tokens (memory-bound): ``y = x @ W.T + bias``.

With 1-16 tokens a Linear is bound by reading its weight, so an unstructured sparse weight pays off by the
bytes it does not read (``W [out, in]``, bf16 values + int16 column indices: 4 bytes per non-zero against 2 per
dense weight). Each program owns ``BLOCK_R`` rows taken from the row swizzle (rows sorted by length, so the
rows of one program have about the same length and few lanes idle) and up to ``BLOCK_T`` tokens; it streams
the rows' values and column indices in chunks of ``BLOCK_K``, gathers ``x[t, col]`` and reduces in float32.
More tokens are handled by more programs (each re-reads the weight): for many tokens use the BSR kernel or
dense.

    packed = pack_gpu_csr(weight_or_csr_format, dtype=torch.bfloat16, device="cuda")
    y = triton_csr_linear(x, packed, bias)      # x [..., in] bf16 / fp16 / fp32 -> y [..., out], x's dtype

Op (declared here, once; fake implementation for ``torch.compile``)::

    sparsekit::triton_csr_linear(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor row_order,
                                 int in_features, int out_features, Tensor? bias=None) -> Tensor

GPU CSR layout (:class:`GpuCSRWeight`; the CUDA kernel of :mod:`sparsekit.kernels.cuda` reads the same one, and it
is :class:`sparsekit.export.formats.CSRFormat`'s layout with the values in the activations' dtype):

* ``row_ptr`` int32 ``[out + 1]``: row ``r`` owns entries ``[row_ptr[r], row_ptr[r + 1])``.
* ``col_idx`` int16 (``in <= 32768``) or int32 ``[nnz]``: column of each entry, in ``[0, in)``.
* ``values`` ``[nnz]`` (x's dtype): ``W[r, col_idx[k]] = values[k]``.
* ``row_order`` int32 ``[out]``: the rows, longest first (ties: ascending row index).

Index ranges are validated once, when a :class:`GpuCSRWeight` is built, and trusted by the op. Kernels run on
CUDA tensors (autotuned) or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``, fixed tiles).
"""
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from sparsekit.kernels.triton_bsr import (
    DTYPES,
    check_1d,
    check_activation,
    check_compressed_rows,
    launch_mode,
    lazy_kernel,
    length_order,
    tl,
    triton,
)

__all__ = ["GpuCSRWeight", "pack_gpu_csr", "reference_csr_linear", "triton_csr_linear"]

_INT32_MAX = 2**31 - 1
#: Column indices are int16 up to this many input features (as in CSRFormat), int32 beyond.
INT16_MAX_COLS = 32768


def _index_dtype(in_features: int) -> torch.dtype:
    return torch.int16 if in_features <= INT16_MAX_COLS else torch.int32


# =============================================================================================
# Packed weight
# =============================================================================================
@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class GpuCSRWeight:
    """A weight ``[out, in]`` in the GPU CSR layout (module docstring). Construction validates dtypes, shapes,
    pointers, column ranges, the row order and finiteness (``TypeError`` / ``ValueError``); the ops trust it.
    The values and indices are fresh contiguous allocations, so they are 16-byte aligned (vector loads).

    Fields: ``shape = (out, in)``, ``row_ptr``, ``col_idx``, ``values``, ``row_order``.
    """

    kind: ClassVar[str] = "gpu-csr"
    shape: tuple[int, int]
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    row_order: torch.Tensor

    def __post_init__(self) -> None:
        out, inp = self.shape
        op = "GpuCSRWeight"
        if out < 0 or inp < 0:
            raise ValueError(f"{op}: shape must be non-negative, got {tuple(self.shape)}")
        check_1d(op, "values", self.values, DTYPES)
        nnz = self.values.numel()
        if nnz > _INT32_MAX:
            raise ValueError(f"{op}: too many non-zeros for int32 row pointers: {nnz}")
        check_compressed_rows(op, self.row_ptr, self.col_idx, (_index_dtype(inp),), self.row_order, out, inp,
                              ("values", self.values), "nnz")

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        out, inp = self.shape
        return self.nnz / (out * inp) if out * inp else 0.0

    @property
    def nbytes(self) -> int:
        """Bytes the kernels read for the weight: values, indices, row pointers and the row order."""
        return sum(t.numel() * t.element_size() for t in (self.row_ptr, self.col_idx, self.values, self.row_order))

    def to_dense(self) -> torch.Tensor:
        """The represented weight, float32 ``[out, in]``, on the weight's device."""
        return _csr_to_dense(self.row_ptr, self.col_idx, self.values, self.shape[1], self.shape[0])

    def __repr__(self) -> str:
        return (f"GpuCSRWeight(shape={tuple(self.shape)}, nnz={self.nnz}, density={self.density:.3f}, "
                f"dtype={self.dtype}, index_dtype={self.col_idx.dtype}, device={self.device})")


def pack_gpu_csr(weight: Any, *, dtype: Optional[torch.dtype] = None, device: Any = None) -> GpuCSRWeight:
    """Pack a weight once for :func:`triton_csr_linear` and :func:`sparsekit.kernels.cuda.cuda_csr_linear`.

    Args:
        weight: a dense ``[out, in]`` floating-point tensor (any device; its non-zeros after conversion to
            ``dtype`` are stored), or a :class:`sparsekit.export.formats.CSRFormat` (its entries are kept; the
            row order is recomputed if it has none).
        dtype: bfloat16, float16 or float32 (the activations' dtype). Default: a dense weight's own dtype if it
            is one of these (else float32); a CSRFormat's value dtype.
        device: where the packed tensors live (default: the weight's device).
    Returns:
        a validated :class:`GpuCSRWeight`. Raises ``TypeError`` / ``ValueError`` for bad input.
    """
    from sparsekit.export.formats import CSRFormat

    if isinstance(weight, CSRFormat):
        dtype = dtype or weight.value_dtype
        (out, inp) = weight.shape
        row_ptr, col_idx, values = weight.row_ptr, weight.col_idx.to(_index_dtype(inp)), weight.values
        row_order = weight.row_order if weight.row_order is not None else length_order(weight.row_lengths())
    elif isinstance(weight, torch.Tensor):
        if weight.dim() != 2 or not weight.is_floating_point():
            raise ValueError(f"weight must be a 2-D floating-point tensor [out, in], got {weight.dtype} "
                             f"{list(weight.shape)}")
        dtype = dtype or (weight.dtype if weight.dtype in DTYPES else torch.float32)
        if dtype not in DTYPES:
            raise TypeError(f"dtype must be one of {', '.join(str(d) for d in DTYPES)}, got {dtype}")
        w = weight.detach().to(dtype)
        out, inp = w.shape
        nz = w != 0
        rows, cols = torch.nonzero(nz, as_tuple=True)  # row-major: by row, then column
        counts = nz.sum(dim=1, dtype=torch.int64)
        row_ptr = torch.zeros(out + 1, dtype=torch.int64, device=w.device)
        torch.cumsum(counts, dim=0, out=row_ptr[1:])
        row_ptr, col_idx, values = row_ptr.to(torch.int32), cols.to(_index_dtype(inp)), w[rows, cols]
        row_order = length_order(counts)
    else:
        raise TypeError(f"pack_gpu_csr expects a dense weight tensor or a CSRFormat, got {type(weight).__name__}")
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(str(d) for d in DTYPES)}, got {dtype}")
    device = torch.device(device) if device is not None else values.device

    def fresh(t: torch.Tensor, dt: Optional[torch.dtype] = None) -> torch.Tensor:
        return t.to(device=device, dtype=dt or t.dtype).contiguous().clone()

    return GpuCSRWeight(shape=(int(out), int(inp)), row_ptr=fresh(row_ptr), col_idx=fresh(col_idx),
                        values=fresh(values, dtype), row_order=fresh(row_order))


# =============================================================================================
# Reference (pure torch, the GPU CSR layout)
# =============================================================================================
def _csr_to_dense(row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor, in_features: int,
                  out_features: int) -> torch.Tensor:
    w = torch.zeros(out_features, in_features, dtype=torch.float32, device=values.device)
    if values.numel():
        p = row_ptr.to(torch.int64)
        rows = torch.repeat_interleave(torch.arange(out_features, device=values.device), p[1:] - p[:-1])
        w[rows, col_idx.to(torch.int64)] = values.to(torch.float32)
    return w


def reference_csr_linear(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                         row_order: torch.Tensor, in_features: int, out_features: int,
                         bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference of ``sparsekit::triton_csr_linear`` and ``sparsekit::cuda_csr_linear`` (same arguments):
    ``x [..., in] -> [..., out]`` in float32 through the dense weight. ``row_order`` does not change the result."""
    y = x.to(torch.float32) @ _csr_to_dense(row_ptr, col_idx, values, in_features, out_features).T
    return y if bias is None else y + bias.to(torch.float32)


def check_csr_args(op: str, x: Any, row_ptr: Any, col_idx: Any, values: Any, row_order: Any, in_features: int,
                   out_features: int, bias: Any) -> None:
    """Dtype / shape checks of the CSR ops' arguments, real and fake implementations (no data access)."""
    if in_features < 0 or out_features < 0:
        raise ValueError(f"{op}: negative in_features / out_features")
    check_1d(op, "values", values, DTYPES)
    check_activation(op, x, bias, in_features, out_features, values.dtype)
    check_1d(op, "row_ptr", row_ptr, (torch.int32,), out_features + 1)
    check_1d(op, "col_idx", col_idx, (_index_dtype(in_features),), values.numel())
    check_1d(op, "row_order", row_order, (torch.int32,), out_features)


# =============================================================================================
# Kernel
# =============================================================================================
if tl is not None:

    def _csr_linear_kernel(
        x_ptr,          # [M, in] activations, row stride stride_xm, unit column stride
        val_ptr,        # [nnz] values
        col_ptr,        # [nnz] int16 / int32 column indices
        row_ptr_ptr,    # [out + 1] int32 row pointers
        order_ptr,      # [out] int32 rows, longest first
        bias_ptr,       # [out] bias (values' dtype or float32); unused without HAS_BIAS
        y_ptr,          # [M, out] output, row stride stride_ym
        M, N_OUT,
        stride_xm, stride_ym,
        NNZ_BUCKET,     # autotuning key only: next power of two of the mean row length
        HAS_BIAS: tl.constexpr,
        BLOCK_R: tl.constexpr,   # rows per program
        BLOCK_K: tl.constexpr,   # entries per row and step
        BLOCK_T: tl.constexpr,   # tokens per program
    ):
        slots = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        slot_mask = slots < N_OUT
        rows = tl.load(order_ptr + slots, mask=slot_mask, other=0)
        starts = tl.load(row_ptr_ptr + rows, mask=slot_mask, other=0)
        lens = tl.load(row_ptr_ptr + rows + 1, mask=slot_mask, other=0) - starts
        toks = (tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        t_mask = toks < M
        acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.float32)
        offs_k = tl.arange(0, BLOCK_K)
        for k0 in range(0, tl.max(lens, axis=0), BLOCK_K):
            pos = k0 + offs_k
            e_mask = pos[None, :] < lens[:, None]                       # [BLOCK_R, BLOCK_K]
            entry = starts[:, None] + pos[None, :]
            v = tl.load(val_ptr + entry, mask=e_mask, other=0.0).to(tl.float32)
            c = tl.load(col_ptr + entry, mask=e_mask, other=0).to(tl.int64)
            xg = tl.load(x_ptr + toks[:, None, None] * stride_xm + c[None, :, :],
                         mask=t_mask[:, None, None] & e_mask[None, :, :], other=0.0).to(tl.float32)
            acc += tl.sum(xg * v[None, :, :], axis=2)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rows, mask=slot_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + toks[:, None] * stride_ym + rows[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=t_mask[:, None] & slot_mask[None, :])

    def _prune_csr_configs(configs, named_args, **kwargs):
        """Keep the per-step tile (tokens x rows x entries) within what registers hold, and BLOCK_K at most
        twice the mean row length (longer chunks are mostly masked)."""
        bt, mean = int(named_args["BLOCK_T"]), int(named_args["NNZ_BUCKET"])
        kept = [c for c in configs
                if bt * c.kwargs["BLOCK_R"] * c.kwargs["BLOCK_K"] <= 8192 and c.kwargs["BLOCK_K"] <= max(32, 2 * mean)]
        return kept or configs[:1]

    # (BLOCK_R, BLOCK_K, num_warps)
    _CSR_CONFIGS = [(4, 128, 4), (8, 64, 4), (16, 32, 4), (16, 64, 4), (32, 32, 4), (32, 32, 8), (64, 16, 4),
                    (8, 128, 8)]

    _csr_kernel = lazy_kernel(_csr_linear_kernel, lambda jitted: triton.autotune(
        configs=[triton.Config({"BLOCK_R": r, "BLOCK_K": k}, num_warps=w, num_stages=2) for r, k, w in _CSR_CONFIGS],
        key=["N_OUT", "NNZ_BUCKET", "BLOCK_T", "HAS_BIAS"],
        prune_configs_by={"early_config_prune": _prune_csr_configs},
    )(jitted))

#: Most tokens one program handles (more tokens: more programs along the grid's second axis).
MAX_BLOCK_T = 16
#: Fixed tiles under the interpreter.
INTERPRET_BLOCK_R, INTERPRET_BLOCK_K = 8, 16


@torch.library.custom_op("sparsekit::triton_csr_linear", mutates_args=())
def _triton_csr_linear_op(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                          row_order: torch.Tensor, in_features: int, out_features: int,
                          bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    op = "sparsekit::triton_csr_linear"
    check_csr_args(op, x, row_ptr, col_idx, values, row_order, in_features, out_features, bias)
    interpret = launch_mode(op, {"x": x, "row_ptr": row_ptr, "col_idx": col_idx, "values": values,
                                 "row_order": row_order, "bias": bias})
    x2 = x.reshape(-1, in_features)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    y = torch.empty(m, out_features, dtype=x.dtype, device=x.device)
    if m and out_features:
        block_t = min(MAX_BLOCK_T, triton.next_power_of_2(m))
        mean_len = values.numel() // max(out_features, 1)
        args = (x2, values, col_idx, row_ptr, row_order, bias if bias is not None else x2, y, m, out_features,
                x2.stride(0), y.stride(0), triton.next_power_of_2(max(mean_len, 1)))
        kernel = _csr_kernel(interpret)
        if interpret:
            grid = (triton.cdiv(out_features, INTERPRET_BLOCK_R), triton.cdiv(m, block_t))
            kernel[grid](*args, HAS_BIAS=bias is not None, BLOCK_R=INTERPRET_BLOCK_R, BLOCK_K=INTERPRET_BLOCK_K,
                         BLOCK_T=block_t)
        else:
            with torch.cuda.device(x.device):
                kernel[lambda META: (triton.cdiv(out_features, META["BLOCK_R"]), triton.cdiv(m, block_t))](
                    *args, HAS_BIAS=bias is not None, BLOCK_T=block_t)
    return y.reshape(*x.shape[:-1], out_features)


@_triton_csr_linear_op.register_fake
def _triton_csr_linear_fake(x, row_ptr, col_idx, values, row_order, in_features, out_features, bias=None):
    check_csr_args("sparsekit::triton_csr_linear", x, row_ptr, col_idx, values, row_order, in_features,
                   out_features, bias)
    return x.new_empty((*x.shape[:-1], out_features))


def triton_csr_linear(x: torch.Tensor, packed: GpuCSRWeight, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y = x @ W.T + bias`` for a packed CSR weight ``W [out, in]`` (op ``sparsekit::triton_csr_linear``).

    Args:
        x: ``[..., in]``, the packed weight's dtype (bf16 / fp16 / fp32) and device (CUDA, or CPU under
            ``TRITON_INTERPRET=1``); meant for 1-16 tokens in the leading dimensions (any count works).
        packed: from :func:`pack_gpu_csr`.
        bias: ``[out]`` of x's dtype or float32, or None; added in float32.
    Returns:
        ``[..., out]`` of x's dtype (float32 accumulation).
    """
    if not isinstance(packed, GpuCSRWeight):
        raise TypeError(f"packed must be a GpuCSRWeight (use pack_gpu_csr), got {type(packed).__name__}")
    out, inp = packed.shape
    return torch.ops.sparsekit.triton_csr_linear(x, packed.row_ptr, packed.col_idx, packed.values,
                                                 packed.row_order, inp, out, bias)
