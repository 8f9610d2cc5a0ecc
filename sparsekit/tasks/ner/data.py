"""Token-classification data: CoNLL files and the user's JSON / JSON Lines / Parquet / ``datasets`` data, read
into `TokenExample`s with IOB2 tags and checked, whole, before any training.

CoNLL files: one token a line, whitespace-separated columns (the word first, the tag in ``tag_column``,
default the last), a blank line after each sentence, ``-DOCSTART-`` lines skipped. Every token line of a file
must have the same number of columns. Files ending in .json / .jsonl / .parquet are read with the ``datasets``
library (sparsekit/data/source.py); every other file is read as CoNLL (.txt, .conll, .iob, .tsv, CoNLL's own
eng.train / eng.testa ...).

Tag schemes (``scheme``): "iob2" keeps the tags as written; "iob1" converts them to IOB2 (tags.py);
"auto" (the default) decides per file: IOB1 when some ``I-X`` tag starts an entity (at a sentence start,
after ``O`` or after a tag of another type), IOB2 otherwise. Converting valid IOB2 tags changes nothing, so
"auto" only ever rewrites tags that strict IOB2 scoring would not count as entities. With "iob2" such tags
are kept and counted in a warning.

Labels: ``"O"`` first, then ``B-`` and ``I-`` of every entity type of the train split (types sorted), so a
type's ``I-`` label exists even when train has only one-word entities of it. Tags given as ids need their
names: a ``ClassLabel`` feature keeps its names (and ids; types it lacks are appended), otherwise pass
``label_names`` (in id order). Validation tags whose type train never had are a DataError.

Errors (DataError, a ValueError) name the file and line (CoNLL) or the file / dataset split and row (data
rows count from 1) and what to do: ragged column counts, tags that are not IOB, tokens and tags of different
lengths, empty sentences, non-string tokens, unknown tag ids or types. Quirks that standard tools tolerate
are counted in one warning per file (``DataWarning``): empty tokens in the user's data (they get no
sub-token and count as predicted "O"), and under "iob2" ``I-`` tags that start an entity.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsekit.data.glue import seeded_subset
from sparsekit.data.source import (DataError, DataSource, file_record, open_tables, read_table_file,
                                   require_columns)
from sparsekit.tasks.ner.tags import SCHEMES, detect_scheme, entity_starting_i_tags, iob1_to_iob2, is_iob_tag

#: Suffixes read with the ``datasets`` library; every other file is read as CoNLL.
TABLE_SUFFIXES = (".json", ".jsonl", ".parquet")
DOCSTART = "-DOCSTART-"


class DataWarning(UserWarning):
    """A data quirk that standard tools tolerate, counted per file (the message says how many and where)."""


@dataclass(frozen=True)
class TokenExample:
    """One sentence: its words and their IOB2 tags (same length, at least one word)."""

    words: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass
class TokenData:
    """Checked train and validation sentences, the label set (ids are positions: ``"O"`` first, or the order of a
    ClassLabel's / ``label_names``' names) and ``record``, the JSON description of the source (kind, files or
    dataset, columns, schemes, labels, counts)."""

    labels: tuple[str, ...]
    train: list[TokenExample]
    dev: list[TokenExample]
    record: dict


@dataclass(frozen=True)
class _Sentence:
    """A sentence and where it came from: ``source`` (a path, or dataset + split), ``row`` (a CoNLL file's first
    line of the sentence, or the data row from 1) and, for CoNLL, the line of each token."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    source: str
    row: int
    lines: tuple[int, ...] | None = None

    def where(self, token: int | None = None) -> str:
        if self.lines is not None:
            return f"{self.source}:{self.lines[token] if token is not None else self.row}"
        return f"{self.source}, row {self.row}" + (f", token {token + 1}" if token is not None else "")


# ------------------------------------------------------------------------------------------------ CoNLL


def read_conll(path: str | Path, tag_column: int = -1, scheme: str = "auto") -> list[TokenExample]:
    """The sentences of a CoNLL file, tags in IOB2 (see the module docstring for the format and ``scheme``).

    tag_column: index of the tag among a line's columns (negative counts from the end; the word is column
    0). DataError naming ``file:line`` for a bad file; FileNotFoundError for a missing one."""
    sentences = _read_conll(Path(path), tag_column, "path")
    sentences, _ = _apply_scheme(sentences, scheme, str(path))
    return [TokenExample(s.words, s.tags) for s in sentences]


