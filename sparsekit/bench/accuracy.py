"""Multi-seed accuracy tables: per-configuration statistics, "A >= B" checks against the seed spread, and the
JSON / markdown / PNG writers of ``benchmarks/accuracy.py``.

A *row* is one finished run: ``{"method", "target_keep", "seed", "density", "metrics": {name: value},
"train_seconds", "wall_seconds", "steps", "run_dir", "resumed_from"}`` and optionally ``"sittings"`` and
``"threads"`` (the torch thread counts its sittings trained on), ``"machine"`` (the CPU that trained it) and
``"reused_from"`` (the earlier results file it was taken from); metric values are fractions, e.g. accuracy 0.83.
A *configuration* is a (method, target_keep) pair; its rows differ only in the seed.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def summarize(values: list[float]) -> dict:
    """``{"n", "mean", "std", "values"}`` of the per-seed ``values``; ``std`` is the sample std (n-1 in the
    denominator), ``None`` for a single value (no spread measured)."""
    if not values:
        raise ValueError("summarize needs at least one value")
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else None
    return {"n": len(arr), "mean": float(arr.mean()), "std": std, "values": [float(v) for v in arr]}


def compare(a: list[float], b: list[float]) -> dict:
    """Whether configuration A's values exceed B's by more than the seed spread.

    Returns ``{"difference": mean_a - mean_b, "spread": max(std_a, std_b), "exceeds_spread":
    |difference| > spread, "p_value": Welch's two-sided t-test (None with fewer than 2 values on a side or
    no variance at all), "verdict"}``. verdict is ``"supported"`` (A > B beyond the spread),
    ``"contradicted"`` (B > A beyond the spread), ``"within spread"``, or ``"no spread measured"`` (a side has
    one value, so no std).
    """
    sa, sb = summarize(a), summarize(b)
    difference = sa["mean"] - sb["mean"]
    if sa["std"] is None or sb["std"] is None:
        return {"difference": difference, "spread": None, "exceeds_spread": None, "p_value": None,
                "verdict": "no spread measured"}
    from scipy import stats

    spread = max(sa["std"], sb["std"])
    exceeds = abs(difference) > spread
    p_value = None
    if sa["std"] > 0 or sb["std"] > 0:
        p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    verdict = "within spread" if not exceeds else ("supported" if difference > 0 else "contradicted")
    return {"difference": difference, "spread": spread, "exceeds_spread": exceeds, "p_value": p_value,
            "verdict": verdict}


def configurations(rows: list[dict], metric_names: list[str]) -> list[dict]:
    """One entry per (method, target_keep), in first-seen order: its seeds, ``summarize`` of every metric in
    ``metric_names`` and of density, and the per-seed wall and train seconds."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["target_keep"]), []).append(row)
    out = []
    for (method, keep), members in groups.items():
        members = sorted(members, key=lambda r: r["seed"])
        entry = {"method": method, "target_keep": keep, "seeds": [r["seed"] for r in members],
                 "density": summarize([r["density"] for r in members]),
                 "wall_seconds": [r["wall_seconds"] for r in members],
                 "train_seconds": [r["train_seconds"] for r in members],
                 "threads": [r.get("threads") for r in members]}
        entry["metrics"] = {name: summarize([r["metrics"][name] for r in members]) for name in metric_names
                            if all(name in r["metrics"] for r in members)}
        out.append(entry)
    return out


def _values(configs: list[dict], method: str, keep: float, metric: str) -> list[float] | None:
    for c in configs:
        if c["method"] == method and math.isclose(c["target_keep"], keep) and metric in c["metrics"]:
            return c["metrics"][metric]["values"]
    return None


