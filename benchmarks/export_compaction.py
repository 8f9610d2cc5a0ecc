"""Compaction benchmark: size and latency of the compacted model vs the masked dense model.

Models: MiniLM pruned by SMP-S at 10% and 3% remaining (real masks; by default the runs of
benchmarks/accuracy.py), and BERT-base-shaped random-init models with random unstructured masks at
10% and 3%. Modes: exact compaction and the lossy mode (rows with fewer than k=10 weights dropped).
For the MiniLM runs the lossy mode's SST-2 dev accuracy change is measured (exact compaction changes
nothing, max |Δlogit| is reported). Latency: batch x 128 tokens, 2 threads, median of many runs after
warm-up, masked dense and compacted measured in the same process, interleaved.

    python benchmarks/export_compaction.py --smp-runs runs/accuracy/sst2-cpu/seed42/smp-s-0.1 \
        runs/accuracy/sst2-cpu/seed42/smp-s-0.03
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sparsekit.data import EncodedDataset, get_task, load_split
from sparsekit.data.inputs import build_inputs, random_inputs
from sparsekit.evaluate import evaluate
from sparsekit.export.compact import compact
from sparsekit.models import load_classifier, prunable_matrices
from sparsekit.prune import load_pruned
from sparsekit.versions import library_versions
from sparsekit.timing import measure

from results_io import RESULTS, write_result  # benchmarks/ is on sys.path when run as a script

ROW_TYPES = ("query", "key", "value", "ffn_in")  # their rows are removed; O / FFN-out lose columns
PAPER = {"exact": 0.4743, "lossy k=10": 0.2519}  # SMP paper, BERT-base MNLI 3%, "actual size"


def removed_fractions(report) -> dict:
    """Fraction of rows (Q, K, V, FFN-in) or columns (O, FFN-out) removed, per matrix type."""
    acc: dict[str, list[int]] = {}
    for m in report.matrices:
        axis = 0 if m.matrix in ROW_TYPES else 1
        a = acc.setdefault(m.matrix, [0, 0])
        a[0] += m.before[axis] - m.after[axis]
        a[1] += m.before[axis]
    return {k: removed / total for k, (removed, total) in acc.items()}


def model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def latency(dense, compacted, batch: int, seq: int, repeats: int) -> dict:
    x = random_inputs(batch, seq, 20000)  # ids 1000..19999, seed 0
    out = {}
    # Interleave the two so drifts of the machine affect both alike.
    for _ in range(2):
        for name, model in (("masked_dense", dense), ("compacted", compacted)):
            r = measure(lambda m=model: m(**x), warmup=3, repeats=repeats // 2)
            out.setdefault(name, []).append(r)
    res = {name: {"median_ms": 1e3 * sorted(r["median"] for r in rs)[0],
                  "p25_ms": 1e3 * min(r["p25"] for r in rs), "p75_ms": 1e3 * max(r["p75"] for r in rs),
                  "runs": sum(r["runs"] for r in rs)} for name, rs in out.items()}
    res["speedup"] = res["masked_dense"]["median_ms"] / res["compacted"]["median_ms"]
    return res


def max_logit_error(dense, compacted, tokenizer) -> float:
    texts = ["a charming and often affecting journey .", "unflinchingly bleak and desperate",
             "the acting is fine but the story goes nowhere ."]
    batch = build_inputs(tokenizer, texts)
    with torch.no_grad():
        return float((dense(**batch).logits - compacted(**batch).logits).abs().max())


def bench_model(label, model, tokenizer, args, dev=None, task=None) -> list[dict]:
    rows = []
    masked_acc = evaluate(model, dev, tokenizer, task)["accuracy"] if dev is not None else None
    for mode, k in (("exact", 0), (f"lossy k={args.k}", args.k)):
        compacted, report = compact(model, min_row_weights=k)
        before, after = report.params()
        row = {"model": label, "mode": mode, "encoder_params_before": before, "encoder_params_after": after,
               "encoder_fraction": after / before, "model_bytes_before": model_bytes(model),
               "model_bytes_after": model_bytes(compacted),
               "nnz_before": sum(m.nnz_before for m in report.matrices),
               "nnz_after": sum(m.nnz_after for m in report.matrices),
               "removed_fraction_by_type": removed_fractions(report),
               "heads_removed": sum(len(layer["heads_removed"]) for layer in report.layers),
               "lossy_rows_zeroed": report.lossy_rows_zeroed, "lossy_weights_dropped": report.lossy_weights_dropped,
               "q_rows_not_removable": sum(layer["q_rows_not_removable"] for layer in report.layers)}
        if tokenizer is not None:
            row["max_abs_logit_error"] = max_logit_error(model, compacted, tokenizer)
        if dev is not None:
            row["dev_accuracy_masked_dense"] = masked_acc
            row["dev_accuracy_compacted"] = evaluate(compacted, dev, tokenizer, task)["accuracy"]
        row["latency"] = {f"{b}x{args.seq}": latency(model, compacted, b, args.seq, args.repeats) for b in args.batch}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "removed_fraction_by_type"}), file=sys.stderr)
    return rows


def random_masked_bert_base(keep: float, seed: int = 0):
    torch.manual_seed(seed)
    model = load_classifier("random:bert-base", 2).eval()
    with torch.no_grad():
        for m in prunable_matrices(model):
            w = model.get_submodule(m.name).weight
            w.mul_(torch.rand_like(w) < keep)
    return model


def to_markdown(result: dict) -> str:
    lines = ["# Compaction: size and latency, compacted vs masked dense", "",
             f"Command: `{result['command']}`  ", f"Machine: {result['machine']}, torch threads {result['threads']}  ",
             f"Versions: torch {result['versions']['torch']}, transformers {result['versions']['transformers']}  ",
             f"Date: {result['date']}", "",
             "Sizes are of the six encoder matrix types as dense fp32 (the SMP paper's 47.43% exact / 25.19% lossy "
             "k=10 figures are for BERT-base on MNLI at 3%). Latency: median, batch x seq, same process.", "",
             "| model | mode | encoder size after | heads removed | "
             "rows/cols removed Q / K / V / O / FFN-in / FFN-out | "
             "dev acc masked → compacted | max abs logit diff | latency dense → compact (speedup) |",
             "|---|---|---:|---:|---|---|---:|---|"]
    for r in result["rows"]:
        f = r["removed_fraction_by_type"]
        removed = " / ".join(f"{100 * f[t]:.0f}%" for t in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out"))
        acc = (f"{100 * r['dev_accuracy_masked_dense']:.2f} → {100 * r['dev_accuracy_compacted']:.2f}"
               if "dev_accuracy_compacted" in r else "-")
        lat = "; ".join(f"{shape}: {v['masked_dense']['median_ms']:.1f} → {v['compacted']['median_ms']:.1f} ms "
                        f"({v['speedup']:.2f}×)" for shape, v in r["latency"].items())
        err = f"{r['max_abs_logit_error']:.1e}" if "max_abs_logit_error" in r else "-"
        lines.append(f"| {r['model']} | {r['mode']} | {100 * r['encoder_fraction']:.2f}% | {r['heads_removed']} | "
                     f"{removed} | {acc} | {err} | {lat} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smp-runs", nargs="*", type=Path, default=[], help="pruning output dirs (MiniLM SMP)")
    parser.add_argument("--bert-base-keeps", nargs="*", type=float, default=[0.1, 0.03])
    parser.add_argument("--k", type=int, default=10, help="lossy mode: drop rows with fewer weights")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--name", default="export_compaction")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task("sst2")
    rows = []
    for run in args.smp_runs:
        pruned = load_pruned(run)
        dev = EncodedDataset(load_split(task, "dev", args.data_dir), pruned.tokenizer, 128, False)
        label = f"MiniLM {pruned.recipe['method']} {100 * pruned.recipe['config']['keep']:g}% ({run.name})"
        rows += bench_model(label, pruned.model, pruned.tokenizer, args, dev, task)
    for keep in args.bert_base_keeps:
        rows += bench_model(f"BERT-base random init, random mask {100 * keep:g}%", random_masked_bert_base(keep),
                            None, args)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    result = {"benchmark": "export_compaction", "command": " ".join(["python"] + sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": cpu, "threads": torch.get_num_threads(),
              "versions": library_versions(), "paper_size_fractions": PAPER, "rows": rows}
    write_result(RESULTS / args.name, result, to_markdown(result))


if __name__ == "__main__":
    main()
