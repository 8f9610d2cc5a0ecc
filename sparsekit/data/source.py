"""Where a run's labelled examples come from: a GLUE task, the user's files, or a Hugging Face dataset.

Every source ends as the same three things downstream code uses: a `TaskSpec` (text columns, label names,
regression or not, metrics), the train and validation `Example`s, and a JSON description that the run's
recipe.json and the exported artifact keep (``describe``), from which ``spec_from_description`` rebuilds
the spec later (evaluate, serve, predict).

GLUE tasks keep their own TSV reader (glue.py: GLUE's files need ``QUOTE_NONE`` and CoLA has no header).
The user's files (CSV, TSV, JSON, JSON Lines, Parquet) and datasets (hub / cache, or a directory written by
``save_to_disk``) are read with the ``datasets`` library and checked here, whole, before any training: a
missing file, split or column, an empty split, empty or non-string texts, mixed label types, and labels in
validation that train never saw are each a `DataError` naming the file, the row (data rows count from 1,
the header not included) and what to do.

Labels: strings are class names, ids in sorted order; integers and booleans are classes named by their
value (``"0"``, ``"1"``), in numeric order; floats mean regression; a ``ClassLabel`` column keeps its names
and ids. ``--metric`` picks the metric (default: accuracy, or pearson and spearman for regression).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sparsekit.data.glue import (Example, TaskSpec, get_task, load_split, resolve_data_root, seeded_subset,
                                 split_path)
from sparsekit.errors import SparsekitError
from sparsekit.files import file_sha256

#: File suffixes the user's data may have, and the ``datasets`` builder that reads each.
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews")
REGRESSION_METRICS = ("pearson", "spearman")
METRIC_CHOICES = CLASSIFICATION_METRICS + REGRESSION_METRICS
#: Default text columns, tried in order (as Hugging Face's run_glue.py does).
DEFAULT_TEXT_COLUMNS = (("sentence1", "sentence2"), ("sentence",), ("text",))
DEFAULT_LABEL_COLUMN = "label"
VALIDATION_SPLITS = ("validation", "dev", "validation_matched")
#: Tasks outside GLUE read from the shared data folder (``--task NAME``), and their task types.
BUILTIN_TASKS = {"conll2003": "token-classification", "squad": "question-answering"}
#: The column options of the user's data that each task type reads.
COLUMN_OPTIONS = {"sequence-classification": ("text_column", "text_pair_column", "label_column", "metric"),
                  "token-classification": ("tokens_column", "tags_column", "tag_scheme", "tag_column", "label_names"),
                  "question-answering": ("question_column", "context_column", "answers_column")}


class DataError(SparsekitError, ValueError):
    """Data that cannot be trained or evaluated on; the message names the file, the row and what to do."""


@dataclass(frozen=True)
class DataSource:
    """The data settings of a run, as given: a GLUE or built-in ``task`` (with ``data_dir``), or ``train_file`` +
    ``validation_file``, or a ``dataset`` (hub name or ``save_to_disk`` directory) with ``dataset_config``;
    plus the column names and the metric for the user's data (None: the defaults) and the ``task_type``
    (None: the built-in task's, else sequence classification)."""

    task: str | None = None
    data_dir: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    metric: str | None = None
    task_type: str | None = None
    tokens_column: str | None = None
    tags_column: str | None = None
    tag_scheme: str | None = None
    tag_column: int | None = None
    label_names: str | None = None
    question_column: str | None = None
    context_column: str | None = None
    answers_column: str | None = None

    @classmethod
    def from_config(cls, config: Any) -> "DataSource":
        """The data settings of a PruneConfig (or anything with the same attribute names)."""
        return cls(**{name: getattr(config, name, None) for name in cls.__dataclass_fields__})

    @property
    def kind(self) -> str:
        """"files", "dataset", "builtin" (a task of BUILTIN_TASKS) or "glue"."""
        if self.train_file or self.validation_file:
            return "files"
        if self.dataset:
            return "dataset"
        return "builtin" if self.task in BUILTIN_TASKS else "glue"

    @property
    def resolved_task_type(self) -> str:
        """The task type of this data: as given, else the built-in task's, else "sequence-classification"."""
        return self.task_type or BUILTIN_TASKS.get(self.task or "", "sequence-classification")

    @property
    def label(self) -> str:
        """A short name for titles and logs: the GLUE task, the train file's name or the dataset."""
        if self.kind == "files":
            return Path(self.train_file or self.validation_file).name
        return self.dataset if self.kind == "dataset" else (self.task or "sst2")

    def check(self) -> None:
        """Raise DataError for settings that contradict each other (before anything is read)."""
        if self.train_file and self.dataset:
            raise DataError("pass either --train-file / --validation-file or --dataset, not both")
        if self.kind == "files" and not (self.train_file and self.validation_file):
            missing = "--validation-file" if self.train_file else "--train-file"
            raise DataError(f"your own data needs both --train-file and --validation-file (sparsekit trains on "
                            f"the first and reports metrics on the second); {missing} is missing")
        task_type = self.resolved_task_type
        if self.task and self.task_type and self.kind in ("glue", "builtin") and task_type != \
                BUILTIN_TASKS.get(self.task, "sequence-classification"):
            raise DataError(f"--task {self.task} is a {BUILTIN_TASKS.get(self.task, 'sequence-classification')} "
                            f"task; drop --task-type {self.task_type} (or pass your own data with --train-file / "
                            f"--validation-file or --dataset)")
        if task_type in COLUMN_OPTIONS:
            other = [n for t, names in COLUMN_OPTIONS.items() if t != task_type for n in names
                     if getattr(self, n) is not None]
            if other:
                flags = ", ".join("--" + n.replace("_", "-") for n in other)
                raise DataError(f"{flags} do not apply to {task_type} data (pass --task-type to pick the task "
                                f"type of your data)")
        if self.kind not in ("glue", "builtin"):
            if self.task:
                raise DataError(f"--task {self.task} names a {'built-in' if self.task in BUILTIN_TASKS else 'GLUE'} "
                                f"task, but --train-file / --dataset give your own data; drop --task (or drop your "
                                f"data options to run the task)")
            if self.data_dir:
                raise DataError("--data-dir is the GLUE data root; it does not apply to --train-file / --dataset")
        else:
            user = [n for n in ("dataset_config", *(n for names in COLUMN_OPTIONS.values() for n in names))
                    if getattr(self, n) is not None]
            if user:
                flags = ", ".join("--" + n.replace("_", "-") for n in user)
                which = "GLUE tasks use" if self.kind == "glue" else f"--task {self.task} uses"
                raise DataError(f"{flags} apply to your own data (--train-file / --validation-file or --dataset); "
                                f"{which} their own columns and metrics")
        if self.metric is not None and self.metric not in METRIC_CHOICES:
            raise DataError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRIC_CHOICES)}")


