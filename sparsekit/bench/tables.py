"""Rich tables of a bench result document: one row per config x variant, or per encoder Linear (layer mode)."""
from __future__ import annotations

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from sparsekit.architectures import ALL_ARCHITECTURES, MATRIX_SHORT, match_name
from sparsekit.machine import STEAL_WARNING


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _config_label(c: dict, several_models: bool) -> str:
    label = f"{c['batch']}x{c['seq']} t{c['threads']}"
    return f"{c['model']} {label}" if several_models else label


def model_table(data: dict) -> Table:
    """Latency (median, p25-p75), throughput and speedup over dense per config x variant (reasons: notes())."""
    m = data["header"]["machine"]
    models = sorted({c["model"] for c in data["configs"]})
    table = Table(title=f"sparsekit bench {', '.join(models)}: {m['cpu']}, {m['cores']} cores\n"
                        f"config = batch x seq, threads; speedup over dense PyTorch eager")
    for col, justify in (("config", "left"), ("variant", "left"), ("median ms", "right"), ("p25-p75 ms", "right"),
                         ("seq/s", "right"), ("speedup", "right"), ("max |Δ|", "right")):
        table.add_column(col, justify=justify)
    for c in data["configs"]:
        first = True
        for name, s in c["variants"].items():
            cells = [escape(_config_label(c, len(models) > 1)) if first else "", name]
            if s["status"] == "ok":
                cells += [f"{s['median_ms']:.2f}", f"{s['p25_ms']:.2f}-{s['p75_ms']:.2f}", f"{s['seq_per_s']:.1f}",
                          f"{s['speedup']:.2f}x", _fmt(s["max_abs_diff"], ".0e")]
            else:
                cells += [f"[dim]{s['status']}[/]", "", "", "", ""]
            table.add_row(*cells)
            first = False
        table.add_section()
    return table


def max_steal(data: dict) -> float | None:
    """The largest steal share of any measured variant of a bench document (None when none was recorded)."""
    values = [s["steal"] for c in data["configs"] for s in c.get("variants", {}).values()
              if s.get("steal") is not None]
    return max(values, default=None)


def notes(data: dict) -> list[str]:
    """Plain-text lines under the table: why variants were not measured, and sparsekit.compile's choices."""
    lines, seen = [], set()
    load, cores = (data.get("load_average") or {}).get("start"), data["header"]["machine"]["cores"]
    if load and cores and load[0] > 0.5 * cores:
        lines.append(f"warning: load average {load[0]} at the start on {cores} cores: other work was running, "
                     f"timings may be disturbed (see the p25-p75 spread)")
    limits = data["header"]["machine"].get("isa_limits")
    if limits:
        lines.append("instruction set limited (" + ", ".join(f"{k}={v}" for k, v in limits.items()) + "): the engines "
                     "that read these variables ran at that instruction set; ONNX Runtime has no such switch and used "
                     "what the CPU has")
    steal = max_steal(data)
    if steal is not None and steal > STEAL_WARNING:
        lines.append(f"warning: the hypervisor took up to {100 * steal:.0f}% of this machine's CPU time while it was "
                     f"timed (steal): a shared virtual machine, whose timings drift from run to run")
    for c in data["configs"]:
        for name, s in c.get("variants", {}).items():
            if s["status"] != "ok" and (name, s["reason"]) not in seen:
                seen.add((name, s["reason"]))
                lines.append(f"{name} {s['status']}: {s['reason']}")
    for c in data["configs"]:
        chosen = ", ".join(f"{k} {v}" for k, v in c["compile"]["backends_chosen"].items())
        lines.append(f"sparsekit.compile for {c['id']} ({c['tokens']} tokens): {chosen} layers")
    return lines


def short_layer_name(name: str) -> str:
    """``bert.encoder.layer.3.intermediate.dense`` / ``layers.3.ffn_in`` -> ``L3 FFN-in`` (else the name)."""
    hit = match_name(name, ALL_ARCHITECTURES)
    return f"L{hit[0]} {MATRIX_SHORT[hit[1]]}" if hit else name


def layer_table(data: dict) -> Group:
    """Per config, per encoder Linear: shape, density, median ms of every backend, the chosen one, its speedup."""
    backends = []
    for c in data["configs"]:
        for layer in c["compile"]["layers"]:
            backends += [b for b in layer["timings_ms"] if b not in backends]
    tables = []
    for c in data["configs"]:
        table = Table(title=f"{escape(c['id'])}: median ms per backend (sparsekit.compile's measurements)")
        for col in ("layer", "shape", "density", *backends, "chosen", "speedup"):
            table.add_column(col, justify="left" if col in ("layer", "chosen") else "right")
        for layer in c["compile"]["layers"]:
            ms = [_fmt(layer["timings_ms"].get(b), ".3f") for b in backends]
            table.add_row(short_layer_name(layer["name"]), f"{layer['shape'][0]}x{layer['shape'][1]}",
                          f"{100 * layer['density']:.1f}%", *ms, layer["backend"], f"{layer['speedup']:.2f}x")
        tables.append(table)
    return Group(*tables)


def result_table(data: dict) -> Table | Group:
    """The table that fits the document's mode."""
    return layer_table(data) if data["mode"] == "layers" else model_table(data)