def inequality_checks(configs: list[dict], metric: str, chain: tuple[str, ...] = ("smp-s", "movement", "magnitude"),
                      keeps: tuple[float, ...] = (0.1, 0.03)) -> list[dict]:
    """Each adjacent "A >= B" of ``chain`` at each keep where both configurations ran: ``compare`` of their
    ``metric`` values plus ``{"claim", "keep", "metric", "a", "b"}``. A claim is supported by the data only
    when the verdict is "supported"."""
    checks = []
    for keep in keeps:
        for a, b in zip(chain, chain[1:]):
            va, vb = _values(configs, a, keep, metric), _values(configs, b, keep, metric)
            if va is None or vb is None:
                continue
            checks.append({"claim": f"{a} >= {b} @{keep:.0%}", "keep": keep, "metric": metric, "a": a, "b": b,
                           **compare(va, vb)})
    return checks


def closeness_checks(configs: list[dict], metric: str, targets: list[tuple[str, float, float]]) -> list[dict]:
    """Targets "METHOD at KEEP within MARGIN of the dense fine-tune" on the means of ``metric``
    (margin as a fraction, 0.01 = 1 point): ``{"target", "met", "difference", "dense_std", "method_std"}``."""
    dense = _values(configs, "finetune", 1.0, metric)
    checks = []
    if dense is None:
        return checks
    d = summarize(dense)
    for method, keep, margin in targets:
        values = _values(configs, method, keep, metric)
        if values is None:
            continue
        s = summarize(values)
        diff = s["mean"] - d["mean"]
        checks.append({"target": f"{method} @{keep:.0%} within {100 * margin:.1f} {metric} points of dense",
                       "met": diff >= -margin, "difference": diff, "dense_std": d["std"], "method_std": s["std"]})
    return checks


def _pm(s: dict) -> str:
    std = "n/a" if s["std"] is None else f"{100 * s['std']:.2f}"
    return f"{100 * s['mean']:.2f} ± {std}"


