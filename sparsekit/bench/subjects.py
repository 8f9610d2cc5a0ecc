"""The models a benchmark times: what MODEL names, its dense reference, and the model sparsekit compiles.

MODEL is one of (sources.py tells them apart)

- an **artifact** directory (``sparsekit export``): sparsekit's path is the artifact as ``sparsekit.load``
  returns it (compacted); the dense reference is the original-size model rebuilt from it (reconstruct.py);
- a **pruning run** directory (``sparsekit prune``): the masked model of ``sparsekit.load_pruned`` is both
  the dense reference and what sparsekit compiles;
- a **checkpoint** directory, ``minilm`` or ``random:<shape>`` with ``--sparsity``: random unstructured
  masks (exactly that fraction of every one of the six encoder matrices, seeded) make the masked model.

Every model has a task type (export/heads.py): an artifact's or a run's own; for a checkpoint the head its
config names, unless ``--task-type`` picks one (random models: ``--task-type``, default sequence
classification). The inputs are shaped like the task (inputs.py).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from sparsekit.export.heads import SEQUENCE, TOKEN, check_task_type, task_type_of, task_type_of_config
from sparsekit.models import prunable_matrices
from sparsekit.sources import ARTIFACT, RUN, kind_of, open_source

#: Head outputs of a random model of each task type (CoNLL-2003's 9 tags for token classification).
RANDOM_NUM_LABELS = {SEQUENCE: 2, TOKEN: 9}


@dataclass
class Subject:
    """One model under test.

    id: stable label used to match configs across result files (``MODEL`` or ``MODEL@sparsity``).
    dense: the original-size Hugging Face model with masked weights as dense zeros (eval, float32, CPU).
    sparse: what ``sparsekit.compile`` is applied to (a copy each time): ``dense`` itself, or the artifact.
    density: kept fraction of the six encoder matrices at their original size.
    dense_reference: how ``dense`` was obtained, for the result file.
    task_type: the head (export/heads.py); type_vocab_size: token types the embeddings take (QA inputs mark the
    context with type 1 when there are two).
    """

    id: str
    kind: str
    source: str
    sparsity: float | None
    density: float
    dense: nn.Module
    sparse: nn.Module
    vocab_size: int
    max_positions: int
    dense_reference: dict = field(default_factory=dict)
    task_type: str = SEQUENCE
    type_vocab_size: int = 2

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "source": self.source, "sparsity": self.sparsity,
                "density": self.density, "vocab_size": self.vocab_size, "max_positions": self.max_positions,
                "task_type": self.task_type, "dense_reference": self.dense_reference}


def density(model: nn.Module) -> float:
    """Kept (non-zero) fraction of the six encoder matrices of a Hugging Face model."""
    kept = total = 0
    for m in prunable_matrices(model):
        w = model.get_submodule(m.name).weight
        kept += int(torch.count_nonzero(w))
        total += w.numel()
    return kept / total if total else 0.0


@torch.no_grad()
def apply_random_masks(model: nn.Module, sparsity: float, seed: int = 0) -> nn.Module:
    """Zero exactly ``round(sparsity * numel)`` uniformly random weights of each encoder matrix (in place)."""
    gen = torch.Generator().manual_seed(seed)
    for m in prunable_matrices(model):
        w = model.get_submodule(m.name).weight
        drop = round(sparsity * w.numel())
        if drop:
            idx = torch.randperm(w.numel(), generator=gen)[:drop]
            w.view(-1)[idx] = 0
    return model


def _limits(config) -> tuple[int, int]:
    return int(config.vocab_size), int(getattr(config, "max_position_embeddings", 512))


def _token_types(config) -> int:
    return int(getattr(config, "type_vocab_size", 0) or 0)


def _check_task_type(kind: str, model: str, task_type: str | None, own: str) -> None:
    if task_type is not None and kind in (ARTIFACT, RUN) and task_type != own:
        raise ValueError(f"--task-type {task_type} does not match {model}, a {own} {kind}; drop --task-type")


def _masked_base(model: str, kind: str, task_type: str | None, seed: int):
    """(model with the task's head, task type) of a checkpoint or random MODEL (float32, eval, CPU)."""
    from sparsekit.models import load_model, resolve_model_source

    resolved = resolve_model_source(model)
    if kind == "random":
        task_type = task_type or SEQUENCE
        num_labels = RANDOM_NUM_LABELS.get(task_type, 2)
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(resolved))
        task_type = task_type or task_type_of_config(config)
        num_labels = config.num_labels
    return load_model(resolved, task_type, num_labels=num_labels, seed=seed).float().eval(), task_type


def _check_sparsity(kind: str, model: str, sparsity: list[float] | None) -> None:
    if kind in (ARTIFACT, RUN) and sparsity is not None:
        raise ValueError(f"--sparsity applies to random and checkpoint models; {model} is a pruning "
                         f"{kind} with its own masks")
    if kind not in (ARTIFACT, RUN) and sparsity is None:
        raise ValueError(f"{model} has no masks: pass --sparsity (e.g. --sparsity 0.9 for 10% of the encoder "
                         f"weights kept, random unstructured masks)")


def load_subjects(model: str, sparsity: list[float] | None, seed: int = 0,
                  task_type: str | None = None) -> Iterator[Subject]:
    """The Subjects MODEL names (one per sparsity for random / checkpoint models), built lazily one at a time.

    task_type: the head of a random or checkpoint model (None: the checkpoint's own, sequence classification for
    random models); for an artifact or run it must be the model's own (ValueError otherwise).
    Call :func:`check_model` first to fail fast on bad input before any heavy work.
    """
    kind = kind_of(model)
    _check_sparsity(kind, model, sparsity)
    if task_type is not None:
        check_task_type(task_type)
    if kind not in (ARTIFACT, RUN):
        base, task_type = _masked_base(model, kind, task_type, seed)
        vocab, positions = _limits(base.config)
        for s in sparsity:
            masked = apply_random_masks(copy.deepcopy(base), s, seed).requires_grad_(False)
            ref = {"how": f"the model with random unstructured masks (seed {seed}): original size, pruned weights "
                          f"zero"}
            yield Subject(f"{model}@{s:g}", kind, str(model), s, density(masked), masked, masked, vocab, positions,
                          ref, task_type, _token_types(base.config))
        return
    opened = open_source(model, tokenizer=False)
    own = task_type_of(opened.model)
    _check_task_type(kind, model, task_type, own)
    if kind == ARTIFACT:
        from sparsekit.bench.reconstruct import dense_from_artifact

        art = opened.model
        dense = dense_from_artifact(art)
        vocab, positions = _limits(art.config)
        ref = {"how": "original-size dense model rebuilt from the artifact (bench/reconstruct.py): the compacted "
                      "weights written back into full-size matrices, removed rows / columns zero",
               "compaction": art.manifest.get("compaction")}
        yield Subject(str(model), kind, str(model), None, density(dense), dense, art, vocab, positions, ref, own,
                      _token_types(art.config))
        return
    vocab, positions = _limits(opened.model.config)
    ref = {"how": "the run's masked model (sparsekit.load_pruned): original size, pruned weights zero"}
    yield Subject(str(model), kind, str(model), None, density(opened.model), opened.model, opened.model,
                  vocab, positions, ref, own, _token_types(opened.model.config))


def check_model(model: str, sparsity: list[float] | None) -> str:
    """Validate MODEL and --sparsity without loading weights; returns the kind."""
    kind = kind_of(model)
    _check_sparsity(kind, model, sparsity)
    return kind
