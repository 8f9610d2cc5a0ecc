"""Compile plans: the backend ``sparsekit.compile`` measured for each fused matrix, saved with an artifact.

A plan (``compile_plan.json`` in the artifact directory, written by ``sparsekit compile ARTIFACT`` or the main job)
records the machine it was measured on (CPU model, kernel ISA path, torch threads), the token count it was timed
with and, per fused matrix (``layers.<i>.qkv`` ...), its shape, density, chosen backend and measured speedup.
``sparsekit.load`` attaches it as ``model.compile_plan``; ``sparsekit.compile`` then builds the runtime without
timing anything when the plan matches this machine and this model, and re-measures (with a warning saying why)
when it does not. ``compile(..., retime=True)`` always re-measures.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

PLAN_FILE = "compile_plan.json"
PLAN_VERSION = 1
#: The most bytes read from a plan file (a plan of a 48-layer model is a few tens of kB).
MAX_PLAN_BYTES = 4 << 20


def plan_machine() -> dict:
    """What a plan's timings depend on: CPU model, the kernels' ISA path, torch threads, cores, and any
    instruction-set limit of the engines (sparsekit.machine.isa_limits: e.g. a dense BLAS held to AVX2)."""
    from sparsekit.kernels import cpu
    from sparsekit.machine import isa_limits, machine_info

    info = machine_info()
    return {"cpu": info["cpu"], "isa": cpu.isa(), "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "isa_limits": isa_limits()}


def plan_of(report) -> dict:
    """The plan of a fused CompileReport (sparsekit.compiler)."""
    if report.runtime != "fused":
        raise ValueError(f"only a fused-runtime compile can be saved as a plan (this one: {report.runtime}, "
                         f"{report.runtime_why})")
    return {"format_version": PLAN_VERSION, "machine": plan_machine(), "tokens": report.tokens,
            "precision": report.precision,
            "matrices": {c.name: {"shape": list(c.shape), "density": c.density, "backend": c.backend,
                                  "speedup": c.speedup} for c in report.layers}}


def save_plan(report, artifact: str | Path, overwrite: bool = False) -> Path:
    """Write the plan of ``report`` into the artifact directory; an existing plan is kept unless ``overwrite``."""
    path = Path(artifact) / PLAN_FILE
    if not Path(artifact).is_dir():
        raise FileNotFoundError(f"{artifact} is not an artifact directory")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan_of(report), indent=1))
    os.replace(tmp, path)
    return path


def _check_plan(plan) -> dict:
    from sparsekit.runtime.encoder import RUNTIME_BACKENDS

    if not isinstance(plan, dict) or plan.get("format_version") != PLAN_VERSION:
        raise ValueError(f"not a version-{PLAN_VERSION} compile plan")
    machine, tokens, matrices = plan.get("machine"), plan.get("tokens"), plan.get("matrices")
    if not isinstance(machine, dict) or not isinstance(tokens, int) or not isinstance(matrices, dict):
        raise ValueError("a plan needs 'machine', 'tokens' and 'matrices'")
    for name, m in matrices.items():
        if not (isinstance(m, dict) and m.get("backend") in RUNTIME_BACKENDS and isinstance(m.get("shape"), list)
                and len(m["shape"]) == 2 and all(isinstance(v, int) and v >= 0 for v in m["shape"])):
            raise ValueError(f"matrix {name!r}: needs a backend among {tuple(RUNTIME_BACKENDS)} and a shape [out, in]")
    return plan


def read_plan(artifact: str | Path) -> dict | None:
    """The artifact's saved plan, None if it has none; an unreadable plan is ignored with a warning (compile then
    measures, as without a plan)."""
    path = Path(artifact) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_PLAN_BYTES:
            raise ValueError(f"larger than {MAX_PLAN_BYTES} bytes")
        return _check_plan(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path} is not a usable compile plan ({exc}); sparsekit.compile will measure instead",
                      RuntimeWarning, stacklevel=2)
        return None


def mismatch(plan: dict, matrices: dict[str, tuple[int, int]]) -> str | None:
    """Why ``plan`` cannot be reused for these fused matrices (name -> shape) on this machine, or None."""
    here = plan_machine()
    there = plan["machine"]
    there = {"isa_limits": {}, **there}  # plans saved before the limits were recorded ran without any
    for key in ("cpu", "isa", "threads", "isa_limits"):
        if there.get(key) != here[key]:
            return (f"the plan was measured with {key} = {there.get(key)!r}, this run has {here[key]!r}; "
                    f"re-measuring")
    saved = {name: tuple(m["shape"]) for name, m in plan["matrices"].items()}
    if saved != matrices:
        return "the plan's matrices do not match this model's; re-measuring"
    return None
