"""SQuAD's exact match and F1, as the official evaluation scripts (v1.1 and v2.0) compute them, locally.

An answer is normalised by lower-casing, removing punctuation (``string.punctuation``), removing the articles
a / an / the (whole words) and collapsing whitespace. EM is 1 when the normalised prediction equals a
normalised gold answer; F1 is the bag-of-tokens overlap F1 of the normalised token lists; each takes its
maximum over the gold answers and is averaged over the questions, times 100. A question without gold answers
(SQuAD v2.0) has the gold answer "" and scores 1 only for an empty prediction (the v2.0 script's rule). A
question without a prediction scores 0 (the v1.1 script's rule) and is counted in ``missing``.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from sparsekit.tasks.qa.data import QAExample

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a / an / the, collapse whitespace (SQuAD's rule)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """The F1 of the normalised tokens' overlap (multiset); when either side has no tokens, 1.0 if both have
    none, else 0.0."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def _gold_texts(example: QAExample) -> list[str]:
    texts = [a.text for a in example.answers if normalize_answer(a.text)]
    return texts or [""]


def squad_metrics(predictions: dict[str, str] | dict[str, dict], examples: Sequence[QAExample]) -> dict:
    """Exact match and F1 (0..100) of ``predictions`` (``{id: answer text}``, "" for no answer; best_answers'
    dicts are taken as their "answer") on
    ``examples``, plus ``total`` and ``missing`` (questions without a prediction, scored 0). When any example
    has no answer (SQuAD v2.0), also ``has_answer_exact_match`` / ``has_answer_f1`` / ``has_answer_total`` and
    ``no_answer_exact_match`` / ``no_answer_f1`` / ``no_answer_total``."""
    if not examples:
        raise ValueError("squad_metrics needs at least one example")
    em: dict[str, float] = {}
    f1: dict[str, float] = {}
    missing = 0
    for example in examples:
        if example.id not in predictions:
            missing += 1
            em[example.id] = f1[example.id] = 0.0
            continue
        prediction = predictions[example.id]
        if isinstance(prediction, dict):  # best_answers' {"answer", "start", "end", "score"}
            prediction = prediction["answer"]
        golds = _gold_texts(example)
        em[example.id] = max(exact_match(prediction, g) for g in golds)
        f1[example.id] = max(token_f1(prediction, g) for g in golds)
    result = {"exact_match": _mean(em, examples), "f1": _mean(f1, examples), "total": len(examples),
              "missing": missing}
    if any(e.is_impossible for e in examples):
        for name, subset in (("has_answer", [e for e in examples if not e.is_impossible]),
                             ("no_answer", [e for e in examples if e.is_impossible])):
            result[f"{name}_exact_match"] = _mean(em, subset) if subset else 0.0
            result[f"{name}_f1"] = _mean(f1, subset) if subset else 0.0
            result[f"{name}_total"] = len(subset)
    return result


def _mean(scores: dict[str, float], examples: Sequence[QAExample]) -> float:
    return 100.0 * sum(scores[e.id] for e in examples) / len(examples)
