"""SQuAD EM / F1 with the official normalisation, on cases worked out by hand."""
from __future__ import annotations

import pytest

from sparsekit.tasks.qa import Answer, QAExample, exact_match, normalize_answer, squad_metrics, token_f1


@pytest.mark.parametrize("text, normal", [
    ("The Cat.", "cat"),
    ("  an   apple, a pear ", "apple pear"),
    ("Theatre", "theatre"),            # articles only as whole words
    ("A-B", "ab"),                     # punctuation removed, not replaced by a space
    ("the", ""),
    ("Dr. Who's \"TARDIS\"", "dr whos tardis"),
])
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_and_token_f1_by_hand():
    assert exact_match("The Cat.", "cat") == 1.0
    assert exact_match("the cats", "cat") == 0.0
    # "denver broncos" vs "broncos": overlap 1, precision 1/2, recall 1, F1 = 2/3
    assert token_f1("Denver Broncos", "the Broncos") == pytest.approx(2 / 3)
    # "a b c d" vs "c d e": overlap 2, p 2/4, r 2/3, F1 = 2*(1/2)(2/3)/(1/2+2/3) = 4/7
    assert token_f1("x y c d", "c d e") == pytest.approx(4 / 7)
    # repeated tokens count once per match (multiset): "no no no" vs "no": p 1/3, r 1, F1 = 1/2
    assert token_f1("no no no", "no") == pytest.approx(0.5)
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("the", "") == 1.0 and token_f1("cat", "") == 0.0


def example(qid: str, *answers: str) -> QAExample:
    return QAExample(qid, "", "q?", " ".join(answers) or "context", tuple(Answer(a, 0) for a in answers),
                     is_impossible=not answers)


def test_squad_metrics_max_over_gold_answers_and_missing():
    examples = [example("1", "Denver Broncos", "Broncos"), example("2", "Super Bowl 50"), example("3", "x")]
    predictions = {"1": "the Denver Broncos!", "2": "Bowl 50"}
    # 1: EM 1 (first gold); 2: EM 0, F1: p 2/2 r 2/3 -> 0.8; 3: missing -> 0
    metrics = squad_metrics(predictions, examples)
    assert metrics["exact_match"] == pytest.approx(100 / 3)
    assert metrics["f1"] == pytest.approx(100 * (1 + 0.8) / 3)
    assert metrics["total"] == 3 and metrics["missing"] == 1
    assert "no_answer_f1" not in metrics


def test_squad_metrics_version_2():
    examples = [example("a", "Paris"), example("n1"), example("n2")]
    metrics = squad_metrics({"a": "in Paris", "n1": "", "n2": "London"}, examples)
    # a: EM 0, F1 p 1/2 r 1 -> 2/3; n1: 1, 1; n2: 0, 0
    assert metrics["exact_match"] == pytest.approx(100 / 3)
    assert metrics["f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    assert metrics["has_answer_exact_match"] == 0.0 and metrics["has_answer_f1"] == pytest.approx(200 / 3)
    assert metrics["no_answer_exact_match"] == 50.0 and metrics["no_answer_f1"] == 50.0
    assert metrics["has_answer_total"] == 1 and metrics["no_answer_total"] == 2
