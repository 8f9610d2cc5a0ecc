"""The fused runtime's attention against PyTorch's CPU attention (SDPA flash and math paths), per sequence length.

Issue 15 asks: measure SDPA's math and flash paths against sparsekit's own kernel per sequence length, with the
padding mask, and use the fastest. BERT-base heads (12 x 64), fp32, ``--threads`` threads. For each shape the
runtime's input is packed tokens ``qkv [N, 3 * 12 * 64]`` (Q | K | V, head-major) and its output ``ctx [N, 768]``:

- ``sparsekit``: ``sparsekit::packed_attention`` on the packed tokens (what the fused runtime runs);
- ``sdpa-flash`` / ``sdpa-math``: the same computation through ``F.scaled_dot_product_attention`` with that backend:
  packed -> padded ``[B, H, T, d]`` Q, K, V, the boolean padding mask, SDPA, padded -> packed ctx (what the
  runtime would have to do to use it);
- ``sdpa-flash (kernel only)`` / ``sdpa-math (kernel only)``: SDPA alone on ready padded tensors (a lower bound
  for any runtime built on it).

Shapes: one sequence of 16 ... 512 tokens, and batches of 8 sequences with random lengths in [T/2, T] (padding).
Every variant of a shape is timed interleaved (``measure_interleaved``: warm-up, rounds, median). Writes
``benchmarks/results/attention_cpu.{json,md}`` with the machine (CPU model, flags, kernel ISA) and the command.

    python benchmarks/attention_cpu.py
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sparsekit.kernels import cpu
from sparsekit.kernels.encoder import packed_attention
from sparsekit.runtime import packing
from sparsekit.timing import measure_interleaved

# benchmarks/ is on sys.path when run as a script
from results_io import RESULTS, add_timing_args, header_lines, parse_kernel_args, rows_result, write_result

HEADS, DIM = 12, 64
SHAPES = [(1, 16), (1, 32), (1, 64), (1, 128), (1, 256), (1, 384), (1, 512), (8, 32), (8, 128), (8, 384)]
BACKENDS = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-math": SDPBackend.MATH}


def shape_case(batch: int, seq: int, gen: torch.Generator) -> dict:
    """Packed qkv, cu_seqlens and the padded views of one shape (lengths random in [seq/2, seq] when batch > 1)."""
    if batch == 1:
        lengths = torch.tensor([seq])
    else:
        lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=gen)
        lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    padded = torch.randn(batch, seq, 3 * HEADS * DIM, generator=gen)
    packed = packing.pack(padded, mask)
    return {"lengths": lengths.tolist(), "mask": mask, "packed": packed,
            "qkv": packed.tokens.contiguous(), "cu": packed.cu_seqlens}


def sdpa_packed(case: dict, backend: SDPBackend, seq: int):
    """SDPA on the packed layout: packed -> padded [B, H, T, d] -> SDPA with the padding mask -> packed."""
    packed, mask = case["packed"], case["mask"]
    batch = mask.shape[0]
    key_mask = mask.bool()[:, None, None, :]

    def run():
        qkv = packing.unpack(case["qkv"], packed).view(batch, seq, 3, HEADS, DIM).permute(2, 0, 3, 1, 4)
        with sdpa_kernel(backend):
            ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=key_mask, scale=DIM ** -0.5)
        return packing.pack(ctx.transpose(1, 2).reshape(batch, seq, HEADS * DIM), mask).tokens

    return run


def sdpa_kernel_only(case: dict, backend: SDPBackend, seq: int):
    batch = case["mask"].shape[0]
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(batch, HEADS, seq, DIM, generator=gen) for _ in range(3))
    key_mask = case["mask"].bool()[:, None, None, :]

    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=DIM ** -0.5)

    return run


def bench_shape(batch: int, seq: int, args, gen: torch.Generator) -> dict:
    case = shape_case(batch, seq, gen)
    own = packed_attention(case["qkv"], case["cu"], HEADS, DIM, DIM, DIM ** -0.5)
    fns = {"sparsekit": lambda: packed_attention(case["qkv"], case["cu"], HEADS, DIM, DIM, DIM ** -0.5)}
    errors, failed = {}, {}
    for name, backend in BACKENDS.items():
        try:
            got = sdpa_packed(case, backend, seq)()
        except RuntimeError as exc:  # a backend that refuses the input is a result, not a crash
            failed[name] = str(exc).splitlines()[0][:200]
            continue
        errors[name] = float((got - own).abs().max())
        fns[name] = sdpa_packed(case, backend, seq)
        fns[f"{name} (kernel only)"] = sdpa_kernel_only(case, backend, seq)
    best = measure_interleaved(fns, rounds=args.rounds, warmup=args.warmup, repeats=args.repeats,
                               min_seconds=args.min_seconds)
    ms = {name: 1e3 * r["median"] for name, r in best.items()}
    fastest = min((n for n in ms if "kernel only" not in n), key=ms.get)
    return {"batch": batch, "seq": seq, "lengths": case["lengths"], "tokens": int(case["cu"][-1]),
            "median_ms": ms, "fastest_on_packed_tokens": fastest,
            "sdpa_over_sparsekit": {n: ms[n] / ms["sparsekit"] for n in ms if n != "sparsekit"},
            "max_abs_diff_vs_sparsekit": errors, "failed": failed}


def markdown(result: dict) -> str:
    names = ["sparsekit", "sdpa-flash", "sdpa-math", "sdpa-flash (kernel only)", "sdpa-math (kernel only)"]
    lines = ["# Attention on packed tokens: sparsekit's kernel vs PyTorch SDPA (flash, math), CPU", "",
             *header_lines(result), "",
             f"BERT-base heads ({HEADS} x {DIM}), fp32; median ms of interleaved rounds; batches of 8 have random "
             "lengths in [T/2, T] (padding masked). `sdpa-*`: packed -> padded -> SDPA -> packed, what the runtime "
             "would run; `(kernel only)`: SDPA on ready padded tensors.", "",
             "| batch x T | real tokens | " + " | ".join(names) + " | fastest on packed tokens |",
             "|---|---:|" + "---:|" * len(names) + "---|"]
    for r in result["rows"]:
        cells = []
        for n in names:
            v = r["median_ms"].get(n)
            if v is None:
                cells.append("failed" if n.split(" ")[0] in r["failed"] else "—")
            else:
                ratio = "" if n == "sparsekit" else f" ({v / r['median_ms']['sparsekit']:.2f}x)"
                cells.append(f"{v:.3f}{ratio}")
        lines.append(f"| {r['batch']} x {r['seq']} | {r['tokens']} | " + " | ".join(cells) +
                     f" | {r['fastest_on_packed_tokens']} |")
    lines += ["", "(x): the SDPA variant's time over sparsekit's (> 1: sparsekit is faster). Max |difference| of "
              "the SDPA results from sparsekit's on every shape: "
              f"{max((e for r in result['rows'] for e in r['max_abs_diff_vs_sparsekit'].values()), default=0):.1e}."]
    failed = {n: why for r in result["rows"] for n, why in r["failed"].items()}
    lines += [f"Failed: {n}: {why}" for n, why in failed.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(parser)
    parser.add_argument("--name", default="attention_cpu")
    args = parse_kernel_args(parser, argv)
    gen = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        for batch, seq in SHAPES:
            rows.append(bench_shape(batch, seq, args, gen))
            r = rows[-1]
            print(f"{batch}x{seq}: " + ", ".join(f"{n} {v:.3f} ms" for n, v in r["median_ms"].items()),
                  file=sys.stderr, flush=True)
    result = rows_result("attention_cpu", argv, isa=cpu.isa(), threads=args.threads, rows=rows)
    write_result(RESULTS / args.name, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
