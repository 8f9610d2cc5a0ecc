"""The fused runtime's FFN: one ``grouped_ffn`` call against the two sparse Linear calls it replaces.

The fused encoder runs a layer's FFN, when both of its matrices are sparse fp32 (no GLU), as
``spmm_cpu::grouped_ffn``: the FFN-in kernel keeps its activated output in the transposed token tiles the FFN-out
kernel reads, so the ``[tokens, 3072]`` intermediate is never written row-major and transposed back. Before, it
ran two calls: FFN-in with GELU in its epilogue into a row-major intermediate, then FFN-out (which transposes that
intermediate again) with the residual add in its epilogue. Both give the same bits (``tests/test_runtime.py``);
this measures what the hand-over saves.

BERT-base FFN shapes (FFN-in 3072 x 768, FFN-out 768 x 3072), random unstructured masks at each sparsity, GELU,
residual add, fp32, ``--threads`` threads, 32 / 128 / 1024 tokens (1x32, 1x128, 8x128). The two variants of a row
are timed interleaved (``measure_interleaved``: warm-up, rounds, median). Writes
``benchmarks/results/ffn_cpu.{json,md}`` with the machine (CPU model, flags, kernel ISA) and the command.

    python benchmarks/ffn_cpu.py
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from sparsekit.kernels import cpu
from sparsekit.kernels.cpu_layout import pack_cpu_csr
from sparsekit.machine import header
from sparsekit.timing import measure_interleaved

from results_io import RESULTS, write_result  # benchmarks/ is on sys.path when run as a script

HIDDEN, FFN = 768, 3072
GELU = 1  # the kernels' activation code of the erf GELU (BERT's)


def bench_row(sparsity: float, tokens: int, args, gen: torch.Generator) -> dict:
    ext, isa = cpu._EXT.load(), cpu.isa()
    wi = torch.randn(FFN, HIDDEN, generator=gen) * (torch.rand(FFN, HIDDEN, generator=gen) >= sparsity)
    wf = torch.randn(HIDDEN, FFN, generator=gen) * (torch.rand(HIDDEN, FFN, generator=gen) >= sparsity)
    pi, pf = pack_cpu_csr(wi), pack_cpu_csr(wf)
    bi, bf = torch.randn(FFN, generator=gen), torch.randn(HIDDEN, generator=gen)
    x, res = torch.randn(tokens, HIDDEN, generator=gen), torch.randn(tokens, HIDDEN, generator=gen)

    def fused():
        return ext.ffn(x, pi.ptr, pi.col, pi.val, HIDDEN, FFN, 1, pi.chunk, bi, GELU, pf.ptr, pf.col, pf.val, HIDDEN,
                       1, pf.chunk, bf, res, isa)

    def two_calls():
        u = ext.linear(x, pi.ptr, pi.col, pi.val, HIDDEN, FFN, 1, pi.chunk, bi, isa, GELU, None)
        return ext.linear(u, pf.ptr, pf.col, pf.val, FFN, HIDDEN, 1, pf.chunk, bf, isa, 0, res)

    if not torch.equal(fused(), two_calls()):
        raise SystemExit(f"the fused FFN differs from the two calls at {sparsity:.0%}, {tokens} tokens: a bug")
    best = measure_interleaved({"fused": fused, "two calls": two_calls}, rounds=args.rounds, warmup=args.warmup,
                               repeats=args.repeats, min_seconds=args.min_seconds)
    ms = {name: 1e3 * r["median"] for name, r in best.items()}
    return {"sparsity": sparsity, "tokens": tokens, "chunks": [pi.chunk, pf.chunk], "median_ms": ms,
            "speedup": ms["two calls"] / ms["fused"]}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# Fused FFN (grouped_ffn) vs the two sparse Linear calls it replaces, CPU", "",
             f"Command: `{result['command']}`  ",
             f"Machine: {m['cpu']}, {m['cores']} cores, {result['threads']} threads, flags "
             f"{' '.join(m['cpu_flags'])}, kernel ISA {result['isa']}  ",
             f"Versions: torch {result['versions']['torch']}, sparsekit {result['versions']['sparsekit']}  ",
             f"Date: {result['date']}", "",
             f"BERT-base FFN ({FFN} x {HIDDEN} then {HIDDEN} x {FFN}), random unstructured masks, GELU and the "
             "residual add in the kernels' epilogues, fp32; median ms of interleaved rounds. Both variants return "
             "the same bits (checked before timing).", "",
             "| sparsity | tokens | two calls ms | fused ms | speedup |", "|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        ms = r["median_ms"]
        lines.append(f"| {r['sparsity']:.0%} | {r['tokens']} | {ms['two calls']:.3f} | {ms['fused']:.3f} | "
                     f"{r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.97])
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 128, 1024])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=0.3)
    parser.add_argument("--name", default="ffn_cpu")
    args = parser.parse_args(argv)
    if not cpu.available():
        raise SystemExit(f"the C++ kernels are not built: {cpu.unavailable_reason()}")
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        for sparsity in args.sparsities:
            for tokens in args.tokens:
                rows.append(bench_row(sparsity, tokens, args, gen))
                r = rows[-1]
                print(f"{sparsity:.0%} {tokens} tokens: two calls {r['median_ms']['two calls']:.3f} ms, fused "
                      f"{r['median_ms']['fused']:.3f} ms ({r['speedup']:.2f}x)", file=sys.stderr, flush=True)
    result = {**header(), "command": "python benchmarks/ffn_cpu.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "isa": cpu.isa(), "threads": args.threads,
              "rows": rows}
    write_result(RESULTS / args.name, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
