"""Training losses of extractive QA: start / end cross-entropy, and the movement-pruning paper's distillation."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def qa_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
            end_positions: torch.Tensor) -> torch.Tensor:
    """The mean of the start and end cross-entropies (as BertForQuestionAnswering computes it).

    ``start_logits`` / ``end_logits``: float ``[B, T]``; ``start_positions`` / ``end_positions``: int64 ``[B]``
    token indices (0, the [CLS] index, for "no answer in this window"). Positions outside ``0..T-1`` are
    clamped to T and ignored, as Hugging Face does. Returns a scalar.
    """
    length = start_logits.size(1)
    starts = start_positions.clamp(0, length)
    ends = end_positions.clamp(0, length)
    start = F.cross_entropy(start_logits, starts, ignore_index=length)
    end = F.cross_entropy(end_logits, ends, ignore_index=length)
    return (start + end) / 2


def qa_kd_loss(student_start: torch.Tensor, student_end: torch.Tensor, teacher_start: torch.Tensor,
               teacher_end: torch.Tensor, T: float = 2.0, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Knowledge distillation for QA as in the movement-pruning paper (Sanh et al. 2020, its
    ``masked_run_squad.py``): the KL divergence of the student's start distribution from the teacher's at
    temperature ``T`` (batch mean), times T², the same for the end distribution, averaged.

    All logits float ``[B, T_len]``; the teacher's should come from ``torch.no_grad()``. ``attention_mask``
    (``[B, T_len]``, 1 for real tokens), when given, leaves padding positions out of both distributions (the
    paper does not mask; with padded batches of different lengths masking keeps the loss independent of the
    padding). Returns a scalar.
    """
    if T <= 0:
        raise ValueError(f"the distillation temperature must be positive; got {T}")

    def kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if attention_mask is not None:
            padding = attention_mask == 0
            student = student.masked_fill(padding, -1e4)
            teacher = teacher.masked_fill(padding, -1e4)
        return F.kl_div(F.log_softmax(student / T, dim=-1), F.softmax(teacher / T, dim=-1),
                        reduction="batchmean") * T ** 2

    return (kl(student_start, teacher_start) + kl(student_end, teacher_end)) / 2
