"""Hooks that let a method add behaviour to the one training loop (train.py) without a second loop.

An extension sees the loop through a :class:`TrainContext` and may add a loss term, act before or
after each optimisation step, stop the run early, take over finalisation, and add entries to the
run's recipe.json / report.json. AbP (abp.py), CAP (cap.py), LPAF (lpaf.py) and structure-aware SMP
(structured.py) are extensions; the plain methods use none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TrainContext:
    """What the loop shares with extensions.

    model: the unwrapped model being trained; pruner: its Pruner (None for dense fine-tuning);
    optimizer / scheduler: the (Accelerate-wrapped) AdamW and LR schedule; trainable: the parameters
    that are clipped (extensions that add parameters append here); train_set / collate: the training
    data (the task type's dataset and its collate function); total / steps_per_epoch: the step budget;
    task: the task's spec (a TaskSpec for sequence classification); task_type: the run's TaskType
    (sparsekit/tasks/).
    """

    model: nn.Module
    pruner: Any
    config: Any
    recipe: Any
    task: Any
    train_set: Any
    collate: Any
    total: int
    steps_per_epoch: int
    device: torch.device
    teacher: nn.Module | None = None
    optimizer: Any = None
    scheduler: Any = None
    trainable: list = field(default_factory=list)
    task_type: Any = None


class Extension:
    """Base class: every hook is a no-op. Subclasses override what they need."""

    name = "extension"
    #: True if this extension's finalize() replaces Pruner.finalize() (LPAF: factors, not masks).
    owns_finalize = False
    #: False if a checkpoint taken now could not be resumed (LPAF after factorisation).
    checkpointable = True

    def setup(self, ctx: TrainContext) -> None:
        """Called once after the model, pruner and data exist and before the optimizer is built."""

    def after_prepare(self, ctx: TrainContext) -> None:
        """Called once the optimizer and scheduler exist (ctx.optimizer / ctx.scheduler are set)."""

    def before_step(self, ctx: TrainContext, step: int) -> None:
        """Called before the forward pass of optimisation step ``step`` (0-based)."""

    def extra_loss(self, ctx: TrainContext, step: int, example_ids: torch.Tensor, labels: torch.Tensor,
                   logits: torch.Tensor) -> torch.Tensor | None:
        """An auxiliary loss added to the task loss (``None`` = nothing).

        labels: the batch's ``labels`` (``[B]`` classes or scores; ``[B, T]`` tags with -100 for token
        classification; None for question answering); logits: the task type's outputs (``[B, C]``, ``[B, T, C]``,
        or the (start, end) pair ``[B, T]`` each for question answering).
        """
        return None

    def after_step(self, ctx: TrainContext, step: int) -> bool:
        """Called after the optimizer step that brought the loop to ``step`` steps done; True = stop now."""
        return False

    def before_finalize(self, ctx: TrainContext) -> None:
        """Called after training, before the masks are fixed."""

    def finalize(self, ctx: TrainContext) -> dict[str, torch.Tensor]:
        """Only for ``owns_finalize``: put plain Linears back and return bool masks by module name."""
        raise NotImplementedError

    def density(self) -> float | None:
        """A density that replaces the mask-based one (LPAF: factor parameters / dense parameters)."""
        return None

    def record(self) -> dict:
        """JSON-ready entries for recipe.json (settings and what happened), under this extension's name."""
        return {}

    def report(self, ctx: TrainContext, masks: dict[str, torch.Tensor]) -> dict:
        """JSON-ready entries for report.json, under this extension's name."""
        return {}

    def state_dict(self) -> dict:
        """State a checkpoint must keep for an exact resume."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
