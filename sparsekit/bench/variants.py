"""The ways to run one model that a benchmark compares (see config.VARIANTS), each built or explained.

A Variant is a callable ``inputs -> outputs`` (inputs: ``input_ids`` / ``attention_mask`` /
``token_type_ids`` long ``[batch, seq]``; outputs float32: logits ``[batch, num_labels]``, per token
``[batch, seq, num_labels]`` for token classification, start / end logits ``[batch, seq, 2]`` for QA, see
export/heads.head_output), or a status with the reason
it was not measured: ``skipped`` (not requested), ``unavailable`` (not installed here), ``failed`` (tried and
raised; the error is recorded instead of stopping the benchmark).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sparsekit.backends import TorchSparseBackend
from sparsekit.errors import format_error
from sparsekit.export.heads import head_output, task_type_of
from sparsekit.models import prunable_matrices, set_submodule

Inputs = dict[str, torch.Tensor]


@dataclass
class Variant:
    """One way to run the model: ``run(inputs) -> logits`` when ``status == "ok"``, else ``reason`` says why not."""

    name: str
    status: str = "ok"
    run: Callable[[Inputs], torch.Tensor] | None = None
    reason: str | None = None
    setup_s: float = 0.0
    info: dict = field(default_factory=dict)


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters) for a result file."""
    return format_error(exc, with_type=True, first_line=True, max_chars=300)


def _logits(model: nn.Module, task_type: str | None = None) -> Callable[[Inputs], torch.Tensor]:
    """``inputs -> outputs`` of ``model`` as one tensor (head_output); ``task_type`` for a wrapped model whose
    class no longer tells it (torch.compile's)."""
    task_type = task_type or task_type_of(model)
    return lambda inputs: head_output(model(**inputs), task_type)


def dense(model: nn.Module) -> Variant:
    """PyTorch eager on the original-size masked model: the reference of every speedup."""
    return Variant("dense", run=_logits(model))


def artifact_eager(model: nn.Module) -> Variant:
    """The artifact as ``sparsekit.load`` returns it (compacted shapes, each matrix densified once, F.linear)."""
    return Variant("artifact-eager", run=_logits(model))


@torch.no_grad()
def torch_sparse(model: nn.Module) -> Variant:
    """Every encoder Linear of a copy of ``model`` replaced by a ``torch.sparse`` CSR matmul, whatever its density
    (``sparsekit.compile`` would refuse it above 50%: here it is forced, as a user trying torch.sparse would)."""
    start = time.perf_counter()
    try:
        sparse = copy.deepcopy(model)
        for m in prunable_matrices(sparse):
            linear = sparse.get_submodule(m.name)
            set_submodule(sparse, m.name, TorchSparseBackend().build(linear.weight, linear.bias))
    except (RuntimeError, ValueError) as exc:
        return Variant("torch-sparse", "failed", reason=describe_error(exc))
    return Variant("torch-sparse", run=_logits(sparse), setup_s=time.perf_counter() - start)


def torch_compile(model: nn.Module, enabled: bool) -> Variant:
    """``torch.compile`` (inductor, static shapes) of the dense model; compiles on the first call of each shape,
    so failures show up there and are recorded by the runner. Opt-in: compiling takes minutes on a small CPU."""
    if not enabled:
        return Variant("torch-compile", "skipped", reason="opt-in: pass --torch-compile (compiling takes minutes "
                                                          "on CPU)")
    try:
        compiled = torch.compile(model, dynamic=False)
    except Exception as exc:  # any failure is a result, not a crash
        return Variant("torch-compile", "failed", reason=describe_error(exc))
    return Variant("torch-compile", run=_logits(compiled, task_type_of(model)),
                   info={"backend": "inductor", "dynamic": False})


def sparsekit_compiled(model: nn.Module, tokens: int, repeats: int,
                       precision: str = "fp32") -> tuple[Variant, object]:
    """``sparsekit.compile`` of a copy of ``model`` for ``tokens`` rows at ``precision`` (fp32: variant
    ``sparsekit``; int8: ``sparsekit-int8``); returns the Variant and the CompileReport."""
    from sparsekit.compiler import compile as sk_compile

    start = time.perf_counter()
    compiled = copy.deepcopy(model)
    report = sk_compile(compiled, tokens=tokens, repeats=repeats, verbose=False, precision=precision)
    chosen: dict[str, int] = {}
    for layer in report.layers:
        chosen[layer.backend] = chosen.get(layer.backend, 0) + 1
    name = "sparsekit" if precision == "fp32" else f"sparsekit-{precision}"
    variant = Variant(name, run=_logits(compiled), setup_s=time.perf_counter() - start,
                      info={"backends_chosen": chosen, "runtime": report.runtime, "precision": precision})
    return variant, report
