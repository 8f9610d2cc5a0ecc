"""GPU kernel benchmark: sparsekit's Triton BSR / CSR and CUDA CSR kernels against cuBLAS on BERT-base shapes.

Method (../shared/docs/kernel-anchors.md §6, and the device method notes): CUDA events; warm-up first (Triton
autotuning and torch.compile stay out of the numbers); the median of >= 30 timed batches; every timed call uses
the next of several copies of (weight, input), together larger than twice the L2 cache, so weights are not
L2-resident; the dense side (cuBLAS ``F.linear`` and ``torch.compile`` of it) is timed the same way. Each batch
of rotated calls is timed both eagerly and as a CUDA-graph replay (launch gaps removed). Results are checked
against the dense product first (relative error <= 1e-2 in bf16). Memory-bound kernels (few tokens) report the
achieved bandwidth on the bytes they must read and write, against a measured device-to-device copy bandwidth.

    python benchmarks/gpu_kernels.py              # full sweep -> benchmarks/results/gpu_kernels_<gpu>.{json,png}
    python benchmarks/gpu_kernels.py --quick      # fewer sparsities / token counts
    python benchmarks/gpu_kernels.py --smoke      # tiny shapes on CPU under the Triton interpreter (checks the script)

Shapes: 768x768 (Q/K/V/O), 3072x768 (FFN in), 768x3072 (FFN out); tokens 1..4096; BSR at 70-95% block sparsity
with blocks 16/32/64; CSR at 70-98% unstructured sparsity for 1-16 tokens; 2:4 where the GPU has it.
"""
from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:  # the interpreter must be chosen before triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sparsekit.timing import measure, measure_cuda  # noqa: E402

from results_io import RESULTS, write_result  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

SHAPES = [(768, 768), (3072, 768), (768, 3072)]  # (out, in)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under the Triton interpreter")
    p.add_argument("--quick", action="store_true", help="fewer sparsities and token counts")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--out", type=Path, default=None, help="result directory (default benchmarks/results; "
                                                           "a temporary directory with --smoke)")
    p.add_argument("--repeats", type=int, default=30, help="timed batches per measurement (median)")
    return p.parse_args(argv)


# =============================================================================================
# Timing
# =============================================================================================
def time_rotated(calls: list[Callable[[], object]], repeats: int, graph: bool) -> float:
    """Median seconds per call of ``calls`` (one per weight / input copy), CUDA events (sparsekit.timing)."""
    return measure_cuda(calls, repeats, graph)


