"""Rendering an artifact's report: per matrix shape before -> after, density, format, what was removed."""
from __future__ import annotations

from sparsekit.models import MATRIX_SHORT


def render_export_table(report: dict, title: str = "Export"):
    """A rich Table from ``report.json`` of an artifact (see artifact.export)."""
    from rich.table import Table

    formats = {f["matrix"]: f["format"] for f in report.get("formats", [])}
    table = Table(title=title)
    for col, justify in (("layer", "right"), ("matrix", "left"), ("before", "left"), ("after", "left"),
                         ("density", "right"), ("format", "left"), ("removed", "left")):
        table.add_column(col, justify=justify)
    for m in report["compaction"]["matrices"]:
        removed = "; ".join(f"{k}: {v}" for k, v in m["removed"].items())
        table.add_row(str(m["layer"]), MATRIX_SHORT.get(m["matrix"], m["matrix"]), "x".join(map(str, m["before"])),
                      "x".join(map(str, m["after"])), f"{100 * m['density_after']:.1f}%",
                      formats.get(f"layers.{m['layer']}.{m['matrix']}", "-"), removed)
    return table


def summary_lines(report: dict) -> list[str]:
    """Human-readable totals: dense parameters and bytes before -> after, lossy changes."""
    s = report["compaction"]["summary"]
    b = report["bytes"]
    dense_bytes, stored = b["encoder_matrices_dense_fp32_before"], b["encoder_matrices_exported"]
    lines = [
        f"encoder matrices: {s['dense_params_before']:,} -> {s['dense_params_after']:,} dense parameters after "
        f"compaction ({100 * s['fraction_after']:.2f}%)",
        f"stored bytes: {dense_bytes:,} (dense fp32) -> {stored:,} ({100 * stored / max(1, dense_bytes):.2f}%)",
    ]
    lossy = report["compaction"].get("lossy", {})
    if lossy.get("min_row_weights"):
        lines.append(f"lossy: rows with < {lossy['min_row_weights']} weights dropped: {lossy['rows_zeroed']:,} rows, "
                     f"{lossy['weights_dropped']:,} weights")
    ev = report.get("evaluation")
    if ev:
        masked = ev["masked_dense"]
        for metric in ev.get("change", {}):
            lines.append(f"dev {metric}: {100 * masked[metric]:.2f} (masked dense) -> "
                         f"{100 * ev['lossy'][metric]:.2f} (lossy), change {100 * ev['change'][metric]:+.2f}")
        if not ev.get("change"):
            lines.append("dev " + ", ".join(f"{k} {100 * v:.2f}" for k, v in masked.items()
                                            if k in ("accuracy", "f1", "matthews", "pearson", "spearman")))
    for note in report["compaction"].get("notes", []):
        lines.append(f"note: {note}")
    return lines
