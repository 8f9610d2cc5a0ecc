"""GLUE task specifications and loading of GLUE's TSV files into `Example`s.

The files are read in GLUE's own distribution format (tab-separated, `csv.QUOTE_NONE`). Labels
follow the Hugging Face `glue` dataset convention, so label ids match models fine-tuned there.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DATA_DIR_ENV = "SPARSEKIT_DATA_DIR"

LabelFormat = Literal["index", "name", "score"]


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to read one GLUE task and score predictions for it.

    `splits` maps a split name to candidate file paths relative to the data root; the first one
    that exists is read. `columns` names the columns of header-less files (CoLA); for files with a
    header it is None and `text_fields` / `label_field` are looked up in the header.
    `label_format` says how the label column is written: "index" (an integer class id),
    "name" (a class name from `label_names`) or "score" (a float, for regression).
    """

    name: str
    display_name: str
    text_fields: tuple[str, ...]
    label_field: str
    label_format: LabelFormat
    label_names: tuple[str, ...] | None
    num_labels: int
    is_regression: bool
    metrics: tuple[str, ...]
    main_metric: str
    splits: dict[str, tuple[str, ...]] = field(hash=False)
    shipped_splits: tuple[str, ...] = ()
    columns: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()

    @property
    def shipped(self) -> bool:
        """True when at least one split of this task is shipped in the shared data directory."""
        return bool(self.shipped_splits)

    @property
    def is_glue(self) -> bool:
        """True for a GLUE task, whose splits are files under the GLUE data root (False for the user's data)."""
        return bool(self.splits)

    @property
    def is_pair(self) -> bool:
        """True for sentence-pair tasks (two text fields)."""
        return len(self.text_fields) == 2


_COLA_COLUMNS = ("source", "label", "original_mark", "sentence")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="sst2",
            display_name="SST-2",
            text_fields=("sentence",),
            label_field="label",
            label_format="index",
            label_names=("negative", "positive"),
            num_labels=2,
            is_regression=False,
            metrics=("accuracy",),
            main_metric="accuracy",
            splits={"train": ("SST-2/train.tsv",), "dev": ("SST-2/dev.tsv",)},
            shipped_splits=("train", "dev"),
        ),
        TaskSpec(
            name="mrpc",
            display_name="MRPC",
            text_fields=("#1 String", "#2 String"),
            label_field="Quality",
            label_format="index",
            label_names=("not_equivalent", "equivalent"),
            num_labels=2,
            is_regression=False,
            metrics=("accuracy", "f1"),
            main_metric="f1",
            splits={"train": ("MRPC/train.tsv",), "dev": ("MRPC/dev.tsv",)},
            shipped_splits=("train", "dev"),
        ),
        TaskSpec(
            name="rte",
            display_name="RTE",
            text_fields=("sentence1", "sentence2"),
            label_field="label",
            label_format="name",
            label_names=("entailment", "not_entailment"),
            num_labels=2,
            is_regression=False,
            metrics=("accuracy",),
            main_metric="accuracy",
            splits={"train": ("RTE/train.tsv",), "dev": ("RTE/dev.tsv",)},
            shipped_splits=("train", "dev"),
        ),
        TaskSpec(
            name="stsb",
            display_name="STS-B",
            text_fields=("sentence1", "sentence2"),
            label_field="score",
            label_format="score",
            label_names=None,
            num_labels=1,
            is_regression=True,
            metrics=("pearson", "spearman"),
            main_metric="pearson",
            splits={"train": ("STS-B/train.tsv",), "dev": ("STS-B/dev.tsv",)},
            shipped_splits=("train", "dev"),
            aliases=("sts",),
        ),
        TaskSpec(
            name="cola",
            display_name="CoLA",
            text_fields=("sentence",),
            label_field="label",
            label_format="index",
            label_names=("unacceptable", "acceptable"),
            num_labels=2,
            is_regression=False,
            metrics=("matthews",),
            main_metric="matthews",
            # GLUE's CoLA train.tsv is the authors' in_domain_train.tsv (same rows, same format).
            splits={
                "train": ("CoLA/train.tsv", "CoLA/cola_public_1.1/raw/in_domain_train.tsv"),
                "dev": ("CoLA/dev.tsv",),
            },
            shipped_splits=("train", "dev"),
            columns=_COLA_COLUMNS,
        ),
        TaskSpec(
            name="qnli",
            display_name="QNLI",
            text_fields=("question", "sentence"),
            label_field="label",
            label_format="name",
            label_names=("entailment", "not_entailment"),
            num_labels=2,
            is_regression=False,
            metrics=("accuracy",),
            main_metric="accuracy",
            splits={"train": ("QNLI/train.tsv",), "dev": ("QNLI/dev.tsv",)},
            shipped_splits=("dev",),
        ),
        TaskSpec(
            name="mnli",
            display_name="MNLI",
            text_fields=("sentence1", "sentence2"),
            label_field="gold_label",
            label_format="name",
            label_names=("entailment", "neutral", "contradiction"),
            num_labels=3,
            is_regression=False,
            metrics=("accuracy",),
            main_metric="accuracy",
            splits={
                "train": ("MNLI/train.tsv",),
                "dev": ("MNLI/dev_matched.tsv",),
                "dev_mismatched": ("MNLI/dev_mismatched.tsv",),
            },
            aliases=("mnli-m", "mnli_m", "multinli"),
        ),
        TaskSpec(
            name="qqp",
            display_name="QQP",
            text_fields=("question1", "question2"),
            label_field="is_duplicate",
            label_format="index",
            label_names=("not_duplicate", "duplicate"),
            num_labels=2,
            is_regression=False,
            metrics=("accuracy", "f1"),
            main_metric="accuracy",
            splits={"train": ("QQP/train.tsv",), "dev": ("QQP/dev.tsv",)},
        ),
    )
}

