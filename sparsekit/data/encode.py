"""Tokenize GLUE examples once up front, and pad batches dynamically at collate time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from sparsekit.data.glue import Example

#: The model inputs a batch carries (every other entry is a target).
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


class EncodedDataset(Dataset):
    """GLUE examples tokenized (truncated to `max_length`, unpadded) in one batched call.

    Attributes: `input_ids`, `attention_mask` and, when the tokenizer returns them,
    `token_type_ids`: lists of N lists of ints of varying length; `labels`: tensor `[N]`, int64
    for classification, float32 for regression. `is_regression` defaults to True exactly when
    some label is a float (STS-B). Items are dicts of those python lists plus a scalar "labels".
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: Any,
        max_length: int = 128,
        is_regression: bool | None = None,
    ) -> None:
        if len(examples) == 0:
            raise ValueError("EncodedDataset needs at least one example; got an empty list.")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {max_length}.")
        text_a = [ex.text_a for ex in examples]
        pairs = [ex.text_b is not None for ex in examples]
        if any(pairs) and not all(pairs):
            raise ValueError(
                "examples mix single sentences (text_b=None) and sentence pairs; encode one "
                "task's examples at a time."
            )
        text_b = [ex.text_b for ex in examples] if pairs[0] else None
        if is_regression is None:
            is_regression = any(
                isinstance(ex.label, float) and not isinstance(ex.label, bool) for ex in examples
            )
        self.is_regression = is_regression
        self.max_length = max_length

        encoded = tokenizer(
            text_a, text_b, truncation=True, max_length=max_length, padding=False
        )
        self.input_ids: list[list[int]] = list(encoded["input_ids"])
        self.attention_mask: list[list[int]] = list(encoded["attention_mask"])
        self.token_type_ids: list[list[int]] | None = (
            list(encoded["token_type_ids"]) if "token_type_ids" in encoded else None
        )
        dtype = torch.float32 if is_regression else torch.long
        self.labels = torch.tensor([ex.label for ex in examples], dtype=dtype)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "input_ids": self.input_ids[index],
            "attention_mask": self.attention_mask[index],
        }
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[index]
        item["labels"] = self.labels[index].item()
        return item


class PadCollator:
    """Pads a list of `EncodedDataset` items to the longest one in the batch.

    Returns a dict of tensors: input_ids / attention_mask / token_type_ids int64 `[B, L]` and
    labels `[B]` (int64, or float32 for regression). A class rather than a closure so that
    DataLoader worker processes can pickle it.
    """

    def __init__(
        self, tokenizer: Any, is_regression: bool, pad_to_multiple_of: int | None = None
    ) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token; set tokenizer.pad_token before collating."
            )
        self.tokenizer = tokenizer
        self.is_regression = is_regression
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if len(items) == 0:
            raise ValueError("cannot collate an empty batch.")
        features = [{k: item[k] for k in MODEL_INPUTS if k in item} for item in items]
        padded = self.tokenizer.pad(
            features,
            padding="longest",
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        batch = {k: padded[k] for k in MODEL_INPUTS if k in padded}
        dtype = torch.float32 if self.is_regression else torch.long
        batch["labels"] = torch.tensor([item["labels"] for item in items], dtype=dtype)
        return batch


def make_collate(
    tokenizer: Any, is_regression: bool, pad_to_multiple_of: int | None = None
) -> PadCollator:
    """Return a DataLoader `collate_fn` that pads items dynamically (see `PadCollator`)."""
    return PadCollator(tokenizer, is_regression, pad_to_multiple_of)
