"""The fused CPU encoder ops: a stack of encoder layers over packed tokens, and its attention.

Ops (declared here, once, with ``torch.library.custom_op`` and a fake implementation; the CPU implementation is
the C++ extension ``sparsekit._C_cpu``, ``csrc/spmm_cpu/encoder_cpu.h`` and ``encoder_binding.cpp``)::

    sparsekit::encoder_layers(Tensor x, Tensor cu_seqlens, Tensor[] tensors, int[] meta, float[] scalars,
                              Tensor[] rope, Tensor rel_index) -> Tensor
    sparsekit::packed_attention(Tensor qkv, Tensor cu_seqlens, int heads, int dq, int dv, float scale,
                                int window) -> Tensor

Packed tokens: ``x [N, hidden]`` float32 holds the real tokens of a batch, sequence ``s`` at rows
``cu_seqlens[s] .. cu_seqlens[s + 1] - 1`` (``cu_seqlens`` int64 ``[nseq + 1]``, from 0 to N, non-decreasing);
no padding enters a Linear and attention runs within each sequence.

One layer (``encoder_layers`` runs them in order, in one call; :mod:`sparsekit.runtime.encoder` builds the
arguments, layout in ``encoder_binding.cpp``), post-LayerNorm (BERT)::

    qkv = x @ Wqkv.T + bqkv                    # [N, H (2 dq + dv)]: Q | K | V, head-major inside each
    ctx = softmax(scale * Q K^T) V per sequence and head      # [N, H dv]
    h   = LayerNorm1(ctx @ Wo.T + bo + x)      # residual in the Linear's epilogue
    y   = LayerNorm2(act(h @ Wi.T + bi) @ Wf.T + bf + h)      # activation in FFN-in's epilogue

with, for DeBERTa, relative-position terms in every score: ``scale * (q_i . k_j + q_i . posK[r] + k_j . posQ[r])``,
``r = rel_index[i - j + c]`` (posK / posQ: the layer's position keys / queries, precomputed; either may be absent);
or pre-LayerNorm (ModernBERT)::

    qkv = LayerNorm1(x) @ Wqkv.T + bqkv        # LayerNorm1 may be absent (norm = PRE_NORM_NO_FIRST)
    Q, K = rotary(Q, K; cos, sin)              # when the layer names a rotary table (rope: [N, dq] cos, sin)
    ctx = attention, keys |i - j| <= window only when window >= 0
    h   = ctx @ Wo.T + bo + x
    y   = FFN(LayerNorm2(h)) + h

with FFN(a) = act(a Wi.T + bi) Wf.T + bf, or for a GLU (Wi's rows: FFN-in, then gate)
``(act(u[:, :f]) * u[:, f:]) Wf.T + bf`` with ``u = a Wi.T + bi``.

Each matrix is dense (BLAS through ATen), a packed sparse weight (:mod:`sparsekit.kernels.cpu_layout`) or an int8
weight in 1x4 blocks (:mod:`sparsekit.kernels.cpu_int8_layout`: activations quantised per token, int32 sums, the
epilogue applied after dequantising; ISA path from :func:`sparsekit.kernels.cpu_int8.int8_isa`). The
pure-torch references are :func:`sparsekit.kernels.reference.encoder_layers` / ``packed_attention``; they are
also the fallback when the extension is not built. Inference only (no autograd formula).
"""
from __future__ import annotations

from typing import Any

import torch

from sparsekit.formats.validate import KernelInputError
from sparsekit.kernels import reference
from sparsekit.kernels.cpu import _EXT, _plain_eager, _resolve_isa, _warn_unavailable

__all__ = ["ACTIVATIONS", "C2P", "DENSE", "INT8", "LAYER_HEAD_META", "LAYER_META", "LAYER_SCALARS", "LAYER_TENSORS",
           "LINEAR_STAGES", "MATRIX_TENSORS", "P2C", "POST_NORM", "PRE_NORM", "PRE_NORM_NO_FIRST", "SPARSE",
           "encoder_layers", "encoder_layers_timed", "packed_attention"]