@dataclass
class LoadedData:
    """A source read and checked: its spec, train and validation examples (after any seeded subsetting), and
    ``record``, the description of ``describe`` plus the example counts (recipe.json's ``data``)."""

    spec: TaskSpec
    train: list[Example]
    dev: list[Example]
    record: dict


def load_data(source: DataSource, train_limit: int | None = None, dev_limit: int | None = None,
              seed: int = 0) -> LoadedData:
    """Read and check ``source``'s train and validation splits; keep seeded subsets of ``train_limit`` /
    ``dev_limit`` examples (the same rows for the same seed, file order kept). DataError / FileNotFoundError
    say what is wrong and what to do."""
    source.check()
    if source.kind == "glue":
        spec = get_task(source.task or "sst2")
        root = resolve_data_root(source.data_dir)
        train = load_split(spec, "train", root, limit=train_limit, seed=seed)
        dev = load_split(spec, "dev", root, limit=dev_limit, seed=seed)
        files = {split: file_record(split_path(spec, split, root)) for split in ("train", "dev")}
        record = {**describe(spec, "glue", files=files), "root": str(root)}
    else:
        train_table, dev_table, origin = open_tables(source)
        spec = _user_spec(source, train_table, dev_table)
        train = _examples(spec, train_table)
        dev = _examples(spec, dev_table)
        train = seeded_subset(train, train_limit, seed) if train_limit else train
        dev = seeded_subset(dev, dev_limit, seed) if dev_limit else dev
        record = describe(spec, source.kind, **origin)
    return LoadedData(spec, train, dev, {**record, "train_examples": len(train), "dev_examples": len(dev)})


