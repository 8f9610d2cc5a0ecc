"""From start / end logits of QA windows to answers: character spans of each example's context.

For each example, every window proposes the pairs of its top ``n_best`` start and top ``n_best`` end tokens
with ``end >= start``, at most ``max_answer_length`` tokens, both tokens inside the context (not the question,
special or padding tokens). A pair is ranked by the sum of its start and end logits (as BERT's run_squad and
Hugging Face's run_qa do), across all windows of the example (a span that two overlapping windows both
propose counts once, with its higher sum); the best is mapped back to the characters ``context[start:end]``
(``end`` exclusive) through the window's offsets.

The returned ``score`` is a probability-like value: a softmax over the logit sums of the example's n-best
candidates (plus the null answer for SQuAD v2.0), taken at the chosen candidate, as Hugging Face's run_qa
post-processing computes it. It depends on ``n_best`` and is for display, not ranking.

SQuAD v2.0: the null score is the smallest ``start_logits[0] + end_logits[0]`` ([CLS]) over the example's
windows (the window most confident that there is an answer; BERT's run_squad rule); the example gets no
answer (``{"answer": "", "start": 0, "end": 0}``) when ``null_score - best_span_score > null_threshold``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparsekit.tasks.qa.data import QAExample
from sparsekit.tasks.qa.windows import QADataset


def _as_rows(logits, count: int, name: str) -> list[np.ndarray]:
    """``logits`` ([N, T] tensor / array, or N 1-D rows of any lengths) as N float64 numpy rows."""
    if hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    rows = [np.asarray(row.detach().float().cpu().numpy() if hasattr(row, "detach") else row, dtype=np.float64)
            for row in logits]
    if len(rows) != count:
        raise ValueError(f"{name} has {len(rows)} rows but the dataset has {count} windows")
    return rows


def _top(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values of ``row``, largest first."""
    k = min(k, len(row))
    top = np.argpartition(-row, k - 1)[:k]
    return top[np.argsort(-row[top], kind="stable")]


def best_answers(examples: Sequence[QAExample], dataset: QADataset, start_logits, end_logits, n_best: int = 20,
                 max_answer_length: int = 30, null_threshold: float = 0.0,
                 version_2: bool = False) -> dict[str, dict]:
    """The best answer of each example, ``{id: {"answer", "start", "end", "score"}}``.

    ``dataset``: the QADataset made from ``examples``; ``start_logits`` / ``end_logits``: one row per window
    of ``dataset`` (``[N, T]`` tensors or arrays padded past each window's length, or N rows; positions past a
    window's tokens are ignored). ``start`` / ``end`` are character offsets into the example's context
    (``context[start:end] == answer``). An example without any valid span gets ``""``, 0, 0, score 0.0; with
    ``version_2``, see the module docstring for the null answer and ``null_threshold``.
    """
    if len(examples) != len(dataset.examples):
        raise ValueError(f"best_answers got {len(examples)} examples but the dataset was made from "
                         f"{len(dataset.examples)}; pass the examples the QADataset was built from")
    starts = _as_rows(start_logits, len(dataset), "start_logits")
    ends = _as_rows(end_logits, len(dataset), "end_logits")
    results: dict[str, dict] = {}
    for example_index, windows in enumerate(dataset.windows_of()):
        example = examples[example_index]
        spans: dict[tuple[int, int], float] = {}  # (char start, char end) -> best logit sum over windows
        null_score = None
        for w in windows:
            offsets = dataset.offsets[w]
            start_row, end_row = starts[w][:len(offsets)], ends[w][:len(offsets)]
            window_null = float(start_row[0] + end_row[0])
            null_score = window_null if null_score is None else min(null_score, window_null)
            top_ends = _top(end_row, n_best)
            for s in _top(start_row, n_best):
                if offsets[s] is None:
                    continue
                for e in top_ends:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    span, score = (offsets[s][0], offsets[e][1]), float(start_row[s] + end_row[e])
                    spans[span] = max(score, spans.get(span, score))
        candidates = sorted(((score, start, end) for (start, end), score in spans.items()), key=lambda c: -c[0])
        candidates = candidates[:n_best]
        scores = [c[0] for c in candidates] + ([null_score] if version_2 and null_score is not None else [])
        probabilities = _softmax(scores)
        best = candidates[0] if candidates else None
        if version_2 and (best is None or null_score - best[0] > null_threshold):
            results[example.id] = {"answer": "", "start": 0, "end": 0,
                                   "score": float(probabilities[-1]) if probabilities.size else 0.0}
        elif best is None:
            results[example.id] = {"answer": "", "start": 0, "end": 0, "score": 0.0}
        else:
            _, start, end = best
            results[example.id] = {"answer": example.context[start:end], "start": start, "end": end,
                                   "score": float(probabilities[0])}
    return results


def _softmax(scores: list[float]) -> np.ndarray:
    if not scores:
        return np.zeros(0)
    values = np.asarray(scores, dtype=np.float64)
    values = np.exp(values - values.max())
    return values / values.sum()
