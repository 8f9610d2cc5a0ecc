"""Entity-level precision / recall / F1 and token accuracy, as seqeval computes them in strict IOB2 mode
(``classification_report(..., mode="strict", scheme=IOB2)``), without the dependency.

An entity is a ``B-X`` tag followed by the longest run of ``I-X`` tags (tags.strict_entities); an ``I-X``
that does not continue an ``X`` entity is not an entity. A predicted entity is correct when a true entity
has the same type, start and end in the same sentence. Precision = correct / predicted, recall = correct /
true, F1 their harmonic mean; each is 0 when its denominator is 0 (no predicted / no true entities), as
seqeval's ``zero_division`` default reports. Totals are micro-averaged over entities; ``per_type`` covers
every type that is true or predicted somewhere. Accuracy is the fraction of words whose tag is exactly right
(``O`` included).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sparsekit.tasks.ner.tags import strict_entities


def _scores(correct: int, predicted: int, true: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Strict IOB2 entity scores of ``pred_tags`` against ``true_tags`` (lists of sentences of tags, the same
    shape). Returns ``{"precision", "recall", "f1", "accuracy", "per_type": {TYPE: {"precision", "recall",
    "f1", "support"}}, "true_entities", "predicted_entities"}`` (floats in 0..1; support = true entities of the
    type). ValueError for sentences of different lengths or tags that are not IOB."""
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} true sentences but {len(pred_tags)} predicted ones")
    true_count, pred_count, correct = Counter(), Counter(), Counter()
    words = right = 0
    for index, (true, pred) in enumerate(zip(true_tags, pred_tags)):
        if len(true) != len(pred):
            raise ValueError(f"sentence {index + 1}: {len(true)} true tags but {len(pred)} predicted ones")
        true_entities, pred_entities = set(strict_entities(true)), set(strict_entities(pred))
        true_count.update(kind for kind, _, _ in true_entities)
        pred_count.update(kind for kind, _, _ in pred_entities)
        correct.update(kind for kind, _, _ in true_entities & pred_entities)
        words += len(true)
        right += sum(t == p for t, p in zip(true, pred))
    per_type = {kind: {**_scores(correct[kind], pred_count[kind], true_count[kind]), "support": true_count[kind]}
                for kind in sorted(true_count.keys() | pred_count.keys())}
    totals = _scores(sum(correct.values()), sum(pred_count.values()), sum(true_count.values()))
    return {**totals, "accuracy": right / words if words else 0.0, "per_type": per_type,
            "true_entities": sum(true_count.values()), "predicted_entities": sum(pred_count.values())}
