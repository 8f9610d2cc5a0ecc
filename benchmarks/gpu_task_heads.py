#!/usr/bin/env python
"""GPU correctness check of the task heads (issue 14): tiny randomly pruned BERT and DistilBERT checkpoints with
sequence / token / QA heads, exported, loaded on the GPU, compiled with each GPU backend forced; max |difference|
against the uncompiled artifact on the same device -> $OUT/task_heads_gpu.json. On a machine without CUDA it runs
the same check with csr-cpu. Run from the repository root (it imports tests/task_models.py)."""
import json
import os
import sys
import tempfile
from pathlib import Path
sys.path.insert(0, "tests")  # the tiny task checkpoints of tests/task_models.py
import torch
from results_io import write_json  # benchmarks/ is on sys.path when run as a script
from task_models import make_task_checkpoint
from sparsekit.export import export
from sparsekit.export.artifact import load
from sparsekit.export.heads import head_output, SEQUENCE, TOKEN, QA
from sparsekit.compiler import compile as sk_compile

DEV = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ("bsr-triton-16", "csr-triton", "csr-cuda") if DEV == "cuda" else ("csr-cpu",)
out = {"device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu", "torch": torch.__version__, "rows": []}
tmp = Path(tempfile.mkdtemp())
tok_inputs = None
for model_type in ("bert", "distilbert"):
    for task_type in (SEQUENCE, TOKEN, QA):
        ck = make_task_checkpoint(tmp / f"{model_type}-{task_type}", task_type, model_type)
        art = tmp / f"{model_type}-{task_type}-art"
        export(str(ck), art)
        for backend in BACKENDS:
            row = {"model": model_type, "task_type": task_type, "backend": backend}
            try:
                ref = load(art, device=DEV).eval()
                model = load(art, device=DEV).eval()
                tok = model.tokenizer
                enc = tok(["the film is good", "a bad story of the movie , not funny at all"], padding=True,
                          return_tensors="pt").to(DEV)
                rep = sk_compile(model, tokens=64, repeats=3, warmup=1, verbose=False, force=backend)
                row["chosen"] = sorted({c.backend for c in rep.layers})
                with torch.no_grad():
                    a, b = head_output(ref(**enc), task_type), head_output(model(**enc), task_type)
                row["max_abs_diff"] = float((a - b).abs().max())
                row["ok"] = row["max_abs_diff"] < 1e-3
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:400]
                row["ok"] = False
            print(json.dumps(row), flush=True)
            out["rows"].append(row)
write_json(Path(os.environ.get("OUT", ".")) / "task_heads_gpu.json", out, final_newline=False)
print("ALL_OK" if all(r["ok"] for r in out["rows"]) else "SOME_FAILED")
