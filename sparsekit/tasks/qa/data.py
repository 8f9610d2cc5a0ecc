"""Extractive QA examples: SQuAD v1.1 / v2.0 JSON, the user's JSON / JSONL / Parquet / ``datasets`` data, and
the seeded article re-split of the SQuAD dev file.

SQuAD JSON is ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers":
[{"text", "answer_start"}], "is_impossible"?, "plausible_answers"?}]}]}]}``. v2.0's ``is_impossible`` questions
have no answers (their ``plausible_answers`` are not gold answers and are not kept). The user's tables have a
question, a context and an answers column (Hugging Face's squad layout ``{"text": [...], "answer_start":
[...]}``, or a list of ``{"text", "answer_start"}``); an empty answers list is a v2 no-answer question. Tables
are read with sparsekit.data.source's ``datasets`` readers.

Everything is checked whole before any training; a problem is a `DataError` naming the file and the question
id: missing fields, empty question / context / answer text, duplicate ids, an ``answer_start`` outside the
context, and an answer whose text is not at ``context[answer_start:]``. One quirk the standard tools tolerate
is fixed instead: an answer whose text is found within ``OFFSET_SLACK`` characters of its ``answer_start`` is
moved there, and a message per fix is added to ``fixes`` (``load_qa_data`` records the count).
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsekit.data.glue import seeded_subset
from sparsekit.data.source import (VALIDATION_SPLITS, DataError, as_table, file_record, open_dataset,
                                   read_table_file, require_columns)

log = logging.getLogger(__name__)

#: How far (in characters) an answer's text may sit from its ``answer_start`` and still be fixed, not refused.
OFFSET_SLACK = 5
#: Articles of the SQuAD dev file that ``squad_resplit`` puts in train (the other 10 of 48 evaluate).
RESPLIT_TRAIN_ARTICLES = 38
RESPLIT_NOTE = ("seeded re-split of the SQuAD v1.1 dev articles (no article in both splits); figures on it are "
                "not comparable to the official SQuAD dev set")


@dataclass(frozen=True)
class Answer:
    """One gold answer: its ``text`` and ``start``, the character offset of the text in the context
    (``context[start:start + len(text)] == text``)."""

    text: str
    start: int

    @property
    def end(self) -> int:
        """The character offset just past the answer (exclusive)."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class QAExample:
    """One question about one context. ``answers`` is empty exactly when ``is_impossible`` (SQuAD v2.0's
    no-answer questions); ``title`` names the article (SQuAD) or is "" (tables without a title column)."""

    id: str
    title: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    is_impossible: bool = False


@dataclass
class QAData:
    """Train and dev examples of a run; ``record`` describes where they came from (recipe.json / manifest
    ``data``); ``version_2`` is True when any example has no answer (SQuAD v2.0 style)."""

    train: list[QAExample]
    dev: list[QAExample]
    record: dict
    version_2: bool


# --------------------------------------------------------------------------------------------- checking