def time_cpu(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` on the CPU (the --smoke mode: few runs, the interpreter is slow)."""
    return measure(fn, warmup=1, repeats=max(3, repeats // 10))["median"]


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + written), 1 GiB buffers."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = time_rotated([lambda: dst.copy_(src)], 20, graph=False)
    return 2 * src.numel() / t


def copies_for(bytes_per_copy: int) -> int:
    """Enough copies that one batch touches more than twice the L2 cache (and at least 128 MB), at most 64."""
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * 2**20)
    return max(2, min(64, -(-max(2 * l2, 128 * 10**6) // max(bytes_per_copy, 1))))


# =============================================================================================
# Weights
# =============================================================================================
def block_sparse_weight(out, inp, block, sparsity, dtype, device, gen):
    tiles = torch.rand(-(-out // block), -(-inp // block), generator=gen, device=device) >= sparsity
    mask = tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)[:out, :inp]
    return (torch.randn(out, inp, generator=gen, device=device) * mask / inp**0.5).to(dtype)


def unstructured_weight(out, inp, sparsity, dtype, device, gen):
    mask = torch.rand(out, inp, generator=gen, device=device) >= sparsity
    return (torch.randn(out, inp, generator=gen, device=device) * mask / inp**0.5).to(dtype)


def rel_err(y, ref) -> float:
    return float((y.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))


# =============================================================================================
# Cases
# =============================================================================================
def run_case(kind, out, inp, tokens, sparsity, block, dtype, device, args, gen, copy_bw, compiled_dense):
    """One (kernel family, shape, tokens, sparsity, block) point: every provider's time, checked first."""
    from sparsekit.kernels import cuda as cuda_kernels
    from sparsekit.kernels.gpu_bsr_layout import pack_gpu_bsr
    from sparsekit.kernels.gpu_csr_layout import pack_gpu_csr
    from sparsekit.kernels.triton_bsr import triton_bsr_linear
    from sparsekit.kernels.triton_csr import triton_csr_linear

    smoke = device.type == "cpu"
    make = (lambda: block_sparse_weight(out, inp, block, sparsity, dtype, device, gen)) if kind == "bsr" else \
        (lambda: unstructured_weight(out, inp, sparsity, dtype, device, gen))
    probe = make()
    n = 1 if smoke else copies_for(probe.numel() * probe.element_size() + tokens * (inp + out) * probe.element_size())
    weights = [probe] + [make() for _ in range(n - 1)]
    xs = [torch.randn(tokens, inp, device=device, dtype=dtype) for _ in range(n)]
    bias = torch.randn(out, device=device, dtype=dtype)
    providers: dict[str, list[Callable[[], object]]] = {}
    if kind == "bsr":
        packed = [pack_gpu_bsr(w, block=(block, block)) for w in weights]
        providers["sparsekit-triton-bsr"] = [lambda x=x, p=p: triton_bsr_linear(x, p, bias) for x, p in zip(xs, packed)]
        nbytes = packed[0].nbytes
    else:
        packed = [pack_gpu_csr(w) for w in weights]
        providers["sparsekit-triton-csr"] = [lambda x=x, p=p: triton_csr_linear(x, p, bias) for x, p in zip(xs, packed)]
        if cuda_kernels.available():
            providers["sparsekit-cuda-csr"] = [lambda x=x, p=p: cuda_kernels.cuda_csr_linear(x, p, bias)
                                               for x, p in zip(xs, packed)]
        nbytes = packed[0].nbytes
    if not smoke:
        providers["cublas-dense"] = [lambda x=x, w=w: F.linear(x, w, bias) for x, w in zip(xs, weights)]
        providers["torch-compile-dense"] = [lambda x=x, w=w: compiled_dense(x, w, bias) for x, w in zip(xs, weights)]
        if kind == "bsr":
            bsr = [w.to_sparse_bsr((block, block)) for w in weights]
            providers["torch-bsr"] = [lambda x=x, b=b: (b @ x.T).T + bias for x, b in zip(xs, bsr)]
        else:
            csr = [w.to_sparse_csr() for w in weights]
            providers["cusparse-csr"] = [lambda x=x, c=c: (c @ x.T).T + bias for x, c in zip(xs, csr)]
    ref = F.linear(xs[0].float(), weights[0].float(), bias.float())
    row = {"kind": kind, "out": out, "in": inp, "tokens": tokens, "sparsity": sparsity, "block": block,
           "copies": n, "weight_bytes_sparse": nbytes, "weight_bytes_dense": probe.numel() * probe.element_size(),
           "providers": {}}
    for name, calls in providers.items():
        entry: dict = {}
        try:  # a baseline torch cannot run here (or cannot capture in a graph) is reported, not fatal
            entry["rel_err"] = rel_err(calls[0](), ref)
            if smoke:
                entry["eager_s"] = time_cpu(calls[0], args.repeats)
            else:
                entry["eager_s"] = time_rotated(calls, args.repeats, graph=False)
                try:
                    entry["graph_s"] = time_rotated(calls, args.repeats, graph=True)
                except Exception as exc:
                    entry["graph_error"] = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        row["providers"][name] = entry
    elt = probe.element_size()
    moved = nbytes + tokens * (inp + out) * elt  # the sparse kernels' minimum traffic: weight once, x and y once
    for name, entry in row["providers"].items():
        t = entry.get("graph_s", entry.get("eager_s"))
        if t:
            read = row["weight_bytes_dense"] + tokens * (inp + out) * elt if "dense" in name else moved
            entry["bandwidth_Bps"] = read / t
            if copy_bw:
                entry["bandwidth_fraction"] = read / t / copy_bw
    dense = row["providers"].get("cublas-dense", {})
    for entry in row["providers"].values():
        for key in ("graph_s", "eager_s"):  # graph replay where both have it, else eager
            if dense.get(key) and entry.get(key):
                entry["speedup_vs_cublas"] = dense[key] / entry[key]
                entry["speedup_basis"] = key
                break
    return row


def sweep(args, device):
    smoke = device.type == "cpu"
    dtype = torch.float32 if smoke else getattr(torch, args.dtype)
    if smoke:
        bsr = [(48, 96, t, s, b) for t in (1, 17) for s in (0.7,) for b in (16, 32)]
        csr = [(40, 80, t, s) for t in (1, 3) for s in (0.9,)]
    else:
        tokens = [1, 128, 1024, 4096] if args.quick else [1, 16, 128, 512, 1024, 2048, 4096]
        sparsities = [0.9] if args.quick else [0.7, 0.8, 0.9, 0.95]
        blocks = [32, 64] if args.quick else [16, 32, 64]
        bsr = [(o, i, t, s, b) for (o, i) in SHAPES for t in tokens for s in sparsities for b in blocks]
        csr_tokens = [1, 4, 16] if args.quick else [1, 2, 4, 8, 16]
        csr_sparsities = [0.9, 0.95] if args.quick else [0.7, 0.8, 0.9, 0.95, 0.98]
        csr = [(o, i, t, s) for (o, i) in SHAPES for t in csr_tokens for s in csr_sparsities]
    gen = torch.Generator(device=device).manual_seed(0)
    copy_bw = None if smoke else copy_bandwidth()
    compiled_dense = None if smoke else torch.compile(F.linear)
    rows = []
    for i, (o, inp, t, s, b) in enumerate(bsr):
        rows.append(run_case("bsr", o, inp, t, s, b, dtype, device, args, gen, copy_bw, compiled_dense))
        print(f"[bsr {i + 1}/{len(bsr)}] {o}x{inp} tokens={t} sparsity={s} block={b}: " + summary(rows[-1]),
              flush=True)
    for i, (o, inp, t, s) in enumerate(csr):
        rows.append(run_case("csr", o, inp, t, s, None, dtype, device, args, gen, copy_bw, compiled_dense))
        print(f"[csr {i + 1}/{len(csr)}] {o}x{inp} tokens={t} sparsity={s}: " + summary(rows[-1]), flush=True)
    rows += semi24_cases(args, device, gen, compiled_dense) if not smoke else []
    return {"dtype": str(dtype), "copy_bandwidth_Bps": copy_bw, "rows": rows}


def semi24_cases(args, device, gen, compiled_dense):
    """2:4 semi-structured (torch.sparse) vs cuBLAS where the GPU supports it (compute capability >= 8.0)."""
    if torch.cuda.get_device_capability() < (8, 0):
        return []
    from torch.sparse import to_sparse_semi_structured

    dtype, rows = getattr(torch, args.dtype), []
    for out, inp in SHAPES:
        for tokens in ([128, 4096] if args.quick else [128, 1024, 4096]):
            keep = torch.rand(out, inp // 4, 4, generator=gen, device=device).argsort(dim=2) < 2
            w = (torch.randn(out, inp, generator=gen, device=device) * keep.reshape(out, inp)).to(dtype)
            x, bias = torch.randn(tokens, inp, device=device, dtype=dtype), torch.randn(out, device=device, dtype=dtype)
            row = {"kind": "semi24", "out": out, "in": inp, "tokens": tokens, "sparsity": 0.5, "providers": {}}
            try:
                ws = to_sparse_semi_structured(w)
                calls = {"torch-semi24": lambda x=x, ws=ws, b=bias: F.linear(x, ws, b),
                         "cublas-dense": lambda x=x, w=w, b=bias: F.linear(x, w, b)}
                ref = F.linear(x.float(), w.float(), bias.float())
                for name, fn in calls.items():
                    row["providers"][name] = {"rel_err": rel_err(fn(), ref),
                                              "eager_s": time_rotated([fn], args.repeats, graph=False)}
                d = row["providers"]["cublas-dense"]["eager_s"]
                row["providers"]["torch-semi24"]["speedup_vs_cublas"] = d / row["providers"]["torch-semi24"]["eager_s"]
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
            print(f"[2:4] {out}x{inp} tokens={tokens}: " + summary(row), flush=True)
    return rows


def summary(row) -> str:
    parts = []
    for name, e in row["providers"].items():
        if "error" in e:
            parts.append(f"{name}=ERR")
            continue
        t = e.get("graph_s", e.get("eager_s"))
        extra = f" x{e['speedup_vs_cublas']:.2f}" if "speedup_vs_cublas" in e else ""
        parts.append(f"{name}={t * 1e6:.1f}us{extra} err={e['rel_err']:.1e}")
    return ", ".join(parts) or row.get("error", "")


def plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bsr = [r for r in result["rows"] if r["kind"] == "bsr"]
    shapes = sorted({(r["out"], r["in"]) for r in bsr})
    fig, axes = plt.subplots(1, max(1, len(shapes)), figsize=(6 * max(1, len(shapes)), 4.5), squeeze=False)
    for ax, (o, i) in zip(axes[0], shapes):
        for s in sorted({r["sparsity"] for r in bsr}):
            for b in sorted({r["block"] for r in bsr}):
                pts = sorted((r["tokens"], r["providers"]["sparsekit-triton-bsr"].get("speedup_vs_cublas")
                              or r["providers"]["sparsekit-triton-bsr"].get("eager_s", 0))
                             for r in bsr if (r["out"], r["in"], r["sparsity"], r["block"]) == (o, i, s, b)
                             and "error" not in r["providers"]["sparsekit-triton-bsr"])
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=f"{int(s * 100)}% b{b}")
        ax.set_xscale("log", base=2)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(f"Triton BSR {o}x{i}")
        ax.set_xlabel("tokens")
        ax.set_ylabel("speedup vs cuBLAS (CUDA graph)" if result.get("copy_bandwidth_Bps") else "seconds (CPU)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_kernels.py needs a CUDA GPU (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}, CUDA {torch.version.cuda}). Use --smoke to exercise the script on CPU "
              "under the Triton interpreter.", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    import triton  # noqa: F401  (fails clearly if missing)

    from sparsekit.machine import header

    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="gpu_kernels_smoke_")) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result = {**header(), "benchmark": "gpu_kernels", "smoke": args.smoke, "args": {k: str(v) for k, v in
                                                                                      vars(args).items()}}
    result.update(sweep(args, device))
    result["seconds"] = round(time.time() - started, 1)
    gpu = (result["machine"].get("gpu") or {}).get("name", "cpu-smoke").replace(" ", "_")
    stem = f"gpu_kernels_{gpu}" + ("_smoke" if args.smoke else "")
    write_result(out_dir / stem, result, indent=1, final_newline=False)
    plot(result, out_dir / f"{stem}.png")
    print(f"wrote {out_dir / (stem + '.json')} and .png ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
