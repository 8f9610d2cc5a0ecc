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
        w[rows.reshape(-1), cols.repeat_interleave(R)] = val.to(torch.float32).reshape(-1)
    return w[:out_features]


def _linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = x.to(torch.float32) @ w.T
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