def _read_conll(path: Path, tag_column: int, flag: str) -> list[_Sentence]:
    _check_file(path, flag)
    sentences: list[_Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    columns = None  # (count, line where first seen)

    def close() -> None:
        if words:
            sentences.append(_Sentence(tuple(words), tuple(tags), str(path), lines[0], tuple(lines)))
            words.clear(), tags.clear(), lines.clear()

    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the "
                                f"file as UTF-8") from exc
            fields = line.split()
            if not fields:
                close()
                continue
            if fields[0] == DOCSTART:
                close()
                continue
            if columns is None:
                if len(fields) < 2:
                    raise DataError(f"{path}:{number}: one column ({fields[0]!r}); a CoNLL file needs the word and "
                                    f"its tag on each line, separated by whitespace")
                if not -len(fields) <= tag_column < len(fields) or tag_column % len(fields) == 0:
                    raise DataError(f"{path}:{number}: tag column {tag_column} does not exist or is the word "
                                    f"column; the lines have {len(fields)} columns (word first, tag column from 1 to "
                                    f"{len(fields) - 1}, or negative from the end)")
                columns = (len(fields), number)
            elif len(fields) != columns[0]:
                raise DataError(f"{path}:{number}: {len(fields)} columns, but the file's token lines have "
                                f"{columns[0]} (from line {columns[1]}); every token line needs the same columns "
                                f"(a word that contains a space splits into two)")
            tag = fields[tag_column]
            if not is_iob_tag(tag):
                raise DataError(f"{path}:{number}: tag {tag!r} (column {tag_column % len(fields)}) is not an IOB "
                                f"tag (O, B-TYPE, I-TYPE); pick the tag column with tag_column / --tag-column, or "
                                f"convert other schemes (BIOES) to IOB2")
            words.append(fields[0])
            tags.append(tag)
            lines.append(number)
    close()
    if not sentences:
        raise DataError(f"{path} has no sentences (only blank and {DOCSTART} lines); every split needs at least "
                        f"one")
    return sentences


def _check_file(path: Path, flag: str) -> None:
    """FileNotFoundError / DataError for a missing or empty file, a CSV, or JSON with a CoNLL file's name."""
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{flag} {path} {what}; pass a CoNLL, JSON, JSON Lines or Parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{flag} {path} is empty; every split needs at least one sentence")
    if path.suffix.lower() == ".csv":
        raise DataError(f"{flag} {path}: a CSV file cannot hold a list of tokens per row; write the data as CoNLL "
                        f"(one token a line) or JSON Lines ({{\"tokens\": [...], \"ner_tags\": [...]}} a line)")
    if _looks_like_json(path):
        raise DataError(f"{flag} {path} holds JSON, but only files ending in {', '.join(TABLE_SUFFIXES)} are read as "
                        f"JSON / Parquet (others as CoNLL); rename it to .json or .jsonl")


def _looks_like_json(path: Path) -> bool:
    """True when the first non-blank line is ``[`` / ``{`` alone or a JSON object or array."""
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.strip()
            if line:
                if line in (b"[", b"{"):
                    return True
                try:
                    return isinstance(json.loads(line), (dict, list))
                except ValueError:
                    return False
    return False


