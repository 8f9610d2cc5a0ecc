"""The erf GELU of sparsekit's fused epilogues (``csrc/spmm_cpu/vec_math.inc``) against PyTorch's, speed and accuracy.

Every sparse Linear of the fused runtime with a GELU (BERT's FFN-in, fp32 and int8) applies it in its epilogue, so its
cost is part of every forward. This script times the epilogue pass alone, ``sparsekit._C_cpu.epilogue_rows`` (what
the dense Linear of the runtime runs; the sparse kernels run the same ``vact`` on their output registers) with the
erf GELU (``gelu``) and with no activation (``copy``: its out-of-place copy, the part that is not the GELU), against
``torch.nn.functional.gelu`` on the same float32 tensor, interleaved, on FFN-in shapes (tokens x 3072). Accuracy:
the largest absolute difference from the exact GELU (float64) on a grid of [-12, 12], for both.

Writes ``benchmarks/results/epilogue_cpu.{json,md}`` (or ``--out``) with the machine, ISA, versions and the command.

    python benchmarks/epilogue_cpu.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sparsekit.kernels import cpu
from sparsekit.timing import measure_interleaved

from results_io import (RESULTS, add_timing_args, header_lines, parse_kernel_args, rows_result, steal_lines,
                        timing_ms, write_result)  # benchmarks/ is on sys.path when run as a script

GELU, NONE = 1, 0  # the op's activation codes (sparsekit.kernels.encoder.ACTIVATIONS)


def accuracy(isa: str) -> dict:
    """Max |GELU(x) - exact| over 480001 points of [-12, 12]: sparsekit's epilogue and torch's fp32 GELU."""
    x = torch.linspace(-12, 12, 480001)
    exact = F.gelu(x.double())
    ours = cpu._EXT.load().epilogue_rows(x[None, :], GELU, None, isa)[0].double()
    return {"sparsekit_max_abs_err": float((ours - exact).abs().max()),
            "torch_max_abs_err": float((F.gelu(x).double() - exact).abs().max())}


def bench(args, isa: str) -> list[dict]:
    ext = cpu._EXT.load()
    rows = []
    for tokens in args.tokens:
        y = torch.randn(tokens, args.width, generator=torch.Generator().manual_seed(tokens))
        t = measure_interleaved({"sparsekit_gelu": lambda y=y: ext.epilogue_rows(y, GELU, None, isa),
                                 "sparsekit_copy": lambda y=y: ext.epilogue_rows(y, NONE, None, isa),
                                 "torch_gelu": lambda y=y: F.gelu(y)},
                                rounds=args.rounds, warmup=args.warmup, repeats=args.repeats,
                                min_seconds=args.min_seconds)
        timings = {k: timing_ms(v) for k, v in t.items()}
        ours, copy, torch_ms = (timings[k]["median_ms"] for k in ("sparsekit_gelu", "sparsekit_copy", "torch_gelu"))
        rows.append({"tokens": tokens, "width": args.width, "timings": timings,
                     "vs_torch": torch_ms / ours, "gelu_only_vs_torch": torch_ms / max(ours - copy, 1e-9)})
        print(f"{tokens}x{args.width}: sparsekit {ours:.3f} ms (copy {copy:.3f}), torch {torch_ms:.3f} ms",
              file=sys.stderr, flush=True)
    return rows


def markdown(result: dict) -> str:
    acc = result["accuracy"]
    lines = ["# The erf GELU epilogue vs PyTorch's GELU (CPU, float32)", "", *header_lines(result), "",
             *steal_lines(result),
             "Medians of interleaved rounds. `sparsekit` = `_C_cpu.epilogue_rows(y, gelu)` (out of place: a copy, "
             "then the GELU); `copy` = the same with no activation; `torch` = `F.gelu(y)`.", "",
             "| y (tokens x width) | sparsekit ms | copy ms | torch ms | torch / sparsekit "
             "| torch / (sparsekit - copy) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        t = r["timings"]
        lines.append(f"| {r['tokens']}x{r['width']} | {t['sparsekit_gelu']['median_ms']:.3f} | "
                     f"{t['sparsekit_copy']['median_ms']:.3f} | {t['torch_gelu']['median_ms']:.3f} | "
                     f"{r['vs_torch']:.2f}x | {r['gelu_only_vs_torch']:.2f}x |")
    lines += ["", f"Accuracy on [-12, 12] against the exact GELU (float64): sparsekit max |error| "
                  f"{acc['sparsekit_max_abs_err']:.3g}, torch float32 {acc['torch_max_abs_err']:.3g}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--width", type=int, default=3072)
    ap.add_argument("--out", type=Path, default=RESULTS / "epilogue_cpu")
    add_timing_args(ap, repeats=50)
    args = parse_kernel_args(ap, argv)
    isa = cpu.isa()
    rows = bench(args, isa)
    result = rows_result("epilogue_cpu", argv, isa=isa, threads=args.threads, rows=rows)
    result["accuracy"] = accuracy(isa)
    write_result(args.out.with_suffix(""), result, markdown(result))


if __name__ == "__main__":
    main()
