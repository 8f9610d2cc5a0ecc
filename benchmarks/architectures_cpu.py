"""Compile speedup per architecture: BERT-, DistilBERT-, ModernBERT- and DeBERTa-shaped models at 90% sparsity,
1 x 128 tokens, CPU.

For every architecture the steps of ``sparsekit run``: prune (magnitude pruning to ``--keep`` over a short
SST-2 run, or with ``--prune-steps 0`` random unstructured masks) -> export (its artifact layout: compact for
BERT, structure-preserving for the others) -> ``sparsekit.load`` -> ``sparsekit.compile`` (backends chosen by
measurement, per matrix; the fused runtime where the family has it, else the module tree) -> the compiled logits
checked against the masked dense model (max |Δ| <= 1e-4). Timed, interleaved (sparsekit.timing.
measure_interleaved) on random token ids, batch x seq:

- ``masked_dense``: the masked dense eager Hugging Face model;
- ``compiled``: the compiled artifact (``sparsekit.compile`` default: fused runtime where it runs);
- ``modules``: the same artifact compiled with ``fused=False`` (each Linear on its kernel in the module tree);
- ``checkpoint``: the pruned Hugging Face model itself, uncompacted, compiled (fused families only: the fused
  runtime inside the Hugging Face model, sparsekit.runtime.models).

The models are random-init (no real weights of these families can be downloaded here); latency depends on the
shapes and the masks only.

    python benchmarks/architectures_cpu.py                      # the four base shapes; writes results/
    python benchmarks/architectures_cpu.py --smoke              # tiny shapes, few repeats, writes to /tmp
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

from sparsekit.compiler import compile
from sparsekit.data.inputs import random_inputs
from sparsekit.export.artifact import export, load
from sparsekit.kernels import cpu as kernels
from sparsekit.machine import header
from sparsekit.models import load_classifier, load_tokenizer, prunable_matrices
from sparsekit.prune import load_pruned
from sparsekit.prune.config import PruneConfig
from sparsekit.prune.train import prune
from sparsekit.timing import measure_interleaved

from results_io import RESULTS, steal_lines, timing_ms, write_result  # benchmarks/ is on sys.path when run as a script

ATOL = 1e-4


def pruned_model(arch: str, keep: float, steps: int, workdir: Path):
    """``(masked dense model, tokenizer, run or (model, tokenizer) source for export)`` of ``random:<arch>``."""
    if steps > 0:
        run = workdir / f"{arch}-run"
        prune(PruneConfig(model=f"random:{arch}", method="magnitude", keep=keep, steps=steps, train_samples=256,
                          eval_samples=64, batch_size=8, max_length=64, progress=False, output_dir=str(run),
                          overwrite=True))
        pruned = load_pruned(run)
        return pruned.model, pruned.tokenizer, run
    torch.manual_seed(0)
    model = load_classifier(f"random:{arch}", 2).eval()
    with torch.no_grad():
        for m in prunable_matrices(model):
            w = model.get_submodule(m.name).weight
            w.mul_(torch.rand_like(w) < keep)
    tokenizer = load_tokenizer(f"random:{arch}")
    return model, tokenizer, (model, tokenizer)


def run_arch(arch: str, args, workdir: Path) -> dict:
    """Prune, export, load, compile and time one architecture; the result row."""
    dense, tokenizer, source = pruned_model(arch, args.keep, args.prune_steps, workdir)
    dense = dense.float().eval()
    exported = export(source, workdir / f"{arch}-artifact", overwrite=True)
    model = load(workdir / f"{arch}-artifact")
    layout = model.manifest.get("layout", "compact")
    tokens = args.batch * args.seq
    report = compile(model, tokens=tokens, verbose=False)
    modules = load(workdir / f"{arch}-artifact")
    compile(modules, tokens=tokens, verbose=False, fused=False)
    variants = {"masked_dense": dense, "compiled": model, "modules": modules}
    if report.runtime == "fused":
        checkpoint = copy.deepcopy(dense)
        if compile(checkpoint, tokens=tokens, verbose=False).runtime == "fused":
            variants["checkpoint"] = checkpoint
    x = random_inputs(args.batch, args.seq, dense.config.vocab_size, max_id=20000)
    with torch.no_grad():
        want = dense(**x).logits
        errs = {name: float((m(**x).logits - want).abs().max()) for name, m in variants.items()}
    err = max(errs.values())
    if err > ATOL:
        raise SystemExit(f"{arch}: compiled logits differ from the masked dense model by {errs} > {ATOL}")
    with torch.inference_mode():  # every variant without autograd bookkeeping, as a deployment runs it
        timings = measure_interleaved({name: (lambda m=m: m(**x)) for name, m in variants.items()},
                                      rounds=args.rounds, warmup=args.warmup, repeats=args.repeats)
    backends: dict[str, int] = {}
    for c in report.layers:
        backends[c.backend] = backends.get(c.backend, 0) + 1
    masks = [dense.get_submodule(m.name).weight != 0 for m in prunable_matrices(dense)]
    ms = {k: timing_ms(v) for k, v in timings.items()}
    return {"arch": arch, "model_type": dense.config.model_type, "layout": layout,
            "shape": {"hidden": dense.config.hidden_size, "layers": dense.config.num_hidden_layers,
                      "heads": dense.config.num_attention_heads,
                      "ffn": getattr(dense.config, "intermediate_size", getattr(dense.config, "hidden_dim", None))},
            "density": sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks),
            "skipped_rules": sorted(model.manifest.get("skipped_rules", {})),
            "bytes": {"dense_fp32": exported.bytes_dense, "exported": exported.bytes_exported},
            "runtime": report.runtime, "compiled_layers": backends, "max_abs_logit_diff": err, "latency": ms,
            "speedup": ms["masked_dense"]["median_ms"] / ms["compiled"]["median_ms"],
            "speedups": {name: ms["masked_dense"]["median_ms"] / v["median_ms"] for name, v in ms.items()
                         if name != "masked_dense"}}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Compile speedup per architecture ({result['date']})", "",
             f"`{result['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {result['threads']} threads, kernels ISA {result['isa']}; "
             f"torch {result['versions']['torch']}, transformers {result['versions']['transformers']}.",
             f"Masks: {result['masks']}; batch {result['batch']} x {result['seq']} tokens; median of interleaved "
             f"rounds (p25-p75), under torch.inference_mode().", "", *steal_lines(result),
             "| architecture | layout | shape (hidden/layers/heads/FFN) | density | runtime | compiled matrices "
             "| masked dense ms | artifact compiled ms | artifact, module tree ms | checkpoint compiled ms "
             "| max abs Δlogit |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r: dict, name: str) -> str:
        lat = r["latency"].get(name)
        if lat is None:
            return "—"
        ratio = "" if name == "masked_dense" else f" **{r['speedups'][name]:.2f}x**"
        return f"{lat['median_ms']:.2f} ({lat['p25_ms']:.2f}-{lat['p75_ms']:.2f}){ratio}"

    for r in result["rows"]:
        s = r["shape"]
        layers = ", ".join(f"{k} {v}" for k, v in sorted(r["compiled_layers"].items()))
        lines.append(f"| {r['arch']} | {r['layout']} | {s['hidden']}/{s['layers']}/{s['heads']}/{s['ffn']} | "
                     f"{100 * r['density']:.1f}% | {r.get('runtime', 'modules')} | {layers} | "
                     f"{cell(r, 'masked_dense')} | {cell(r, 'compiled')} | {cell(r, 'modules')} | "
                     f"{cell(r, 'checkpoint')} | {r['max_abs_logit_diff']:.1e} |")
    lines += ["", "Ratios: the masked dense eager model's median over each variant's, same run. Artifact compiled: "
              "`sparsekit.compile` of the loaded artifact (runtime `fused`: sparsekit's fused encoder; `modules`: "
              "the module tree, each Linear on its kernel, for families the fused layer does not compute). Module "
              "tree: the same artifact with `fused=False`. Checkpoint compiled: the pruned Hugging Face model "
              "itself, uncompacted, compiled (the fused runtime inside it; — where the family has none).",
              "", "Layout `modules`: the structure is kept and every prunable module (ModernBERT's fused Wqkv and "
              "GLU Wi whole) is stored in a sparse format; the skipped exact-compaction rules are listed in the "
              "JSON and the artifact's report."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["bert-base", "distilbert-base", "modernbert-base",
                                                       "deberta-v2-base"],
                        help="random:<arch>-<shape> names (models.random_model_names)")
    parser.add_argument("--keep", type=float, default=0.1,
                        help="fraction of the encoder weights kept (0.1 = 90%% sparse)")
    parser.add_argument("--prune-steps", type=int, default=10,
                        help="magnitude-pruning steps on SST-2; 0 = random unstructured masks")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS / "architectures_cpu",
                        help="output path without suffix (.json and .md are written)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, 2 prune steps, few repeats, output in a temporary directory")
    args = parser.parse_args(argv)
    if args.smoke:
        args.archs = [a.rsplit("-", 1)[0] + "-tiny" for a in args.archs]
        args.prune_steps, args.rounds, args.warmup, args.repeats = min(args.prune_steps, 2), 1, 1, 3
        args.out = Path(tempfile.mkdtemp(prefix="architectures-smoke-")) / "architectures_cpu"
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        rows = []
        for arch in args.archs:
            rows.append(run_arch(arch, args, Path(work)))
            r = rows[-1]
            print(f"{arch}: {r['layout']}, {r['runtime']} runtime, density {100 * r['density']:.1f}%, compiled "
                  f"{r['compiled_layers']}, masked dense {r['latency']['masked_dense']['median_ms']:.2f} ms, "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in r["speedups"].items())
                  + f", max |Δlogit| {r['max_abs_logit_diff']:.1e}", flush=True)
    masks = (f"magnitude pruning, {args.prune_steps} SST-2 steps" if args.prune_steps > 0 else "random unstructured")
    result = {**header(), "command": "python benchmarks/architectures_cpu.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "isa": kernels.isa(),
              "threads": args.threads, "keep": args.keep, "masks": f"{masks} to keep {args.keep}",
              "batch": args.batch, "seq": args.seq, "rows": rows}
    write_result(args.out.with_suffix(""), result, markdown(result), quiet=True)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