def _apply_scheme(sentences: list[_Sentence], scheme: str, source: str) -> tuple[list[_Sentence], str]:
    """Sentences with IOB2 tags, and the scheme read ("iob1" or "iob2")."""
    if scheme not in SCHEMES:
        raise DataError(f"unknown tag scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme == "auto":
        scheme = detect_scheme(s.tags for s in sentences)
    if scheme == "iob1":
        return [_Sentence(s.words, iob1_to_iob2(s.tags), s.source, s.row, s.lines) for s in sentences], scheme
    stray = [(s, i) for s in sentences for i in entity_starting_i_tags(s.tags)]
    if stray:
        first = stray[0][0].where(stray[0][1])
        warnings.warn(f"{source}: {len(stray)} I- tag(s) start an entity (first at {first}), which IOB2 does not "
                      f"allow; they are kept as written and strict scoring counts no entity there (use "
                      f"scheme='auto' or 'iob1' to read them as entity starts)", DataWarning, stacklevel=3)
    return sentences, scheme


# ------------------------------------------------------------------------------------------ the user's data


def _table_sentences(table: Any, tokens_column: str, tags_column: str,
                     names: Sequence[str] | None) -> list[_Sentence]:
    """The rows of a ``source.Table`` as sentences (tags as names); DataError for a bad row."""
    require_columns(table, (tokens_column, tags_column),
                    "tokens_column / --tokens-column and tags_column / --tags-column")
    sentences, empty = [], []
    for row, (words, tags) in enumerate(zip(table.columns[tokens_column], table.columns[tags_column]), 1):
        where = f"{table.where}, row {row}"
        for column, value in ((tokens_column, words), (tags_column, tags)):
            if not isinstance(value, (list, tuple)):
                raise DataError(f"{where}: {column!r} holds {type(value).__name__} {value!r}, not a list; each row "
                                f"needs a list of tokens and a list of tags, one per token")
        if not words:
            raise DataError(f"{where}: the sentence has no tokens; remove the row")
        if len(words) != len(tags):
            raise DataError(f"{where}: {len(words)} tokens but {len(tags)} tags; every token needs exactly one tag")
        for i, word in enumerate(words):
            if not isinstance(word, str):
                raise DataError(f"{where}, token {i + 1}: {type(word).__name__} {word!r} is not a string; tokens "
                                f"must be strings")
            if not word.strip():
                empty.append(f"{where}, token {i + 1}")
        sentences.append(_Sentence(tuple(words), tuple(_tag_name(t, names, f"{where}, token {i + 1}", tags_column)
                                                         for i, t in enumerate(tags)), table.where, row))
    if empty:
        warnings.warn(f"{table.where}: {len(empty)} empty token(s) (first at {empty[0]}); they get no sub-token, "
                      f"are not trained on and count as predicted 'O'", DataWarning, stacklevel=4)
    return sentences


def _tag_name(value: Any, names: Sequence[str] | None, where: str, column: str) -> str:
    if isinstance(value, str):
        if not is_iob_tag(value):
            raise DataError(f"{where}: tag {value!r} is not an IOB tag (O, B-TYPE, I-TYPE); convert other "
                            f"schemes (BIOES) to IOB2, or check --tags-column ({column!r})")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if names is None:
            raise DataError(f"{where}: tag {value} is an id, but {column!r} has no label names (no ClassLabel "
                            f"feature); pass label_names / --label-names in id order, or write the tags as names")
        if not 0 <= value < len(names):
            raise DataError(f"{where}: tag id {value} is outside 0..{len(names) - 1} ({len(names)} label names)")
        return names[value]
    raise DataError(f"{where}: tag {value!r} is a {type(value).__name__}; tags must be names (B-PER) or ids")


def _checked_names(names: Sequence[str] | None, where: str) -> tuple[str, ...] | None:
    """``names`` as a tuple; DataError unless each is an IOB tag."""
    if names is None:
        return None
    bad = [name for name in names if not is_iob_tag(name)]
    if bad:
        raise DataError(f"{where}: label name(s) {', '.join(map(repr, bad[:5]))} are not IOB tags (O, B-TYPE, "
                        f"I-TYPE); sparsekit reads IOB1 and IOB2 tags (convert BIOES to IOB2 first)")
    return tuple(names)


def _feature_names(table: Any, column: str) -> tuple[str, ...] | None:
    """The names of a ``List(ClassLabel)`` / ``Sequence(ClassLabel)`` column, else None."""
    feature = getattr(table.features.get(column), "feature", None)
    return tuple(feature.names) if type(feature).__name__ == "ClassLabel" else None


# ------------------------------------------------------------------------------------------------- loading


def load_token_data(train_file: str | Path | None = None, validation_file: str | Path | None = None,
                    dataset: str | None = None, dataset_config: str | None = None, tokens_column: str = "tokens",
                    tags_column: str = "ner_tags", scheme: str = "auto", train_limit: int | None = None,
                    dev_limit: int | None = None, seed: int = 0, *, tag_column: int = -1,
                    label_names: Sequence[str] | None = None) -> TokenData:
    """Read and check the train and validation sentences of CoNLL / JSON / JSON Lines / Parquet files or of a
    ``datasets`` dataset (hub / cache name or ``save_to_disk`` directory; splits "train" and "validation" /
    "dev"); keep seeded subsets of ``train_limit`` / ``dev_limit`` sentences (the same for the same seed, file
    order kept, as sparsekit.data.glue.seeded_subset).

    tokens_column / tags_column: the columns of table data; tag_column: the tag's column in CoNLL files;
    label_names: the names of integer tag ids (id order) when the data has no ClassLabel feature. Every check
    runs on the whole of both splits before any subsetting. Returns TokenData (labels ``"O"`` first)."""
    if scheme not in SCHEMES:
        raise DataError(f"unknown tag scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if (train_file or validation_file) and dataset:
        raise DataError("pass either --train-file / --validation-file or --dataset, not both")
    if not dataset and not (train_file and validation_file):
        missing = "--validation-file" if train_file else "--train-file"
        raise DataError(f"token-classification data needs --train-file and --validation-file (or --dataset); "
                        f"{missing} is missing")
    names = _checked_names(label_names, "label_names")
    if dataset:
        train_table, dev_table, origin = open_tables(DataSource(dataset=dataset, dataset_config=dataset_config))
        names = names or _checked_names(_feature_names(train_table, tags_column), train_table.where)
        splits = {"train": _table_sentences(train_table, tokens_column, tags_column, names),
                  "validation": _table_sentences(dev_table, tokens_column, tags_column, names)}
        record = {"kind": "dataset", **origin, "formats": None}
    else:
        splits, formats = {}, {}
        for split, flag, path in (("train", "--train-file", train_file), ("validation", "--validation-file",
                                                                          validation_file)):
            path = Path(path).expanduser()
            formats[split] = "conll" if path.suffix.lower() not in TABLE_SUFFIXES else path.suffix.lower()[1:]
            if formats[split] == "conll":
                splits[split] = _read_conll(path, tag_column, flag)
            else:
                table = read_table_file(path, flag)
                names = names or _checked_names(_feature_names(table, tags_column), table.where)
                splits[split] = _table_sentences(table, tokens_column, tags_column, names)
        record = {"kind": "files", "files": {s: file_record(Path(p).expanduser()) for s, p in
                                             (("train", train_file), ("validation", validation_file))},
                  "formats": formats}
    schemes = {}
    for split in splits:
        splits[split], schemes[split] = _apply_scheme(splits[split], scheme, splits[split][0].source)
    labels = _label_set(splits["train"], names)
    _check_tags(splits["validation"], labels, splits["train"][0].source)
    train = [TokenExample(s.words, s.tags) for s in splits["train"]]
    dev = [TokenExample(s.words, s.tags) for s in splits["validation"]]
    train = seeded_subset(train, train_limit, seed) if train_limit else train
    dev = seeded_subset(dev, dev_limit, seed) if dev_limit else dev
    record.update({"task": "token-classification", "tokens_column": tokens_column, "tags_column": tags_column,
                   "tag_column": tag_column, "scheme": schemes, "labels": list(labels),
                   "train_examples": len(train), "dev_examples": len(dev),
                   "train_words": sum(len(e.words) for e in train), "dev_words": sum(len(e.words) for e in dev)})
    return TokenData(labels, train, dev, record)


def _label_set(train: list[_Sentence], names: tuple[str, ...] | None) -> tuple[str, ...]:
    """``"O"``, then B- and I- of each entity type in ``train`` (sorted); given names keep their order first."""
    types = sorted({tag[2:] for s in train for tag in s.tags if tag != "O"})
    full = ("O",) + tuple(f"{prefix}-{kind}" for kind in types for prefix in "BI")
    if names is None:
        return full
    return tuple(names) + tuple(label for label in full if label not in names)


def _check_tags(sentences: list[_Sentence], labels: tuple[str, ...], train_source: str) -> None:
    known = set(labels)
    for sentence in sentences:
        for i, tag in enumerate(sentence.tags):
            if tag not in known:
                types = sorted({label[2:] for label in labels if label != "O"})
                raise DataError(f"{sentence.where(i)}: tag {tag!r} is not in the label set of the train data "
                                f"{train_source} (entity types: {', '.join(types) or 'none'}); remove those "
                                f"sentences or add examples of the type to the train data")