def _checked_answer(text: Any, start: Any, context: str, where: str, fixes: list[str] | None) -> Answer:
    """The Answer of one ``{"text", "answer_start"}``, its offset fixed when the text sits within
    OFFSET_SLACK characters of ``start`` (a message appended to ``fixes``); DataError otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: an answer's text is {text!r}; every answer needs a non-empty text (a question "
                        f"without an answer has an empty answers list)")
    if isinstance(start, bool) or not isinstance(start, int):
        if isinstance(start, float) and start.is_integer():
            start = int(start)
        else:
            raise DataError(f"{where}: answer {text!r} has answer_start {start!r}; it must be a character offset "
                            f"(an integer)")
    if not 0 <= start < len(context):
        raise DataError(f"{where}: answer {text!r} has answer_start {start}, outside the context "
                        f"(0..{len(context) - 1})")
    if context[start:start + len(text)] == text:
        return Answer(text, start)
    near = [i for i in range(max(0, start - OFFSET_SLACK), min(len(context), start + OFFSET_SLACK + 1))
            if context.startswith(text, i)]
    if not near:
        found = context[start:start + len(text)]
        raise DataError(f"{where}: answer {text!r} does not match the context at answer_start {start} (the context "
                        f"there reads {found!r}); fix answer_start (a character offset into the context) or the "
                        f"answer's text")
    moved = min(near, key=lambda i: abs(i - start))
    if fixes is not None:
        fixes.append(f"{where}: answer {text!r} moved from answer_start {start} to {moved}")
    return Answer(text, moved)


def _checked_text(value: Any, name: str, where: str) -> str:
    if value is None:
        raise DataError(f"{where}: the {name} is missing; every question needs one")
    if not isinstance(value, str):
        raise DataError(f"{where}: the {name} is {type(value).__name__} {value!r}, not a text")
    if not value.strip():
        raise DataError(f"{where}: the {name} is empty; every question needs a non-empty {name}")
    return value


def _checked_id(value: Any, where: str, seen: set[str]) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: the question has no id; every question needs a unique id")
    qid = str(value)
    if qid in seen:
        raise DataError(f"{where}: question id {qid!r} appears twice; ids must be unique")
    seen.add(qid)
    return qid


# ------------------------------------------------------------------------------------------- SQuAD JSON


def read_squad(path: str | Path, fixes: list[str] | None = None) -> list[QAExample]:
    """Every question of a SQuAD v1.1 / v2.0 JSON file, in file order, checked (see the module docstring).

    ``fixes``: a list that gets one message per answer offset moved by up to OFFSET_SLACK characters.
    DataError names the file and the question id; FileNotFoundError for a missing file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD file {path} does not exist")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a JSON file: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f"{path} is not in the SQuAD layout (a JSON object whose \"data\" is a list of articles "
                        f"with paragraphs -> qas -> answers)")
    examples: list[QAExample] = []
    seen: set[str] = set()
    for a, article in enumerate(document["data"]):
        title = str(article.get("title", "")) if isinstance(article, dict) else ""
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{path}, article {a + 1} ({title!r}): \"paragraphs\" is missing or not a list")
        for p, paragraph in enumerate(paragraphs):
            where_paragraph = f"{path}, article {title!r}, paragraph {p + 1}"
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                raise DataError(f"{where_paragraph}: \"qas\" is missing or not a list")
            for q, qa in enumerate(qas):
                if not isinstance(qa, dict):
                    raise DataError(f"{where_paragraph}, question {q + 1}: not a JSON object")
                qid = _checked_id(qa.get("id"), f"{where_paragraph}, question {q + 1}", seen)
                where = f"{path}, question id {qid}"
                context = _checked_text(paragraph.get("context"), "context", where)
                question = _checked_text(qa.get("question"), "question", where)
                raw = qa.get("answers")
                if not isinstance(raw, list):
                    raise DataError(f"{where}: \"answers\" is missing or not a list (use [] for no answer)")
                answers = []
                for answer in raw:
                    if not isinstance(answer, dict) or "text" not in answer or "answer_start" not in answer:
                        raise DataError(f"{where}: every answer needs \"text\" and \"answer_start\"; got {answer!r}")
                    answers.append(_checked_answer(answer["text"], answer["answer_start"], context, where, fixes))
                impossible = bool(qa.get("is_impossible", False))
                if impossible and answers:
                    raise DataError(f"{where}: is_impossible is true but the question has answers; a v2.0 "
                                    f"no-answer question keeps its candidates in \"plausible_answers\"")
                examples.append(QAExample(qid, title, question, context, tuple(answers), not answers))
    if not examples:
        raise DataError(f"{path} has no questions")
    return examples


