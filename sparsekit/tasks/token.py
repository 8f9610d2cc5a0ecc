"""Token classification (NER): one IOB2 tag per word, the label on a word's first sub-token; entity-level
precision / recall / F1 (seqeval, strict IOB2) plus token accuracy. The building blocks are in ``tasks/ner/``.

Data: the built-in ``--task conll2003`` (train.txt / validation.txt / test.txt of the shared CoNLL-2003 folder),
or the user's CoNLL files, JSON / JSON Lines / Parquet files or ``datasets`` data with a tokens column and a tags
column (``--task-type token-classification``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsekit.data.source import DataError, builtin_data_dir
from sparsekit.tasks.base import TaskData, TaskType, check_cap_labels, recorded_validation_file, refuse_options

#: The built-in CoNLL-2003 files by split (``sparsekit evaluate --split``).
CONLL_SPLITS = {"train": "train.txt", "dev": "validation.txt", "validation": "validation.txt", "test": "test.txt"}
#: Settings only question answering reads (its column options are refused by DataSource.check).
QA_OPTIONS = ("doc_stride", "max_answer_length", "n_best", "version_2_with_negative", "null_threshold")


class TokenClassification(TaskType):
    """NER with a token-classification head: per-token cross-entropy (ignoring -100), per-token KD."""

    name = "token-classification"
    auto_class = "AutoModelForTokenClassification"
    target_keys = ("labels",)
    main_metric = "f1"
    metrics = ("precision", "recall", "f1", "accuracy")

    def check_config(self, config: Any) -> None:
        refuse_options(config, QA_OPTIONS, "question answering", self.name)
        check_cap_labels(self, config)

    def check_teacher(self, source: str | Path, data: TaskData) -> dict | None:
        """Also ValueError when the teacher's tags (config id2label) are not this run's, in the same order."""
        config = super().check_teacher(source, data)
        id2label = (config or {}).get("id2label") or {}
        names = tuple(id2label[k] for k in sorted(id2label, key=int))
        if any(a.endswith("ForTokenClassification") for a in (config or {}).get("architectures") or []) and \
                names != tuple(data.labels):
            raise ValueError(f"the teacher {source} predicts the tags {', '.join(names)}; this run's are "
                             f"{', '.join(data.labels)} (distil from a teacher trained on the same data)")
        return config

    def load_data(self, source: Any, config: Any) -> TaskData:
        from sparsekit.tasks.ner import load_token_data

        task = source.task if source.kind == "builtin" else None
        train_file, validation_file = source.train_file, source.validation_file
        if task is not None:
            train_file, validation_file = conll_path(task, "train", source.data_dir), conll_path(task, "dev",
                                                                                                  source.data_dir)
        loaded = load_token_data(train_file=train_file, validation_file=validation_file, dataset=source.dataset,
                                 dataset_config=source.dataset_config,
                                 tokens_column=source.tokens_column or "tokens",
                                 tags_column=source.tags_column or "ner_tags", scheme=source.tag_scheme or "auto",
                                 train_limit=config.train_samples, dev_limit=config.eval_samples, seed=config.seed,
                                 tag_column=-1 if source.tag_column is None else source.tag_column,
                                 label_names=split_names(source.label_names))
        name = task or source.label
        record = {**loaded.record, "kind": source.kind, "task_type": self.name, "task": task, "name": name,
                  "label_names": list(loaded.labels), "tokens_column": source.tokens_column or "tokens",
                  "tags_column": source.tags_column or "ner_tags", "tag_scheme": source.tag_scheme or "auto",
                  "tag_column": -1 if source.tag_column is None else source.tag_column,
                  "metrics": list(self.metrics), "metric": self.main_metric, "files": loaded.record.get("files"),
                  "dataset": loaded.record.get("dataset"),
                  "train_examples": len(loaded.train), "dev_examples": len(loaded.dev)}
        return TaskData(loaded.train, loaded.dev, record, tuple(loaded.labels), name, loaded)

    def num_labels(self, data: TaskData) -> int:
        return len(data.labels)

    def datasets(self, data: TaskData, tokenizer: Any, config: Any) -> tuple[Any, Any]:
        from sparsekit.tasks.ner import TokenDataset

        label2id = {name: i for i, name in enumerate(data.labels)}
        return (TokenDataset(data.train, tokenizer, label2id, config.max_length),
                TokenDataset(data.dev, tokenizer, label2id, config.max_length))

    def collate(self, tokenizer: Any, data: TaskData):
        from sparsekit.tasks.ner import make_token_collate

        return make_token_collate(tokenizer)

    def loss(self, outputs: torch.Tensor, targets: dict) -> torch.Tensor:
        """Cross-entropy of logits ``[B, T, C]`` against tag ids ``[B, T]`` (-100: not a word's first token)."""
        from sparsekit.tasks.ner import token_loss

        return token_loss(outputs, targets["labels"])

    def kd_loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: dict, inputs: dict,
                temperature: float) -> torch.Tensor:
        """T^2 * KL of the tag distributions, mean over the labelled positions."""
        from sparsekit.tasks.ner import token_kd_loss

        return token_kd_loss(student, teacher, targets["labels"], temperature)

    def evaluate(self, model: nn.Module, dataset: Any, data: TaskData, tokenizer: Any, config: Any,
                 progress: bool = False) -> dict:
        return entity_evaluation(model, dataset, data.labels, config.eval_batch_size)

    def evaluate_saved(self, model: nn.Module, tokenizer: Any, recipe: dict, *, split: str = "dev",
                       data_dir: str | None = None, validation_file: str | None = None,
                       columns: dict | None = None, batch_size: int = 128, progress: bool = False,
                       task: str | None = None) -> tuple[dict, str]:
        """Entity metrics on a split of the built-in task (train / dev = validation / test) or on
        ``validation_file`` (CoNLL, JSON, JSON Lines, Parquet; ``columns``: tokens_column, tags_column,
        tag_scheme; default: the run's own validation file)."""
        from sparsekit.tasks.ner import TokenDataset, load_token_data

        data = recipe.get("data") or {}
        labels = tuple(data.get("label_names") or ())
        if not labels:
            id2label = model.config.id2label
            labels = tuple(id2label[i] for i in range(len(id2label)))
        columns = columns or {}
        if validation_file is None:
            task = task or data.get("task")
            if task is None:
                validation_file = recorded_validation_file(data)
            else:
                validation_file = conll_path(task, split, data_dir)
        where = f"{task} {split}" if task else str(validation_file)
        # load_token_data reads a train and a validation split; the one file serves as both here.
        loaded = load_token_data(train_file=validation_file, validation_file=validation_file, label_names=labels,
                                 tokens_column=columns.get("tokens_column") or data.get("tokens_column") or "tokens",
                                 tags_column=columns.get("tags_column") or data.get("tags_column") or "ner_tags",
                                 scheme=columns.get("tag_scheme") or "auto", tag_column=data.get("tag_column", -1))
        unknown = sorted({t for ex in loaded.dev for t in ex.tags} - set(labels))
        if unknown:
            raise DataError(f"{validation_file}: tags {', '.join(unknown)} are not ones the model was trained on "
                            f"({', '.join(labels)})")
        max_length = recipe.get("config", {}).get("max_length", 128)
        dataset = TokenDataset(loaded.dev, tokenizer, {n: i for i, n in enumerate(labels)}, max_length)
        return entity_evaluation(model, dataset, labels, batch_size), where


