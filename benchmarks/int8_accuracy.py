"""INT8 + 1x4 blocks, accuracy (issue 16): one block-pruned run, exported fp32 and int8, evaluated on the dev set.

For the finished rows of ``benchmarks/accuracy.py`` (default: SST-2, same CPU budget, SMP-S at 10% remaining,
``runs/accuracy/sst2-cpu/seed<S>/smp-s-b1x4-0.1`` and its unstructured twin ``smp-s-0.1``), per seed:

- ``fp32``: the block run exported with exact compaction (fp32), compiled (fused runtime), dev accuracy;
- ``int8 artifact``: the same run exported with ``--precision int8 --int8-weight-bits 8`` (int8 weights per row
  stored in 1x4 blocks) and compiled (its stored ints run on the int8 kernel; activations quantised per token), dev
  accuracy;
- ``int8 7-bit``: the same with ``--int8-weight-bits 7`` (weights in [-63, 63], the width the AVX2 / AVX-512BW
  kernels run faster and compile picks on such CPUs);
- ``unstructured``: the unstructured SMP-S row at the same remaining fraction and budget, fp32 (the cost of the
  block constraint), when that run is here (``--block 1x1``); else n/a.

Writes ``benchmarks/results/int8_accuracy_<task>_cpu.{json,md}``; artifacts go under ``--work-dir``.

    python benchmarks/int8_accuracy.py                     # seed 42, the rows accuracy.py finished
    python benchmarks/int8_accuracy.py --seeds 42 43 44
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from results_io import RESULTS, write_result  # benchmarks/ is on sys.path when run as a script


def evaluate_artifact(run: Path, out: Path, precision: str, task: str, weight_bits: int | None = None) -> float:
    """Export ``run`` (fp32, or int8 with ``weight_bits``-bit weights) to ``out`` unless done, compile, dev
    accuracy."""
    from sparsekit.evaluate import evaluate_saved
    from sparsekit.export.artifact import export

    if not (out / "manifest.json").is_file():
        export(run, out, precision=precision, int8_weight_bits=weight_bits)
    metrics, _ = evaluate_saved(out, task=task, compile=True)
    return float(metrics["accuracy"])


def markdown_lines(result: dict) -> list[str]:
    """The report of ``result`` (the JSON this script writes), one string per line."""
    rows = result["rows"]

    def mean_sd(key):
        vals = [100 * r[key] for r in rows if r.get(key) is not None]
        if not vals:
            return "n/a"
        return f"{statistics.fmean(vals):.2f}" + (f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else "")

    def pct(value, sign=""):
        return "n/a" if value is None else f"{100 * value:{sign}.2f}"

    if not any("int8_w7" in r for r in rows):  # a file from before the 7-bit column: its own layout
        return _markdown_lines_8bit(result, mean_sd)

    lines = [*_header_lines(result),
             "| seed | 1x4 fp32 | 1x4 int8 artifact (8-bit weights) | int8 - fp32 | int8 7-bit weights | 7-bit - fp32 "
             "| unstructured fp32 | 1x4 - unstructured |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {pct(r['fp32'])} | {pct(r['int8'])} | {pct(r['int8_minus_fp32'], '+')} | "
                     f"{pct(r.get('int8_w7'))} | {pct(r.get('int8_w7_minus_fp32'), '+')} | "
                     f"{pct(r.get('unstructured_fp32'))} | {pct(r.get('block_minus_unstructured'), '+')} |")

    def within(key):
        diffs = [r[key] for r in rows if r.get(key) is not None]
        return "n/a" if not diffs else "met" if all(abs(d) <= 0.005 for d in diffs) else "MISSED"
    lines += ["", f"Mean{' ± std' if len(rows) > 1 else ''} over {len(rows)} seed(s): 1x4 fp32 {mean_sd('fp32')}, "
              f"int8 {mean_sd('int8')}, int8 7-bit {mean_sd('int8_w7')}, unstructured {mean_sd('unstructured_fp32')}. "
              f"Target (issue 16): int8 within 0.5 points of fp32: 8-bit weights {within('int8_minus_fp32')}, 7-bit "
              f"weights {within('int8_w7_minus_fp32')}."]
    return lines


def _header_lines(result: dict) -> list[str]:
    """Title, machine, command and where the rows come from, then a blank line."""
    return [f"# INT8 + 1x4 blocks: {result['task']} dev accuracy, {result['method']} at {100 * result['keep']:g}% "
            "remaining (CPU budget)", "",
            f"Machine: {result['machine']['cpu']}; int8 path {result['int8_isa']}; command `{result['command']}`.",
            "Rows: benchmarks/accuracy.py (same budget, same seed for the block and unstructured runs).", ""]


def _markdown_lines_8bit(result: dict, mean_sd) -> list[str]:
    """The report of a file from before the 7-bit column (8-bit int8 artifacts only)."""
    rows = result["rows"]
    lines = [*_header_lines(result),
             "| seed | 1x4 fp32 | 1x4 int8 artifact | int8 - fp32 | unstructured fp32 | 1x4 - unstructured |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {100 * r['fp32']:.2f} | {100 * r['int8']:.2f} | "
                     f"{100 * r['int8_minus_fp32']:+.2f} | {100 * r['unstructured_fp32']:.2f} | "
                     f"{100 * r['block_minus_unstructured']:+.2f} |")
    lines += ["", f"Mean{' ± std' if len(rows) > 1 else ''} over {len(rows)} seed(s): 1x4 fp32 {mean_sd('fp32')}, "
              f"int8 {mean_sd('int8')}, unstructured {mean_sd('unstructured_fp32')}. Target (issue 16): int8 within "
              f"0.5 points of fp32: {'met' if all(abs(r['int8_minus_fp32']) <= 0.005 for r in rows) else 'MISSED'}."]
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2")
    p.add_argument("--method", default="smp-s")
    p.add_argument("--keep", type=float, default=0.1)
    p.add_argument("--seeds", type=int, nargs="+", default=[42])
    p.add_argument("--rows", type=Path, default=Path("runs/accuracy"), help="accuracy.py's work dir")
    p.add_argument("--work-dir", type=Path, default=Path("runs/int8-accuracy"))
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--name", default=None, help="results file name [int8_accuracy_<task>_cpu]")
    args = p.parse_args(argv)
    import torch

    from sparsekit.kernels import cpu_int8
    from sparsekit.machine import header

    rows = []
    for seed in args.seeds:
        base = args.rows / f"{args.task}-cpu" / f"seed{seed}"
        block_run, plain_run = base / f"{args.method}-b1x4-{args.keep:g}", base / f"{args.method}-{args.keep:g}"
        if not (block_run / "masks.bin").is_file():
            print(f"seed {seed}: row not finished: {block_run} (run benchmarks/accuracy.py --block 1x4)",
                  file=sys.stderr)
            continue
        work = args.work_dir / f"seed{seed}"
        row = {"seed": seed,
               "fp32": evaluate_artifact(block_run, work / "fp32", "fp32", args.task),
               "int8": evaluate_artifact(block_run, work / "int8", "int8", args.task, 8),
               "int8_w7": evaluate_artifact(block_run, work / "int8-w7", "int8", args.task, 7),
               "unstructured_fp32": (evaluate_artifact(plain_run, work / "unstructured", "fp32", args.task)
                                     if (plain_run / "masks.bin").is_file() else None)}
        row["int8_minus_fp32"] = row["int8"] - row["fp32"]
        row["int8_w7_minus_fp32"] = row["int8_w7"] - row["fp32"]
        row["block_minus_unstructured"] = (None if row["unstructured_fp32"] is None
                                           else row["fp32"] - row["unstructured_fp32"])
        rows.append(row)
        print(f"seed {seed}: {row}", file=sys.stderr, flush=True)
    if not rows:
        raise SystemExit("no finished rows")
    result = {**header(), "int8_isa": cpu_int8.int8_isa() if cpu_int8.available() else None,
              "threads": torch.get_num_threads(), "task": args.task, "method": args.method, "keep": args.keep,
              "rows": rows, "command": " ".join(["python", "benchmarks/int8_accuracy.py", *(argv or sys.argv[1:])])}
    write_result(args.results_dir / (args.name or f"int8_accuracy_{args.task}_cpu"), result, markdown_lines(result),
                 indent=1, final_newline=False)


if __name__ == "__main__":
    main()
