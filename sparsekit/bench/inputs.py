"""Benchmark inputs shaped like the model's task: random token ids, and for question answering a question and a
context segment.

Latency depends on the shapes (batch x sequence), not on the ids, but the inputs still look like the task's:
sequence and token classification read one segment of ``seq`` tokens; QA reads ``[CLS] question [SEP] context
[SEP]`` windows, so the last ``seq - question`` tokens carry token type 1 (when the model has a second token
type) like a tokenizer's question / context pair.
"""
from __future__ import annotations

import torch

from sparsekit.data.inputs import random_inputs
from sparsekit.export.heads import QA

#: Question tokens of a QA window (SQuAD questions: ~11 words; with [CLS] and [SEP]), at most a quarter of it.
QA_QUESTION_TOKENS = 24


def task_inputs(batch: int, seq: int, vocab_size: int, task_type: str, seed: int = 0,
                type_vocab_size: int = 2) -> dict[str, torch.Tensor]:
    """``random_inputs(batch, seq, vocab_size, seed)`` (int64 ``[batch, seq]``, no padding), with QA's context
    segment marked in ``token_type_ids`` when ``type_vocab_size >= 2``."""
    inputs = random_inputs(batch, seq, vocab_size, seed)
    if task_type == QA and type_vocab_size >= 2:
        question = min(QA_QUESTION_TOKENS, max(seq // 4, 1))
        inputs["token_type_ids"][:, question:] = 1
    return inputs
