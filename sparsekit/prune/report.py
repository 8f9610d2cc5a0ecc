"""Per-layer sparsity report: kept fraction, fully pruned rows and columns per matrix.

Fully pruned rows / columns are what the exporter can remove (spec §3.8), so they are counted here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

from sparsekit.models import MATRIX_SHORT, PrunableMatrix
from sparsekit.prune.blocks import UNSTRUCTURED, Block, parse_block


@dataclass(frozen=True)
class MatrixStats:
    """Sparsity of one matrix. Shapes are ``[out, in]``; an empty row is an output with no weight left."""

    name: str
    layer: int
    type: str
    shape: tuple[int, int]
    kept: int
    numel: int
    empty_rows: int
    empty_cols: int

    @property
    def density(self) -> float:
        return self.kept / self.numel if self.numel else 0.0


def matrix_stats(matrices: list[PrunableMatrix], masks: Mapping[str, torch.Tensor]) -> list[MatrixStats]:
    """Stats for each prunable matrix from its bool mask ``[out, in]``."""
    stats = []
    for m in matrices:
        mask = masks[m.name]
        stats.append(MatrixStats(
            name=m.name, layer=m.layer, type=m.type, shape=tuple(mask.shape), kept=int(mask.sum()),
            numel=mask.numel(), empty_rows=int((~mask.any(dim=1)).sum()), empty_cols=int((~mask.any(dim=0)).sum()),
        ))
    return stats


def summary(stats: list[MatrixStats]) -> dict:
    """Totals: kept / total prunable weights, overall density, and density per matrix type."""
    kept = sum(s.kept for s in stats)
    total = sum(s.numel for s in stats)
    per_type: dict[str, list[int]] = {}
    for s in stats:
        acc = per_type.setdefault(s.type, [0, 0])
        acc[0] += s.kept
        acc[1] += s.numel
    return {
        "kept": kept, "total": total, "density": kept / total if total else 0.0,
        "density_by_type": {t: k / n for t, (k, n) in per_type.items()},
    }


def to_json(stats: list[MatrixStats], block: Block = UNSTRUCTURED) -> dict:
    """JSON-ready report: one entry per matrix, the summary, and the block shape the masks are made of
    (``"1x4"``; ``"1x1"``: unstructured)."""
    return {"matrices": [asdict(s) | {"density": s.density} for s in stats], "summary": summary(stats),
            "block": str(block)}


def describe_block(block: str | Block | None) -> str:
    """How summaries name a run's mask structure: ``"1x4 blocks"``, or ``"unstructured"`` (1x1, or a run
    recorded before blocks existed: ``None``)."""
    block = parse_block(block or UNSTRUCTURED)
    return "unstructured" if block.unstructured else f"{block} blocks"


def render_table(stats: list[MatrixStats], title: str = "Per-layer sparsity"):
    """A rich Table: layer, matrix, shape, kept %, fully pruned rows / columns."""
    from rich.table import Table

    table = Table(title=title)
    for col, justify in (("layer", "right"), ("matrix", "left"), ("shape", "left"), ("kept", "right"),
                         ("kept %", "right"), ("empty rows", "right"), ("empty cols", "right")):
        table.add_column(col, justify=justify)
    for s in stats:
        table.add_row(str(s.layer), MATRIX_SHORT.get(s.type, s.type), f"{s.shape[0]}x{s.shape[1]}", f"{s.kept:,}",
                      f"{100 * s.density:.2f}", f"{s.empty_rows}/{s.shape[0]}", f"{s.empty_cols}/{s.shape[1]}")
    total = summary(stats)
    table.add_section()
    table.add_row("all", "", "", f"{total['kept']:,}", f"{100 * total['density']:.2f}",
                  str(sum(s.empty_rows for s in stats)), str(sum(s.empty_cols for s in stats)))
    return table
