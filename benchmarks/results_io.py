"""Where and how the benchmark scripts write their results: ``<stem>.json`` and ``<stem>.md``, by default under
``benchmarks/results/``, with the markdown report also printed.

The scripts import this module as ``results_io``: ``benchmarks/`` is on ``sys.path`` when a script runs as
``python benchmarks/<script>.py`` (Python puts the script's folder first), and the tests that import a script put
it there too (tests/benchmark_scripts.py).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

#: The committed results of the benchmark scripts.
RESULTS = Path(__file__).parent / "results"


def write_json(path: Path, data, *, indent: int = 2, final_newline: bool = True,
               default: Callable | None = None) -> Path:
    """Write ``json.dumps(data, indent=indent, default=default)`` to ``path`` (plus ``"\\n"`` when
    ``final_newline``), creating its folder; returns ``path``. The committed files use two layouts: indent 2 with a
    final newline, and indent 1 without one; each script keeps the layout of its committed file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent, default=default) + ("\n" if final_newline else ""))
    return path


def write_result(stem: Path, result: dict, markdown: str | list[str] | None = None, *, indent: int = 2,
                 final_newline: bool = True, default: Callable | None = None, quiet: bool = False) -> Path:
    """Write a benchmark's result: ``<stem>.json`` (see ``write_json`` for ``indent``, ``final_newline`` and
    ``default``) and, given ``markdown``, ``<stem>.md``, which is printed unless ``quiet``; returns the JSON path.

    ``stem`` is the path without a suffix, e.g. ``RESULTS / "attention_cpu"``: the suffixes are appended, so a stem
    ``runs/x.v2`` writes ``runs/x.v2.json``; a script whose ``--out`` may end in a suffix to replace
    (``--out runs/x.json`` -> ``runs/x.json`` and ``runs/x.md``) passes ``out.with_suffix("")``.

    ``markdown`` is the report's text (written as it is, printed with ``print``) or its lines (written joined by
    newlines with a final newline, printed joined, ``print`` adding the final newline).
    """
    json_path = write_json(stem.with_name(f"{stem.name}.json"), result, indent=indent, final_newline=final_newline,
                           default=default)
    if markdown is not None:
        text = markdown if isinstance(markdown, str) else "\n".join(markdown) + "\n"
        stem.with_name(f"{stem.name}.md").write_text(text)
        if not quiet:
            print(markdown if isinstance(markdown, str) else "\n".join(markdown))
    return json_path
