"""``sparsekit bench --compare A.json B.json``: ratios between two result files, matched by config.

Configs match by id (``MODEL b8 s128 t2``); in model mode each variant measured in both files gives a row
with both medians and ``A / B`` (> 1: B is faster), next to each file's speedup over its own dense run.
In layer mode the rows are per config x encoder Linear x backend. Configs present in only one file are
listed, never silently dropped; when nothing matches, ValueError says what each file holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sparsekit.bench.results import ResultFileError, check_free, load


@dataclass
class Comparison:
    """Matched rows and what did not match. Row keys: config, item (variant or ``layer / backend``), a_ms, b_ms,
    ratio (a_ms / b_ms), a_speedup, b_speedup (each over its own dense; None in layer mode)."""

    a: str
    b: str
    mode: str
    rows: list[dict]
    only_a: list[str]
    only_b: list[str]
    notes: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def table(self):
        """A rich Table of the rows."""
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"B vs A: A = {self.a}, B = {self.b} (A/B > 1: B is faster)")
        for col, justify in (("config", "left"), ("variant" if self.mode == "model" else "layer / backend", "left"),
                             ("A ms", "right"), ("B ms", "right"), ("A/B", "right"), ("A speedup", "right"),
                             ("B speedup", "right")):
            table.add_column(col, justify=justify)
        for r in self.rows:
            table.add_row(*(escape(cell) for cell in self._cells(r)))
        return table

    @staticmethod
    def _cells(r: dict) -> list[str]:
        sp = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        return [r["config"], r["item"], f"{r['a_ms']:.3f}", f"{r['b_ms']:.3f}", f"{r['ratio']:.3f}",
                sp(r["a_speedup"]), sp(r["b_speedup"])]

    def lines(self) -> list[str]:
        """Plain-text notes: the machines, configs only in one file, variants measured in only one."""
        out = [f"{k}: {v}" for k, v in self.headers.items()]
        if self.only_a:
            out.append(f"only in A ({len(self.only_a)} configs, not compared): {', '.join(self.only_a)}")
        if self.only_b:
            out.append(f"only in B ({len(self.only_b)} configs, not compared): {', '.join(self.only_b)}")
        return out + self.notes

    def markdown(self) -> str:
        """The comparison as a markdown document (table plus notes)."""
        item = "variant" if self.mode == "model" else "layer / backend"
        head = ["config", item, "A ms", "B ms", "A/B", "A speedup", "B speedup"]
        rows = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 5) + "|"]
        rows += ["| " + " | ".join(self._cells(r)) + " |" for r in self.rows]
        notes = [f"- {line}" for line in self.lines()]
        return "\n".join([f"# sparsekit bench: B vs A\n\nA = `{self.a}`, B = `{self.b}`; A/B > 1 means B is "
                          f"faster.\n", *rows, "", *notes]) + "\n"

    def write_markdown(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write markdown() to ``path``; FileExistsError if it exists and not ``overwrite``."""
        path = Path(path)
        check_free([path], overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown())
        return path


_ABSENT = (None, None, "absent")


def _describe(data: dict) -> str:
    m, v = data["header"]["machine"], data["header"]["versions"]
    return (f"{m['cpu']}, {m['cores']} cores, gpu {m['gpu']['name'] if m.get('gpu') else 'none'}; "
            f"torch {v['torch']}, sparsekit {v['sparsekit']}; created {data.get('created')}")


def _items(config: dict, mode: str) -> dict[str, tuple[float | None, float | None, str]]:
    """item -> (ms or None, speedup or None, status) for one config."""
    if mode == "layers":
        return {f"{layer['name']} / {backend}": (ms, None, "ok")
                for layer in config["compile"]["layers"] for backend, ms in layer["timings_ms"].items()}
    return {name: (s.get("median_ms"), s.get("speedup"), s["status"]) for name, s in config["variants"].items()}


def compare(a: dict, b: dict, a_name: str = "A", b_name: str = "B") -> Comparison:
    """Compare two loaded result documents (see results.load). ValueError if their modes differ or no
    config matches."""
    if a["mode"] != b["mode"]:
        raise ResultFileError(f"{a_name} is a {a['mode']}-mode result and {b_name} a {b['mode']}-mode result; "
                              f"compare files of the same mode")
    ca = {c["id"]: c for c in a["configs"]}
    cb = {c["id"]: c for c in b["configs"]}
    shared = [k for k in ca if k in cb]
    only_a, only_b = [k for k in ca if k not in cb], [k for k in cb if k not in ca]
    if not shared:
        raise ValueError(f"no config of {a_name} matches one of {b_name} (configs match by model, batch, seq and "
                         f"threads): {a_name} has {sorted(ca) or 'none'}; {b_name} has {sorted(cb) or 'none'}")
    rows, notes = [], []
    for key in shared:
        ia, ib = _items(ca[key], a["mode"]), _items(cb[key], b["mode"])
        for item in list(ia) + [k for k in ib if k not in ia]:
            ms_a, sp_a, st_a = ia.get(item, _ABSENT)
            ms_b, sp_b, st_b = ib.get(item, _ABSENT)
            if ms_a is None or ms_b is None:
                if st_a != st_b:
                    notes.append(f"{key} {item}: {st_a} in A, {st_b} in B (not compared)")
                continue
            rows.append({"config": key, "item": item, "a_ms": ms_a, "b_ms": ms_b, "ratio": ms_a / ms_b,
                         "a_speedup": sp_a, "b_speedup": sp_b})
    return Comparison(a_name, b_name, a["mode"], rows, only_a, only_b, sorted(notes),
                      {"A": _describe(a), "B": _describe(b)})


def compare_files(a: str | Path, b: str | Path) -> Comparison:
    """Load two result files and compare them (FileNotFoundError / ResultFileError / ValueError if impossible)."""
    return compare(load(a), load(b), str(a), str(b))