_SPLIT_ALIASES = {
    "validation": "dev",
    "validation_matched": "dev_matched",
    "validation_mismatched": "dev_mismatched",
}


def _normalize(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_ALIAS_TO_NAME: dict[str, str] = {
    _normalize(alias): spec.name
    for spec in TASKS.values()
    for alias in (spec.name, spec.display_name, *spec.aliases)
}


@dataclass(frozen=True)
class Example:
    """One labelled GLUE example: `text_b` is None for single-sentence tasks; `label` is an int
    class id, or a float score for STS-B."""

    text_a: str
    text_b: str | None
    label: float | int


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Return the TaskSpec for a task name or alias (case-, dash- and underscore-insensitive,
    e.g. "SST-2", "sst2", "STS-B", "mnli_m"). A TaskSpec is returned unchanged."""
    if isinstance(name, TaskSpec):
        return name
    key = _ALIAS_TO_NAME.get(_normalize(str(name)))
    if key is None:
        known = ", ".join(f"{s.name} ({s.display_name})" for s in TASKS.values())
        raise ValueError(f"Unknown GLUE task {name!r}. Known tasks: {known}.")
    return TASKS[key]


def _package_repo_root() -> Path:
    # The directory that holds the `sparsekit` package (the repository root for an editable
    # install).
    return Path(__file__).resolve().parent.parent.parent


def default_data_root() -> Path:
    """Find the GLUE data root (the directory holding SST-2/, MRPC/, ...).

    Order: the `SPARSEKIT_DATA_DIR` environment variable if set; else `<repo>/../shared/data/glue`
    where `<repo>` holds the `sparsekit` package; else `./../shared/data/glue`, then
    `./shared/data/glue` relative to the working directory.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"{DATA_DIR_ENV} is set to {env!r}, but that directory does not exist. Point it at "
                "the GLUE data root (the directory holding SST-2/, MRPC/, ...), or unset it."
            )
        return path.resolve()
    candidates = [
        _package_repo_root() / ".." / "shared" / "data" / "glue",
        Path.cwd() / ".." / "shared" / "data" / "glue",
        Path.cwd() / "shared" / "data" / "glue",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    looked = "\n  ".join(str(c.resolve()) for c in candidates)
    raise FileNotFoundError(
        f"Could not find the GLUE data directory. Looked in:\n  {looked}\n"
        f"Pass --data-dir (or data_dir=...) or set {DATA_DIR_ENV} to the directory holding "
        "SST-2/, MRPC/, ... in GLUE's TSV format."
    )


def resolve_data_root(data_dir: str | Path | None) -> Path:
    """Return the GLUE data root: `data_dir` if given (it must be an existing directory),
    otherwise `default_data_root()`."""
    if data_dir is None:
        return default_data_root()
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"GLUE data directory {str(path)!r} does not exist or is not a directory. Pass the "
            "directory holding SST-2/, MRPC/, ... (GLUE's layout)."
        )
    return path.resolve()


def _canonical_split(spec: TaskSpec, split: str) -> str:
    canonical = _SPLIT_ALIASES.get(split.lower(), split.lower())
    if canonical == "dev_matched" and "dev_mismatched" in spec.splits:
        canonical = "dev"
    if canonical not in spec.splits:
        if canonical == "test":
            raise ValueError(
                f"GLUE's {spec.display_name} test split is unlabelled and cannot be loaded for "
                f"training or evaluation. Use one of: {', '.join(spec.splits)}."
            )
        raise ValueError(
            f"Unknown split {split!r} for {spec.display_name}. "
            f"Available splits: {', '.join(spec.splits)} ('validation' is an alias of 'dev')."
        )
    return canonical


