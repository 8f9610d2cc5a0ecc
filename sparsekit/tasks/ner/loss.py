"""Training losses of token classification: cross-entropy and distillation over the labelled positions
(a word's first sub-token; -100 marks the rest)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsekit.tasks.ner.encode import IGNORE_INDEX


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` float ``[B, T, C]`` against ``labels`` int64 ``[B, T]`` over the
    positions whose label is not -100; 0 (with a gradient) for a batch without one."""
    mask = labels != IGNORE_INDEX
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask], labels[mask])


def token_kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` per labelled position (labels != -100), averaged
    over those positions. student / teacher: float ``[B, T, C]``; labels: int64 ``[B, T]``; 0 (with a gradient)
    for a batch without a labelled position."""
    mask = labels != IGNORE_INDEX
    if not bool(mask.any()):
        return student.sum() * 0.0
    s, t = student[mask] / temperature, teacher[mask].detach() / temperature
    return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="batchmean",
                    log_target=True) * temperature ** 2