def entity_evaluation(model: nn.Module, dataset: Any, labels: tuple[str, ...], batch_size: int = 128) -> dict:
    """Entity precision / recall / F1 (strict IOB2), token accuracy and per-type scores of ``model`` on
    ``dataset`` (a TokenDataset; ner.evaluate_entities), the tag names ``labels`` in id order, plus eval_seconds
    and eval_samples (sentences). An nn.Module's training mode is restored afterwards."""
    from sparsekit.tasks.ner import evaluate_entities

    start, was_training = time.perf_counter(), getattr(model, "training", False)
    try:
        metrics, _ = evaluate_entities(model, dataset, labels, batch_size)
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics["eval_samples"] = len(dataset)
    return metrics


def conll_path(task: str, split: str, data_dir: str | Path | None = None) -> Path:
    """The file of ``split`` (train, dev / validation, test) of the built-in token-classification ``task``."""
    if split not in CONLL_SPLITS:
        raise ValueError(f"unknown split {split!r} of {task}; choose one of {', '.join(CONLL_SPLITS)}")
    return builtin_data_dir(task, data_dir) / CONLL_SPLITS[split]


def split_names(names: str | None) -> tuple[str, ...] | None:
    """``--label-names "O,B-PER,I-PER"`` as a tuple of names (None when not given); DataError for an empty name."""
    if names is None:
        return None
    parts = tuple(n.strip() for n in names.split(","))
    if not all(parts):
        raise DataError(f"--label-names {names!r} has an empty name; write the tag names in id order, separated "
                        f"by commas, e.g. O,B-PER,I-PER")
    return parts
