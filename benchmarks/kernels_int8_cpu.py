"""INT8 1x4-block sparse CPU kernel per layer: against the fp32 CSR kernel, dense fp32 and dense dynamic int8.

One Linear ``y = x Wᵀ + b`` on the BERT-base shapes (768x768, 3072x768, 768x3072; written out x in) at 128 tokens
(``--tokens``), random 1x4-block masks along the input dimension (each block of 4 consecutive input weights of a
row kept or dropped as a whole) at 80 / 90 / 95% sparsity (``--sparsity``). Variants, timed interleaved in the
same process (medians; each variant's least disturbed round):

* ``int8_b4``        -- sparsekit's INT8 kernel (``sparsekit.kernels.cpu_int8.int8_b4_linear``), the path chosen
  here (``--int8-isas`` adds rows for other paths this CPU has, e.g. ``avx2`` on an AVX-512 machine), on weights
  quantised to ``--weight-bits`` (default: the faster width here, ``cpu_int8.preferred_weight_bits()``: 7 on AVX2 /
  AVX-512BW, where 8-bit weights are also timed as ``int8_b4[<path>,w8]``, 8 on VNNI CPUs);
* ``fp32_csr``       -- sparsekit's fp32 CSR kernel on the same weight (same density);
* ``dense``          -- PyTorch ``F.linear`` (fp32 BLAS);
* ``dense_int8_dyn`` -- PyTorch's dynamically quantised dense int8 Linear
  (``torch.ao.quantization.quantize_dynamic``: fbgemm / x86 engine), the dense int8 baseline.

The issue's target (issue 16): int8-b4 at 90% >= 2x faster than the fp32 CSR kernel, 2 threads, 128 tokens.
Records the CPU model, flags, the fp32 ISA and the int8 paths. Writes ``benchmarks/results/kernels_int8_cpu.json``
+ ``.md`` (``--out``). ``--isa avx2`` runs every engine that can be limited at AVX2 + FMA (sparsekit's kernels,
MKL, ATen; results ``kernels_int8_cpu_avx2.*``): an AVX-512 machine standing in for an AVX2-only CPU's instruction
set; fbgemm cannot be limited, so the dense int8 row is left out. Time it on a quiet machine::

    python benchmarks/kernels_int8_cpu.py --threads 2
    python benchmarks/kernels_int8_cpu.py --threads 2 --isa avx2 --tokens 128 1
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from sparsekit import kernels
from sparsekit.kernels import cpu_int8
from sparsekit.machine import header, isa_limits
from sparsekit.timing import measure_interleaved

# benchmarks/ is on sys.path when run as a script
from results_io import ISAS, RESULTS, isa_limit_lines, run_with_isa, steal_lines, timing_ms, write_result

SHAPES = ((768, 768), (3072, 768), (768, 3072))  # (out, in): Q/K/V/O, FFN-in, FFN-out
TARGET_VS_CSR_AT_90 = 2.0


def block_mask(out_f: int, in_f: int, sparsity: float, g: torch.Generator) -> torch.Tensor:
    """A random 1x4-block mask along the input dimension: ``1 - sparsity`` of the blocks kept."""
    keep = torch.rand(out_f, -(-in_f // 4), generator=g) >= sparsity
    return keep.repeat_interleave(4, dim=1)[:, :in_f]


def dynamic_int8_linear(w: torch.Tensor, b: torch.Tensor):
    """PyTorch's dynamically quantised dense int8 Linear for ``w``, ``b`` (None with the reason if unavailable)."""
    try:
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
            return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear},
                                                          dtype=torch.qint8), None
    except Exception as exc:  # removed from this torch, no quantized engine, ...
        return None, f"{type(exc).__name__}: {exc}"


def with_isa(isa: str, fn):
    """``fn`` on int8 path ``isa`` (unwrapped when that is the path chosen anyway: setting the environment
    variable on every call would be timed too)."""
    if isa == cpu_int8.int8_isa():
        return fn

    def run():
        with cpu_int8.force_int8_isa(isa):
            return fn()
    return run


