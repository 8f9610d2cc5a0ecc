"""Result files of ``sparsekit bench``: the JSON document (schema below), the CSV, and the refusal to overwrite.

JSON document (``bench.json``), ``schema_version`` 1::

    {"schema_version": 1, "kind": "sparsekit-bench", "mode": "model" | "layers",
     "created": ISO time, "elapsed_s": float, "command": [str, ...],
     "load_average": {"start": [1, 5, 15 min], "end": [...]},   # other load on the machine
     "header": sparsekit.machine.header(),            # machine (CPU, flags, cores, GPU) + versions
     "settings": BenchConfig.to_json(),               # sweeps, warm-up, repeats, rounds, seed, ...
     "variants": {name: description},                 # what each variant runs (model mode)
     "models": [{"id", "kind", "source", "sparsity", "density", "vocab_size", "max_positions", "task_type",
                 "dense_reference": {"how", ...}}],                # task_type: export/heads.py (absent in old files)
     "configs": [{"id": "MODEL b8 s128 t2", "model", "sparsity", "density", "batch", "seq", "threads", "tokens",
                  "compile": {"tokens", "threads", "setup_s", "backends_chosen": {backend: layers},
                              "layers": [{"name", "shape", "density", "backend", "why", "speedup",
                                          "timings_ms": {backend: ms}, "rejected": {backend: [reason]}}]},
                  "variants": {name: {"status": "ok", "description", "median_ms", "p25_ms", "p75_ms", "min_ms",
                                      "mean_ms", "runs", "round_medians_ms", "seq_per_s", "tokens_per_s",
                                      "speedup", "max_abs_diff", "setup_s", "first_call_s", "info", "steal"}
                                    | {"status": "skipped" | "unavailable" | "failed", "reason", "description"}}}]}

``variants`` is present in model mode only; in layer mode the ``compile.layers`` timings are the result.
``steal``: the largest share of the machine's CPU time the hypervisor took during one of the variant's timed rounds
(sparsekit.timing.measure; null where unknown; absent in old files).
"""
from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from sparsekit.errors import SparsekitError

SCHEMA_VERSION = 1
KIND = "sparsekit-bench"
FILES = {"json": "bench.json", "csv": "bench.csv", "png": "bench.png"}

MODEL_CSV_COLUMNS = ("model", "sparsity", "density", "batch", "seq", "threads", "tokens", "variant", "status",
                     "median_ms", "p25_ms", "p75_ms", "min_ms", "mean_ms", "runs", "seq_per_s", "tokens_per_s",
                     "speedup", "max_abs_diff", "setup_s", "steal", "reason")
LAYER_CSV_COLUMNS = ("model", "sparsity", "density", "batch", "seq", "threads", "tokens", "layer", "out_features",
                     "in_features", "layer_density", "backend", "median_ms", "speedup", "chosen")
CONFIG_KEYS = ("id", "model", "sparsity", "density", "batch", "seq", "threads", "tokens", "compile")


class ResultFileError(SparsekitError, ValueError):
    """A file that is not a sparsekit bench result of a schema this version reads."""


def config_id(model: str, batch: int, seq: int, threads: int) -> str:
    """The key that matches configs across result files: ``"MODEL b8 s128 t2"``."""
    return f"{model} b{batch} s{seq} t{threads}"


def output_paths(output_dir: str | Path) -> dict[str, Path]:
    """``{"json": OUTDIR/bench.json, "csv": ..., "png": ...}``."""
    return {kind: Path(output_dir) / name for kind, name in FILES.items()}


def check_free(paths: dict[str, Path] | list[Path], overwrite: bool) -> None:
    """FileExistsError naming the files that exist, unless ``overwrite``; also refuses a file as OUTDIR."""
    paths = list(paths.values()) if isinstance(paths, dict) else list(paths)
    for p in paths:
        if p.parent.exists() and not p.parent.is_dir():
            raise FileExistsError(f"{p.parent} is a file; the output must be a directory")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")


def document(config, models: list[dict], entries: list[dict], command: list[str] | None, elapsed: float) -> dict:
    """The JSON result document of a finished run (schema in the module docstring)."""
    from sparsekit.bench.config import VARIANT_DESCRIPTIONS
    from sparsekit.machine import header

    return {"schema_version": SCHEMA_VERSION, "kind": KIND, "mode": "layers" if config.layers else "model",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "elapsed_s": elapsed,
            "command": list(command) if command is not None else list(sys.argv), "header": header(),
            "settings": config.to_json(), "variants": {} if config.layers else dict(VARIANT_DESCRIPTIONS),
            "models": models, "configs": entries}


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_rows(data: dict) -> tuple[tuple[str, ...], list[dict]]:
    """(columns, rows): one row per config x variant (model mode) or config x layer x backend (layer mode)."""
    rows = []
    for c in data["configs"]:
        base = {k: c[k] for k in ("model", "sparsity", "density", "batch", "seq", "threads", "tokens")}
        if data["mode"] == "layers":
            for layer in c["compile"]["layers"]:
                dense_ms = layer["timings_ms"].get("dense")
                for backend, ms in layer["timings_ms"].items():
                    rows.append({**base, "layer": layer["name"], "out_features": layer["shape"][0],
                                 "in_features": layer["shape"][1], "layer_density": layer["density"],
                                 "backend": backend, "median_ms": ms,
                                 "speedup": dense_ms / ms if dense_ms else None,
                                 "chosen": backend == layer["backend"]})
        else:
            for name, s in c["variants"].items():
                rows.append({**base, "variant": name, **{k: s.get(k) for k in MODEL_CSV_COLUMNS[8:]}})
    return (LAYER_CSV_COLUMNS if data["mode"] == "layers" else MODEL_CSV_COLUMNS), rows


def write_csv(data: dict, path: Path) -> None:
    """The CSV view of a result document (see csv_rows)."""
    columns, rows = csv_rows(data)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in columns} for r in rows)

    _atomic_write(path, write)


def write(data: dict, paths: dict[str, Path]) -> None:
    """Write the JSON, the CSV and the PNG plot of ``data`` (paths from output_paths)."""
    from sparsekit.bench.plot import plot

    data = {**data, "files": {k: str(p) for k, p in paths.items()}}
    _atomic_write(paths["json"], lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))
    write_csv(data, paths["csv"])
    _atomic_write(paths["png"], lambda tmp: plot(data, tmp))


def load(path: str | Path) -> dict:
    """Read and check a result file; ResultFileError / FileNotFoundError with a clear message otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a bench.json written by `sparsekit bench`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ResultFileError(f"{path} is not a sparsekit bench result (no \"kind\": \"{KIND}\")")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ResultFileError(f"{path} has schema_version {data.get('schema_version')!r}; this sparsekit reads "
                              f"{SCHEMA_VERSION}")
    if data.get("mode") not in ("model", "layers") or not isinstance(data.get("configs"), list):
        raise ResultFileError(f"{path} has no valid \"mode\" / \"configs\"")
    for c in data["configs"]:
        missing = [k for k in CONFIG_KEYS if k not in c]
        if data["mode"] == "model" and "variants" not in c:
            missing.append("variants")
        if missing:
            raise ResultFileError(f"{path}: config {c.get('id', '?')!r} lacks {missing}")
    return data
