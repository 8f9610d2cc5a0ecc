"""QA data: SQuAD v1.1 / v2.0 JSON, the user's tables, checks before training, the seeded dev re-split."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparsekit.data.source import DataError
from sparsekit.tasks.qa import Answer, is_squad_file, load_qa_data, read_squad, squad_resplit

SQUAD_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "dev-v1.1.json"
CONTEXT = "The cat sat on the mat. Paris is the capital of France."


def squad(articles: list[tuple[str, list[dict]]], version: str = "1.1") -> dict:
    """A SQuAD document: one paragraph per (title, qas) article, all about CONTEXT."""
    return {"version": version, "data": [{"title": title, "paragraphs": [{"context": CONTEXT, "qas": qas}]}
                                         for title, qas in articles]}


def qa(qid: str, question: str = "Where did the cat sit?", answers=None, **extra) -> dict:
    if answers is None:
        answers = [{"text": "the mat", "answer_start": CONTEXT.index("the mat")}]
    return {"id": qid, "question": question, "answers": answers, **extra}


def write(path: Path, document) -> Path:
    path.write_text(json.dumps(document))
    return path


def test_read_squad_v1_and_v2(tmp_path):
    v1 = write(tmp_path / "v1.json", squad([("Cats", [qa("a"), qa("b", "Capital of France?", [
        {"text": "Paris", "answer_start": CONTEXT.index("Paris")}, {"text": "Paris", "answer_start": 24}])])]))
    examples = read_squad(v1)
    assert [e.id for e in examples] == ["a", "b"]
    assert examples[0].answers == (Answer("the mat", CONTEXT.index("the mat")),)
    assert examples[0].title == "Cats" and not examples[0].is_impossible
    assert len(examples[1].answers) == 2
    v2 = write(tmp_path / "v2.json", squad([("Cats", [qa("a"), qa("n", "Who owns the cat?", [], is_impossible=True,
                                                              plausible_answers=[{"text": "Paris",
                                                                                  "answer_start": 24}])])],
                                           version="v2.0"))
    no_answer = read_squad(v2)[1]
    assert no_answer.is_impossible and no_answer.answers == ()
    assert is_squad_file(v1) and is_squad_file(v2)


def test_small_offset_quirk_is_fixed_and_counted(tmp_path):
    start = CONTEXT.index("the mat")
    path = write(tmp_path / "quirk.json", squad([("Cats", [qa("q1", answers=[{"text": "the mat",
                                                                             "answer_start": start + 2}])])]))
    fixes: list[str] = []
    (example,) = read_squad(path, fixes)
    assert example.answers[0] == Answer("the mat", start)
    assert len(fixes) == 1 and "q1" in fixes[0] and str(path) in fixes[0]


@pytest.mark.parametrize("bad, message", [
    (qa("q1", answers=[{"text": "the dog", "answer_start": 15}]), "does not match the context"),
    (qa("q1", answers=[{"text": "the mat", "answer_start": 999}]), "outside the context"),
    (qa("q1", question="  "), "question is empty"),
    (qa("q1", answers=[{"text": "the mat"}]), "answer_start"),
    (qa("q1", answers=[{"text": "", "answer_start": 0}]), "non-empty text"),
    ({"id": "q1", "question": "Where?"}, "\"answers\" is missing"),
    ({"id": "q1", "answers": []}, "question is missing"),
    (qa("q1", is_impossible=True), "is_impossible is true"),
])
def test_bad_questions_name_file_and_id(tmp_path, bad, message):
    path = write(tmp_path / "bad.json", squad([("Cats", [bad])]))
    with pytest.raises(DataError, match=message) as error:
        read_squad(path)
    assert str(path) in str(error.value) and "q1" in str(error.value)


def test_empty_context_duplicate_ids_and_not_squad(tmp_path):
    document = squad([("Cats", [qa("q1")])])
    document["data"][0]["paragraphs"][0]["context"] = ""
    with pytest.raises(DataError, match=r"question id q1: the context is empty"):
        read_squad(write(tmp_path / "empty.json", document))
    with pytest.raises(DataError, match="'q1' appears twice"):
        read_squad(write(tmp_path / "dup.json", squad([("Cats", [qa("q1")]), ("Dogs", [qa("q1")])])))
    with pytest.raises(DataError, match="not in the SQuAD layout"):
        read_squad(write(tmp_path / "list.json", [{"question": "q"}]))


def _rows(prefix: str, count: int, no_answer: bool = False) -> list[dict]:
    rows = [{"id": f"{prefix}{i}", "question": "Capital of France?", "context": CONTEXT,
             "answers": {"text": ["Paris"], "answer_start": [CONTEXT.index("Paris")]}} for i in range(count)]
    if no_answer:
        rows.append({"id": f"{prefix}-none", "question": "Who owns the cat?", "context": CONTEXT,
                     "answers": {"text": [], "answer_start": []}})
    return rows


def test_load_qa_data_tables_and_squad_files(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in _rows("t", 5)) + "\n")
    dev = write(tmp_path / "dev.json", squad([("Cats", [qa("d1"), qa("d2")])]))
    data = load_qa_data(train_file=train, validation_file=dev)
    assert [e.id for e in data.train] == [f"t{i}" for i in range(5)] and len(data.dev) == 2
    assert data.train[0].answers == (Answer("Paris", CONTEXT.index("Paris")),)
    assert not data.version_2
    assert data.record["files"]["train"]["format"] == "table" and data.record["files"]["validation"]["format"] == \
        "squad"
    assert data.record["resplit"] is None and data.record["task"] == "question-answering"

    dev_v2 = tmp_path / "dev2.jsonl"
    dev_v2.write_text("\n".join(json.dumps(r) for r in _rows("d", 2, no_answer=True)) + "\n")
    data = load_qa_data(train_file=train, validation_file=dev_v2, train_limit=3)
    assert data.version_2 and data.dev[-1].is_impossible and data.dev[-1].answers == ()
    assert len(data.train) == 3 and data.record["train_examples"] == 3

    bad = tmp_path / "bad.jsonl"
    rows = _rows("b", 2)
    rows[1]["answers"] = {"text": ["London"], "answer_start": [0]}
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl, question id b1: answer 'London' does not match"):
        load_qa_data(train_file=bad, validation_file=dev)
    with pytest.raises(DataError, match="no column 'query'"):
        load_qa_data(train_file=train, validation_file=dev, question_column="query")


def test_load_qa_data_dataset_directory(tmp_path):
    import datasets

    datasets.DatasetDict(train=datasets.Dataset.from_list(_rows("t", 3)),
                         validation=datasets.Dataset.from_list(_rows("v", 2, no_answer=True))
                         ).save_to_disk(str(tmp_path / "ds"))
    data = load_qa_data(dataset=str(tmp_path / "ds"))
    assert len(data.train) == 3 and len(data.dev) == 3 and data.version_2


def test_resplit_of_a_small_file(tmp_path):
    articles = [(f"A{i}", [qa(f"q{i}-{j}") for j in range(3)]) for i in range(6)]
    path = write(tmp_path / "six.json", squad(articles))
    data = load_qa_data(validation_file=path, train_articles=4, seed=1)
    assert len(data.train) == 12 and len(data.dev) == 6 and data.record["resplit"]["train_articles"] == 4
    assert "not comparable" in data.record["resplit"]["note"]
    assert {e.title for e in data.train}.isdisjoint({e.title for e in data.dev})
    with pytest.raises(ValueError, match="train articles"):
        squad_resplit(read_squad(path), train_articles=6)


@pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=f"{SQUAD_DEV} is not here")
def test_real_squad_dev_and_its_resplit():
    examples = read_squad(SQUAD_DEV)
    assert len(examples) == 10570 and len({e.title for e in examples}) == 48
    assert len({e.id for e in examples}) == 10570 and sum(len(e.answers) for e in examples) == 34726
    train, dev = squad_resplit(examples)
    assert len({e.title for e in train}) == 38 and len({e.title for e in dev}) == 10
    assert {e.title for e in train}.isdisjoint({e.title for e in dev})
    assert len(train) + len(dev) == 10570
    again_train, again_dev = squad_resplit(examples, seed=0)
    assert [e.id for e in again_train] == [e.id for e in train] and [e.id for e in again_dev] == [e.id for e in dev]
    other_train, _ = squad_resplit(examples, seed=1)
    assert {e.title for e in other_train} != {e.title for e in train}


def test_validation_file_alone_needs_articles_to_split(tmp_path):
    table = tmp_path / "dev.jsonl"
    table.write_text("\n".join(json.dumps(r) for r in _rows("d", 3)) + "\n")
    with pytest.raises(DataError, match="split by article"):
        load_qa_data(validation_file=table)
    with pytest.raises(DataError, match="needs --validation-file"):
        load_qa_data()