#: The activations the fused FFN-in epilogue computes, by ``config.hidden_act`` name -> the op's code.
ACTIVATIONS = {"gelu": 1, "gelu_new": 2, "gelu_pytorch_tanh": 2, "gelu_fast": 2, "relu": 3}
#: Per layer: tensors, ints and floats of ``encoder_layers`` (encoder_binding.cpp); tensors per matrix; the ints
#: before the matrices' (heads, dq, dv, act, norm, glu, window, rotary, relative, rel_cols).
LAYER_TENSORS, LAYER_META, LAYER_SCALARS, MATRIX_TENSORS, LAYER_HEAD_META = 30, 30, 3, 6, 10
#: The stages of :func:`encoder_layers_timed` that are Linears (each with its fused epilogue: bias, activation,
#: residual; "ffn" is FFN-in, activation or GLU, FFN-out and the residual). The others: "checks" (the per-call
#: validation of the layer's sizes and packed indices), "layernorm", "attention" (with rotary positions).
LINEAR_STAGES = ("qkv", "attn_out", "ffn")
#: Bits of the meta ``relative``: DeBERTa's content -> position and position -> content terms.
C2P, P2C = 1, 2
#: The op's layer kinds (meta ``norm``): post-LayerNorm, pre-LayerNorm, pre-LayerNorm without LayerNorm 1.
POST_NORM, PRE_NORM, PRE_NORM_NO_FIRST = 0, 1, 2
#: The op's matrix kinds: dense fp32 (BLAS), packed sparse fp32 (spmm_cpu.h), int8 1x4 blocks (spmm_cpu_int8.h).
DENSE, SPARSE, INT8 = 0, 1, 2


