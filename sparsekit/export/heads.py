"""Task heads: which Hugging Face head a task type uses, how to tell a model's task type, and its outputs.

Three task types (issue 14's contract): ``"sequence-classification"`` (``*ForSequenceClassification``:
``.logits [B, num_labels]``), ``"token-classification"`` (``*ForTokenClassification``: dropout and a
``classifier`` Linear on every token, ``.logits [B, T, num_labels]``) and ``"question-answering"``
(``*ForQuestionAnswering``: a Linear ``(hidden, 2)`` on every token, ``.start_logits`` / ``.end_logits``
``[B, T]``). An artifact records its task type in the manifest (``task_type``; absent in artifacts written
before it existed, which are all sequence classifiers).
"""
from __future__ import annotations

import torch
from torch import nn

from sparsekit.errors import ModelError
from sparsekit.models import TASK_HEAD_SUFFIXES, TASK_MODEL_CLASSES, auto_model_class

SEQUENCE, TOKEN, QA = "sequence-classification", "token-classification", "question-answering"
#: The task type names (their home: models.TASK_MODEL_CLASSES, the head class of each).
TASK_TYPES = tuple(TASK_MODEL_CLASSES)
_SUFFIXES = TASK_HEAD_SUFFIXES  # their home: models.py


def check_task_type(task_type: str) -> str:
    """``task_type`` if it is one of TASK_TYPES, else ValueError naming them."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task type {task_type!r}; choose one of {', '.join(TASK_TYPES)}")
    return task_type


def auto_class(task_type: str):
    """The transformers auto class (``AutoModelFor...``) of ``task_type`` (models.auto_model_class)."""
    return auto_model_class(check_task_type(task_type))


def task_type_of(model: nn.Module) -> str:
    """The task type of a Hugging Face head model (by its class) or of a compacted model (its ``task_type``).

    Raises ModelError for a model with none of the three heads (a bare encoder, a masked-LM ...).
    """
    own = getattr(model, "task_type", None)
    if isinstance(own, str):
        return check_task_type(own)
    name = type(model).__name__
    for task_type, suffix in _SUFFIXES.items():
        if name.endswith(suffix):
            return task_type
    raise ModelError(f"{name} has no sequence-classification, token-classification or question-answering head")


def task_type_of_config(config) -> str:
    """The task type a checkpoint's config names in ``architectures`` (``BertForTokenClassification`` ...);
    sequence-classification when it names none of the three heads (the long-standing default)."""
    for arch in getattr(config, "architectures", None) or ():
        for task_type, suffix in _SUFFIXES.items():
            if str(arch).endswith(suffix):
                return task_type
    return SEQUENCE


def per_token(task_type: str) -> bool:
    """Whether the head gives one output row per token (token classification, QA) rather than per sequence."""
    return check_task_type(task_type) != SEQUENCE


def head_output(output, task_type: str) -> torch.Tensor:
    """The model output of ``task_type`` as one float32 tensor: ``.logits`` (``[B, C]`` or ``[B, T, C]``), or for
    QA the start and end logits stacked last, ``[B, T, 2]``."""
    if check_task_type(task_type) == QA:
        return torch.stack([output.start_logits, output.end_logits], dim=-1).float()
    return output.logits.float()
