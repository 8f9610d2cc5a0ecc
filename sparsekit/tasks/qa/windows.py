"""QA examples as model windows: question first, context second, long contexts split into overlapping windows.

Each example is tokenized with a fast tokenizer as ``tokenizer(question, context, truncation="only_second",
max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)``: every
window holds the whole question and a slice of the context, consecutive windows share ``stride`` context
tokens. A question longer than ``max_question_tokens`` tokens is cut to that many (at a token boundary of the
question text) and its id is added to ``QADataset.truncated_questions`` (a counted warning, as BERT's original
``max_query_length`` does), so no question is lost and every window keeps room for the context.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from sparsekit.tasks.qa.data import QAExample

log = logging.getLogger(__name__)

#: Context tokens a window must keep at least (max_question_tokens is refused when it leaves fewer).
_MIN_CONTEXT_TOKENS = 16


class QADataset(torch.utils.data.Dataset):
    """The windows of ``examples`` for training (start / end positions) and post-processing (offsets).

    Items: dicts of python lists / ints ``input_ids``, ``attention_mask``, (``token_type_ids``),
    ``start_positions``, ``end_positions``: the token indices of the first gold answer's first and last token,
    or 0 (the [CLS] index) when the example has no answer or the answer is not wholly inside the window.
    Attributes, one entry per window: ``example_index`` (index into ``examples``), ``offsets`` (per token
    ``(start, end)`` character offsets into the example's context, None for question, special and padding
    tokens). ``truncated_questions``: ids of questions cut to ``max_question_tokens``.
    """

    def __init__(self, examples: Sequence[QAExample], tokenizer, max_length: int = 384, stride: int = 128,
                 max_question_tokens: int = 64):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("QA windows need a fast tokenizer (offset mappings); load it with use_fast=True")
        special = tokenizer.num_special_tokens_to_add(pair=True)  # BERT: [CLS] question [SEP] context [SEP]
        if max_question_tokens + special + _MIN_CONTEXT_TOKENS > max_length:
            raise ValueError(f"max_question_tokens={max_question_tokens} leaves fewer than {_MIN_CONTEXT_TOKENS} "
                             f"context tokens in a window of max_length={max_length}; lower it or raise max_length")
        if not 0 <= stride < max_length - max_question_tokens - special:
            raise ValueError(f"stride={stride} must be below the context tokens of a window "
                             f"({max_length - max_question_tokens - special} with max_length={max_length} "
                             f"and max_question_tokens={max_question_tokens})")
        self.examples = list(examples)
        self.max_length, self.stride = max_length, stride
        self.truncated_questions: list[str] = []
        questions = self._questions(tokenizer, max_question_tokens)
        encoded = tokenizer(questions, [e.context for e in self.examples], truncation="only_second",
                            max_length=max_length, stride=stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True, padding=False)
        self.example_index: list[int] = list(encoded["overflow_to_sample_mapping"])
        self.offsets: list[list[tuple[int, int] | None]] = []
        self.features: list[dict] = []
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        for w, example_index in enumerate(self.example_index):
            sequence_ids = encoded.sequence_ids(w)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][w], sequence_ids)]
            start, end = _answer_tokens(self.examples[example_index], offsets)
            self.offsets.append(offsets)
            self.features.append({**{k: encoded[k][w] for k in keys}, "start_positions": start,
                                  "end_positions": end})
        if self.truncated_questions:
            log.warning("%d question(s) longer than %d tokens were cut to that length (first: %s)",
                        len(self.truncated_questions), max_question_tokens, self.truncated_questions[0])

    def _questions(self, tokenizer, max_question_tokens: int) -> list[str]:
        """The question texts, each cut after its ``max_question_tokens``-th token when longer (ids recorded)."""
        questions = [e.question for e in self.examples]
        encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        for i, offsets in enumerate(encoded["offset_mapping"]):
            if len(offsets) > max_question_tokens:
                self.truncated_questions.append(self.examples[i].id)
                questions[i] = questions[i][:offsets[max_question_tokens - 1][1]]
        return questions

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        return self.features[index]

    def windows_of(self) -> list[list[int]]:
        """For each example, the indices of its windows (in context order)."""
        windows: list[list[int]] = [[] for _ in self.examples]
        for w, example_index in enumerate(self.example_index):
            windows[example_index].append(w)
        return windows


def _answer_tokens(example: QAExample, offsets: list[tuple[int, int] | None]) -> tuple[int, int]:
    """The first and last token of the example's first answer in a window, or (0, 0) when the example has no
    answer or the answer is not wholly inside the window's context tokens."""
    if not example.answers:
        return 0, 0
    answer = example.answers[0]
    inside = [i for i, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > answer.start or offsets[inside[-1]][1] < answer.end:
        return 0, 0
    start = next(i for i in inside if offsets[i][1] > answer.start)
    end = next(i for i in reversed(inside) if offsets[i][0] < answer.end)
    return start, end


def make_qa_collate(tokenizer):
    """A DataLoader collate_fn for QADataset items: pads ``input_ids`` with the tokenizer's pad id,
    ``attention_mask`` / ``token_type_ids`` with 0, to the longest window of the batch. Returns int64 tensors
    ``[B, T]`` (``[B]`` for ``start_positions`` / ``end_positions``)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        batch: dict[str, torch.Tensor] = {}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in items[0]:
                pad = pad_id if key == "input_ids" else 0
                batch[key] = torch.tensor([item[key] + [pad] * (length - len(item[key])) for item in items],
                                          dtype=torch.long)
        for key in ("start_positions", "end_positions"):
            if key in items[0]:
                batch[key] = torch.tensor([item[key] for item in items], dtype=torch.long)
        return batch

    return collate
