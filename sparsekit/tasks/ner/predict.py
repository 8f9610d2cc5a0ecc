"""Entities of raw texts or word lists, from a token-classification model (aggregation "first").

Words: for a raw text, the tokenizer's pre-tokenizer words (for BERT: split at whitespace and punctuation,
so "U.S." is four words); for a word list, the words as given. Each word takes the label with the highest
probability at its first sub-token; its score is that probability. Consecutive words merge into an entity as
a prediction pipeline groups them (tags.lenient_entities): ``B-X`` starts an entity, ``I-X`` continues an
``X`` entity or, when there is none to continue, starts one. An entity's score is the mean of its words'
scores. Offsets are characters of the input text (for a word list, of ``" ".join(words)``), end exclusive;
``word`` is that span of the text.

Long inputs: an input longer than ``max_length`` sub-tokens is read in windows of ``max_length`` that
overlap by ``stride`` sub-tokens (the tokenizer's overflow windows); each word is labelled from the window
where its first sub-token has the most context on both sides. No word is dropped.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sparsekit.tasks.ner.encode import id_to_label, require_fast_tokenizer
from sparsekit.tasks.ner.tags import lenient_entities


def model_logits(output: Any) -> torch.Tensor:
    """The logits of a model's output: ``.logits``, the first item of a tuple, or the tensor itself."""
    if hasattr(output, "logits"):
        return output.logits
    return output[0] if isinstance(output, (tuple, list)) else output


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return parameter.device if parameter is not None else torch.device("cpu")


def predict_entities(model: Any, tokenizer: Any, inputs: Sequence[str] | Sequence[Sequence[str]],
                     id2label: Mapping[int, str] | Sequence[str], max_length: int = 128,
                     batch_size: int = 32, stride: int = 32) -> list[list[dict]]:
    """The entities of each input: a list of raw texts, or a list of word lists (not mixed).

    model: called as ``model(**encoded)`` on batches of at most ``batch_size`` windows, returning logits
    ``[B, T, C]`` (or an object with ``.logits``); id2label: the label of each class id; max_length: sub-tokens
    per window; stride: sub-tokens shared by consecutive windows of a long input (at most half a window).
    Returns, per input, dicts ``{"entity": TYPE, "start", "end", "word", "score"}`` in text order (see the
    module docstring for words, offsets, scores and windows)."""
    require_fast_tokenizer(tokenizer)
    names = id_to_label(id2label)
    if not inputs:
        return []
    as_words = not isinstance(inputs[0], str)
    if any(isinstance(item, str) == as_words for item in inputs):
        raise ValueError("inputs mix raw texts and word lists; pass one kind")
    if as_words and any(not isinstance(w, str) for item in inputs for w in item):
        raise ValueError("word lists must hold strings")
    items = [list(item) if as_words else item for item in inputs]
    specials = tokenizer.num_special_tokens_to_add()
    if max_length - specials < 2:
        raise ValueError(f"max_length={max_length} leaves no room for text between {specials} special tokens")
    stride = max(0, min(stride, (max_length - specials) // 2))
    encoded = tokenizer(items, is_split_into_words=as_words, truncation=True, max_length=max_length, stride=stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True, padding=True,
                        return_tensors="pt")
    offsets = encoded.pop("offset_mapping").tolist()
    owners = encoded.pop("overflow_to_sample_mapping").tolist()
    probabilities = _window_probabilities(model, encoded, batch_size)
    windows: list[list[int]] = [[] for _ in items]
    for window, owner in enumerate(owners):
        windows[owner].append(window)
    results = []
    for index, item in enumerate(items):
        tokens = [(w, p, encoded.word_ids(w)[p], offsets[w][p]) for w in windows[index]
                  for p in range(len(offsets[w])) if encoded.word_ids(w)[p] is not None]
        results.append(_entities(item, as_words, tokens, encoded["attention_mask"], probabilities, names))
    return results


def _window_probabilities(model: Any, encoded: Any, batch_size: int) -> torch.Tensor:
    """Softmax over classes of the model's logits for every window: float32 ``[W, T, C]`` on the CPU."""
    if hasattr(model, "eval"):
        model.eval()
    device = model_device(model)
    parts = []
    with torch.no_grad():
        for first in range(0, len(encoded["input_ids"]), batch_size):
            batch = {k: v[first:first + batch_size].to(device) for k, v in encoded.items()}
            parts.append(torch.softmax(model_logits(model(**batch)).float(), -1).cpu())
    return torch.cat(parts)


def _entities(item: str | list[str], as_words: bool, tokens: list[tuple[int, int, int, list[int]]],
              attention_mask: torch.Tensor, probabilities: torch.Tensor, names: dict[int, str]) -> list[dict]:
    """The entities of one input from its windows' sub-tokens ``(window, position, word, (start, end))``."""
    count = len(item) if as_words else max((word for _, _, word, _ in tokens), default=-1) + 1
    first_start = {}  # word -> its first sub-token's offset start (the smallest over all windows)
    spans: dict[int, tuple[int, int]] = {}
    for _, _, word, (start, end) in tokens:
        first_start[word] = min(first_start.get(word, start), start)
        old = spans.get(word, (start, end))
        spans[word] = (min(old[0], start), max(old[1], end))
    best: dict[int, tuple[int, int, int]] = {}  # word -> (context, window, position)
    for window, position, word, (start, _) in tokens:
        if start != first_start[word]:
            continue  # a later sub-token of the word
        length = int(attention_mask[window].sum())
        context = min(position, length - 1 - position)
        if word not in best or context > best[word][0]:
            best[word] = (context, window, position)
    tags, scores = ["O"] * count, [0.0] * count
    for word, (_, window, position) in best.items():
        score, label = probabilities[window, position].max(-1)
        tags[word], scores[word] = names[int(label)], float(score)
    if as_words:
        text, begin, spans = " ".join(item), 0, {}
        for word, value in enumerate(item):
            spans[word] = (begin, begin + len(value))
            begin += len(value) + 1
    else:
        text = item
    out = []
    for kind, first, last in lenient_entities(tags):
        start, end = spans[first][0], spans[last - 1][1]
        out.append({"entity": kind, "start": start, "end": end, "word": text[start:end],
                    "score": sum(scores[first:last]) / (last - first)})
    return out