def bench_layers(args) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    paths = [args.int8_isas[0] if args.int8_isas else cpu_int8.int8_isa()]
    paths += [i for i in (args.int8_isas or [])[1:] if i in cpu_int8.supported_int8_isas() and i not in paths]
    for out_f, in_f in SHAPES:
        for tokens in args.tokens:
            x = torch.randn(tokens, in_f, generator=g)
            for sparsity in args.sparsity:
                w = torch.randn(out_f, in_f, generator=g) * block_mask(out_f, in_f, sparsity, g)
                b = torch.randn(out_f, generator=g)
                packed8 = cpu_int8.pack_cpu_int8_b4(w, args.weight_bits)
                packed32 = kernels.pack_cpu_csr(w)
                qlin, qwhy = ((None, "fbgemm cannot be limited to an instruction set") if isa_limits()
                              else dynamic_int8_linear(w, b))
                # default arguments bind this iteration's tensors (the closures run inside the iteration anyway)
                variants = {f"int8_b4[{isa}]": with_isa(isa, lambda x=x, p=packed8, b=b: cpu_int8.int8_b4_linear(x, p,
                                                                                                                  b))
                            for isa in paths}
                if args.weight_bits != 8:  # the 8-bit weights' kernels on the main path, for comparison
                    variants[f"int8_b4[{paths[0]},w8]"] = with_isa(
                        paths[0], lambda x=x, p=cpu_int8.pack_cpu_int8_b4(w, 8), b=b: cpu_int8.int8_b4_linear(x, p, b))
                variants.update({"fp32_csr": lambda x=x, p=packed32, b=b: kernels.csr_linear(x, p, b),
                                 "dense": lambda x=x, w=w, b=b: F.linear(x, w, b)})
                if qlin is not None:
                    variants["dense_int8_dyn"] = lambda x=x, q=qlin: q(x)
                ref = F.linear(x, w, b)
                err = float((cpu_int8.int8_b4_linear(x, packed8, b) - ref).abs().max())
                best = measure_interleaved(variants, args.rounds, warmup=args.warmup, repeats=args.repeats,
                                           min_seconds=args.min_seconds)
                t = {name: timing_ms(r) for name, r in best.items()}
                main = t[f"int8_b4[{paths[0]}]"]["median_ms"]
                row = {"out": out_f, "in": in_f, "tokens": tokens, "sparsity": sparsity,
                       "density": float((w != 0).float().mean()), "block_density": packed8.block_density,
                       "int8_isa": paths[0], "weight_bits": args.weight_bits, "timings": t,
                       "int8_vs_fp32_csr": t["fp32_csr"]["median_ms"] / main,
                       "int8_vs_dense": t["dense"]["median_ms"] / main,
                       "int8_vs_dense_int8_dyn": (t["dense_int8_dyn"]["median_ms"] / main
                                                  if qlin is not None else None),
                       "dense_int8_dyn_unavailable": qwhy,
                       "max_abs_error_vs_fp32": err, "max_abs_fp32": float(ref.abs().max())}
                rows.append(row)
                print(f"{out_f}x{in_f} tokens {tokens} sparsity {sparsity:.2f}: int8-b4 {main:.3f} ms  "
                      f"vs fp32 CSR {row['int8_vs_fp32_csr']:.2f}x  vs dense {row['int8_vs_dense']:.2f}x  "
                      f"vs dense int8 {row['int8_vs_dense_int8_dyn'] or float('nan'):.2f}x", file=sys.stderr,
                      flush=True)
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# INT8 1x4-block sparse CPU kernel, per layer", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {result['args']['threads']}, flags "
             f"{' '.join(m['cpu_flags'])}  ",
             f"int8 paths this CPU has: {', '.join(result['int8_isas'])}; timed: {result['int8_isa']}; "
             f"fp32 kernel ISA: {result['fp32_isa']}"
             + (f"; int8 weights: {result['args']['weight_bits']}-bit (the faster width on this CPU: "
                f"{result['preferred_weight_bits']}-bit)" if "preferred_weight_bits" in result else "") + "  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v) + "  ",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}", "", *isa_limit_lines(m),
             *steal_lines(result),
             "Speedup of int8-b4 (medians, same run, interleaved); random 1x4-block masks along the input.", "",
             "| W (out x in) | tokens | sparsity | int8-b4 ms | vs fp32 CSR | vs dense fp32 | vs dense int8 (dynamic) "
             "| max abs err (max abs y) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["layers"]:
        main = r["timings"][f"int8_b4[{r['int8_isa']}]"]["median_ms"]
        dyn = f"{r['int8_vs_dense_int8_dyn']:.2f}x" if r["int8_vs_dense_int8_dyn"] else "n/a"
        lines.append(f"| {r['out']}x{r['in']} | {r['tokens']} | {r['sparsity']:.0%} | {main:.3f} | "
                     f"{r['int8_vs_fp32_csr']:.2f}x | {r['int8_vs_dense']:.2f}x | {dyn} | "
                     f"{r['max_abs_error_vs_fp32']:.3g} ({r['max_abs_fp32']:.3g}) |")
    extra = sorted({k for r in result["layers"] for k in r["timings"] if k.startswith("int8_b4[")}
                   - {f"int8_b4[{result['int8_isa']}]"})
    if extra:
        lines += ["", "Other int8 paths (ms): " + "; ".join(
            f"{r['out']}x{r['in']} {r['tokens']} tokens {r['sparsity']:.0%}: "
            + ", ".join(f"{k} {r['timings'][k]['median_ms']:.3f}" for k in extra) for r in result["layers"])]
    lines += ["", f"Target (issue 16): int8-b4 at 90% >= {TARGET_VS_CSR_AT_90:.0f}x faster than the fp32 CSR kernel "
                  "at 128 tokens, 2 threads."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", nargs="+", type=int, default=[128])
    p.add_argument("--sparsity", nargs="+", type=float, default=[0.8, 0.9, 0.95])
    p.add_argument("--int8-isas", nargs="*", default=None,
                   help="int8 paths to time (first = the one the ratios use; default: the chosen path)")
    p.add_argument("--weight-bits", type=int, choices=(8, 7), default=None,
                   help="int8 weight width (default: cpu_int8.preferred_weight_bits(), the faster one here; 7 also "
                        "times 8-bit weights as int8_b4[<path>,w8])")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each variant keeps its best")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--isa", choices=ISAS, default="native",
                   help="avx2: limit every engine that can be limited to AVX2 + FMA (see the module docstring)")
    p.add_argument("--out", type=Path, default=None, help="[results/kernels_int8_cpu, _avx2 with --isa avx2]")
    args = p.parse_args(argv)
    run_with_isa(args.isa, argv)
    if args.out is None:
        args.out = RESULTS / ("kernels_int8_cpu" + ("_avx2" if args.isa == "avx2" else ""))
    if not cpu_int8.available():
        sys.exit(f"the INT8 C++ kernels are not built: {cpu_int8.unavailable_reason()}")
    if not kernels.available():
        sys.exit(f"the C++ kernels are not built: {kernels.unavailable_reason()}")
    torch.set_num_threads(args.threads)
    if args.weight_bits is None:
        args.weight_bits = cpu_int8.preferred_weight_bits()
    result = {**header(), "command": "python benchmarks/kernels_int8_cpu.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "int8_isa": (args.int8_isas or [cpu_int8.int8_isa()])[0],
              "int8_isas": list(cpu_int8.supported_int8_isas()), "fp32_isa": kernels.isa(),
              "kernel_threads": kernels.parallel_threads(),
              "preferred_weight_bits": cpu_int8.preferred_weight_bits(),
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    result["layers"] = bench_layers(args)
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
