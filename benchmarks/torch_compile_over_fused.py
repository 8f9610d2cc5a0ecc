"""Does ``torch.compile`` add anything on top of ``sparsekit.compile``'s fused runtime? (issue 15)

BERT-base with random unstructured masks, exactly compacted, ``sparsekit.compile`` (fused runtime), then
``torch.compile`` (inductor, static shapes) of that model, timed against the model itself (interleaved rounds,
medians). Writes ``benchmarks/results/torch_compile_over_fused.{json,md}``.

    python benchmarks/torch_compile_over_fused.py            # 95%, 1x128 and 1x32
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_io import RESULTS, write_result  # noqa: E402
from runtime_cpu import masked_bert_base  # noqa: E402

from sparsekit.compiler import compile as sk_compile  # noqa: E402
from sparsekit.data.inputs import random_inputs  # noqa: E402
from sparsekit.export.compact import compact  # noqa: E402
from sparsekit.machine import header  # noqa: E402
from sparsekit.timing import measure_interleaved  # noqa: E402


def markdown_lines(result: dict) -> list[str]:
    """The report of ``result`` (the JSON this script writes), one string per line."""
    lines = [f"# torch.compile over sparsekit's fused runtime (BERT-base, {100 * result['sparsity']:g}% random masks)",
             "", f"Machine: {result['machine']['cpu']}, {result['threads']} threads; command `{result['command']}`.",
             "",
             "| shape | sparsekit ms | + torch.compile ms | ratio | first call (compile) s | max abs logit diff |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['batch']}x{r['seq']} | {r['sparsekit_ms']:.2f} | {r['with_torch_compile_ms']:.2f} | "
                     f"{r['sparsekit_ms'] / r['with_torch_compile_ms']:.2f}x | {r['first_call_s']:.1f} | "
                     f"{r['max_abs_logit_diff']:.1e} |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsity", type=float, default=0.95)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = compact(masked_bert_base(args.sparsity))
    model.eval()
    rows = []
    for batch, seq in ((1, 128), (1, 32)):
        sk_compile(model, tokens=batch * seq, verbose=False)
        compiled = torch.compile(model, dynamic=False)
        x = random_inputs(batch, seq, 20000, seed=1)
        with torch.inference_mode():
            start = time.perf_counter()
            got = compiled(**x).logits
            compile_s = time.perf_counter() - start
            err = float((got - model(**x).logits).abs().max())
        variants = {"sparsekit": lambda x=x: model(**x), "sparsekit + torch.compile": lambda x=x, c=compiled: c(**x)}
        t = measure_interleaved(variants, 2, warmup=3, repeats=args.repeats)
        rows.append({"batch": batch, "seq": seq, "sparsekit_ms": 1e3 * t["sparsekit"]["median"],
                     "with_torch_compile_ms": 1e3 * t["sparsekit + torch.compile"]["median"],
                     "first_call_s": compile_s, "max_abs_logit_diff": err})
        print(rows[-1], file=sys.stderr, flush=True)
    result = {**header(), "sparsity": args.sparsity, "threads": args.threads, "rows": rows,
              "command": " ".join(["python", "benchmarks/torch_compile_over_fused.py", *(argv or sys.argv[1:])])}
    write_result(RESULTS / "torch_compile_over_fused", result, markdown_lines(result), indent=1,
                 final_newline=False)


if __name__ == "__main__":
    main()