def builtin_data_dir(task: str, data_dir: str | Path | None = None) -> Path:
    """The folder holding a built-in task's files (BUILTIN_TASKS): ``data_dir`` when given, else the folder named
    after the task next to the GLUE data root (``../shared/data/conll2003``). FileNotFoundError saying where it
    looked and what to pass."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
    else:
        try:
            path = resolve_data_root(None).parent / task
        except FileNotFoundError:
            path = Path("..", "shared", "data", task)
    if not path.is_dir():
        raise FileNotFoundError(f"the {task} data folder {path} does not exist; pass --data-dir with the folder "
                                f"that holds the {task} files")
    return path.resolve()


def describe(spec: TaskSpec, kind: str, files: dict | None = None, dataset: dict | None = None) -> dict:
    """The JSON description of a sequence-classification data source kept by recipe.json (``data``) and an
    artifact's manifest (``data``); ``spec_from_description`` turns it back into the spec. A run's recipe.json
    adds ``task_type``; an artifact's manifest leaves it out for sequence classification (no ``task_type`` means
    that type). The other task types write their own description, with ``task_type`` and the same ``kind``,
    ``task``, ``name``, ``label_names``, ``metrics``, ``metric``, ``files`` and ``dataset`` keys
    (sparsekit/tasks/).

    kind: "glue", "files" or "dataset"; files: ``{split: {"path", "sha256"}}``; dataset: ``{"name",
    "config", "path", "splits"}``.
    """
    return {"kind": kind, "task": spec.name if kind == "glue" else None, "name": spec.display_name,
            "text_columns": list(spec.text_fields), "label_column": spec.label_field,
            "label_format": spec.label_format,
            "label_names": list(spec.label_names) if spec.label_names is not None else None,
            "is_regression": spec.is_regression, "metrics": list(spec.metrics), "metric": spec.main_metric,
            "files": files, "dataset": dataset}


def recorded_task_type(data: dict | None) -> str:
    """The task type a recorded ``data`` description (recipe.json / manifest ``data``) was trained for; older
    records, which have no ``task_type``, are sequence classification."""
    return (data or {}).get("task_type") or "sequence-classification"


def spec_from_description(data: dict | None) -> TaskSpec | None:
    """The TaskSpec a sequence-classification run or artifact was trained for, from its recorded ``data``
    description (``describe``), or from the ``{"task": name}`` of older runs; None when nothing usable is
    recorded, and for the other task types (see ``recorded_task_type``)."""
    if not data or recorded_task_type(data) != "sequence-classification":
        return None
    if data.get("kind", "glue") == "glue":
        return get_task(data["task"]) if data.get("task") else None
    names = tuple(data["label_names"]) if data.get("label_names") is not None else None
    regression = bool(data["is_regression"])
    return TaskSpec(name=data["name"], display_name=data["name"], text_fields=tuple(data["text_columns"]),
                    label_field=data["label_column"], label_format=data["label_format"], label_names=names,
                    num_labels=1 if regression else len(names or ()), is_regression=regression,
                    metrics=tuple(data["metrics"]), main_metric=data["metric"], splits={})


def recorded_description(recipe: dict | None) -> dict | None:
    """The data description of a run's recipe (an artifact's manifest keeps it as ``data``): ``describe``'s keys
    for sequence classification (older recipes that only name their GLUE task get theirs rebuilt), the recorded
    description (with ``task_type``) without the example counts for the other task types. None when the recipe
    records no data."""
    data = (recipe or {}).get("data")
    if data and recorded_task_type(data) != "sequence-classification":
        return {key: value for key, value in data.items() if key not in ("train_examples", "dev_examples", "root")}
    spec = spec_from_description(data)
    if spec is None:
        return None
    if "kind" not in data:
        return describe(spec, "glue", files=data.get("files"))
    keys = describe(spec, data["kind"]).keys()
    return {key: data.get(key) for key in keys}


def load_evaluation_file(spec: TaskSpec, path: str | Path, text_column: str | None = None,
                         text_pair_column: str | None = None, label_column: str | None = None) -> list[Example]:
    """The examples of one labelled file (CSV, TSV, JSON, JSON Lines, Parquet) for a model trained for ``spec``:
    the spec's text and label columns unless given, labels mapped to the model's ids. DataError for bad data,
    including labels the model was not trained on."""
    if text_pair_column and not text_column:
        raise DataError("--text-pair-column needs --text-column (the first text of each pair)")
    table = read_table_file(path, "--validation-file")
    texts = tuple(c for c in (text_column, text_pair_column) if c) if text_column else spec.text_fields
    label = label_column or spec.label_field
    if len(texts) != len(spec.text_fields):
        raise DataError(f"the model was trained on {len(spec.text_fields)} text column(s) "
                        f"({', '.join(spec.text_fields)}); pass as many (--text-column / --text-pair-column)")
    require_columns(table, (*texts, label))
    spec = _with_columns(spec, texts, label)
    return _examples(spec, table)


# ----------------------------------------------------------------------------------------------- tables


@dataclass
class Table:
    """One split as columns of python values; ``where`` names it in messages (a path, or dataset + split)."""

    where: str
    columns: dict[str, list]
    features: dict[str, Any]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@contextlib.contextmanager
def _quiet_datasets():
    """Hide the ``datasets`` progress bars while reading (restored afterwards)."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        if enabled:
            datasets.enable_progress_bars()


