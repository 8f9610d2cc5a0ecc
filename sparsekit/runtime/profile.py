"""Where a compiled model's forward spends its time, measured inside the real forward.

Timing each piece of a layer alone (its Linear, its attention, ...) runs it with warm caches: on a CPU whose
caches cannot hold a sparse model's weights the pieces then add up to less than the forward, and the difference
cannot be put on any of them. :func:`stage_profile` instead runs the whole forward while the fused op reads a
steady clock between its stages (:meth:`FusedEncoder.timing_stages`), so each stage is timed where it runs.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sparsekit.kernels.encoder import LINEAR_STAGES
from sparsekit.runtime.models import runtime_of


@dataclass
class StageProfile:
    """Medians over the timed forwards, in ms. ``stages_ms``: each stage of the fused op summed over the layers
    (``checks``, ``layernorm``, ``qkv``, ``attention``, ``attn_out``, ``ffn``); ``linears_ms``: the Linear stages
    (:data:`~sparsekit.kernels.encoder.LINEAR_STAGES`, each with its fused epilogue); ``op_ms``: every stage;
    ``outside_ms``: the rest of the forward (embeddings, packing, the head, Python); ``outside_linears_share``:
    ``1 - linears / forward``, the median over the calls of each call's own ratio."""

    forward_ms: float
    op_ms: float
    linears_ms: float
    outside_ms: float
    outside_linears_share: float
    stages_ms: dict[str, float]
    calls: int

    def as_dict(self) -> dict:
        return asdict(self)


def stage_profile(model: nn.Module, inputs: dict, calls: int = 30, warmup: int = 5) -> StageProfile:
    """Time ``calls`` forwards of a model compiled onto the fused runtime, each whole and by stage.

    Args:
        model: the compiled model (``sparsekit.compile``; its fused runtime is found with
            :func:`~sparsekit.runtime.runtime_of`), called as ``model(**inputs)``.
        inputs: the keyword arguments of one forward (``input_ids`` int64 ``[B, T]``, ``attention_mask`` ...).
        calls / warmup: timed and untimed forwards.
    Returns:
        a :class:`StageProfile`.
    Raises:
        ValueError: the model does not run on the fused runtime (compile it with ``fused=True``, the default).
    """
    runtime = runtime_of(model)
    if runtime is None:
        raise ValueError("this model does not run on sparsekit's fused runtime: compile it with "
                         "sparsekit.compile(model) (fused=True, the default) first")
    walls: list[int] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(**inputs)
        with runtime.timing_stages() as log:
            for _ in range(calls):
                start = time.perf_counter_ns()
                model(**inputs)
                walls.append(time.perf_counter_ns() - start)
    if len(log) != calls:
        raise RuntimeError(f"{calls} forwards ran the fused op {len(log)} times: the profile needs one op call per "
                           f"forward")
    per_call = [{name: int(ns.sum()) for name, ns in stages.items()} for stages in log]
    linears = [sum(c[s] for s in LINEAR_STAGES) for c in per_call]
    ops = [sum(c.values()) for c in per_call]
    ms = 1e-6
    return StageProfile(
        forward_ms=statistics.median(walls) * ms, op_ms=statistics.median(ops) * ms,
        linears_ms=statistics.median(linears) * ms,
        outside_ms=statistics.median(w - o for w, o in zip(walls, ops)) * ms,
        outside_linears_share=statistics.median(1 - lin / w for lin, w in zip(linears, walls)),
        stages_ms={name: statistics.median(c[name] for c in per_call) * ms for name in per_call[0]}, calls=calls)
