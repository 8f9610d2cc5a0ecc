"""Where the fused runtime's forward goes (issue 15): each piece of ``sparsekit::encoder_layers`` timed in the real
forward, and timed alone.

BERT-base with random unstructured masks, exactly compacted, ``sparsekit.compile`` (fused runtime) at 1x128.
In situ: the whole forward timed while the op reads a steady clock between its stages
(``sparsekit.runtime.stage_profile``): each stage runs with the caches as the forward before it left them, so
the stages and the rest (embeddings, packing, head, Python) add up to the forward. Alone: with the same packed
weights the op holds, each piece is timed on its own (2 threads, median of 30 calls after
warm-up): every fused matrix with its epilogue (the C++ kernel or BLAS, as the op calls it), the 12 attentions, the
24 LayerNorms, the per-call index validation of the sparse weights, the embeddings; against the whole forward and
the op alone; every piece in each of ``--rounds`` rounds, keeping its least disturbed one. Where both FFN
matrices are sparse the FFN is one piece, as the op runs it (``grouped_ffn``: FFN-in,
activation, FFN-out and the residual add without a row-major intermediate). Writes
``benchmarks/results/runtime_profile_cpu.{json,md}``.

    python benchmarks/runtime_profile.py                     # 90% and 95%
    python benchmarks/runtime_profile.py --isa avx2          # the same at AVX2 + FMA (see results_io.run_with_isa)
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_io import ISAS, RESULTS, isa_limit_lines, run_with_isa, write_result  # noqa: E402
from runtime_cpu import masked_bert_base  # noqa: E402

from sparsekit.compiler import compile as sk_compile  # noqa: E402
from sparsekit.data.inputs import random_inputs  # noqa: E402
from sparsekit.export.compact import compact  # noqa: E402
from sparsekit.kernels import cpu  # noqa: E402
from sparsekit.kernels.encoder import LAYER_HEAD_META, LAYER_META, LAYER_TENSORS, MATRIX_TENSORS, SPARSE  # noqa: E402
from sparsekit.machine import header  # noqa: E402
from sparsekit.runtime import packing, stage_profile  # noqa: E402
from sparsekit.timing import measure  # noqa: E402

#: Per fused matrix: the epilogue the op applies (activation code, residual added).
EPILOGUES = ((0, False), (0, True), (1, False), (0, True))


def ms(fn) -> float:
    return 1e3 * measure(fn, 5, 30)["median"]


def _dense_matrix(ext, x, weight, bias, act, residual, isa):
    """A dense fused matrix as the op runs it: BLAS, then the epilogue pass."""
    return ext.epilogue_rows(torch.addmm(bias, x, weight.t()), act, residual, isa)


def profile(sparsity: float, tokens: int, rounds: int, precision: str = "fp32") -> dict:
    x = random_inputs(1, tokens, 20000, seed=1)
    model, _ = compact(masked_bert_base(sparsity, block=4 if precision == "int8" else 1))
    model.eval()
    sk_compile(model, tokens=tokens, verbose=False, precision=precision)
    if precision == "int8":  # 1x4-block masks, int8 matrices: the stages in the forward only (see main)
        runs = [stage_profile(model, x, calls=30, warmup=5).as_dict() for _ in range(rounds)]
        return {"sparsity": sparsity, "tokens": tokens, "rounds": rounds, "precision": precision,
                "in_situ": min(runs, key=lambda p: p["forward_ms"])}
    # Every piece once per round; each keeps its least disturbed round (this box's speed drifts over minutes).
    timed = [one_round(model, x, tokens) for _ in range(rounds)]
    best = {key: min(r[key] for r in timed) for key in timed[0] if key != "in_situ"}
    forward, op, linears, attention, norms = (best[k] for k in ("forward", "op", "linears", "attention", "norms"))
    embeddings, validation = best["embeddings"], best["validation"]
    rest = op - linears - attention - norms
    in_situ = min((r["in_situ"] for r in timed), key=lambda p: p["forward_ms"])  # one whole round, not mixed
    return {"sparsity": sparsity, "tokens": tokens, "rounds": rounds, "forward_ms": forward, "encoder_op_ms": op,
            "embeddings_ms": embeddings, "linears_with_epilogues_ms": linears, "of_which_validation_ms": validation,
            "attention_ms": attention, "layernorm_ms": norms, "op_rest_ms": rest,
            "outside_linears_share": 1 - linears / forward, "in_situ": in_situ}


def one_round(model, x, tokens: int) -> dict:
    """Each piece's ms, timed once: the forward, the op, the embeddings and the op's pieces summed over the layers."""
    ext, isa = cpu._EXT.load(), cpu.isa()
    enc = model.runtime
    in_situ = stage_profile(model, x, calls=30, warmup=5).as_dict()
    with torch.inference_mode():
        forward = ms(lambda: model(**x))
        hidden = model.embeddings(input_ids=x["input_ids"], token_type_ids=x.get("token_type_ids"))
        packed = packing.pack(hidden, x["attention_mask"])
        op = ms(lambda: enc(packed.tokens, packed.cu_seqlens))
        embeddings = ms(lambda: model.embeddings(input_ids=x["input_ids"], token_type_ids=x.get("token_type_ids")))
        linears = validation = attention = norms = 0.0
        for layer in range(len(enc._meta) // LAYER_META):
            t = enc._tensors[LAYER_TENSORS * layer:LAYER_TENSORS * (layer + 1)]
            m = enc._meta[LAYER_META * layer:LAYER_META * (layer + 1)]
            heads, dq, dv, ffn_act, glu = m[0], m[1], m[2], m[3], m[5]
            shapes = [m[LAYER_HEAD_META + 5 * k:LAYER_HEAD_META + 5 * (k + 1)] for k in range(len(EPILOGUES))]
            fused_ffn = shapes[2][0] == SPARSE and shapes[3][0] == SPARSE  # the op's grouped_ffn, one call
            for k, (act, residual) in enumerate(EPILOGUES):
                kind, n_in, n_out, rows, chunk = shapes[k]
                mt = t[MATRIX_TENSORS * k:MATRIX_TENSORS * (k + 1)]
                xi, res = torch.randn(tokens, n_in), (torch.randn(tokens, n_out) if residual else None)
                if kind == SPARSE:
                    validation += ms(partial(ext.validate_packed, mt[0], mt[1], mt[2], n_in, n_out, rows, chunk, isa))
                if fused_ffn and k == 3:
                    continue  # timed with the FFN-in, as one piece
                if fused_ffn and k == 2:
                    _, n_ffn, n_hidden, rows_f, chunk_f = shapes[3]
                    mf = t[MATRIX_TENSORS * 3:MATRIX_TENSORS * 4]
                    linears += ms(partial(ext.ffn, xi, mt[0], mt[1], mt[2], n_in, n_ffn, rows, chunk, mt[3], ffn_act,
                                          bool(glu), mf[0], mf[1], mf[2], n_hidden, rows_f, chunk_f, mf[3],
                                          torch.randn(tokens, n_hidden), isa))
                elif kind == SPARSE:
                    linears += ms(partial(ext.linear, xi, mt[0], mt[1], mt[2], n_in, n_out, rows, chunk, mt[3], isa,
                                          act, res))
                else:
                    linears += ms(partial(_dense_matrix, ext, xi, mt[0], mt[1], act, res, isa))
            qkv = torch.randn(tokens, heads * (2 * dq + dv))
            attention += ms(partial(ext.packed_attention, qkv, packed.cu_seqlens, heads, dq, dv, 0.125, -1, isa))
            ln = t[4 * MATRIX_TENSORS:4 * MATRIX_TENSORS + 4]  # LayerNorm 1 weight, bias, LayerNorm 2 weight, bias
            h = torch.randn(tokens, ln[0].shape[0])
            norms += 2 * ms(partial(ext.add_layer_norm, h, None, ln[0], ln[1], 1e-12, isa))
    return {"forward": forward, "op": op, "embeddings": embeddings, "linears": linears, "validation": validation,
            "attention": attention, "norms": norms, "in_situ": in_situ}


def markdown_lines(result: dict) -> list[str]:
    """The report of ``result`` (the JSON this script writes), one string per line (results written before the
    in-situ table existed render as they were committed)."""
    rounds = (f", the least disturbed of {result['rows'][0]['rounds']} rounds of every piece"
              if "rounds" in result["rows"][0] else "")
    situ = [r for r in result["rows"] if "in_situ" in r]
    alone = [r for r in result["rows"] if "forward_ms" in r]
    int8 = any(r.get("precision") == "int8" for r in result["rows"])
    lines = ["# Fused runtime profile: BERT-base, random masks, 1 sequence (issue 15)" +
             (", int8 with 1x4-block masks (issue 16)" if int8 else ""), ""]
    if not situ:
        lines += [f"Machine: {result['machine']['cpu']}, kernel ISA {result['isa']}, {result['threads']} threads. "
                  f"Command: `{result['command']}`. Each piece timed alone (median of 30 after warm-up) with the op's "
                  f"own weights{rounds}.", "", *isa_limit_lines(result["machine"])]
    else:
        names = list(situ[0]["in_situ"]["stages_ms"])
        lines += [f"Machine: {result['machine']['cpu']}, kernel ISA {result['isa']}, {result['threads']} threads. "
                  f"Command: `{result['command']}`.", "", *isa_limit_lines(result["machine"]),
                  "## In the real forward", "",
                  "Each stage of the op timed where it runs (a steady clock read between stages inside the one C++ "
                  "call, `sparsekit.runtime.stage_profile`), medians of 30 forwards, the least disturbed of the "
                  "rounds. Linears = qkv + attn_out + ffn, each with its fused epilogue (bias, GELU, residual" +
                  ("; at int8 also the quantisation of their inputs" if int8 else "") + "); "
                  "checks = the per-call validation of every packed index; the rest of the forward is embeddings, "
                  "packing, the head and Python.", "",
                  "| sparsity | tokens | forward ms | " + " | ".join(f"{n} ms" for n in names) +
                  " | rest of the forward ms | Linears ms | outside the Linears |",
                  "|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|---:|"]
        for r in situ:
            p = r["in_situ"]
            lines.append(f"| {100 * r['sparsity']:g}% | {r['tokens']} | {p['forward_ms']:.2f} | " +
                         " | ".join(f"{p['stages_ms'][n]:.2f}" for n in names) +
                         f" | {p['outside_ms']:.2f} | {p['linears_ms']:.2f} | "
                         f"{100 * p['outside_linears_share']:.0f}% |")
        if alone:
            lines += ["", "## Each piece alone", "",
                      f"Each piece timed alone (median of 30 after warm-up) with the op's own weights{rounds}; the "
                      "rest of the op is what the pieces timed alone do not account for.", ""]
    if alone:
        lines += ["| sparsity | tokens | forward ms | encoder op ms | Linears + epilogues ms (validation) | attention "
                  "ms | LayerNorm ms | rest of the op ms | embeddings ms | outside the Linears |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in alone:
        lines.append(f"| {100 * r['sparsity']:g}% | {r['tokens']} | {r['forward_ms']:.2f} | {r['encoder_op_ms']:.2f} | "
                     f"{r['linears_with_epilogues_ms']:.2f} ({r['of_which_validation_ms']:.2f}) | "
                     f"{r['attention_ms']:.2f} | {r['layernorm_ms']:.2f} | {r['op_rest_ms']:.2f} | "
                     f"{r['embeddings_ms']:.2f} | {100 * r['outside_linears_share']:.0f}% |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95])
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="rounds of every piece; each piece keeps its best round")
    p.add_argument("--isa", choices=ISAS, default="native",
                   help="avx2: every engine that can be limited at AVX2 + FMA (results runtime_profile_cpu_avx2)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="int8: 1x4-block masks compiled at int8 (issue 16), the in-forward table only (the "
                        "pieces-alone table times fp32 kernels)")
    p.add_argument("--name", default=None,
                   help="results file stem [runtime_profile_cpu; runtime_profile_cpu_avx2 with --isa avx2]")
    args = p.parse_args(argv)
    run_with_isa(args.isa, argv)
    torch.set_num_threads(args.threads)
    rows = [profile(s, args.tokens, args.rounds, args.precision) for s in args.sparsities]
    command = " ".join(["python", "benchmarks/runtime_profile.py", *(argv if argv is not None else sys.argv[1:])])
    result = {**header(), "isa": cpu.isa(), "threads": args.threads, "rows": rows, "command": command}
    stem = args.name or "runtime_profile_cpu" + ("_avx2" if args.isa == "avx2" else "")
    write_result(RESULTS / stem, result, markdown_lines(result), indent=1, final_newline=False)


if __name__ == "__main__":
    main()