def _check_packed_tokens(op: str, x: Any, cu_seqlens: Any, width: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() != 2:
        raise TypeError(f"{op}: x must be a 2-D float32 tensor [N, features], got "
                        f"{getattr(x, 'dtype', type(x).__name__)} {list(getattr(x, 'shape', []))}")
    if width is not None and x.shape[1] != width:
        raise KernelInputError(f"{op}: x must have {width} features, got {x.shape[1]}")
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dtype != torch.int64 or cu_seqlens.dim() != 1 \
            or cu_seqlens.numel() < 1:
        raise TypeError(f"{op}: cu_seqlens must be a non-empty 1-D int64 tensor (0, len0, len0 + len1, ...)")
    for name, t in (("x", x), ("cu_seqlens", cu_seqlens)):
        if t.device.type != "cpu":
            raise KernelInputError(f"{op}: {name} is on {t.device}; the fused encoder runs on the CPU only")


@torch.library.custom_op("sparsekit::packed_attention", mutates_args=())
def _packed_attention_op(qkv: torch.Tensor, cu_seqlens: torch.Tensor, heads: int, dq: int, dv: int,
                         scale: float, window: int) -> torch.Tensor:
    """``sparsekit::packed_attention``: ``qkv [N, H (2 dq + dv)]`` -> ``ctx [N, H dv]`` (module docstring)."""
    _check_packed_tokens("sparsekit::packed_attention", qkv, cu_seqlens, heads * (2 * dq + dv))
    ext = _EXT.load()
    if ext is None:
        _warn_unavailable()
        return reference.packed_attention(qkv, cu_seqlens, heads, dq, dv, scale, window)
    return ext.packed_attention(qkv, cu_seqlens, heads, dq, dv, scale, window, _resolve_isa())


@_packed_attention_op.register_fake
def _packed_attention_fake(qkv, cu_seqlens, heads, dq, dv, scale, window):
    _check_packed_tokens("sparsekit::packed_attention", qkv, cu_seqlens, heads * (2 * dq + dv))
    return qkv.new_empty((qkv.shape[0], heads * dv))


def _check_layer_args(x: Any, cu_seqlens: Any, tensors: list, meta: list, scalars: list, rope: list,
                      rel_index: Any) -> None:
    op = "sparsekit::encoder_layers"
    _check_packed_tokens(op, x, cu_seqlens)
    n = len(meta) // LAYER_META
    if len(meta) != n * LAYER_META or len(tensors) != n * LAYER_TENSORS or len(scalars) != n * LAYER_SCALARS:
        raise KernelInputError(f"{op}: {LAYER_TENSORS} tensors, {LAYER_META} ints and {LAYER_SCALARS} floats per "
                               f"layer are needed; got {len(tensors)}, {len(meta)}, {len(scalars)} (build the "
                               f"arguments with sparsekit.runtime.FusedEncoder)")
    if len(rope) % 2:
        raise KernelInputError(f"{op}: rope holds (cos, sin) pairs; got {len(rope)} tensors")
    if not isinstance(rel_index, torch.Tensor) or rel_index.dtype != torch.int32 or rel_index.dim() != 1:
        raise TypeError(f"{op}: rel_index must be a 1-D int32 tensor (empty when no layer has relative terms)")


@torch.library.custom_op("sparsekit::encoder_layers", mutates_args=())
def _encoder_layers_op(x: torch.Tensor, cu_seqlens: torch.Tensor, tensors: list[torch.Tensor], meta: list[int],
                       scalars: list[float], rope: list[torch.Tensor], rel_index: torch.Tensor) -> torch.Tensor:
    """``sparsekit::encoder_layers``: packed tokens ``x [N, hidden]`` -> ``[N, hidden]`` through every layer."""
    return _run(x, cu_seqlens, tensors, meta, scalars, rope, rel_index)


@_encoder_layers_op.register_fake
def _encoder_layers_fake(x, cu_seqlens, tensors, meta, scalars, rope, rel_index):
    _check_layer_args(x, cu_seqlens, tensors, meta, scalars, rope, rel_index)
    return torch.empty_like(x)


def _run(x: torch.Tensor, cu_seqlens: torch.Tensor, tensors: list[torch.Tensor], meta: list[int],
         scalars: list[float], rope: list[torch.Tensor], rel_index: torch.Tensor) -> torch.Tensor:
    _check_layer_args(x, cu_seqlens, tensors, meta, scalars, rope, rel_index)
    ext = _EXT.load()
    if ext is None:
        _warn_unavailable()
        return reference.encoder_layers(x, cu_seqlens, tensors, meta, scalars, rope, rel_index)
    return ext.encoder_layers(x, cu_seqlens, tensors, meta, scalars, rope, rel_index, _resolve_isa(),
                              _int8_isa(meta))


def _int8_isa(meta: list[int]) -> str:
    """The int8 ISA path (only resolved when a matrix is int8: it loads the int8 extension's CPU checks)."""
    # per layer: LAYER_HEAD_META ints, then (kind, in, out, group_rows, chunk) for each of the 4 matrices
    kinds = [meta[start + LAYER_HEAD_META + 5 * k] for start in range(0, len(meta), LAYER_META) for k in range(4)]
    if INT8 not in kinds:
        return "scalar"
    from sparsekit.kernels import cpu_int8

    return cpu_int8.int8_isa() if cpu_int8.available() else "scalar"


def encoder_layers(x: torch.Tensor, cu_seqlens: torch.Tensor, tensors: list[torch.Tensor], meta: list[int],
                   scalars: list[float], rope: list[torch.Tensor] | tuple = (),
                   rel_index: torch.Tensor | None = None) -> torch.Tensor:
    """Run the fused layers (op ``sparsekit::encoder_layers``) on packed tokens.

    Args:
        x: float32 ``[N, hidden]`` packed tokens; cu_seqlens: int64 ``[nseq + 1]`` sequence boundaries.
        tensors / meta / scalars: per layer, as built by :class:`sparsekit.runtime.FusedEncoder` (layout in
            ``csrc/spmm_cpu/encoder_binding.cpp``); every tensor, size and packed index is checked on each call.
        rope: the rotary tables the layers' meta names, ``(cos, sin)`` pairs, each float32 ``[N, dq]`` (the cos /
            sin of each packed token's position); empty when no layer has rotary positions.
        rel_index: int32 ``[2 c + 1]``: for the layers with relative terms (DeBERTa), the posK / posQ column of each
            distance ``i - j`` in ``[-c, c]``, at ``i - j + c``; c must reach the longest sequence. None: none.
    Returns:
        float32 ``[N, hidden]``, the last layer's output (a new tensor).
    """
    rope = list(rope)
    rel_index = torch.empty(0, dtype=torch.int32) if rel_index is None else rel_index
    if _plain_eager(x, None):  # the dispatcher costs tens of microseconds per call with ~200 list arguments
        return _run(x, cu_seqlens, tensors, meta, scalars, rope, rel_index)
    return torch.ops.sparsekit.encoder_layers(x, cu_seqlens, tensors, meta, scalars, rope, rel_index)


def encoder_layers_timed(x: torch.Tensor, cu_seqlens: torch.Tensor, tensors: list[torch.Tensor], meta: list[int],
                         scalars: list[float], rope: list[torch.Tensor] | tuple = (),
                         rel_index: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`encoder_layers`, and where its time went: the wall time of each stage of each layer, measured inside
    the one C++ call (a steady clock read between stages, ~20 ns each), so every piece runs with the caches and
    threads as the real forward leaves them, unlike timing each piece alone. A profiling tool, not an op: it does
    not go through the dispatcher (no fake implementation, no torch.compile).

    Args: as :func:`encoder_layers`.
    Returns:
        ``(y, stages)``: y float32 ``[N, hidden]`` (bit for bit :func:`encoder_layers`'s output); stages maps each
        stage name (``checks``, ``layernorm``, ``qkv``, ``attention``, ``attn_out``, ``ffn``; the Linear ones are
        :data:`LINEAR_STAGES`) to int64 nanoseconds per layer ``[layers]``.
    Raises:
        RuntimeError: the C++ extension is not built (the pure-torch fallback has no stages to time).
    """
    rope = list(rope)
    rel_index = torch.empty(0, dtype=torch.int32) if rel_index is None else rel_index
    _check_layer_args(x, cu_seqlens, tensors, meta, scalars, rope, rel_index)
    ext = _EXT.load()
    if ext is None:
        raise RuntimeError(f"timing the fused layers' stages needs sparsekit's C++ extension: "
                           f"{_EXT.unavailable_reason()}")
    y, ns = ext.encoder_layers_timed(x, cu_seqlens, tensors, meta, scalars, rope, rel_index, _resolve_isa(),
                                     _int8_isa(meta))
    return y, {name: ns[:, k] for k, name in enumerate(ext.ENCODER_STAGES)}


def packed_attention(qkv: torch.Tensor, cu_seqlens: torch.Tensor, heads: int, dq: int, dv: int,
                     scale: float, window: int = -1) -> torch.Tensor:
    """Attention per sequence and head over packed tokens (op ``sparsekit::packed_attention``).

    Args:
        qkv: float32 ``[N, H (2 dq + dv)]``: Q of head h at columns ``h dq ..``, K at ``H dq + h dq ..``, V at
            ``2 H dq + h dv ..``; cu_seqlens: int64 ``[nseq + 1]``.
        heads, dq, dv: H, Q·K and V widths per head (dq, dv >= 1); scale: multiplies ``Q K^T``.
        window: -1: every key of the sequence; ``w >= 0``: query ``i`` attends to the keys ``|i - j| <= w`` only
            (a bidirectional sliding window).
    Returns:
        float32 ``[N, H dv]``: ``softmax(scale Q K^T) V`` within each sequence.
    """
    if not isinstance(window, int) or window < -1:
        raise KernelInputError(f"sparsekit::packed_attention: window must be -1 (every key) or >= 0, got {window!r}")
    return torch.ops.sparsekit.packed_attention(qkv, cu_seqlens, heads, dq, dv, scale, window)
