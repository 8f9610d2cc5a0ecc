"""Pure-torch references of the sparse Linear ops (the semantics every kernel is tested against).

Each ``*_linear`` function takes exactly the arguments of the op ``sparsekit::<name>`` of the same name: the
packed weight tensors, ``x [..., in]`` and an optional ``bias [out]``. They rebuild the dense weight
(``*_to_dense``) and compute ``x @ W.T + bias`` in float32; no data-dependent Python loops.

* ``csr_linear`` / ``bsr_linear``: the CPU ops (:mod:`sparsekit.kernels.cpu`), layout of
  :mod:`sparsekit.kernels.cpu_layout` (below); also the CPU ops' fallback when the C++ extension is not built.
* ``triton_csr_linear`` / ``cuda_csr_linear``: the GPU CSR layout of :mod:`sparsekit.kernels.gpu_csr_layout`.
* ``triton_bsr_linear``: the GPU BSR layout of :mod:`sparsekit.kernels.gpu_bsr_layout`.
* ``packed_attention`` / ``encoder_layers``: the fused encoder ops (:mod:`sparsekit.kernels.encoder`), packed
  tokens with sequence boundaries ``cu_seqlens``; attention through a block-diagonal mask.
* ``int8_b4_linear``: the CPU INT8 op (:mod:`sparsekit.kernels.cpu_int8`), 1x4-block layout of
  :mod:`sparsekit.kernels.cpu_int8_layout` (``csrc/spmm_cpu_int8/spmm_cpu_int8.h``); with
  ``int8_b4_accumulators`` (the exact int32 accumulators every ISA path must reproduce bit for bit) and
  ``quantize_tokens`` (the per-token activation quantisation). Also the op's fallback without the extension.

The row order of the GPU layouts decides only which program computes a row, never the result.

CPU packed layout (shared by ``csr_linear`` with ``group_rows = 1`` and ``bsr_linear``), see also
``csrc/spmm_cpu/spmm_cpu.h``:

* ``R = group_rows`` (1, 2 or 4): ``ngroups = ceil(out / R)``; group ``g`` owns rows ``g*R .. g*R+R-1``
  (rows ``>= out`` are zero padding).
* ``Kc = chunk`` (1..256): ``nchunks = ceil(in / Kc)``; chunk ``j`` owns columns ``j*Kc .. j*Kc+Kc-1``.
* ``ptr`` int32 ``[nchunks * ngroups + 1]``: entries are stored chunk-major; (chunk ``j``, group ``g``)
  owns the entries ``e`` in ``[ptr[j*ngroups + g], ptr[j*ngroups + g + 1])``.
* ``col`` uint8 ``[nent]``: entry ``e`` is column ``j*Kc + col[e]``.
* ``val`` float32 ``[nent * R]``: ``val[e*R + i] = W[g*R + i, j*Kc + col[e]]``.

Semantics (every backend, see ``sparsekit.kernels.cpu``): ``y = x @ W.T + bias`` where ``W`` holds the stored
non-zero values and every other weight is *absent* rather than a zero factor. A NaN / inf in ``x`` reaches an
output only through a stored non-zero weight of that output's row: pruned weights and explicit zeros stored in
a group or block never turn it into ``0 * NaN = NaN``. Duplicate entries add. NaN / inf stored in ``val`` or
``bias`` propagate as in any product / sum.
"""
from __future__ import annotations

from functools import partial

import torch

from sparsekit.formats.validate import entry_rows

__all__ = ["bsr_linear", "csr_linear", "cuda_csr_linear", "encoder_layers", "gpu_bsr_to_dense", "gpu_csr_to_dense",
           "int8_b4_accumulators", "int8_b4_linear", "int8_b4_row_sums", "int8_b4_to_dense", "packed_attention",
           "packed_to_dense", "quantize_tokens", "triton_bsr_linear", "triton_csr_linear"]