def to_markdown(result: dict) -> str:
    """The report: header (command, machine, versions, budget, seeds), one table row per configuration with
    mean ± std and every per-seed value of each metric, the closeness targets and the inequality checks."""
    m, v = result["machine"], result["versions"]
    metrics = result["metric_names"]
    lines = [f"# {result['task'].upper()} dev {' / '.join(metrics)} vs remaining weights "
             f"(MiniLM-L6, {result['budget']})", "",
             f"Command: `{result['command']}`  ",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, GPU: {m['gpu']}  ",
             f"Versions: torch {v['torch']}, transformers {v['transformers']}, sparsekit {v['sparsekit']}  ",
             f"Seeds: {', '.join(str(s) for s in result['seeds'])}; mean ± sample std (n-1) over seeds, "
             f"per-seed values in seed order  ", f"Date: {result['date']}", ""]
    if result.get("note"):
        lines += [result["note"], ""]
    header = "| method | target remaining | measured remaining | " + " | ".join(
        f"{name} mean ± std | {name} per seed" for name in metrics) + " | wall time per seed |"
    lines += [header, "|---|---:|---:|" + "---:|---|" * len(metrics) + "---|"]
    for c in result["configurations"]:
        cells = []
        for name in metrics:
            s = c["metrics"].get(name)
            cells += ["—", "—"] if s is None else [_pm(s), ", ".join(f"{100 * x:.2f}" for x in s["values"])]
        # None: a row finished outside the benchmark (no wall record).
        wall = ", ".join("n/a" if w is None else f"{w / 60:.1f}" for w in c["wall_seconds"]) + " min"
        lines.append(f"| {c['method']} | {100 * c['target_keep']:g}% | {100 * c['density']['mean']:.2f}% | "
                     + " | ".join(cells) + f" | {wall} |")
    other = [f"{c['method']} @{100 * c['target_keep']:g}% seed {seed}: {'/'.join(map(str, t))}"
             for c in result["configurations"] for seed, t in zip(c["seeds"], c.get("threads") or [])
             if t and t != [m["torch_threads"]]]
    if other:
        lines += ["", "Rows trained on other torch thread counts than the header's (wall times not comparable with "
                      "the others'): " + "; ".join(other) + "."]
    by_machine: dict[str, list[str]] = {}
    rows = result.get("rows", [])
    for r in rows:
        by_machine.setdefault(r.get("machine") or m["cpu"], []).append(
            f"{r['method']} @{100 * r['target_keep']:g}% seed {r['seed']}")
    if len(by_machine) > 1:
        lines += ["", "Rows were trained on different machines (pruning trajectories, hence metrics and wall times, "
                      "differ between CPUs): " + "; ".join(f"**{cpu}**: {', '.join(names)}"
                                                            for cpu, names in by_machine.items()) + "."]
    reused = sorted({r["reused_from"] for r in rows if r.get("reused_from")})
    if reused:
        lines += ["", "Rows taken from an earlier results file of this table (their run directories were not on the "
                      "machine that wrote this report): " + "; ".join(
                          f"`{src}`: " + ", ".join(f"{r['method']} @{100 * r['target_keep']:g}% seed {r['seed']}"
                                                  for r in rows if r.get("reused_from") == src)
                          for src in reused) + "."]
    if result["closeness"]:
        lines += ["", "| target (means) | met | difference | dense std | method std |", "|---|---|---:|---:|---:|"]
        for t in result["closeness"]:
            std = ["n/a" if x is None else f"{100 * x:.2f}" for x in (t["dense_std"], t["method_std"])]
            lines.append(f"| {t['target']} | {'yes' if t['met'] else 'NO'} | {100 * t['difference']:+.2f} | "
                         f"{std[0]} | {std[1]} |")
    if result["inequalities"]:
        lines += ["", "An inequality A ≥ B is *supported* when mean A − mean B exceeds the larger of the two "
                      "seed stds; the p-value is Welch's two-sided t-test.", "",
                  "| claim | metric | mean A − mean B | larger std | Welch p | supported by the data |",
                  "|---|---|---:|---:|---:|---|"]
        for c in result["inequalities"]:
            spread = "n/a" if c["spread"] is None else f"{100 * c['spread']:.2f}"
            p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3f}"
            verdict = "yes" if c["verdict"] == "supported" else f"no ({c['verdict']})"
            lines.append(f"| {c['claim']} | {c['metric']} | {100 * c['difference']:+.2f} | {spread} | {p} | "
                         f"{verdict} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    """PNG of each metric vs target remaining: every seed as a point, the mean with a ±std error bar per
    method, the dense fine-tune as a horizontal line with a ±std band. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = result["metric_names"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
    configs = result["configurations"]
    methods = [m for m in dict.fromkeys(c["method"] for c in configs) if m != "finetune"]
    keeps = sorted({c["target_keep"] for c in configs if c["method"] != "finetune"}, reverse=True)
    for ax, name in zip(axes[0], metrics):
        for c in configs:
            if c["method"] == "finetune" and name in c["metrics"]:
                s = c["metrics"][name]
                ax.axhline(100 * s["mean"], color="black", lw=1, label="dense fine-tune")
                if s["std"] is not None:
                    ax.axhspan(100 * (s["mean"] - s["std"]), 100 * (s["mean"] + s["std"]), color="black",
                               alpha=0.1)
        width = 0.8 / max(1, len(methods))
        for i, method in enumerate(methods):
            xs, means, stds = [], [], []
            for c in configs:
                if c["method"] != method or name not in c["metrics"]:
                    continue
                x = keeps.index(c["target_keep"]) + (i - (len(methods) - 1) / 2) * width
                s = c["metrics"][name]
                ax.scatter([x] * len(s["values"]), [100 * y for y in s["values"]], s=12, alpha=0.6,
                           color=f"C{i}")
                xs.append(x)
                means.append(100 * s["mean"])
                stds.append(0.0 if s["std"] is None else 100 * s["std"])
            ax.errorbar(xs, means, yerr=stds, fmt="_", ms=14, capsize=4, color=f"C{i}", label=method)
        ax.set_xticks(range(len(keeps)), [f"{100 * k:g}%" for k in keeps])
        ax.set_xlabel("target remaining encoder weights")
        ax.set_ylabel(f"dev {name} (%)")
        ax.set_title(f"{result['task'].upper()}: {name}, seeds {', '.join(str(s) for s in result['seeds'])}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