def is_squad_file(path: str | Path) -> bool:
    """True for a .json file whose top level is an object with a "data" key (the SQuAD layout); JSON Lines,
    Parquet and record-list JSON files are tables."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if not head.startswith(b"{"):
        return False
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False  # several objects, one per line: JSON Lines in a .json file
    return isinstance(document, dict) and "data" in document


def squad_resplit(examples: list[QAExample], train_articles: int = RESPLIT_TRAIN_ARTICLES,
                  seed: int = 0) -> tuple[list[QAExample], list[QAExample]]:
    """A seeded split of the SQuAD dev file by article: ``train_articles`` articles to train, the rest to
    evaluate, no article in both; each list keeps file order. SQuAD's train file is not available offline, so
    this is what sparsekit trains QA on; figures on it are NOT comparable to the official SQuAD dev set.

    The articles (``QAExample.title``, in order of first appearance) are shuffled with ``random.Random(seed)``
    and the first ``train_articles`` go to train. ValueError when there are not more articles than that.
    """
    titles = list(dict.fromkeys(example.title for example in examples))
    if not 0 < train_articles < len(titles):
        raise ValueError(f"squad_resplit needs 1..{len(titles) - 1} train articles for {len(titles)} articles; "
                         f"got {train_articles}")
    order = list(titles)
    random.Random(seed).shuffle(order)
    chosen = set(order[:train_articles])
    return ([e for e in examples if e.title in chosen], [e for e in examples if e.title not in chosen])


# --------------------------------------------------------------------------------------------- tables


def _answers_of(value: Any, context: str, where: str, fixes: list[str] | None) -> tuple[Answer, ...]:
    """The answers of one table row: ``{"text": [...], "answer_start": [...]}`` or ``[{"text",
    "answer_start"}, ...]``."""
    if isinstance(value, dict) and "text" in value and "answer_start" in value:
        texts, starts = value["text"], value["answer_start"]
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise DataError(f"{where}: answers {value!r} need as many \"text\" as \"answer_start\" values (lists)")
        pairs = list(zip(texts, starts))
    elif isinstance(value, list) and all(isinstance(a, dict) and "text" in a and "answer_start" in a
                                         for a in value):
        pairs = [(a["text"], a["answer_start"]) for a in value]
    else:
        raise DataError(f"{where}: answers {value!r} are not in the squad layout ({{\"text\": [...], "
                        f"\"answer_start\": [...]}}; empty lists for no answer)")
    return tuple(_checked_answer(text, start, context, where, fixes) for text, start in pairs)


def _table_examples(table: Any, columns: dict[str, str], fixes: list[str] | None) -> list[QAExample]:
    """Every row of a source.Table as a QAExample. ``columns`` maps question / context / answers / id to the
    table's column names; without an id column the ids are "row-N" (N from 1)."""
    require_columns(table, tuple(columns[k] for k in ("question", "context", "answers")),
                    "the question / context / answers column options")
    ids = table.columns.get(columns["id"])
    titles = table.columns.get("title")
    examples, seen = [], set()
    for row in range(len(table)):
        qid = _checked_id(ids[row] if ids is not None else f"row-{row + 1}", f"{table.where}, row {row + 1}", seen)
        where = f"{table.where}, question id {qid}"
        context = _checked_text(table.columns[columns["context"]][row], "context", where)
        question = _checked_text(table.columns[columns["question"]][row], "question", where)
        answers = _answers_of(table.columns[columns["answers"]][row], context, where, fixes)
        title = str(titles[row]) if titles is not None and titles[row] is not None else ""
        examples.append(QAExample(qid, title, question, context, answers, not answers))
    return examples


def _read_split(path: str | Path, flag: str, columns: dict[str, str], fixes: list[str]) -> tuple[list, dict]:
    """A SQuAD JSON file or a table file, and its file record (path, sha256, format)."""
    if is_squad_file(path):
        return read_squad(path, fixes), {**file_record(Path(path).expanduser()), "format": "squad"}
    table = read_table_file(path, flag)
    return _table_examples(table, columns, fixes), {**file_record(Path(path).expanduser()), "format": "table"}