def packed_to_dense(ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
                    out_features: int, group_rows: int, chunk: int) -> torch.Tensor:
    """The dense float32 weight ``[out, in]`` represented by a CPU packed weight."""
    R = int(group_rows)
    ngroups = -(-out_features // R)
    w = torch.zeros(ngroups * R, in_features, dtype=torch.float32, device=val.device)
    nent = col.numel()
    if nent:
        seg = entry_rows(ptr)  # the (chunk, group) run of each entry, chunk-major
        j, g = seg // ngroups, seg % ngroups
        cols = j * chunk + col.to(torch.int64)
        rows = (g * R)[:, None] + torch.arange(R, device=val.device)[None, :]  # [nent, R]
        w.index_put_((rows.reshape(-1), cols.repeat_interleave(R)), val.to(torch.float32).reshape(-1),
                     accumulate=True)
    return w[:out_features]


def _linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    x = x.to(torch.float32)
    if bool(torch.isfinite(x).all()):
        y = x @ w.T
    else:  # only the non-zero weights may meet a NaN / inf of x: a sparse product skips the others
        x2 = x.reshape(-1, x.shape[-1])
        y = torch.sparse.mm(w.to_sparse(), x2.T).T.reshape(*x.shape[:-1], w.shape[0])
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y


def csr_linear(x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
               out_features: int, chunk: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference of ``sparsekit::csr_linear``: ``x [..., in] -> [..., out]`` (float32)."""
    return _linear(x, packed_to_dense(ptr, col, val, in_features, out_features, 1, chunk), bias)


def bsr_linear(x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
               out_features: int, group_rows: int, chunk: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference of ``sparsekit::bsr_linear``: ``x [..., in] -> [..., out]`` (float32)."""
    return _linear(x, packed_to_dense(ptr, col, val, in_features, out_features, group_rows, chunk), bias)


def gpu_csr_to_dense(row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor, in_features: int,
                     out_features: int) -> torch.Tensor:
    """The dense float32 weight ``[out, in]`` of the GPU CSR layout, on the values' device."""
    w = torch.zeros(out_features, in_features, dtype=torch.float32, device=values.device)
    if values.numel():
        rows = entry_rows(row_ptr)
        w[rows, col_idx.to(torch.int64)] = values.to(torch.float32)
    return w


def gpu_bsr_to_dense(row_ptr: torch.Tensor, col_idx: torch.Tensor, blocks_t: torch.Tensor, in_features: int,
                     out_features: int) -> torch.Tensor:
    """The dense float32 weight ``[out, in]`` of the GPU BSR layout (transposed blocks), on the blocks' device."""
    nb, bc, br = blocks_t.shape
    nbr, nbc = -(-out_features // br), -(-in_features // bc)
    tiles = torch.zeros(nbr, nbc, br, bc, dtype=torch.float32, device=blocks_t.device)
    if nb:
        rows = entry_rows(row_ptr)
        tiles[rows, col_idx.to(torch.int64)] = blocks_t.to(torch.float32).transpose(1, 2)
    return tiles.permute(0, 2, 1, 3).reshape(nbr * br, nbc * bc)[:out_features, :in_features]


def triton_csr_linear(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                      row_order: torch.Tensor, in_features: int, out_features: int,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference of ``sparsekit::triton_csr_linear``: ``x [..., in] -> [..., out]`` (float32)."""
    return _linear(x, gpu_csr_to_dense(row_ptr, col_idx, values, in_features, out_features), bias)


#: ``sparsekit::cuda_csr_linear`` takes the same arguments and computes the same as ``triton_csr_linear``.
cuda_csr_linear = triton_csr_linear


def triton_bsr_linear(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, blocks_t: torch.Tensor,
                      row_order: torch.Tensor, in_features: int, out_features: int,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference of ``sparsekit::triton_bsr_linear``: ``x [..., in] -> [..., out]`` (float32)."""
    return _linear(x, gpu_bsr_to_dense(row_ptr, col_idx, blocks_t, in_features, out_features), bias)


def packed_attention(qkv: torch.Tensor, cu_seqlens: torch.Tensor, heads: int, dq: int, dv: int,
                     scale: float, window: int = -1) -> torch.Tensor:
    """``softmax(scale Q K^T) V`` within each sequence of packed tokens: ``qkv [N, H (2 dq + dv)]`` -> ``[N, H dv]``
    (layout: :mod:`sparsekit.kernels.encoder`). A token attends the tokens of its own sequence only, and with
    ``window >= 0`` only those ``|i - j| <= window`` positions away."""
    n = qkv.shape[0]
    if heads == 0 or n == 0:
        return qkv.new_zeros(n, heads * dv)
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    seq = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    same = seq[:, None] == seq[None, :]
    if window >= 0:
        pos = torch.arange(n)
        same &= (pos[:, None] - pos[None, :]).abs() <= window
    q = qkv[:, :heads * dq].view(n, heads, dq).transpose(0, 1)
    k = qkv[:, heads * dq:2 * heads * dq].view(n, heads, dq).transpose(0, 1)
    v = qkv[:, 2 * heads * dq:].view(n, heads, dv).transpose(0, 1)
    ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=same, scale=scale)
    return ctx.transpose(0, 1).reshape(n, heads * dv)


def _fused_matrix(t: list[torch.Tensor], m: list[int], k: int, x: torch.Tensor) -> torch.Tensor:
    """Matrix ``k`` of one fused layer (tensors ``t``, ints ``m``) applied to ``x``: dense, packed or int8."""
    from sparsekit.kernels.encoder import DENSE, INT8, MATRIX_TENSORS

    from sparsekit.kernels.encoder import LAYER_HEAD_META

    start = LAYER_HEAD_META + 5 * k
    kind, n_in, n_out, rows, chunk = m[start:start + 5]
    mt = t[MATRIX_TENSORS * k:MATRIX_TENSORS * (k + 1)]
    if kind == DENSE:
        return _linear(x, mt[0], mt[1])
    if kind == INT8:
        return int8_b4_linear(x, mt[0], mt[1], mt[2], mt[4], mt[5], n_in, n_out, mt[3])
    return bsr_linear(x, mt[0], mt[1], mt[2], n_in, n_out, rows, chunk, mt[3])


_ACTIVATION_FNS = {0: lambda t: t, 1: torch.nn.functional.gelu,
                   2: lambda t: torch.nn.functional.gelu(t, approximate="tanh"), 3: torch.relu}


def relative_attention(qkv: torch.Tensor, cu_seqlens: torch.Tensor, heads: int, dq: int, dv: int, scale: float,
                       pos_key_t: torch.Tensor | None, pos_query_t: torch.Tensor | None,
                       rel_index: torch.Tensor) -> torch.Tensor:
    """DeBERTa's disentangled attention over packed tokens: scores ``scale * (q_i . k_j + q_i . posK[r] + k_j .
    posQ[r])`` with ``r = rel_index[i - j + c]`` (``c = (len(rel_index) - 1) / 2``); ``pos_key_t`` /
    ``pos_query_t`` ``[heads * dq * R]`` (head-major ``[H][dq][R]``) or None. ``qkv`` as packed_attention's."""
    n = qkv.shape[0]
    out = qkv.new_zeros(n, heads * dv)
    center = (rel_index.numel() - 1) // 2
    for s0, s1 in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        if s1 == s0 or heads == 0:
            continue
        q = qkv[s0:s1, :heads * dq].view(-1, heads, dq).transpose(0, 1)  # [H, len, dq]
        k = qkv[s0:s1, heads * dq:2 * heads * dq].view(-1, heads, dq).transpose(0, 1)
        v = qkv[s0:s1, 2 * heads * dq:].view(-1, heads, dv).transpose(0, 1)
        pos = torch.arange(s1 - s0)
        idx = rel_index.long()[pos[:, None] - pos[None, :] + center]  # [len, len]
        scores = q @ k.transpose(1, 2)
        if pos_key_t is not None:
            c2p = q @ pos_key_t.view(heads, dq, -1)  # [H, len, R]
            scores = scores + c2p.gather(2, idx.expand(heads, -1, -1))
        if pos_query_t is not None:
            p2c = k @ pos_query_t.view(heads, dq, -1)  # [H, len (keys), R]
            scores = scores + p2c.gather(2, idx.t().expand(heads, -1, -1)).transpose(1, 2)
        ctx = torch.softmax(scores * scale, dim=-1) @ v
        out[s0:s1] = ctx.transpose(0, 1).reshape(s1 - s0, heads * dv)
    return out


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding as Hugging Face's ``apply_rotary_pos_emb``: ``x [N, H, d]`` rotated by the
    per-token ``cos`` / ``sin`` ``[N, d]``: ``x * cos + [-x2 | x1] * sin`` (x1 / x2 the halves of each head)."""
    x1, x2 = x[..., :x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return x * cos[:, None, :] + torch.cat((-x2, x1), dim=-1) * sin[:, None, :]


def encoder_layers(x: torch.Tensor, cu_seqlens: torch.Tensor, tensors: list[torch.Tensor], meta: list[int],
                   scalars: list[float], rope: list[torch.Tensor] | tuple = (),
                   rel_index: torch.Tensor | None = None) -> torch.Tensor:
    """The fused encoder layers (op ``sparsekit::encoder_layers``, argument layout in
    ``csrc/spmm_cpu/encoder_binding.cpp``) in plain torch: ``x [N, hidden]`` -> ``[N, hidden]``."""
    from sparsekit.kernels.encoder import (C2P, LAYER_META, LAYER_SCALARS, LAYER_TENSORS, MATRIX_TENSORS, P2C,
                                           POST_NORM, PRE_NORM)

    hidden = x.shape[1]
    for layer in range(len(meta) // LAYER_META):
        t = tensors[LAYER_TENSORS * layer:LAYER_TENSORS * (layer + 1)]
        m = meta[LAYER_META * layer:LAYER_META * (layer + 1)]
        s = scalars[LAYER_SCALARS * layer:LAYER_SCALARS * (layer + 1)]
        heads, dq, dv, act, norm, glu, window, table, relative = m[:9]
        ln = t[4 * MATRIX_TENSORS:4 * MATRIX_TENSORS + 4]
        norms = [partial(torch.nn.functional.layer_norm, normalized_shape=(hidden,), weight=ln[2 * k],
                         bias=ln[2 * k + 1], eps=s[1 + k]) for k in (0, 1)]
        qkv = _fused_matrix(t, m, 0, norms[0](x) if norm == PRE_NORM else x)
        if table >= 0:
            qk = qkv[:, :2 * heads * dq].reshape(-1, 2 * heads, dq)
            qkv = torch.cat([rotary(qk, rope[2 * table], rope[2 * table + 1]).reshape(qkv.shape[0], -1),
                             qkv[:, 2 * heads * dq:]], dim=1)
        if relative:
            pos_key, pos_query = t[4 * MATRIX_TENSORS + 4:4 * MATRIX_TENSORS + 6]
            ctx = relative_attention(qkv, cu_seqlens, heads, dq, dv, s[0], pos_key if relative & C2P else None,
                                     pos_query if relative & P2C else None, rel_index)
        else:
            ctx = packed_attention(qkv, cu_seqlens, heads, dq, dv, s[0], window)
        h = _fused_matrix(t, m, 1, ctx) + x
        if norm == POST_NORM:
            h = norms[0](h)
        u = _fused_matrix(t, m, 2, h if norm == POST_NORM else norms[1](h))
        if glu:
            u = _ACTIVATION_FNS[act](u[:, :u.shape[1] // 2]) * u[:, u.shape[1] // 2:]
        else:
            u = _ACTIVATION_FNS[act](u)
        x = _fused_matrix(t, m, 3, u) + h
        if norm == POST_NORM:
            x = norms[1](x)
    return x

# ---------------------------------------------------------------------------------------------------------------
# INT8, 1x4 blocks along the input dimension (sparsekit::int8_b4_linear)
# ---------------------------------------------------------------------------------------------------------------
def int8_b4_to_dense(ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
                     out_features: int) -> torch.Tensor:
    """The dense int8 weight ``q [out, in]`` of the INT8 1x4-block layout (``W ~ scale[:, None] * q``).

    ``ptr`` int32 ``[out + 1]`` (row ``o`` owns blocks ``ptr[o] .. ptr[o+1]-1``), ``col`` int16 ``[nblk]`` (block
    column: input columns ``4*col .. 4*col+3``), ``val`` int8 ``[nblk * 4]``. Duplicate blocks add."""
    nkb = -(-in_features // 4)
    q = torch.zeros(out_features, nkb * 4, dtype=torch.int32, device=val.device)
    nblk = col.numel()
    if nblk:
        rows = entry_rows(ptr)
        cols = (col.to(torch.int64)[:, None] * 4 + torch.arange(4, device=val.device)[None, :]).reshape(-1)
        q.index_put_((rows.repeat_interleave(4), cols), val.to(torch.int32).reshape(-1), accumulate=True)
    return q[:, :in_features].to(torch.int8)


def quantize_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-token quantisation of ``x [M, in]`` float32: ``(xq int8 [M, in], s float32 [M])``.

    ``a = max|x[m, :]|``, ``s = a / 127``, ``xq = clamp(round_half_even(x * (127 / a)), -127, 127)`` (fp32). A
    token whose ``127 / a`` is not finite (all zeros, or ``a < 127 / FLT_MAX``) has ``xq = 0``; a token holding a
    NaN / inf has ``s = NaN`` and ``xq = 0``. The same fp32 operations as every ISA path of the kernel, so ``xq``
    is bit-identical to theirs."""
    x = x.to(torch.float32)
    finite = torch.isfinite(x).all(dim=-1)
    amax = x.abs().amax(dim=-1) if x.shape[-1] else x.new_zeros(x.shape[:-1])
    # True fp32 divisions, as in the kernel: torch computes `127 / amax` as reciprocal(amax) * 127 and may compute
    # `amax / 127` as amax * (1 / 127); dividing by a full tensor is an elementwise IEEE division.
    c127 = torch.full_like(amax, 127.0)
    s = torch.where(finite, amax / c127, torch.full_like(amax, float("nan")))
    inv = c127 / amax
    ok = finite & torch.isfinite(inv)
    inv = torch.where(ok, inv, torch.zeros_like(inv))
    xq = torch.round(torch.where(ok[:, None], x, torch.zeros_like(x)) * inv[:, None]).clamp_(-127, 127)
    return xq.to(torch.int8), s


def int8_b4_accumulators(x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor,
                         in_features: int, out_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact int32 accumulators ``acc [M, out] = xq @ q.T`` and token scales ``s [M]`` for ``x [M, in]``."""
    xq, s = quantize_tokens(x.reshape(1, in_features) if x.dim() == 1 else x.flatten(0, -2))
    q = int8_b4_to_dense(ptr, col, val, in_features, out_features)
    acc = xq.to(torch.int64) @ q.to(torch.int64).T  # exact; |acc| < 2**31 for in_features <= 131072
    return acc.to(torch.int32), s


def int8_b4_row_sums(ptr: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    """``wsum`` of the int8 1x4-block layout: int32 ``[out]``, the sum of each row's stored values (``ptr`` int32
    ``[out + 1]``, ``val`` int8 ``[nblk * 4]``); the offset kernels' compensation, stored with the packed weight."""
    block = val.reshape(-1, 4).to(torch.int64).sum(1)
    prefix = torch.cat([block.new_zeros(1), block.cumsum(0)])
    p = ptr.to(torch.int64)
    return (prefix[p[1:]] - prefix[p[:-1]]).to(torch.int32)


def int8_b4_linear(x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, scale: torch.Tensor,
                   wsum: torch.Tensor, in_features: int, out_features: int,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference of ``sparsekit::int8_b4_linear``: ``x [..., in] -> [..., out]`` float32,
    ``y = float(acc) * (s[m] * scale[o]) + bias[o]`` (the kernel fuses the last multiply-add: equal to rounding).
    ``wsum`` (:func:`int8_b4_row_sums`) is redundant here; its total is checked against ``val`` as the kernel does."""
    total, want = int(wsum.to(torch.int64).sum()), int(val.to(torch.int64).sum())
    if total != want:
        raise ValueError(f"sparsekit: wsum does not match val (the rows' weight sums total {total}, the values "
                         f"{want}): the packed int8 weight was changed after packing; pack it again (pack_cpu_int8_b4)")
    acc, s = int8_b4_accumulators(x, ptr, col, val, in_features, out_features)
    y = acc.to(torch.float32) * (s[:, None] * scale.to(torch.float32)[None, :])
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.reshape(*x.shape[:-1], out_features)
