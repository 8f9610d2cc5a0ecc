"""Block pruning: masks made of R x C blocks of weights, one score per block.

A block of shape ``RxC`` is R consecutive output rows by C consecutive input features of a weight ``[out, in]``.
``1x4`` (four consecutive input features of one output row) is the operand of the int8 byte dot-product
instructions (``vpmaddubsw``, ``vpdpbusd``) that sparse int8 kernels use (issue 16); ``1x1`` is unstructured
pruning, where every function here is the identity.

A matrix whose shape the block does not divide is covered by a *grid* of ``ceil(out/R) x ceil(in/C)`` blocks
whose last row / column of blocks is partial: a partial block is one block, holding only its real weights
(``Block.sizes``). Scores, masks and the pooled values live on the grid ``[out/R, ceil(in/C)]``; ``expand``
turns a grid back into an elementwise ``[out, in]`` tensor (with autograd: the gradient of a block is the sum
of its weights' gradients), so everything after the mask (finalize, masks.bin, export) sees ordinary masks.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

_PATTERN = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")


@dataclass(frozen=True)
class Block:
    """A block shape: ``rows`` output rows by ``cols`` input features (``str(Block(1, 4)) == "1x4"``)."""

    rows: int
    cols: int

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"a block has at least one row and one column, got {self.rows}x{self.cols}")

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"

    @property
    def unstructured(self) -> bool:
        """Whether this is ``1x1``: one weight per block, i.e. ordinary unstructured pruning."""
        return self.rows == 1 and self.cols == 1

    @property
    def area(self) -> int:
        """Weights in a full block (R * C)."""
        return self.rows * self.cols

    def grid(self, shape: tuple[int, int] | torch.Size) -> tuple[int, int]:
        """The block grid of a weight of ``shape`` ``[out, in]``: ``(ceil(out / R), ceil(in / C))``."""
        out, inp = shape
        return math.ceil(out / self.rows), math.ceil(inp / self.cols)

    def sizes(self, shape: tuple[int, int] | torch.Size, device=None) -> torch.Tensor:
        """Real weights in each block of a weight of ``shape``: int64 ``grid(shape)``; R * C except in the last
        (partial) row / column of blocks."""
        out, inp = shape
        gr, gc = self.grid(shape)
        rows = torch.full((gr,), self.rows, dtype=torch.int64, device=device)
        cols = torch.full((gc,), self.cols, dtype=torch.int64, device=device)
        rows[-1] = out - (gr - 1) * self.rows
        cols[-1] = inp - (gc - 1) * self.cols
        return rows[:, None] * cols[None, :]

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``x`` ``[out, in]`` over each block's real entries: ``grid(x.shape)``, same dtype.

        Differentiable. ``1x1``: ``x`` itself.
        """
        if self.unstructured:
            return x
        out, inp = x.shape
        gr, gc = self.grid(x.shape)
        padded = torch.nn.functional.pad(x, (0, gc * self.cols - inp, 0, gr * self.rows - out))
        sums = padded.reshape(gr, self.rows, gc, self.cols).sum(dim=(1, 3))
        return sums / self.sizes(x.shape, device=x.device).to(x.dtype)

    def expand(self, grid: torch.Tensor, shape: tuple[int, int] | torch.Size) -> torch.Tensor:
        """The elementwise tensor ``[out, in]`` (``shape``) in which every weight takes its block's value.

        ``grid``: ``self.grid(shape)``. Differentiable: the gradient of a block value is the sum of the
        gradients of its real weights. ``1x1``: ``grid`` itself.
        """
        if self.unstructured:
            return grid
        out, inp = shape
        return grid.repeat_interleave(self.rows, dim=0).repeat_interleave(self.cols, dim=1)[:out, :inp]

    def is_structured(self, mask: torch.Tensor) -> bool:
        """Whether the elementwise ``mask`` ``[out, in]`` keeps or prunes every block whole."""
        kept = (mask != 0).to(torch.float32)
        pooled = self.pool(kept)
        return bool(((pooled == 0) | (pooled == 1)).all())


UNSTRUCTURED = Block(1, 1)


def parse_block(text: str | Block) -> Block:
    """The Block a ``--block`` value names: ``"RxC"`` with positive integers (``"1x4"``, ``"4x1"``, ``"1x1"``).

    ValueError naming the option and the expected form otherwise.
    """
    if isinstance(text, Block):
        return text
    match = _PATTERN.fullmatch(str(text))
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValueError(f"block (--block) must be ROWSxCOLS with positive integers, e.g. 1x4 (four consecutive "
                         f"input features of one output row, the int8 kernels' layout) or 1x1 (unstructured); "
                         f"got {text!r}")
    return Block(int(match.group(1)), int(match.group(2)))


def recorded_block(recipe: dict | None) -> Block:
    """The block shape a pruning run recorded in its recipe (``recipe["block"]``); 1x1 when absent (runs from
    before block pruning, checkpoints without a recipe)."""
    value = (recipe or {}).get("block") if isinstance(recipe, dict) else None
    return parse_block(value) if isinstance(value, str) else Block(1, 1)
