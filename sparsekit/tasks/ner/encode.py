"""Tokenize token-classification sentences with labels on each word's first sub-token; pad batches; read word
predictions back from logits.

A word's label sits on its first sub-token; special tokens, later sub-tokens and padding get -100, which the
loss and the metric ignore. Words are tokenized as given (``is_split_into_words=True``) by a fast tokenizer,
whose ``word_ids()`` map sub-tokens to words. Sentences longer than ``max_length`` sub-tokens are cut: the
words past the cut have no sub-token, are counted in ``TokenDataset.record`` (and one warning) and are
predicted "O" by ``word_predictions``. So are words that tokenize to nothing (empty or control characters).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from sparsekit.data.source import DataError
from sparsekit.errors import ModelError
from sparsekit.tasks.ner.data import DataWarning, TokenExample

IGNORE_INDEX = -100
_MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def require_fast_tokenizer(tokenizer: Any) -> None:
    """ModelError unless ``tokenizer`` is a fast (Rust) tokenizer, which maps sub-tokens to words and text."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"token classification needs a fast tokenizer (word_ids / offset mapping); "
                         f"{type(tokenizer).__name__} is a slow one. Load it with AutoTokenizer.from_pretrained("
                         f"..., use_fast=True), or convert the model's tokenizer to tokenizer.json")


class TokenDataset(Dataset):
    """Sentences tokenized once (unpadded, cut at ``max_length`` sub-tokens) with word-aligned labels.

    Items: dicts of python lists, ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the tokenizer
    gives them) and ``labels`` (the first sub-token of word w: ``label2id[tags[w]]``; -100 elsewhere).
    Attributes: ``word_ids`` (per item, the word index of each sub-token, None for special tokens),
    ``num_words`` and ``tags`` (per item, the examples' tags), ``pad_token_id`` and ``record``:
    ``{"examples", "truncated_examples", "truncated_words", "words_without_tokens"}`` (words cut by
    ``max_length``, and words that tokenize to nothing).
    A tag missing from ``label2id`` is a DataError naming the sentence and word.
    """

    def __init__(self, examples: Sequence[TokenExample], tokenizer: Any, label2id: Mapping[str, int],
                 max_length: int = 128) -> None:
        require_fast_tokenizer(tokenizer)
        if len(examples) == 0:
            raise ValueError("TokenDataset needs at least one example; got an empty list")
        if max_length < 3:
            raise ValueError(f"max_length must leave room for a sub-token between the special tokens; got "
                             f"{max_length}")
        encoded = tokenizer([list(e.words) for e in examples], is_split_into_words=True, truncation=True,
                            max_length=max_length, padding=False)
        self.inputs = {name: list(encoded[name]) for name in _MODEL_INPUTS if name in encoded}
        self.word_ids: list[list[int | None]] = [encoded.word_ids(i) for i in range(len(examples))]
        self.num_words = [len(e.words) for e in examples]
        self.labels: list[list[int]] = []
        truncated_examples = truncated_words = without_tokens = 0
        for index, (example, word_ids) in enumerate(zip(examples, self.word_ids)):
            labels, seen = [], set()
            for word in word_ids:
                if word is None or word in seen:
                    labels.append(IGNORE_INDEX)
                    continue
                seen.add(word)
                tag = example.tags[word]
                if tag not in label2id:
                    raise DataError(f"sentence {index + 1}, word {word + 1} ({example.words[word]!r}): tag {tag!r} "
                                    f"is not one of the model's labels ({', '.join(label2id)})")
                labels.append(label2id[tag])
            self.labels.append(labels)
            last = max(seen, default=-1)
            cut = len(example.words) - 1 - last
            if cut > 0 and len(word_ids) >= max_length:
                truncated_examples += 1
                truncated_words += cut
            without_tokens += len(example.words) - len(seen) - (cut if len(word_ids) >= max_length else 0)
        self.max_length = max_length
        self.tags = [list(e.tags) for e in examples]
        self.pad_token_id = tokenizer.pad_token_id
        self.record = {"examples": len(examples), "truncated_examples": truncated_examples,
                       "truncated_words": truncated_words, "words_without_tokens": without_tokens}
        if truncated_examples:
            warnings.warn(f"{truncated_examples} of {len(examples)} sentence(s) are longer than max_length="
                          f"{max_length} sub-tokens; their last {truncated_words} word(s) are not trained on and "
                          f"are predicted 'O' (raise max_length to keep them)", DataWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        item = {name: values[index] for name, values in self.inputs.items()}
        item["labels"] = self.labels[index]
        return item


class TokenCollator:
    """Pads `TokenDataset` items (right) to the longest in the batch: ``input_ids`` with the tokenizer's pad id,
    ``attention_mask`` / ``token_type_ids`` with 0, ``labels`` with -100. Returns int64 tensors ``[B, L]``.
    A class (not a closure) so DataLoader workers can pickle it."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_values = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0,
                           "labels": IGNORE_INDEX}

    def __call__(self, items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        return {name: torch.tensor([item[name] + [pad] * (length - len(item[name])) for item in items],
                                   dtype=torch.long)
                for name, pad in self.pad_values.items() if name in items[0]}


def make_token_collate(tokenizer: Any) -> TokenCollator:
    """The collate function of `TokenDataset` batches for ``tokenizer`` (its pad id; see TokenCollator)."""
    if tokenizer.pad_token_id is None:
        raise ModelError(f"{type(tokenizer).__name__} has no pad token; set tokenizer.pad_token before batching")
    return TokenCollator(int(tokenizer.pad_token_id))


def id_to_label(id2label: Mapping[int | str, str] | Sequence[str]) -> dict[int, str]:
    """``{class id: label}`` from a mapping (keys may be JSON's strings, ``{"0": "O"}``) or a sequence of labels."""
    if isinstance(id2label, Mapping):
        return {int(key): value for key, value in id2label.items()}
    return dict(enumerate(id2label))


def word_predictions(logits: Any, dataset: TokenDataset, id2label: Mapping[int, str] | Sequence[str]
                     ) -> list[list[str]]:
    """The predicted tag of every word of every sentence of ``dataset``: the arg-max label at the word's first
    sub-token. ``logits``: a tensor / array ``[N, T, C]`` (padded, T at least each item's length) or a list of N
    ``[T_i, C]``, in dataset order. Words without a sub-token (cut by max_length, or tokenizing to nothing) get
    "O" (counted in ``dataset.record``). Returns N lists of tag names, one per word."""
    if len(logits) != len(dataset):
        raise ValueError(f"{len(logits)} rows of logits for {len(dataset)} sentences")
    names = id_to_label(id2label)
    out = []
    for row, word_ids, count in zip(logits, dataset.word_ids, dataset.num_words):
        best = torch.as_tensor(row).argmax(-1).tolist()
        if len(best) < len(word_ids):
            raise ValueError(f"logits cover {len(best)} positions, the sentence has {len(word_ids)} sub-tokens")
        tags = ["O"] * count
        seen = set()
        for position, word in enumerate(word_ids):
            if word is not None and word not in seen:
                seen.add(word)
                tags[word] = names[best[position]]
        out.append(tags)
    return out
