"""Entities of raw texts or word lists, from a token-classification model (aggregation "first").

Words: for a raw text, the tokenizer's pre-tokenizer words (for BERT: split at whitespace and punctuation,
so "U.S." is four words); for a word list, the words as given. Each word takes the label with the highest
probability at its first sub-token; its score is that probability. Consecutive words merge into an entity as
a prediction pipeline groups them (tags.lenient_entities): ``B-X`` starts an entity, ``I-X`` continues an
``X`` entity or, when there is none to continue, starts one. An entity's score is the mean of its words'
scores. Offsets are characters of the input text (for a word list, of ``" ".join(words)``), end exclusive;
``word`` is that span of the text.

Inputs longer than ``max_length`` sub-tokens are cut there: their words past the cut get no entity, and one
warning counts the inputs and words cut.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sparsekit.tasks.ner.data import DataWarning
from sparsekit.tasks.ner.encode import require_fast_tokenizer
from sparsekit.tasks.ner.tags import lenient_entities


def model_logits(output: Any) -> torch.Tensor:
    """The logits of a model's output: ``.logits``, the first item of a tuple, or the tensor itself."""
    if hasattr(output, "logits"):
        return output.logits
    return output[0] if isinstance(output, (tuple, list)) else output


def _model_device(model: Any) -> torch.device:
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return parameter.device if parameter is not None else torch.device("cpu")


def predict_entities(model: Any, tokenizer: Any, inputs: Sequence[str] | Sequence[Sequence[str]],
                     id2label: Mapping[int, str] | Sequence[str], max_length: int = 128,
                     batch_size: int = 32) -> list[list[dict]]:
    """The entities of each input: a list of raw texts, or a list of word lists (not mixed).

    model: called as ``model(**encoded)``, returning logits ``[B, T, C]`` (or an object with ``.logits``);
    id2label: the label of each class id. Returns, per input, dicts ``{"entity": TYPE, "start", "end",
    "word", "score"}`` in text order (see the module docstring for words, offsets and scores)."""
    require_fast_tokenizer(tokenizer)
    names = dict(id2label) if isinstance(id2label, Mapping) else dict(enumerate(id2label))
    if not inputs:
        return []
    as_words = not isinstance(inputs[0], str)
    if any(isinstance(item, str) == as_words for item in inputs):
        raise ValueError("inputs mix raw texts and word lists; pass one kind")
    if as_words and any(not isinstance(w, str) for item in inputs for w in item):
        raise ValueError("word lists must hold strings")
    if hasattr(model, "eval"):
        model.eval()
    device = _model_device(model)
    results: list[list[dict]] = []
    cut_inputs = cut_words = 0
    for first in range(0, len(inputs), batch_size):
        batch = [list(item) if as_words else item for item in inputs[first:first + batch_size]]
        encoded = tokenizer(batch, is_split_into_words=as_words, truncation=True, max_length=max_length,
                            padding=True, return_offsets_mapping=True, return_tensors="pt")
        offsets = encoded.pop("offset_mapping").tolist()
        with torch.no_grad():
            logits = model_logits(model(**{k: v.to(device) for k, v in encoded.items()}))
        probabilities = torch.softmax(logits.float(), -1).cpu()
        for row, item in enumerate(batch):
            spans, text = _word_spans(item, encoded.word_ids(row), offsets[row], as_words)
            tags, scores = ["O"] * len(spans), [0.0] * len(spans)
            seen: set[int] = set()
            for position, word in enumerate(encoded.word_ids(row)):
                if word is not None and word not in seen:
                    seen.add(word)
                    score, label = probabilities[row, position].max(-1)
                    tags[word], scores[word] = names[int(label)], float(score)
            if int(encoded["attention_mask"][row].sum()) >= max_length:
                total = len(item) if as_words else _count_words(tokenizer, item)
                missing = total - 1 - max(seen, default=-1)
                if missing > 0:
                    cut_inputs, cut_words = cut_inputs + 1, cut_words + missing
            results.append([_entity(kind, start, end, spans, scores, text)
                            for kind, start, end in lenient_entities(tags)])
    if cut_inputs:
        warnings.warn(f"{cut_inputs} of {len(inputs)} input(s) are longer than max_length={max_length} sub-tokens; "
                      f"their last {cut_words} word(s) were not read and get no entity", DataWarning, stacklevel=2)
    return results


def _count_words(tokenizer: Any, text: str) -> int:
    """How many words the tokenizer makes of ``text`` (its normalizer, then its pre-tokenizer)."""
    backend = tokenizer.backend_tokenizer
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    return len(backend.pre_tokenizer.pre_tokenize_str(text)) if backend.pre_tokenizer is not None else 1


def _word_spans(item: str | list[str], word_ids: list[int | None], offsets: list[list[int]],
                as_words: bool) -> tuple[list[tuple[int, int]], str]:
    """The character span of every word in the text, and the text (a word list joined with spaces)."""
    if as_words:
        spans, start = [], 0
        for word in item:
            spans.append((start, start + len(word)))
            start += len(word) + 1
        return spans, " ".join(item)
    count = max((w for w in word_ids if w is not None), default=-1) + 1
    spans = [None] * count
    for word, (start, end) in zip(word_ids, offsets):
        if word is not None:
            spans[word] = (start, end) if spans[word] is None else (spans[word][0], end)
    return [span or (0, 0) for span in spans], item


def _entity(kind: str, start: int, end: int, spans: list[tuple[int, int]], scores: list[float],
            text: str) -> dict:
    first, last = spans[start][0], spans[end - 1][1]
    return {"entity": kind, "start": first, "end": last, "word": text[first:last],
            "score": sum(scores[start:end]) / (end - start)}
