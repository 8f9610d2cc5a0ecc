"""Padded batches <-> packed tokens: the fused encoder never runs a padding token through a Linear.

A padded batch ``[B, T, hidden]`` with ``attention_mask [B, T]`` (1 = real token) becomes the real tokens of every
sequence, in order, as ``[N, hidden]`` plus ``cu_seqlens`` int64 ``[B + 1]`` (sequence ``b`` at rows
``cu_seqlens[b] .. cu_seqlens[b + 1] - 1``). A mask with holes is fine: the kept tokens of a row attend each other,
exactly what the masked dense model computes at those positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedBatch:
    """Packed tokens of a padded batch. index: int64 ``[N]`` positions in the flattened ``[B * T]`` batch, or None
    when every position is a real token (packing is then a free reshape)."""

    tokens: torch.Tensor
    cu_seqlens: torch.Tensor
    index: torch.Tensor | None
    batch: int
    length: int


def pack(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> PackedBatch:
    """``hidden [B, T, H]`` float32, ``attention_mask [B, T]`` (0/1, bool or int; None = all real) -> PackedBatch."""
    b, t, h = hidden.shape
    flat = hidden.reshape(b * t, h)
    if attention_mask is None or bool(attention_mask.all()):
        cu = torch.arange(0, (b + 1) * t, t, dtype=torch.int64)
        return PackedBatch(flat.contiguous(), cu, None, b, t)
    mask = attention_mask.reshape(b, t).bool()
    lengths = mask.sum(dim=1)
    cu = torch.zeros(b + 1, dtype=torch.int64)
    torch.cumsum(lengths, dim=0, out=cu[1:])
    index = mask.reshape(-1).nonzero().squeeze(1)
    return PackedBatch(flat.index_select(0, index), cu, index, b, t)


def unpack(tokens: torch.Tensor, packed: PackedBatch) -> torch.Tensor:
    """Packed ``[N, H]`` -> padded ``[B, T, H]``; padding positions hold zeros."""
    h = tokens.shape[1]
    if packed.index is None:
        return tokens.view(packed.batch, packed.length, h)
    out = tokens.new_zeros(packed.batch * packed.length, h)
    out.index_copy_(0, packed.index, tokens)
    return out.view(packed.batch, packed.length, h)
