"""Pure-torch references of the sparse Linear ops (the semantics every kernel is tested against).

Each function takes exactly the arguments of the op of the same name (see :mod:`sparsekit.kernels.cpu`):
the packed weight tensors (layout below), ``x [..., in]`` and an optional ``bias [out]``. They rebuild
the dense weight and compute ``x @ W.T + bias`` in float32; no data-dependent Python loops. They also
serve as the CPU implementation when the C++ extension is not built.

Packed layout (shared by ``csr_linear`` with ``group_rows = 1`` and ``bsr_linear``), see also
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

import torch

__all__ = ["bsr_linear", "csr_linear", "packed_to_dense"]


def packed_to_dense(ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
                    out_features: int, group_rows: int, chunk: int) -> torch.Tensor:
    """The dense float32 weight ``[out, in]`` represented by a packed weight."""
    R = int(group_rows)
    ngroups = -(-out_features // R)
    nchunks = -(-in_features // chunk) if in_features else 0
    w = torch.zeros(ngroups * R, in_features, dtype=torch.float32, device=val.device)
    nent = col.numel()
    if nent:
        counts = (ptr[1:] - ptr[:-1]).to(torch.int64)  # per (chunk, group), chunk-major
        seg = torch.repeat_interleave(torch.arange(nchunks * ngroups, device=val.device), counts)
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
