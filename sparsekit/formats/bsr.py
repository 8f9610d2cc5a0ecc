"""The BSR storage format: ``br x bc`` block-sparse rows, edge blocks zero-padded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsekit.formats.base import VALUE_DTYPES, MatrixFormat, prepare_weight
from sparsekit.formats.validate import (
    INT32_MAX,
    check,
    check_compressed_rows,
    check_finite,
    check_shape,
    check_stored_tensor,
    entry_rows,
    is_int,
)

__all__ = ["BSRFormat", "check_block"]


@dataclass(frozen=True, eq=False, repr=False)
class BSRFormat(MatrixFormat):
    """Block-sparse rows: ``W [out, in]`` tiled into ``br x bc`` blocks; non-zero blocks are stored.

    The tiling covers ``nbr = ceil(out / br)`` block rows and ``nbc = ceil(in / bc)`` block
    columns. ``out`` and ``in`` need not be multiples of the block: edge blocks are conceptually
    padded, and the stored padding (rows ``>= out`` / columns ``>= in``) is always zero.

    Fields:
        shape: ``(out, in)``, the true unpadded shape.
        block: ``(br, bc)``, positive ints.
        block_row_ptr: ``int32 [nbr + 1]``; ``[0] == 0``, non-decreasing, ``[nbr] == nblocks``.
            Block row ``i`` (matrix rows ``i*br .. i*br+br-1``) owns stored blocks ``k`` in
            ``[block_row_ptr[i], block_row_ptr[i + 1])``.
        block_col_idx: ``int32 [nblocks]``; block ``k`` covers matrix columns
            ``block_col_idx[k]*bc .. +bc-1``. Strictly increasing within a block row, in ``[0, nbc)``.
        blocks: ``float32`` or ``bfloat16 [nblocks, br, bc]``, contiguous, row-major inside a block:
            ``blocks[k, a, b] = W[i*br + a, block_col_idx[k]*bc + b]`` (zero beyond the edges).
            Block ``k`` starts at element offset ``k*br*bc``.

    Packing stores a block iff it holds at least one non-zero (after conversion to the value
    dtype); a loaded artifact may also hold all-zero blocks.
    Semantics: ``y[..., i*br + a] += sum_b blocks[k, a, b] * x[..., block_col_idx[k]*bc + b]``
    (mask rows ``>= out`` and columns ``>= in``).

    Tensors: ``block_row_ptr, block_col_idx, blocks``. ``meta()``: ``format_version, kind="bsr",
    shape, value_dtype, block=[br, bc], nblocks``. ``nnz`` counts the in-bounds positions of
    stored blocks (padding excluded).
    """

    kind: ClassVar[str] = "bsr"
    _values_name: ClassVar[str] = "blocks"
    _tensor_names: ClassVar[tuple[str, ...]] = ("block_row_ptr", "block_col_idx", "blocks")
    shape: tuple[int, int]
    block: tuple[int, int]
    block_row_ptr: torch.Tensor
    block_col_idx: torch.Tensor
    blocks: torch.Tensor

    @classmethod
    def pack(cls, weight: torch.Tensor, *, block: tuple[int, int] = (32, 32),
             value_dtype: torch.dtype = torch.float32) -> BSRFormat:
        br, bc = check_block(block)
        w = prepare_weight(weight, value_dtype)
        out, inp = w.shape
        nbr, nbc = -(-out // br), -(-inp // bc)
        padded = torch.zeros(nbr * br, nbc * bc, dtype=w.dtype)
        padded[:out, :inp] = w
        tiles = padded.view(nbr, br, nbc, bc).permute(0, 2, 1, 3)  # [nbr, nbc, br, bc]
        keep = (tiles != 0).any(dim=3).any(dim=2)  # [nbr, nbc]
        brow, bcol = torch.nonzero(keep, as_tuple=True)  # sorted by block row, then block column
        if brow.numel() > INT32_MAX:
            raise ValueError(f"too many blocks for int32 pointers: {brow.numel()}")
        ptr = torch.zeros(nbr + 1, dtype=torch.int64)
        torch.cumsum(keep.sum(dim=1, dtype=torch.int64), dim=0, out=ptr[1:])
        return cls(
            shape=(int(out), int(inp)),
            block=(br, bc),
            block_row_ptr=ptr.to(torch.int32),
            block_col_idx=bcol.to(torch.int32),
            blocks=tiles[brow, bcol].contiguous(),
        )

    def _normalize(self) -> None:
        super()._normalize()
        object.__setattr__(self, "shape", check_shape(self.shape))
        object.__setattr__(self, "block", check_block(self.block))

    @property
    def grid(self) -> tuple[int, int]:
        """``(nbr, nbc)``: number of block rows and block columns of the padded tiling."""
        (out, inp), (br, bc) = self.shape, self.block
        return -(-out // br), -(-inp // bc)

    @property
    def nblocks(self) -> int:
        return self.blocks.shape[0]

    def block_rows(self) -> torch.Tensor:
        """``int64 [nblocks]``: the block row of each stored block."""
        return entry_rows(self.block_row_ptr)

    def _validate(self) -> None:
        out, inp = self.shape
        br, bc = self.block
        nbr, nbc = self.grid
        check_stored_tensor(self.blocks, "blocks", ndim=3, dtypes=VALUE_DTYPES)
        nb = self.blocks.shape[0]
        check(tuple(self.blocks.shape[1:]) == (br, bc),
              f"blocks has shape {list(self.blocks.shape)}, expected [nblocks, {br}, {bc}]")
        check_stored_tensor(self.block_row_ptr, "block_row_ptr", ndim=1, dtypes=(torch.int32,), length=nbr + 1)
        check_stored_tensor(self.block_col_idx, "block_col_idx", ndim=1, dtypes=(torch.int32,), length=nb,
                            length_what=" (the number of blocks)")
        c = self.block_col_idx.to(torch.int64)
        check_compressed_rows(self.block_row_ptr, c, ncols=nbc, ptr_name="block_row_ptr", idx_name="block_col_idx",
                              index_word="block", row_word="block row", count_what="the number of blocks")
        check_finite(self.blocks, "blocks")
        # Padding beyond the matrix edge must be zero.
        if nb and (out % br or inp % bc):
            rows = self.block_rows()
            if out % br:
                last = rows == nbr - 1
                check(not bool(self.blocks[last, out % br:, :].any()),
                      f"blocks hold non-zero padding below row {out} (beyond the matrix edge)")
            if inp % bc:
                lastc = c == nbc - 1
                check(not bool(self.blocks[lastc, :, inp % bc:].any()),
                      f"blocks hold non-zero padding right of column {inp} (beyond the matrix edge)")

    @property
    def nnz(self) -> int:
        if not self.nblocks:
            return 0
        (out, inp), (br, bc) = self.shape, self.block
        r0 = self.block_rows() * br
        c0 = self.block_col_idx.to(torch.int64) * bc
        h = torch.clamp(out - r0, max=br)
        w = torch.clamp(inp - c0, max=bc)
        return int((h * w).sum())

    def to_dense(self) -> torch.Tensor:
        out, inp = self.shape
        br, bc = self.block
        nbr, nbc = self.grid
        tiles = torch.zeros(nbr, nbc, br, bc, dtype=torch.float32)
        if self.nblocks:
            tiles[self.block_rows(), self.block_col_idx.to(torch.int64)] = self.blocks.to(torch.float32)
        return tiles.permute(0, 2, 1, 3).reshape(nbr * br, nbc * bc)[:out, :inp].contiguous()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"block_row_ptr": self.block_row_ptr, "block_col_idx": self.block_col_idx,
                "blocks": self.blocks}

    def _meta_extra(self) -> dict:
        return {"block": [int(self.block[0]), int(self.block[1])], "nblocks": self.nblocks}

    def _repr_extra(self) -> dict:
        return {"block": self.block, "nblocks": self.nblocks}

    @classmethod
    def _from_parts(cls, meta, tensors, shape):
        check("block" in meta, "meta lacks 'block'")
        block = check_block(meta["block"])
        fmt = cls(shape=shape, block=block, block_row_ptr=tensors["block_row_ptr"],
                  block_col_idx=tensors["block_col_idx"], blocks=tensors["blocks"])
        if "nblocks" in meta:
            check(is_int(meta["nblocks"]) and meta["nblocks"] == fmt.nblocks,
                  f"meta nblocks {meta['nblocks']!r} does not match the {fmt.nblocks} stored blocks")
        return fmt


def check_block(block: Any) -> tuple[int, int]:
    """``block`` is two positive ints ``(br, bc)`` (FormatError otherwise)."""
    check(isinstance(block, (tuple, list)) and len(block) == 2 and all(is_int(b) for b in block),
          f"block must be two integers (br, bc), got {block!r}")
    br, bc = int(block[0]), int(block[1])
    check(br > 0 and bc > 0, f"block dimensions must be positive, got {[br, bc]}")
    check(br * bc <= INT32_MAX, f"block {[br, bc]} too large")
    return br, bc

