"""The fused runtime's FFN: one ``grouped_ffn`` call against the unfused sparse Linear calls it replaces.

The fused encoder runs a layer's FFN, when both of its matrices are sparse fp32, as ``spmm_cpu::grouped_ffn``:
the FFN-in kernel keeps its activated output (or, for a GLU, ``act(a) * gate``, computed in that layout) in the
transposed token tiles the FFN-out kernel reads, so the ``[tokens, ffn]`` intermediate is never written row-major
and transposed back. Unfused, it runs FFN-in with GELU in its epilogue into a row-major intermediate (GLU: FFN-in,
then the GLU pass into a second buffer), then FFN-out (which transposes that intermediate again) with the residual
add in its epilogue. Both give the same bits (``tests/test_runtime.py``); this measures what the hand-over saves.

Shapes: BERT-base's FFN (FFN-in 3072 x 768, FFN-out 768 x 3072, GELU) and ModernBERT-base's GLU FFN (FFN-in
2304 x 768 = 1152 FFN rows on 1152 gate rows, FFN-out 768 x 1152, GELU), random unstructured masks at each
sparsity, residual add, fp32, ``--threads`` threads, 32 / 128 / 1024 tokens (1x32, 1x128, 8x128). The two variants
of a row are timed interleaved (``measure_interleaved``: warm-up, rounds, median). Writes
``benchmarks/results/ffn_cpu.{json,md}`` with the machine (CPU model, flags, kernel ISA) and the command.

    python benchmarks/ffn_cpu.py
"""
from __future__ import annotations

import argparse
import sys

import torch

from sparsekit.kernels import cpu
from sparsekit.kernels.cpu_layout import pack_cpu_csr
from sparsekit.timing import measure_interleaved

# benchmarks/ is on sys.path when run as a script
from results_io import RESULTS, add_timing_args, header_lines, parse_kernel_args, rows_result, write_result

HIDDEN = 768
#: FFN layout -> (FFN width, GLU): BERT-base's FFN and ModernBERT-base's gated one.
LAYOUTS = {"bert-base": (3072, False), "modernbert-base (GLU)": (1152, True)}
GELU = 1  # the kernels' activation code of the erf GELU


def bench_row(layout: str, sparsity: float, tokens: int, args, gen: torch.Generator) -> dict:
    ext, isa = cpu._EXT.load(), cpu.isa()
    ffn, glu = LAYOUTS[layout]
    rows_i = 2 * ffn if glu else ffn
    wi = torch.randn(rows_i, HIDDEN, generator=gen) * (torch.rand(rows_i, HIDDEN, generator=gen) >= sparsity)
    wf = torch.randn(HIDDEN, ffn, generator=gen) * (torch.rand(HIDDEN, ffn, generator=gen) >= sparsity)
    pi, pf = pack_cpu_csr(wi), pack_cpu_csr(wf)
    bi, bf = torch.randn(rows_i, generator=gen), torch.randn(HIDDEN, generator=gen)
    x, res = torch.randn(tokens, HIDDEN, generator=gen), torch.randn(tokens, HIDDEN, generator=gen)

    def fused():
        return ext.ffn(x, pi.ptr, pi.col, pi.val, HIDDEN, ffn, 1, pi.chunk, bi, GELU, glu, pf.ptr, pf.col, pf.val,
                       HIDDEN, 1, pf.chunk, bf, res, isa)

    def unfused():  # what the fused encoder ran before: FFN-in (+ the GLU pass), then FFN-out
        u = ext.linear(x, pi.ptr, pi.col, pi.val, HIDDEN, rows_i, 1, pi.chunk, bi, isa, 0 if glu else GELU, None)
        if glu:  # the runtime's GLU pass (encoder_cpu glu_rows)
            u = ext.glu_rows(u, GELU, isa)
        return ext.linear(u, pf.ptr, pf.col, pf.val, ffn, HIDDEN, 1, pf.chunk, bf, isa, 0, res)

    if not torch.equal(fused(), unfused()):
        raise SystemExit(f"the fused FFN differs from the unfused calls ({layout}, {sparsity:.0%}, {tokens} "
                         "tokens): a bug")
    best = measure_interleaved({"fused": fused, "unfused": unfused}, rounds=args.rounds, warmup=args.warmup,
                               repeats=args.repeats, min_seconds=args.min_seconds)
    ms = {name: 1e3 * r["median"] for name, r in best.items()}
    return {"layout": layout, "sparsity": sparsity, "tokens": tokens, "chunks": [pi.chunk, pf.chunk],
            "median_ms": ms, "speedup": ms["unfused"] / ms["fused"]}


def markdown(result: dict) -> str:
    lines = ["# Fused FFN (grouped_ffn) vs the unfused sparse Linear calls it replaces, CPU", "",
             *header_lines(result), "",
             f"Hidden {HIDDEN}; BERT-base FFN 3072 wide, ModernBERT-base GLU FFN 1152 wide (FFN-in 2304 rows); "
             "random unstructured masks, GELU, the residual add in the FFN-out's epilogue, fp32; median ms of "
             "interleaved rounds. Both variants return the same bits (checked before timing).", "",
             "| FFN | sparsity | tokens | unfused ms | fused ms | speedup |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        ms = r["median_ms"]
        lines.append(f"| {r['layout']} | {r['sparsity']:.0%} | {r['tokens']} | {ms['unfused']:.3f} | "
                     f"{ms['fused']:.3f} | {r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(parser, rounds=5)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.97])
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 128, 1024])
    parser.add_argument("--name", default="ffn_cpu")
    args = parse_kernel_args(parser, argv)
    gen = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        for layout in LAYOUTS:
            for sparsity in args.sparsities:
                for tokens in args.tokens:
                    rows.append(bench_row(layout, sparsity, tokens, args, gen))
                    r = rows[-1]
                    print(f"{layout} {sparsity:.0%} {tokens} tokens: unfused {r['median_ms']['unfused']:.3f} ms, "
                          f"fused {r['median_ms']['fused']:.3f} ms ({r['speedup']:.2f}x)", file=sys.stderr,
                          flush=True)
    result = rows_result("ffn_cpu", argv, isa=cpu.isa(), threads=args.threads, rows=rows)
    write_result(RESULTS / args.name, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
