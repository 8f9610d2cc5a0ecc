"""End-to-end BERT-base on a GPU: dense vs an SMP-style pruned model (3% remaining), compacted and compiled.

The sparse side is what sparsekit ships: the pruned model is compacted exactly (``sparsekit.export.compact``:
empty rows / columns / heads removed, biases folded) and then ``sparsekit.compile`` picks dense cuBLAS or a
sparse GPU kernel per layer by measurement. The dense side is the same BERT-base unpruned, eager and
``torch.compile``d. Both run in bf16.

* batch 1 x 128: each side captured in a CUDA graph and replayed (launch overhead would dominate otherwise);
* batch 32 x 128: eager, CUDA graph, and ``torch.compile`` (dense).

Timing: CUDA events around each replay / call after warm-up, median of the repeats. The outputs are compared
first (the compacted model vs the masked dense one, logits in bf16).

No trained SMP run of BERT-base exists offline, so the mask is SMP-like by construction: per matrix, scores
are a heavy-tailed row importance + column importance + noise and the top 3% are kept (per-layer budgets as
SMP-L). Like SMP masks, this empties many rows and columns, which compaction removes; how many is reported.

    python benchmarks/gpu_end_to_end.py           # -> benchmarks/results/gpu_end_to_end_<gpu>.{json,png}
    python benchmarks/gpu_end_to_end.py --smoke   # tiny model on CPU (checks the script)
"""
from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:  # the interpreter must be chosen before triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import copy  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from sparsekit.timing import measure, measure_cuda  # noqa: E402

from results_io import RESULTS, write_result  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU (float32, no CUDA graphs)")
    p.add_argument("--keep", type=float, default=0.03, help="fraction of encoder weights remaining")
    p.add_argument("--sigma", type=float, default=2.0, help="spread of the row / column importances (log-normal)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", type=Path, default=None, help="result directory (default benchmarks/results; "
                                                           "a temporary directory with --smoke)")
    return p.parse_args(argv)


@torch.no_grad()
def smp_style_prune(model, keep: float, sigma: float, seed: int = 0) -> dict:
    """Zero all but ``keep`` of every prunable matrix, with SMP-like row / column structure. Returns stats."""
    from sparsekit.models import prunable_matrices

    g = torch.Generator().manual_seed(seed)
    empty_rows = empty_cols = total_rows = total_cols = 0
    for m in prunable_matrices(model):
        w = model.get_submodule(m.name).weight
        out, inp = w.shape
        score = (sigma * torch.randn(out, 1, generator=g) + sigma * torch.randn(1, inp, generator=g)
                 + torch.randn(out, inp, generator=g))
        k = max(1, int(round(keep * out * inp)))
        mask = torch.zeros(out * inp, dtype=torch.bool)
        mask[score.flatten().topk(k).indices] = True
        mask = mask.view(out, inp).to(w.device)
        w.mul_(mask)
        empty_rows += int((~mask.any(dim=1)).sum())
        empty_cols += int((~mask.any(dim=0)).sum())
        total_rows, total_cols = total_rows + out, total_cols + inp
    return {"keep": keep, "sigma": sigma, "empty_rows_fraction": empty_rows / total_rows,
            "empty_cols_fraction": empty_cols / total_cols}