def as_table(dataset: Any, where: str) -> Table:
    """A ``datasets.Dataset`` split as a Table named ``where`` in messages."""
    return Table(where, {name: list(dataset[name]) for name in dataset.column_names}, dict(dataset.features))


def read_table_file(path: str | Path, flag: str) -> Table:
    """One file read with the ``datasets`` builder its suffix names. Texts are kept as written: no value
    becomes a missing value (an empty field stays an empty string, "NA" stays "NA")."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{flag} {path} {what}; pass a CSV, TSV, JSON, JSON Lines or Parquet file")
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"{flag} {path}: unknown file type {path.suffix or '(no suffix)'!r}; sparsekit reads "
                        f"{', '.join(FILE_BUILDERS)} files (rename the file if it is one of those)")
    options: dict[str, Any] = {}
    if builder == "csv":
        options = {"keep_default_na": False, "na_filter": False, "sep": "\t" if path.suffix.lower() == ".tsv" else ","}
    if path.stat().st_size == 0:
        raise DataError(f"{flag} {path} is empty; it needs a header and at least one example")
    with _quiet_datasets() as datasets:
        try:
            dataset = datasets.load_dataset(builder, data_files={"data": str(path)}, split="data", **options)
        except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear message
            if "corresponds to no data" in str(exc):  # a header and no rows
                raise DataError(f"{path} has no examples; every split needs at least one") from exc
            raise DataError(f"{flag} {path} cannot be read as {path.suffix.lstrip('.').upper()}: "
                            f"{_short(exc)}. Check the file's format; a column whose values mix types (numbers "
                            f"and text) cannot be read either") from exc
    return as_table(dataset, str(path))


def open_tables(source: DataSource) -> tuple[Table, Table, dict]:
    """The train and validation tables of the user's files or dataset, and what ``describe`` records of them."""
    if source.kind == "files":
        train = read_table_file(source.train_file, "--train-file")
        dev = read_table_file(source.validation_file, "--validation-file")
        files = {"train": file_record(Path(source.train_file)),
                 "validation": file_record(Path(source.validation_file))}
        return train, dev, {"files": files}
    splits = open_dataset(source.dataset, source.dataset_config)
    if "train" not in splits:
        raise DataError(f"dataset {source.dataset} has no train split (it has: {', '.join(splits) or 'none'}); "
                        f"pass your splits as --train-file / --validation-file instead")
    validation = next((s for s in VALIDATION_SPLITS if s in splits), None)
    if validation is None:
        raise DataError(f"dataset {source.dataset} has no validation split (looked for "
                        f"{', '.join(VALIDATION_SPLITS)}; it has: {', '.join(splits)}); save one with "
                        f"DatasetDict(train=..., validation=...).save_to_disk(...) or pass files")
    local = Path(source.dataset).expanduser()
    record = {"name": source.dataset, "config": source.dataset_config,
              "path": str(local.resolve()) if local.is_dir() else None,
              "splits": {"train": "train", "validation": validation},
              "fingerprints": {s: getattr(splits[s], "_fingerprint", None) for s in ("train", validation)}}
    where = lambda split: f"dataset {source.dataset} ({split} split)"  # noqa: E731
    return (as_table(splits["train"], where("train")), as_table(splits[validation], where(validation)),
            {"dataset": record})