def load_qa_data(train_file: str | Path | None = None, validation_file: str | Path | None = None,
                 dataset: str | None = None, dataset_config: str | None = None, question_column: str = "question",
                 context_column: str = "context", answers_column: str = "answers", id_column: str = "id",
                 train_limit: int | None = None, dev_limit: int | None = None, seed: int = 0,
                 train_articles: int = RESPLIT_TRAIN_ARTICLES) -> QAData:
    """Read and check a QA run's train and dev examples.

    Sources: ``train_file`` + ``validation_file`` (each SQuAD JSON, or a JSON / JSONL / Parquet table with
    question / context / answers / id columns); ``validation_file`` alone (SQuAD JSON with article titles, e.g.
    the SQuAD v1.1 dev file): ``squad_resplit(examples, train_articles, seed)`` makes both splits, and
    ``record["resplit"]`` says so (figures on it are not comparable to the official dev set); or ``dataset`` (a
    hub name in the cache, or a ``save_to_disk`` directory) with train and validation splits.
    ``train_limit`` / ``dev_limit`` keep seeded subsets (``seed``; file order kept).

    ``record`` (recipe.json / manifest ``data``): kind ("files" / "dataset"), files (path, sha256, format
    "squad" / "table") or dataset, task "question-answering", columns, resplit (None, or train_articles, seed
    and the not-comparable note), version_2, metrics / metric, example counts and ``fixed_answer_offsets``
    (answers moved by up to OFFSET_SLACK characters; each also logged). DataError / FileNotFoundError for bad
    data, naming the file and question id.
    """
    columns = {"question": question_column, "context": context_column, "answers": answers_column, "id": id_column}
    fixes: list[str] = []
    resplit = None
    if dataset and (train_file or validation_file):
        raise DataError("pass either --train-file / --validation-file or --dataset, not both")
    if dataset:
        splits = open_dataset(dataset, dataset_config)
        validation = next((s for s in VALIDATION_SPLITS if s in splits), None)
        if "train" not in splits or validation is None:
            raise DataError(f"dataset {dataset} needs a train and a validation split (it has: "
                            f"{', '.join(splits) or 'none'})")
        train = _table_examples(as_table(splits["train"], f"dataset {dataset} (train split)"), columns, fixes)
        dev = _table_examples(as_table(splits[validation], f"dataset {dataset} ({validation} split)"), columns, fixes)
        origin = {"kind": "dataset", "dataset": {"name": dataset, "config": dataset_config,
                                                 "splits": {"train": "train", "validation": validation}}}
    elif validation_file:
        dev, dev_record = _read_split(validation_file, "--validation-file", columns, fixes)
        if train_file:
            train, train_record = _read_split(train_file, "--train-file", columns, fixes)
        else:
            try:
                train, dev = squad_resplit(dev, train_articles, seed)
            except ValueError as exc:
                raise DataError(f"--validation-file {validation_file} alone is split by article for training "
                                f"({exc}); pass --train-file too, or a SQuAD file with more articles") from exc
            train_record = dev_record
            resplit = {"train_articles": train_articles, "seed": seed, "note": RESPLIT_NOTE}
        origin = {"kind": "files", "files": {"train": train_record, "validation": dev_record}}
    else:
        raise DataError("QA data needs --validation-file (with --train-file, or alone for the seeded article "
                        "re-split of a SQuAD file) or --dataset")
    train = seeded_subset(train, train_limit, seed) if train_limit else train
    dev = seeded_subset(dev, dev_limit, seed) if dev_limit else dev
    version_2 = any(e.is_impossible for e in train) or any(e.is_impossible for e in dev)
    if fixes:
        log.warning("%d answer offset(s) moved to where their text is (first: %s)", len(fixes), fixes[0])
    record = {**origin, "task": "question-answering", "columns": columns, "resplit": resplit,
              "version_2": version_2, "metrics": ["exact_match", "f1"], "metric": "f1",
              "train_examples": len(train), "dev_examples": len(dev), "fixed_answer_offsets": len(fixes)}
    return QAData(train, dev, record, version_2)


