"""The models a benchmark times: what MODEL names, its dense reference, and the model sparsekit compiles.

MODEL is one of

- an **artifact** directory (``sparsekit export``): sparsekit's path is the artifact as ``sparsekit.load``
  returns it (compacted); the dense reference is the original-size model rebuilt from it (reconstruct.py);
- a **pruning run** directory (``sparsekit prune``): the masked model of ``sparsekit.load_pruned`` is both
  the dense reference and what sparsekit compiles;
- a **checkpoint** directory, ``minilm`` or ``random:<shape>`` with ``--sparsity``: random unstructured
  masks (exactly that fraction of every one of the six encoder matrices, seeded) make the masked model.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sparsekit.models import ModelError, prunable_matrices

KINDS = ("artifact", "run", "random", "checkpoint")


@dataclass
class Subject:
    """One model under test.

    id: stable label used to match configs across result files (``MODEL`` or ``MODEL@sparsity``).
    dense: the original-size Hugging Face model with masked weights as dense zeros (eval, float32, CPU).
    sparse: what ``sparsekit.compile`` is applied to (a copy each time): ``dense`` itself, or the artifact.
    density: kept fraction of the six encoder matrices at their original size.
    dense_reference: how ``dense`` was obtained, for the result file.
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

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "source": self.source, "sparsity": self.sparsity,
                "density": self.density, "vocab_size": self.vocab_size, "max_positions": self.max_positions,
                "dense_reference": self.dense_reference}


def classify(model: str) -> str:
    """Which kind of MODEL this is (one of KINDS); FileNotFoundError / ModelError with a clear message if none."""
    text = str(model)
    if text.startswith("random:"):
        return "random"
    if text == "minilm":
        return "checkpoint"
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return "artifact"
        if (path / "recipe.json").is_file():
            return "run"
        if (path / "config.json").is_file():
            return "checkpoint"
        raise ModelError(f"{path} is neither a sparsekit artifact (manifest.json), a pruning run (recipe.json) "
                         f"nor a Hugging Face checkpoint (config.json)")
    if path.exists():
        raise ModelError(f"{path} is a file; MODEL is a directory (artifact, run, checkpoint) or random:<shape>")
    if os.sep in text or text.startswith("."):
        raise FileNotFoundError(f"{path} does not exist; MODEL is an artifact dir, a run dir, a checkpoint dir, "
                                f"'minilm' or random:<shape>")
    from sparsekit.models import resolve_model_source

    resolve_model_source(text)  # raises ModelError with the hub-id / unknown-name explanation
    return "checkpoint"


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


def _check_sparsity(kind: str, model: str, sparsity: list[float] | None) -> None:
    if kind in ("artifact", "run") and sparsity is not None:
        raise ValueError(f"--sparsity applies to random and checkpoint models; {model} is a pruning "
                         f"{'artifact' if kind == 'artifact' else 'run'} with its own masks")
    if kind in ("random", "checkpoint") and sparsity is None:
        raise ValueError(f"{model} has no masks: pass --sparsity (e.g. --sparsity 0.9 for 10% of the encoder "
                         f"weights kept, random unstructured masks)")


def load_subjects(model: str, sparsity: list[float] | None, seed: int = 0) -> Iterator[Subject]:
    """The Subjects MODEL names (one per sparsity for random / checkpoint models), built lazily one at a time.

    Call :func:`check_model` first to fail fast on bad input before any heavy work.
    """
    kind = classify(model)
    _check_sparsity(kind, model, sparsity)
    if kind == "artifact":
        from sparsekit.bench.reconstruct import dense_from_artifact
        from sparsekit.export.artifact import load

        art = load(model)
        dense = dense_from_artifact(art)
        vocab, positions = _limits(art.config)
        ref = {"how": "original-size dense model rebuilt from the artifact (bench/reconstruct.py): the compacted "
                      "weights written back into full-size matrices, removed rows / columns zero",
               "compaction": art.manifest.get("compaction")}
        yield Subject(str(model), kind, str(model), None, density(dense), dense, art, vocab, positions, ref)
        return
    if kind == "run":
        from sparsekit.prune.output import load_pruned

        pruned = load_pruned(model)
        vocab, positions = _limits(pruned.model.config)
        ref = {"how": "the run's masked model (sparsekit.load_pruned): original size, pruned weights zero"}
        yield Subject(str(model), kind, str(model), None, density(pruned.model), pruned.model, pruned.model,
                      vocab, positions, ref)
        return
    from sparsekit.models import load_classifier, resolve_model_source

    base = load_classifier(resolve_model_source(model), num_labels=2, seed=seed).float().eval()
    vocab, positions = _limits(base.config)
    for s in sparsity:
        masked = apply_random_masks(copy.deepcopy(base), s, seed).requires_grad_(False)
        ref = {"how": f"the model with random unstructured masks (seed {seed}): original size, pruned weights zero"}
        yield Subject(f"{model}@{s:g}", kind, str(model), s, density(masked), masked, masked, vocab, positions, ref)


def check_model(model: str, sparsity: list[float] | None) -> str:
    """Validate MODEL and --sparsity without loading weights; returns the kind."""
    kind = classify(model)
    _check_sparsity(kind, model, sparsity)
    return kind