def open_dataset(name: str, config: str | None) -> dict:
    """A DatasetDict-like ``{split: Dataset}``: a ``save_to_disk`` directory, or a hub dataset (cache first)."""
    local = Path(name).expanduser()
    with _quiet_datasets() as datasets:
        if local.is_dir() and any((local / f).is_file() for f in ("dataset_dict.json", "state.json")):
            try:
                loaded = datasets.load_from_disk(str(local))
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"--dataset {local} cannot be loaded as a save_to_disk directory: {_short(exc)}") \
                    from exc
            if isinstance(loaded, datasets.Dataset):
                raise DataError(f"--dataset {local} holds one Dataset without splits; save a DatasetDict with "
                                f"train and validation splits (DatasetDict(train=..., validation=...).save_to_disk)")
            return dict(loaded)
        if local.exists():
            raise DataError(f"--dataset {local} is a path but not a directory written by save_to_disk (no "
                            f"dataset_dict.json); pass files with --train-file / --validation-file instead")
        try:
            return dict(datasets.load_dataset(name, config))
        except Exception as exc:  # noqa: BLE001
            raise DataError(
                f"dataset {name!r}{f' (config {config!r})' if config else ''} cannot be loaded: {_short(exc)}. "
                f"It must be in the Hugging Face datasets cache (HF_DATASETS_CACHE / HF_HOME) or reachable on the "
                f"hub (unset HF_DATASETS_OFFLINE / HF_HUB_OFFLINE to download it); a local copy can be passed as "
                f"the directory written by save_to_disk") from exc


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def file_record(path: Path) -> dict:
    """What a run records of one data file: its resolved path and sha256."""
    return {"path": str(path.resolve()), "sha256": file_sha256(path)}


# --------------------------------------------------------------------------------------- columns, labels


def require_columns(table: Table, needed: tuple[str, ...],
                    options: str = "--text-column, --text-pair-column and --label-column") -> None:
    """DataError naming the missing columns of ``needed``, the columns found and ``options`` (the flags that
    name the columns), or, for a table without rows, that every split needs an example."""
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(f"{table.where} has no column {', '.join(repr(c) for c in missing)}; the columns found are "
                        f"{', '.join(repr(c) for c in table.columns) or 'none'}. Name yours with {options}")
    if len(table) == 0:
        raise DataError(f"{table.where} has no examples; every split needs at least one")


def _text_columns(source: DataSource, table: Table) -> tuple[str, ...]:
    if source.text_pair_column and not source.text_column:
        raise DataError("--text-pair-column needs --text-column (the first text of each pair)")
    if source.text_column:
        return tuple(c for c in (source.text_column, source.text_pair_column) if c)
    for candidate in DEFAULT_TEXT_COLUMNS:
        if all(c in table.columns for c in candidate):
            return candidate
    tried = " / ".join("+".join(c) for c in DEFAULT_TEXT_COLUMNS)
    raise DataError(f"{table.where}: no text column found (looked for {tried}); the columns found are "
                    f"{', '.join(repr(c) for c in table.columns)}. Pass --text-column (and --text-pair-column for "
                    f"sentence pairs)")


def _value_kind(value: Any) -> str:
    """"missing", "bool", "int", "float" or "str" (for a label value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not
                                                                              value.strip()):
        return "missing"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


def _label_kind(table: Table, column: str) -> str:
    """The one kind of the labels of ``column`` (see _value_kind); DataError for missing or mixed labels."""
    first: dict[str, int] = {}
    for row, value in enumerate(table.columns[column]):
        kind = _value_kind(value)
        if kind == "str":
            with contextlib.suppress(ValueError):
                float(value)
                kind = "numeric text"
        if kind == "missing":
            raise DataError(f"{table.where}, row {row + 1}: the label ({column!r}) is empty; every example needs a "
                            f"label (fill it in or remove the row)")
        first.setdefault(kind, row)
    if first.keys() == {"numeric text"}:
        return "str"  # numbers written as text ("1", "2") are class names
    unknown = first.keys() - {"bool", "int", "float", "str", "numeric text"}
    if unknown:
        kind = next(iter(unknown))
        raise DataError(f"{table.where}, row {first[kind] + 1}: label {table.columns[column][first[kind]]!r} is a "
                        f"{kind}; labels must be class names (text), class numbers (integers) or scores (floats)")
    if len(first) > 1:
        shown = "; ".join(f"{k} (first at row {r + 1}: {table.columns[column][r]!r})" for k, r in first.items())
        raise DataError(f"{table.where}: the labels in {column!r} mix types: {shown}. Use one kind: class names "
                        f"(text), class numbers (integers) or scores (floats, for regression)")
    return next(iter(first))


def _class_names(table: Table, column: str, kind: str) -> tuple[str, ...]:
    values = set(table.columns[column])
    if kind == "str":
        names = sorted(values)
    else:
        names = [str(v) for v in sorted(values)]
    if len(names) < 2:
        raise DataError(f"{table.where}: every label in {column!r} is {names[0]!r}; a classifier needs at least two "
                        f"classes (float labels train a regression)")
    return tuple(names)


def _user_spec(source: DataSource, train: Table, dev: Table) -> TaskSpec:
    """The TaskSpec of the user's data: columns, label names / regression and metrics, checked on both splits."""
    texts = _text_columns(source, train)
    label = source.label_column or DEFAULT_LABEL_COLUMN
    for table in (train, dev):
        require_columns(table, (*texts, label))
    feature = train.features.get(label)
    if type(feature).__name__ == "ClassLabel":
        label_format, names, regression = "index", tuple(feature.names), False
        _label_kind(dev, label)
    else:
        kind, dev_kind = _label_kind(train, label), _label_kind(dev, label)
        if kind != dev_kind and not (kind == "float" and dev_kind == "int"):
            raise DataError(f"the labels in {label!r} are {kind} in {train.where} but {dev_kind} in {dev.where} "
                            f"(e.g. {dev.columns[label][0]!r}); write both splits' labels the same way")
        regression = kind == "float"
        label_format = "score" if regression else "name"
        names = None if regression else _class_names(train, label, kind)
    metrics = _metrics(source.metric, regression, names)
    name = source.label
    return TaskSpec(name=name, display_name=name, text_fields=texts, label_field=label, label_format=label_format,
                    label_names=names, num_labels=1 if regression else len(names), is_regression=regression,
                    metrics=metrics, main_metric=metrics[0], splits={})


