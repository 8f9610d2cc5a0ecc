"""The strict IOB2 entity metric against hand-computed values (seqeval mode="strict", scheme=IOB2)."""
import pytest

from sparsekit.tasks.ner import entity_metrics


def close(metrics, precision, recall, f1):
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == pytest.approx((precision, recall, f1))


def test_micro_average_per_type_and_accuracy():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O", "B-MISC"]]
    m = entity_metrics(true, pred)
    # true: PER, LOC, ORG(0-3), MISC; predicted: PER, ORG(3-4), ORG(0-2), MISC; right: PER, MISC
    close(m, 2 / 4, 2 / 4, 0.5)
    assert m["accuracy"] == pytest.approx(7 / 9)
    assert m["true_entities"] == m["predicted_entities"] == 4
    assert m["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "MISC": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}}


@pytest.mark.parametrize("pred, expected", [
    (["I-PER", "I-PER"], (0.0, 0.0, 0.0)),   # no B- start: no predicted entity, precision defined as 0
    (["O", "I-PER"], (0.0, 0.0, 0.0)),
    (["B-PER", "I-LOC"], (0.0, 0.0, 0.0)),   # PER(0-1) has the wrong end; I-LOC is no entity
    (["B-PER", "I-PER"], (1.0, 1.0, 1.0)),
])
def test_invalid_sequences_are_not_entities(pred, expected):
    close(entity_metrics([["B-PER", "I-PER"]], [pred]), *expected)


def test_adjacent_entities_of_the_same_type():
    true = [["B-PER", "B-PER", "I-PER"]]  # PER(0-1), PER(1-3)
    close(entity_metrics(true, [["B-PER", "I-PER", "I-PER"]]), 0.0, 0.0, 0.0)
    close(entity_metrics(true, [["B-PER", "B-PER", "O"]]), 1 / 2, 1 / 2, 1 / 2)
    close(entity_metrics(true, true), 1.0, 1.0, 1.0)


def test_entities_end_with_their_sentence():
    close(entity_metrics([["O", "B-LOC", "I-LOC"]], [["O", "B-LOC", "I-LOC"]]), 1.0, 1.0, 1.0)
    # An I- at the start of the next sentence does not continue the entity (and is none itself).
    m = entity_metrics([["B-LOC"], ["I-LOC"]], [["B-LOC"], ["B-LOC"]])
    close(m, 1 / 2, 1.0, 2 / 3)
    assert m["per_type"]["LOC"]["support"] == 1


def test_no_true_or_no_predicted_entities():
    m = entity_metrics([["O", "O"]], [["B-PER", "O"]])
    close(m, 0.0, 0.0, 0.0)
    assert m["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    m = entity_metrics([["B-PER", "O"]], [["O", "O"]])
    close(m, 0.0, 0.0, 0.0)
    assert m["accuracy"] == 0.5
    m = entity_metrics([["O"]], [["O"]])
    close(m, 0.0, 0.0, 0.0)
    assert m["accuracy"] == 1.0 and m["per_type"] == {}


def test_shape_and_tag_errors():
    with pytest.raises(ValueError, match="sentence 1: 2 true tags but 1 predicted"):
        entity_metrics([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 true sentences but 2"):
        entity_metrics([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="not an IOB tag"):
        entity_metrics([["O"]], [["PER"]])
