"""Triton CSR x dense kernel for Linear layers with few tokens (memory-bound): ``y = x @ W.T + bias``.

With 1-16 tokens a Linear is bound by reading its weight, so an unstructured sparse weight pays off by the
bytes it does not read (``W [out, in]`` in the GPU CSR layout of :mod:`sparsekit.kernels.gpu_csr_layout`, bf16
values + int16 column indices: 4 bytes per non-zero against 2 per dense weight). Each program owns ``BLOCK_R``
rows taken from the row swizzle (rows sorted by length, so the rows of one program have about the same length and
few lanes idle) and up to ``BLOCK_T`` tokens; it streams the rows' values and column indices in chunks of
``BLOCK_K``, gathers ``x[t, col]`` and reduces in float32. More tokens are handled by more programs (each re-reads
the weight): for many tokens use the BSR kernel or dense.

    packed = pack_gpu_csr(weight_or_csr_format, dtype=torch.bfloat16, device="cuda")
    y = triton_csr_linear(x, packed, bias)      # x [..., in] bf16 / fp16 / fp32 -> y [..., out], x's dtype

Op (declared here, once; fake implementation for ``torch.compile``; reference
:func:`sparsekit.kernels.reference.triton_csr_linear`)::

    sparsekit::triton_csr_linear(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor row_order,
                                 int in_features, int out_features, Tensor? bias=None) -> Tensor

Where it runs (CUDA, autotuned; or CPU tensors under the Triton interpreter, fixed tiles):
:mod:`sparsekit.kernels.triton_runtime`.
"""
from typing import Optional

import torch

from sparsekit.kernels.gpu_csr_layout import GpuCSRWeight, check_gpu_csr_args
from sparsekit.kernels.triton_runtime import fake_linear, launch, lazy_kernel, tl, triton

__all__ = ["triton_csr_linear"]


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
        # Triton passes the launch's keyword constexprs (BLOCK_T) in kwargs, not named_args (3.6; older: both).
        bt = int(named_args.get("BLOCK_T", kwargs.get("BLOCK_T", MAX_BLOCK_T)))
        mean = int(named_args.get("NNZ_BUCKET", kwargs.get("NNZ_BUCKET", 1)))
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
    check_gpu_csr_args(op, x, row_ptr, col_idx, values, row_order, in_features, out_features, bias)
    interpret, x2, y = launch(op, x, {"row_ptr": row_ptr, "col_idx": col_idx, "values": values,
                                      "row_order": row_order, "bias": bias}, in_features, out_features)
    m = x2.shape[0]
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


_triton_csr_linear_op.register_fake(fake_linear("sparsekit::triton_csr_linear", check_gpu_csr_args))


def triton_csr_linear(x: torch.Tensor, packed: GpuCSRWeight, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y = x @ W.T + bias`` for a packed CSR weight ``W [out, in]`` (op ``sparsekit::triton_csr_linear``).

    Args:
        x: ``[..., in]``, the packed weight's dtype (bf16 / fp16 / fp32) and device (CUDA, or CPU under
            ``TRITON_INTERPRET=1``); meant for 1-16 tokens in the leading dimensions (any count works).
        packed: from :func:`sparsekit.kernels.gpu_csr_layout.pack_gpu_csr`.
        bias: ``[out]`` of x's dtype or float32, or None; added in float32.
    Returns:
        ``[..., out]`` of x's dtype (float32 accumulation).
    """
    if not isinstance(packed, GpuCSRWeight):
        raise TypeError(f"packed must be a GpuCSRWeight (use pack_gpu_csr), got {type(packed).__name__}")
    out, inp = packed.shape
    return torch.ops.sparsekit.triton_csr_linear(x, *packed.op_tensors(), inp, out, bias)