def _metrics(metric: str | None, regression: bool, names: tuple[str, ...] | None) -> tuple[str, ...]:
    if metric is None:
        return REGRESSION_METRICS if regression else ("accuracy",)
    if regression and metric not in REGRESSION_METRICS:
        raise DataError(f"--metric {metric} scores classes, but the labels are floats (regression); use "
                        f"{' or '.join(REGRESSION_METRICS)}")
    if not regression and metric not in CLASSIFICATION_METRICS:
        raise DataError(f"--metric {metric} scores a regression, but the labels are classes; use "
                        f"{', '.join(CLASSIFICATION_METRICS)}")
    if metric == "f1" and names is not None and len(names) != 2:
        raise DataError(f"--metric f1 is the F1 of class 1 of a binary task; these labels have {len(names)} "
                        f"classes; use accuracy or matthews")
    return (metric,)


def _with_columns(spec: TaskSpec, texts: tuple[str, ...], label: str) -> TaskSpec:
    return replace(spec, text_fields=texts, label_field=label, columns=None)


def _label_id(spec: TaskSpec, value: Any, where: str) -> int | float:
    """The model's label for one value of the label column (class id, or float score)."""
    kind = _value_kind(value)
    if kind == "missing":
        raise DataError(f"{where}: the label ({spec.label_field!r}) is empty; every example needs a label")
    if spec.is_regression:
        if kind not in ("int", "float"):
            raise DataError(f"{where}: label {value!r} is not a number; the model predicts scores (regression)")
        return float(value)
    names = spec.label_names or ()
    if spec.label_format == "index" and kind == "int":
        if not 0 <= value < spec.num_labels:
            extra = " (-1 marks an unlabelled example)" if value == -1 else ""
            raise DataError(f"{where}: label {value} is outside the class ids 0..{spec.num_labels - 1}{extra}")
        return int(value)
    key = str(value) if kind in ("int", "bool") else value
    if kind == "float" and float(value).is_integer():
        key = str(int(value))
    if key in names:
        return names.index(key)
    raise DataError(f"{where}: label {value!r} is not one the model was trained on (train has: "
                    f"{', '.join(map(str, names))}); remove those rows or add examples of it to the train data")


def _examples(spec: TaskSpec, table: Table) -> list[Example]:
    """Every row of ``table`` as an Example: non-empty string texts, labels mapped with ``_label_id``."""
    if len(table) == 0:
        raise DataError(f"{table.where} has no examples; every split needs at least one")
    texts = [table.columns[c] for c in spec.text_fields]
    labels = table.columns[spec.label_field]
    examples = []
    for row in range(len(labels)):
        where = f"{table.where}, row {row + 1}"
        values = []
        for column, column_values in zip(spec.text_fields, texts):
            text = column_values[row]
            if not isinstance(text, str):
                raise DataError(f"{where}: {column!r} holds {type(text).__name__} {text!r}, not a text; every text "
                                f"must be a string (quote it in the file, or pick the text column with --text-column)")
            if not text.strip():
                raise DataError(f"{where}: {column!r} is empty; every example needs a text (fill it in or remove "
                                f"the row)")
            values.append(text)
        examples.append(Example(values[0], values[1] if len(values) > 1 else None,
                                _label_id(spec, labels[row], where)))
    return examples
