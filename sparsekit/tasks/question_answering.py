"""Extractive question answering (SQuAD v1.1 / v2.0): start / end logits over windows of the context, n-best
post-processing across windows, exact match and F1 with SQuAD's normalisation. The building blocks are in
``tasks/qa/``.

Data: the built-in ``--task squad`` is the shared SQuAD v1.1 dev file re-split by article (``squad_resplit``:
38 articles to train, 10 to evaluate, seed 0). Figures on it are NOT comparable to the official dev set. The
user's data (``--task-type question-answering``): SQuAD JSON files (the official train / dev files work as they
are), JSON / JSON Lines files or ``datasets`` data with question / context / answers columns.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsekit.data.glue import seeded_subset
from sparsekit.data.source import file_record, builtin_data_dir
from sparsekit.tasks.base import TaskData, TaskType, check_cap_labels, recorded_validation_file, refuse_options

#: Defaults of the question-answering settings (Hugging Face run_qa.py's); the window is --max-length tokens.
QA_DEFAULTS = {"max_answer_length": 30, "n_best": 20, "null_threshold": 0.0}
#: The built-in task's file, and its documented re-split (sparsekit.tasks.qa.squad_resplit).
SQUAD_FILE = "dev-v1.1.json"
SQUAD_RESPLIT = {"train_articles": 38, "seed": 0}
TOKEN_OPTIONS = ("tag_scheme",)


def default_stride(max_length: int) -> int:
    """The default overlap of consecutive windows: 128 tokens at max_length 384 (the standard SQuAD setting), a
    third of a shorter window, and never more than half the context tokens a window has room for (a question
    takes up to 64 tokens)."""
    return max(0, min(128, max_length // 3, (max_length - 64 - 3) // 2))


def qa_settings(config: Any, version_2: bool) -> dict:
    """The windowing and post-processing settings of a run (``config``'s, defaults filled in): max_length,
    doc_stride, max_answer_length, n_best, null_threshold, version_2_with_negative."""
    pick = lambda name: QA_DEFAULTS[name] if getattr(config, name, None) is None else getattr(config, name)  # noqa: E731
    stride = config.doc_stride if config.doc_stride is not None else default_stride(config.max_length)
    version = config.version_2_with_negative if config.version_2_with_negative is not None else version_2
    return {"max_length": config.max_length, "doc_stride": stride, "max_answer_length": pick("max_answer_length"),
            "n_best": pick("n_best"), "null_threshold": pick("null_threshold"), "version_2_with_negative": version}


class QuestionAnswering(TaskType):
    """A span-prediction head: cross-entropy of the start and end positions; start / end KD."""

    name = "question-answering"
    auto_class = "AutoModelForQuestionAnswering"
    target_keys = ("start_positions", "end_positions")
    main_metric = "f1"
    metrics = ("exact_match", "f1")

    def check_config(self, config: Any) -> None:
        refuse_options(config, TOKEN_OPTIONS, "token classification", self.name)
        check_cap_labels(self, config)
        if config.doc_stride is not None and config.doc_stride >= config.max_length:
            raise ValueError(f"doc_stride ({config.doc_stride}) must be smaller than max_length "
                             f"({config.max_length}): it is the overlap of consecutive windows")

    def load_data(self, source: Any, config: Any) -> TaskData:
        from sparsekit.tasks.qa import RESPLIT_NOTE, load_qa_data, read_squad, squad_resplit

        task = source.task if source.kind == "builtin" else None
        if task is not None:
            path = squad_path(task, source.data_dir)
            train, dev = squad_resplit(read_squad(path), **SQUAD_RESPLIT)  # the documented split: its own seed
            train = seeded_subset(train, config.train_samples, config.seed) if config.train_samples else train
            dev = seeded_subset(dev, config.eval_samples, config.seed) if config.eval_samples else dev
            version_2 = any(ex.is_impossible for ex in train + dev)
            origin = {"files": {"train": file_record(path), "validation": file_record(path)}}
            extra = {"resplit": {**SQUAD_RESPLIT, "note": RESPLIT_NOTE, "comparable_to_official_dev": False}}
        else:
            loaded = load_qa_data(train_file=source.train_file, validation_file=source.validation_file,
                                  dataset=source.dataset, dataset_config=source.dataset_config,
                                  question_column=source.question_column or "question",
                                  context_column=source.context_column or "context",
                                  answers_column=source.answers_column or "answers",
                                  train_limit=config.train_samples, dev_limit=config.eval_samples, seed=config.seed)
            train, dev, version_2, origin = loaded.train, loaded.dev, loaded.version_2, loaded.record
            extra = {}
        settings = qa_settings(config, version_2)
        name = task or source.label
        record = {**origin, "kind": source.kind, "task_type": self.name, "task": task, "name": name,
                  "label_names": None, "question_column": source.question_column or "question",
                  "context_column": source.context_column or "context",
                  "answers_column": source.answers_column or "answers",
                  "version_2_with_negative": settings["version_2_with_negative"],
                  "metrics": list(self.metrics), "metric": self.main_metric, "files": origin.get("files"),
                  "dataset": origin.get("dataset"), **extra,
                  "qa": {k: v for k, v in settings.items() if k != "version_2_with_negative"},
                  "train_examples": len(train), "dev_examples": len(dev)}
        return TaskData(train, dev, record, None, name, None, settings)

    def num_labels(self, data: TaskData) -> int:
        return 2

    def datasets(self, data: TaskData, tokenizer: Any, config: Any) -> tuple[Any, Any]:
        from sparsekit.tasks.qa import QADataset

        length, stride = data.options["max_length"], data.options["doc_stride"]
        return (QADataset(data.train, tokenizer, max_length=length, stride=stride),
                QADataset(data.dev, tokenizer, max_length=length, stride=stride))

    def collate(self, tokenizer: Any, data: TaskData):
        from sparsekit.tasks.qa import make_qa_collate

        return make_qa_collate(tokenizer)

    def forward(self, model: nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(**inputs)
        return out.start_logits, out.end_logits

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: dict) -> torch.Tensor:
        """Mean of the start and end cross-entropies (positions ``[B]``; 0 = [CLS], no answer in the window)."""
        from sparsekit.tasks.qa import qa_loss

        return qa_loss(*outputs, targets["start_positions"], targets["end_positions"])

    def kd_loss(self, student: tuple[torch.Tensor, torch.Tensor], teacher: tuple[torch.Tensor, torch.Tensor],
                targets: dict, inputs: dict, temperature: float) -> torch.Tensor:
        """T^2 * the mean of the start and end KL divergences (movement pruning's QA distillation), over the
        window's tokens (padding left out)."""
        from sparsekit.tasks.qa import qa_kd_loss

        return qa_kd_loss(*student, *teacher, temperature, attention_mask=inputs.get("attention_mask"))

    def evaluate(self, model: nn.Module, dataset: Any, data: TaskData, tokenizer: Any, config: Any,
                 progress: bool = False) -> dict:
        return squad_evaluation(model, dataset, data.dev, data.options, tokenizer, config.eval_batch_size)

    def summary_metrics(self, metrics: dict) -> list[tuple[str, str]]:
        return [(key, f"{value:.2f}") for key, value in metrics.items() if key in self.metrics]  # already 0..100

    def evaluate_saved(self, model: nn.Module, tokenizer: Any, recipe: dict, *, split: str = "dev",
                       data_dir: str | None = None, validation_file: str | None = None,
                       columns: dict | None = None, batch_size: int = 128, progress: bool = False,
                       task: str | None = None) -> tuple[dict, str]:
        """EM / F1 on the built-in re-split's dev (or train) articles, or on ``validation_file`` (SQuAD JSON, or
        JSON / JSON Lines with ``columns``: question_column, context_column, answers_column; default: the run's own
        validation file), with the run's windowing and post-processing."""
        from sparsekit.tasks.qa import QADataset, load_qa_data, read_squad, squad_resplit

        data = recipe.get("data") or {}
        settings = {"max_length": recipe.get("config", {}).get("max_length", 384), "doc_stride": 128,
                    **QA_DEFAULTS, "version_2_with_negative": bool(data.get("version_2_with_negative")),
                    **(data.get("qa") or {})}
        columns = columns or {}
        task = task or data.get("task")
        if validation_file is None and task is None:
            validation_file = recorded_validation_file(data)
        if validation_file is None:
            if split not in ("train", "dev", "validation"):
                raise ValueError(f"unknown split {split!r} of {task} (the re-split of SQuAD's dev file by article); "
                                 f"choose dev or train")
            train, dev = squad_resplit(read_squad(squad_path(task, data_dir)), **SQUAD_RESPLIT)
            examples = train if split == "train" else dev
            where = f"{task} {split} (re-split of SQuAD v1.1 dev, not comparable to the official dev set)"
        else:
            # load_qa_data re-splits a validation file given alone; the one file serves as both splits here.
            loaded = load_qa_data(train_file=validation_file, validation_file=validation_file,
                                  question_column=columns.get("question_column") or data.get("question_column")
                                  or "question",
                                  context_column=columns.get("context_column") or data.get("context_column")
                                  or "context",
                                  answers_column=columns.get("answers_column") or data.get("answers_column")
                                  or "answers")
            examples, where = loaded.dev, str(validation_file)
            settings["version_2_with_negative"] = settings["version_2_with_negative"] or loaded.version_2
        dataset = QADataset(examples, tokenizer, max_length=settings["max_length"], stride=settings["doc_stride"])
        return squad_evaluation(model, dataset, examples, settings, tokenizer, batch_size), where


def squad_evaluation(model: nn.Module, dataset: Any, examples: list, settings: dict, tokenizer: Any,
                     batch_size: int = 128) -> dict:
    """Exact match and F1 (0..100, SQuAD's normalisation) of ``model`` on ``dataset`` (a QADataset of the
    windows of ``examples``): n-best start / end pairs across each question's windows (``settings``:
    n_best, max_answer_length, null_threshold, version_2_with_negative), plus eval_seconds and eval_samples
    (questions)."""
    from sparsekit.tasks.qa import best_answers, squad_metrics, window_logits

    start = time.perf_counter()
    starts, ends = window_logits(model, dataset, tokenizer, batch_size)
    answers = best_answers(examples, dataset, starts, ends, n_best=settings["n_best"],
                           max_answer_length=settings["max_answer_length"],
                           null_threshold=settings["null_threshold"],
                           version_2=settings["version_2_with_negative"])
    metrics = squad_metrics({key: value["answer"] for key, value in answers.items()}, examples)
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics["eval_samples"] = len(examples)
    return metrics


def squad_path(task: str, data_dir: str | Path | None = None) -> Path:
    """The SQuAD file the built-in question-answering ``task`` re-splits."""
    return builtin_data_dir(task, data_dir) / SQUAD_FILE
