"""Where and how the benchmark scripts write their results: ``<stem>.json`` and ``<stem>.md``, by default under
``benchmarks/results/``, with the markdown report also printed.

The scripts import this module as ``results_io``: ``benchmarks/`` is on ``sys.path`` when a script runs as
``python benchmarks/<script>.py`` (Python puts the script's folder first), and the tests that import a script put
it there too (tests/benchmark_scripts.py).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sparsekit.machine import AVX2_LIMITS, cpu_flags, header, isa_limits

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


def add_timing_args(parser, *, threads: int = 2, rounds: int = 3, warmup: int = 3, repeats: int = 20,
                    min_seconds: float = 0.3) -> None:
    """The options of a script that times with ``sparsekit.timing.measure_interleaved``: ``--threads`` (torch
    threads), ``--rounds``, ``--warmup``, ``--repeats``, ``--min-seconds``."""
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--min-seconds", type=float, default=min_seconds)


def parse_kernel_args(parser, argv: list[str] | None):
    """Parse ``argv`` for a script that times sparsekit's C++ CPU kernels: refuses to run without them (SystemExit
    with the reason) and sets torch's thread count to ``--threads``."""
    import torch

    from sparsekit.kernels import cpu

    args = parser.parse_args(argv)
    if not cpu.available():
        raise SystemExit(f"the C++ kernels are not built: {cpu.unavailable_reason()}")
    torch.set_num_threads(args.threads)
    return args


def rows_result(script: str, argv: list[str] | None, *, isa: str, threads: int, rows: list) -> dict:
    """A result of per-shape rows: the machine and versions (``sparsekit.machine.header``), the command that ran
    ``benchmarks/<script>.py`` with ``argv`` (default: this process's arguments), the UTC date, the kernel ISA, the
    thread count and the rows."""
    return {**header(), "command": f"python benchmarks/{script}.py " + " ".join(argv or sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "isa": isa, "threads": threads, "rows": rows}


def header_lines(result: dict) -> list[str]:
    """The report lines under a title that name the command, the machine (CPU, cores, threads, flags, kernel ISA),
    the versions and the date of a result with ``command``, ``machine``, ``threads``, ``isa``, ``versions``,
    ``date``."""
    m = result["machine"]
    return [f"Command: `{result['command']}`  ",
            f"Machine: {m['cpu']}, {m['cores']} cores, {result['threads']} threads, flags "
            f"{' '.join(m['cpu_flags'])}, kernel ISA {result['isa']}  ",
            f"Versions: torch {result['versions']['torch']}, sparsekit {result['versions']['sparsekit']}  ",
            f"Date: {result['date']}"]


def timing_ms(r: dict) -> dict:
    """One variant's entry of a result file from a ``sparsekit.timing.measure`` result (seconds): ``median_ms``,
    ``p25_ms``, ``p75_ms``, ``runs`` and ``steal`` (the hypervisor's share of the CPU time while it was timed)."""
    return {"median_ms": 1e3 * r["median"], "p25_ms": 1e3 * r["p25"], "p75_ms": 1e3 * r["p75"], "runs": r["runs"],
            "steal": r.get("steal")}


def most_steal(timings: dict) -> float | None:
    """The largest ``steal`` among the entries of one interleaved timing (name -> :func:`timing_ms` entry)."""
    return max((t["steal"] for t in timings.values() if t.get("steal") is not None), default=None)


def steal_values(data) -> list[float]:
    """Every ``steal`` share recorded anywhere in a result (nested dicts and lists)."""
    if isinstance(data, dict):
        found = [data["steal"]] if isinstance(data.get("steal"), float) else []
        return found + [v for key, value in data.items() if key != "steal" for v in steal_values(value)]
    if isinstance(data, list):
        return [v for value in data for v in steal_values(value)]
    return []


def steal_lines(result: dict) -> list[str]:
    """Markdown lines stating the hypervisor's steal during a result's timed calls (none for results that did not
    record it): on a shared virtual machine this is what moves the same ratio between runs."""
    values = sorted(steal_values(result))
    if not values:
        return []
    median = values[len(values) // 2]
    return [f"Hypervisor steal while timing (the share of this machine's CPU time given to other guests): median "
            f"{100 * median:.1f}%, at most {100 * values[-1]:.1f}%"
            + (" -- a shared machine: ratios from such a run move more than usual." if values[-1] > 0.05 else "."),
            ""]


#: ``--isa`` choices of the timing scripts: ``native`` (what the CPU has) or ``avx2`` (every engine that can be
#: limited runs AVX2 + FMA: a stand-in for an AVX2-only CPU's instruction set, see sparsekit.machine.AVX2_LIMITS).
ISAS = ("native", "avx2")


def run_with_isa(isa: str, argv: list[str] | None = None) -> None:
    """Make this script run under ``isa``: for ``avx2``, re-run it (same arguments) in a fresh process started with
    :data:`sparsekit.machine.AVX2_LIMITS` (the engines read them when they start), unless this process already runs
    under them. ``native`` runs as is (a limit set by hand is recorded by the result header's ``isa_limits``).
    ``argv``: the script's arguments when they are not ``sys.argv[1:]``."""
    if isa == "native" or isa_limits() == AVX2_LIMITS:
        return
    if "avx2" not in cpu_flags() or "fma" not in cpu_flags():
        sys.exit("--isa avx2: this CPU lacks AVX2 / FMA")
    args = sys.argv[1:] if argv is None else list(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, sys.argv[0], *args], {**os.environ, **AVX2_LIMITS})


def isa_limit_lines(machine: dict) -> list[str]:
    """Markdown lines saying that a result ran under instruction-set limits (none when it did not)."""
    limits = machine.get("isa_limits") or {}
    if not limits:
        return []
    what = ("this machine ran the instruction set of an AVX2-only CPU, not its microarchitecture (cache sizes, "
            "ports, clocks), so the ratios stand in for an AVX2 machine's without equalling them"
            if limits == AVX2_LIMITS else "only the engines named were limited; the others used what the CPU has")
    return [f"**Instruction set limited** ({', '.join(f'{k}={v}' for k, v in limits.items())}; ATen kernels: "
            f"{machine.get('aten_isa')}): {what}. ONNX Runtime and fbgemm cannot be limited and are not timed.", ""]
