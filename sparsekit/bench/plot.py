"""The PNG of a bench result: speedup over dense PyTorch eager (higher is better) per variant.

- model mode, several sparsities: x = sparsity, one line per variant x batch x seq x threads;
- model mode, otherwise: x = batch size (log scale), one line per variant x model x seq x threads;
- layer mode: x = encoder Linear (in order), one line per backend x config: dense time / backend time.

Error bars span the variant's p25..p75 (against the dense median). Variants that were not measured
(skipped, unavailable, failed) are listed under the plot with the reason.
"""
from __future__ import annotations

from pathlib import Path

from sparsekit.bench.tables import short_layer_name


def _series_model_mode(data: dict) -> tuple[str, dict[str, list[tuple[float, float, float, float]]]]:
    """(x label, {line label: [(x, speedup, low, high)]}) for model mode."""
    sparsities = {c["sparsity"] for c in data["configs"]}
    by_sparsity = len(sparsities) > 1
    lines: dict[str, list] = {}
    for c in data["configs"]:
        dense = c["variants"].get("dense", {})
        if dense.get("status") != "ok":
            continue
        for name, s in c["variants"].items():
            if name == "dense" or s.get("status") != "ok":
                continue
            if by_sparsity:
                label, x = f"{name}, b={c['batch']}, s={c['seq']}, t={c['threads']}", 100 * c["sparsity"]
            else:
                label, x = f"{name}, {c['model']}, s={c['seq']}, t={c['threads']}", c["batch"]
            d = dense["median_ms"]
            lines.setdefault(label, []).append((x, d / s["median_ms"], d / s["p75_ms"], d / s["p25_ms"]))
    return ("sparsity (% of encoder weights removed)" if by_sparsity else "batch size"), lines


def _series_layer_mode(data: dict) -> tuple[list[str], dict[str, list[tuple[float, float, float, float]]]]:
    names: list[str] = []
    lines: dict[str, list] = {}
    several = len({c["model"] for c in data["configs"]}) > 1
    for c in data["configs"]:
        model = f"{c['model']}, " if several else ""
        for i, layer in enumerate(c["compile"]["layers"]):
            if len(names) <= i:
                names.append(layer["name"])
            dense = layer["timings_ms"].get("dense")
            for backend, ms in layer["timings_ms"].items():
                if backend != "dense" and dense:
                    sp = dense / ms
                    label = f"{backend}, {model}b={c['batch']}, s={c['seq']}, t={c['threads']}"
                    lines.setdefault(label, []).append((i, sp, sp, sp))
    return names, lines


def _not_measured(data: dict) -> list[str]:
    seen = {}
    for c in data["configs"]:
        for name, s in c.get("variants", {}).items():
            if s.get("status") != "ok":
                seen.setdefault(name, f"{name}: {s['status']} ({s.get('reason')})")
    return list(seen.values())


def _models_label(models: list[dict]) -> str:
    """``random:tiny at 50%, 90% sparsity`` for a sparsity sweep of one model, else the ids."""
    sources = {m["source"] for m in models}
    if len(sources) == 1 and len(models) > 1 and all(m["sparsity"] is not None for m in models):
        levels = ", ".join(f"{100 * m['sparsity']:g}%" for m in models)
        return f"{sources.pop()} at {levels} sparsity"
    return ", ".join(m["id"] for m in models)


def plot(data: dict, path: str | Path) -> Path:
    """Draw ``data`` (a result document) into a PNG at ``path``; returns the path."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    machine = data["header"]["machine"]
    layers = data["mode"] == "layers"
    if layers:
        names, lines = _series_layer_mode(data)
        xlabel = "encoder Linear"
    else:
        xlabel, lines = _series_model_mode(data)
    fig = Figure(figsize=(10 if layers else 8, 5.5))
    ax = fig.subplots()
    for label, points in sorted(lines.items()):
        points.sort()
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        err = [[max(0.0, y - p[2]) for y, p in zip(ys, points)], [max(0.0, p[3] - y) for y, p in zip(ys, points)]]
        ax.errorbar(xs, ys, yerr=None if layers else err, marker="o", markersize=3 if layers else 5, capsize=3,
                    label=label, linewidth=1 if layers else 1.5)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="dense PyTorch eager (= 1)")
    if not layers and xlabel == "batch size":
        ax.set_xscale("log", base=2)
        batches = sorted({c["batch"] for c in data["configs"]})
        ax.set_xticks(batches, [str(b) for b in batches])
    if layers and names:
        step = max(1, len(names) // 24)
        ticks = list(range(0, len(names), step))
        ax.set_xticks(ticks, [short_layer_name(names[i]) for i in ticks], rotation=75, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("speedup over dense (higher is better)")
    models = _models_label(data["models"])
    threads = ", ".join(str(t) for t in sorted({c["threads"] for c in data["configs"]}))
    ax.set_title(f"sparsekit bench ({data['mode']}): {models}\n{machine['cpu']}, {threads} thread(s)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    missing = _not_measured(data)
    if missing:
        fig.text(0.01, 0.01, "not measured: " + "; ".join(missing)[:400], fontsize=6, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.06 if missing else 0, 1, 1))
    fig.savefig(path, dpi=120, format="png")
    return Path(path)