def _split_path(spec: TaskSpec, split: str, root: Path) -> Path:
    candidates = [root / rel for rel in spec.splits[split]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    expected = candidates[0]
    also = "".join(f"\n  or {c}" for c in candidates[1:])
    if split not in spec.shipped_splits:
        if spec.shipped_splits:
            shipped = ", ".join(spec.shipped_splits)
            why = (
                f"{spec.display_name} {split} is not shipped with sparsekit's data (only "
                f"{shipped} is available)."
            )
        else:
            why = f"{spec.display_name} is not shipped with sparsekit's data."
        raise FileNotFoundError(
            f"{why} Expected the file at {expected}{also}. Download GLUE's {spec.display_name} "
            f"files and place {spec.splits[split][0]} (GLUE's own TSV format) under the data "
            f"directory, or pass --data-dir / set {DATA_DIR_ENV} to a directory that has it."
        )
    raise FileNotFoundError(
        f"Missing {spec.display_name} {split} file: expected {expected}{also}. Check the data "
        f"directory ({root}); pass --data-dir or set {DATA_DIR_ENV} to the GLUE data root."
    )


def split_path(task: str | TaskSpec, split: str, data_dir: str | Path | None = None) -> Path:
    """Return the resolved path of the file that `load_split(task, split, data_dir)` reads.

    Accepts the same task names / aliases and split names as `load_split` and raises the same
    errors: ValueError for an unknown task or split, FileNotFoundError when the data directory or
    the split's file is missing.
    """
    spec = get_task(task)
    canonical = _canonical_split(spec, split)
    root = resolve_data_root(data_dir)
    return _split_path(spec, canonical, root).resolve()


def _parse_label(spec: TaskSpec, raw: str, where: str) -> int | float:
    if spec.label_format == "score":
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{where}: label {raw!r} is not a number.") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: label {raw!r} is not a finite number.")
        return value
    if spec.label_format == "name":
        assert spec.label_names is not None
        try:
            return spec.label_names.index(raw)
        except ValueError:
            raise ValueError(
                f"{where}: label {raw!r} is not one of {', '.join(spec.label_names)}."
            ) from None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{where}: label {raw!r} is not an integer class id.") from None
    if not 0 <= value < spec.num_labels:
        raise ValueError(f"{where}: label {value} is outside 0..{spec.num_labels - 1}.")
    return value


@functools.lru_cache(maxsize=32)
def _read_examples(spec: TaskSpec, path: str, mtime_ns: int, size: int) -> tuple[Example, ...]:
    # mtime_ns and size are part of the cache key so an edited file is read again.
    del mtime_ns, size
    # utf-8-sig strips the BOM that MRPC's header starts with; it is a no-op for other files.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        # QUOTE_NONE is required: the files contain bare `"` characters, which the default
        # quoting rules would treat as field delimiters and merge rows across lines.
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if spec.columns is None:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: file is empty; expected a header line.")
        else:
            header = list(spec.columns)
        missing = [c for c in (*spec.text_fields, spec.label_field) if c not in header]
        if missing:
            raise ValueError(
                f"{path}:1: header {header} lacks column(s) {missing} needed for "
                f"{spec.display_name}. Is this GLUE's {spec.display_name} file?"
            )
        text_idx = [header.index(c) for c in spec.text_fields]
        label_idx = header.index(spec.label_field)
        examples = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if len(row) != len(header):
                raise ValueError(
                    f"{where}: expected {len(header)} tab-separated columns, found {len(row)}. "
                    f"The file must be in GLUE's TSV format (columns: {', '.join(header)})."
                )
            texts = [row[i] for i in text_idx]
            examples.append(
                Example(
                    text_a=texts[0],
                    text_b=texts[1] if len(texts) > 1 else None,
                    label=_parse_label(spec, row[label_idx], where),
                )
            )
    return tuple(examples)


def seeded_subset(examples: Sequence[Example], limit: int, seed: int) -> list[Example]:
    """A seeded random subset of ``limit`` examples, in their original order (all of them when there are
    no more than ``limit``). Subsets for the same seed are nested as ``limit`` grows."""
    if limit >= len(examples):
        return list(examples)
    # A seeded permutation, cut at `limit`: subsets for the same seed are nested as limit grows.
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in sorted(order[:limit])]


def load_split(
    task: str | TaskSpec,
    split: str,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Load one labelled split of a GLUE task as a list of `Example`s, in file order.

    `split` is "train", "dev" (alias "validation"), or "dev_mismatched" for MNLI ("dev" is MNLI's
    matched dev set). `data_dir` defaults to `default_data_root()`. `limit` keeps a seeded random
    subset of that many rows (same subset for the same seed; file order preserved).
    Labels are ints (class ids) or floats (STS-B scores in 0..5).
    """
    spec = get_task(task)
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of examples or None, got {limit}.")
    path = split_path(spec, split, data_dir)
    stat = path.stat()
    examples = _read_examples(spec, str(path), stat.st_mtime_ns, stat.st_size)
    if limit is None:
        return list(examples)
    return seeded_subset(examples, limit, seed)
