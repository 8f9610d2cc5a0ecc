"""Triton block-sparse (BSR) x dense kernel for Linear layers, on tensor cores: ``y = x @ W.T + bias``.

The weight is in the GPU BSR layout (:mod:`sparsekit.kernels.gpu_bsr_layout`): ``br x bc`` blocks, each stored
transposed. Each program computes a ``BLOCK_M x br`` tile of ``y`` (``BLOCK_M`` tokens, one block row of ``W``):
it walks the stored blocks of its block row, loads the matching ``BLOCK_M x bc`` slice of ``x`` and accumulates
``x_slice @ block.T`` with ``tl.dot`` in float32 (bf16 / fp16 operands run on tensor cores; float32 operands
use TF32 when ``torch.backends.cuda.matmul.allow_tf32`` is set, IEEE float32 otherwise, as cuBLAS does).
Programs take block rows longest first (``row_order``), so the longest rows start first and the tail is short.

    packed = pack_gpu_bsr(weight_or_bsr_format, block=(32, 32), dtype=torch.bfloat16, device="cuda")
    y = triton_bsr_linear(x, packed, bias)      # x [..., in] bf16 / fp16 / fp32 -> y [..., out], x's dtype

Op (declared here, once; fake implementation for ``torch.compile``; reference
:func:`sparsekit.kernels.reference.triton_bsr_linear`)::

    sparsekit::triton_bsr_linear(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor blocks_t, Tensor row_order,
                                 int in_features, int out_features, Tensor? bias=None) -> Tensor

Where it runs (CUDA, autotuned; or CPU tensors under the Triton interpreter): :mod:`sparsekit.kernels.triton_runtime`.
"""
from typing import Optional

import torch

from sparsekit.kernels.gpu_bsr_layout import GpuBSRWeight, check_gpu_bsr_args
from sparsekit.kernels.triton_runtime import fake_linear, launch, lazy_kernel, tl, triton

__all__ = ["triton_bsr_linear"]


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
        m_cap = max(16, int(named_args.get("M_BUCKET", kwargs.get("M_BUCKET", 16))))
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


@torch.library.custom_op("sparsekit::triton_bsr_linear", mutates_args=())
def _triton_bsr_linear_op(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, blocks_t: torch.Tensor,
                          row_order: torch.Tensor, in_features: int, out_features: int,
                          bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    op = "sparsekit::triton_bsr_linear"
    check_gpu_bsr_args(op, x, row_ptr, col_idx, blocks_t, row_order, in_features, out_features, bias)
    interpret, x2, y = launch(op, x, {"row_ptr": row_ptr, "col_idx": col_idx, "blocks_t": blocks_t,
                                      "row_order": row_order, "bias": bias}, in_features, out_features)
    m = x2.shape[0]
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


_triton_bsr_linear_op.register_fake(fake_linear("sparsekit::triton_bsr_linear", check_gpu_bsr_args))


def triton_bsr_linear(x: torch.Tensor, packed: GpuBSRWeight, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y = x @ W.T + bias`` for a packed BSR weight ``W [out, in]`` (op ``sparsekit::triton_bsr_linear``).

    Args:
        x: ``[..., in]``, the packed weight's dtype (bf16 / fp16 / fp32) and device (CUDA, or CPU under
            ``TRITON_INTERPRET=1``); any leading dimensions (tokens).
        packed: from :func:`sparsekit.kernels.gpu_bsr_layout.pack_gpu_bsr`.
        bias: ``[out]`` of x's dtype or float32, or None; added in float32.
    Returns:
        ``[..., out]`` of x's dtype (float32 accumulation).
    """
    if not isinstance(packed, GpuBSRWeight):
        raise TypeError(f"packed must be a GpuBSRWeight (use pack_gpu_bsr), got {type(packed).__name__}")
    out, inp = packed.shape
    return torch.ops.sparsekit.triton_bsr_linear(x, *packed.op_tensors(), inp, out, bias)