def timer(device):
    """``time_fn(fn, repeats, graph)`` -> median seconds per call (CUDA events; CPU: perf_counter)."""

    def cpu(fn, repeats, graph=False):
        return measure(fn, warmup=1, repeats=max(3, repeats // 10))["median"]

    def gpu(fn, repeats, graph=False):
        return measure_cuda([fn], repeats, graph, warmup=3)

    return cpu if device.type == "cpu" else gpu


def measure_side(name, model, inputs, time_fn, repeats, modes) -> dict:
    out = {}
    for mode in modes:
        try:
            if mode == "torch.compile":
                compiled = torch.compile(model)
                out[mode] = time_fn(lambda c=compiled: c(**inputs), repeats, False)
            else:
                out[mode] = time_fn(lambda: model(**inputs), repeats, mode == "cuda-graph")
        except Exception as exc:  # e.g. a model that cannot be captured in a graph: reported, not fatal
            out[mode] = None
            out[f"{mode}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        print(f"  {name:<10} {mode:<14} " + (f"{out[mode] * 1e3:.3f} ms" if out[mode] else out[f"{mode}_error"]),
              flush=True)
    return out


def plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, dense, sparse = [], [], []
    for case in result["cases"]:
        for mode, t in case["dense"].items():
            if mode.endswith("_error") or t is None:
                continue
            labels.append(f"{case['batch']}x{case['seq']}\n{mode}")
            dense.append(t * 1e3)
            sparse.append((case["sparsekit"].get(mode) or 0) * 1e3)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(labels)), 4.5))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], dense, 0.4, label="dense BERT-base")
    ax.bar([x + 0.2 for x in xs], sparse, 0.4, label=f"sparsekit (compacted + compiled, {result['mask']['keep']:.0%})")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("ms per batch (lower is better)")
    ax.set_title(f"End to end, {result['dtype']}, {(result['machine'].get('gpu') or {}).get('name', 'CPU smoke')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_end_to_end.py needs a CUDA GPU (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}, CUDA {torch.version.cuda}). Use --smoke to exercise the script on CPU.",
              file=sys.stderr)
        return 2
    import sparsekit
    from sparsekit.export.compact import compact
    from sparsekit.machine import header
    from sparsekit.models import load_classifier

    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    shape = "tiny" if args.smoke else "bert-base"
    cases = [(1, 16), (2, 16)] if args.smoke else [(1, 128), (32, 128)]
    started = time.time()

    dense = load_classifier(f"random:{shape}", 2).eval()
    pruned = copy.deepcopy(dense)
    mask_stats = smp_style_prune(pruned, args.keep, args.sigma)
    compacted, report = compact(pruned)
    before, after = report.params()
    print(f"mask: {mask_stats}; exact compaction keeps {after / before:.1%} of the encoder's dense parameters")
    dense, pruned, compacted = (m.to(device=device, dtype=dtype).eval() for m in (dense, pruned, compacted))
    time_fn = timer(device)
    result = {**header(), "benchmark": "gpu_end_to_end", "smoke": args.smoke, "model": f"random:{shape}",
              "dtype": str(dtype), "mask": mask_stats, "cases": []}
    result["compaction"] = report.to_json()["summary"]
    for batch, seq in cases:
        g = torch.Generator().manual_seed(batch)
        inputs = {"input_ids": torch.randint(1000, 20000, (batch, seq), generator=g).to(device),
                  "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device)}
        model = copy.deepcopy(compacted)
        choice = sparsekit.compile(model, tokens=batch * seq, repeats=10 if args.smoke else args.repeats,
                                   verbose=False)
        with torch.no_grad():
            ref = pruned(**inputs).logits.float()
            got = model(**inputs).logits.float()
        err = float((got - ref).abs().max())
        print(f"batch {batch}x{seq}: max |Δlogit| compacted+compiled vs masked dense = {err:.3g}; backends: "
              + ", ".join(sorted({c.backend for c in choice.layers})), flush=True)
        modes = ["eager"] if args.smoke else ["eager", "cuda-graph"]
        with torch.no_grad():
            dense_t = measure_side("dense", dense, inputs, time_fn, args.repeats,
                                   modes + ([] if args.smoke or batch == 1 else ["torch.compile"]))
            sparse_t = measure_side("sparsekit", model, inputs, time_fn, args.repeats, modes)
        speedups = {m: dense_t[m] / sparse_t[m] for m in modes if dense_t.get(m) and sparse_t.get(m)}
        if dense_t.get("torch.compile") and sparse_t.get("cuda-graph"):
            speedups["vs torch.compile dense"] = dense_t["torch.compile"] / sparse_t["cuda-graph"]
        print(f"  speedups: {speedups}", flush=True)
        result["cases"].append({"batch": batch, "seq": seq, "max_abs_logit_diff": err, "dense": dense_t,
                                "sparsekit": sparse_t, "speedup": speedups,
                                "backends": {c.name: c.backend for c in choice.layers}})
    result["seconds"] = round(time.time() - started, 1)
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="gpu_e2e_smoke_")) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = (result["machine"].get("gpu") or {}).get("name", "cpu-smoke").replace(" ", "_")
    stem = f"gpu_end_to_end_{gpu}" + ("_smoke" if args.smoke else "")
    write_result(out_dir / stem, result, indent=1, final_newline=False, default=str)
    plot(result, out_dir / f"{stem}.png")
    print(f"wrote {out_dir / (stem + '.json')} and .png ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
