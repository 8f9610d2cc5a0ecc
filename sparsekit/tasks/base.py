"""The TaskType base class: everything the training loop, evaluation and the run record need to know about a task.

One object per task type ("sequence-classification", "token-classification", "question-answering"; the registry is
``sparsekit.tasks.TASK_TYPES``). The loop in ``sparsekit/prune/train.py`` is the same for every type; a task type
supplies its hooks:

- data: ``check_source`` (contradicting settings, before anything is read), ``load_data`` (read and check the train
  and validation data whole, before the output directory is touched) -> :class:`TaskData`;
- model: ``auto_class`` (the Hugging Face head) and ``load_model(source, data, seed)``;
- training: ``datasets`` (train / dev datasets), ``collate``, ``lengths`` (for length-grouped batches),
  ``target_keys`` (the batch entries that are targets, not model inputs), ``forward`` (the model's outputs the
  losses read), ``loss`` (the task loss), ``kd_loss`` (distillation from a teacher of the same type),
  ``example_labels`` (one class per training example for CAP's label term, or None);
- settings: ``check_config`` refuses what cannot apply to this type (a method option, a data option);
- evaluation: ``evaluate`` (metrics dict of the dev set), ``main_metric``, ``summary_metrics`` (the lines a run
  summary prints), ``evaluate_saved`` (``sparsekit evaluate`` of a run dir or artifact).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsekit.models import TASK_HEAD_SUFFIXES

#: The class-name endings of the task heads (``BertForTokenClassification`` ...).
TASK_HEADS = tuple(TASK_HEAD_SUFFIXES.values())


@dataclass
class TaskData:
    """A task's data, read and checked.

    train / dev: the type's examples (``Example`` / ``TokenExample`` / ``QAExample``); record: what recipe.json
    keeps as ``data`` (the description, with ``task_type``, plus the example counts); labels: the class names in
    id order (sequence and token classification; None for regression and QA); display_name: a short name for
    titles; spec: the type's own description of the task (a ``TaskSpec`` for sequence classification, the
    loader's result for token classification); options: the settings the type resolved for this data (question
    answering: windowing and post-processing).
    """

    train: list
    dev: list
    record: dict
    labels: tuple[str, ...] | None
    display_name: str
    spec: Any = None
    options: dict = field(default_factory=dict)


class TaskType:
    """Base class of the task types; subclasses fill in every hook (see the module docstring)."""

    #: The task type's name, as ``--task-type`` and recipe.json (``data.task_type``) spell it.
    name = ""
    #: The transformers Auto class of the model head.
    auto_class = ""
    #: Batch entries that are targets (popped before the model is called).
    target_keys: tuple[str, ...] = ("labels",)
    #: The main metric (metrics.json key) and every metric this type reports.
    main_metric = ""
    metrics: tuple[str, ...] = ()

    # -- settings and data ---------------------------------------------------------------------------------------
    def check_config(self, config: Any) -> None:
        """Raise ValueError for settings of ``config`` (a PruneConfig) that cannot apply to this task type."""

    def load_data(self, source: Any, config: Any) -> TaskData:
        """Read and check the data of ``source`` (a DataSource) with ``config``'s subset sizes and seed."""
        raise NotImplementedError

    # -- model ---------------------------------------------------------------------------------------------------
    def num_labels(self, data: TaskData) -> int:
        """Outputs per position of the head (classes; 1 for regression; 2 for QA's start / end)."""
        raise NotImplementedError

    def load_model(self, source: str | Path, data: TaskData, seed: int = 0) -> nn.Module:
        """The Hugging Face model with this type's head (``auto_class``) for ``data``; a new head is seeded."""
        from sparsekit.models import load_model

        model = load_model(source, self.name, self.num_labels(data), seed=seed)
        if data.labels:
            model.config.id2label = dict(enumerate(data.labels))
            model.config.label2id = {n: i for i, n in enumerate(data.labels)}
        return model

    def check_teacher(self, source: str | Path, data: TaskData) -> dict | None:
        """ValueError when a local teacher checkpoint (``source``, resolved) has another task type's head: its
        outputs could not be compared with the student's. Returns the checkpoint's config.json (None when there
        is none to read: a hub id, a random model)."""
        config_file = Path(source) / "config.json"
        if not config_file.is_file():
            return None
        config = json.loads(config_file.read_text())
        head = self.auto_class.replace("AutoModel", "")  # "ForTokenClassification"
        others = [h for h in TASK_HEADS if h != head]
        found = [a for a in config.get("architectures") or [] if any(a.endswith(h) for h in others)]
        if found:
            raise ValueError(f"the teacher {source} is a {found[0]}; a {self.name} run distils from a model "
                             f"fine-tuned for {self.name} (e.g. a --method finetune run on the same data)")
        return config

    # -- training ------------------------------------------------------------------------------------------------
    def datasets(self, data: TaskData, tokenizer: Any, config: Any) -> tuple[Any, Any]:
        """The (train, dev) torch datasets of ``data``, tokenized with ``config``'s lengths."""
        raise NotImplementedError

    def collate(self, tokenizer: Any, data: TaskData):
        """The DataLoader ``collate_fn`` of ``data``'s datasets: pads items into a dict of tensors (the model
        inputs and ``target_keys``)."""
        raise NotImplementedError

    def lengths(self, dataset: Any) -> list[int]:
        """Token count of every item of ``dataset`` (batches group similar lengths)."""
        return [len(dataset[i]["input_ids"]) for i in range(len(dataset))]

    def forward(self, model: nn.Module, inputs: dict) -> Any:
        """The model's outputs the losses read: the logits tensor (QA: a (start, end) pair)."""
        return model(**inputs).logits

    def loss(self, outputs: Any, targets: dict) -> torch.Tensor:
        """The task loss (a scalar) of ``outputs`` (``forward``) against ``targets`` (``target_keys``)."""
        raise NotImplementedError

    def kd_loss(self, student: Any, teacher: Any, targets: dict, inputs: dict, temperature: float) -> torch.Tensor:
        """Distillation loss of the student's outputs to the teacher's (both ``forward`` results) at
        ``temperature``, a scalar; ``inputs``: the batch's model inputs (attention_mask ...)."""
        raise NotImplementedError

    def example_labels(self, dataset: Any) -> torch.Tensor | None:
        """One class id per training example (int64 ``[N]``) for CAP's label term; None where it has none."""
        return None

    # -- evaluation ----------------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, dataset: Any, data: TaskData, tokenizer: Any, config: Any,
                 progress: bool = False) -> dict:
        """Metrics of ``model`` on ``dataset`` (the dev set of ``data``) plus eval_seconds and eval_samples;
        ``progress``: a progress bar where the type has one (sequence classification)."""
        raise NotImplementedError

    def summary_metrics(self, metrics: dict) -> list[tuple[str, str]]:
        """(name, value as text) of the metrics a run summary prints, in percent."""
        return [(key, f"{100 * value:.2f}") for key, value in metrics.items() if key in self.metrics]

    def evaluate_saved(self, model: nn.Module, tokenizer: Any, recipe: dict, *, split: str = "dev",
                       data_dir: str | None = None, validation_file: str | None = None,
                       columns: dict | None = None, batch_size: int = 128,
                       progress: bool = False) -> tuple[dict, str]:
        """Metrics of a saved run's or artifact's ``model`` on a split of its recorded data (or on
        ``validation_file``, with ``columns`` naming its columns), and a name of what was evaluated."""
        raise NotImplementedError


def recorded_validation_file(data: dict) -> str:
    """The validation file a run of the user's files recorded (``data["files"]["validation"]["path"]``);
    ValueError when it recorded none or the file is gone."""
    path = ((data.get("files") or {}).get("validation") or {}).get("path")
    if not path or not Path(path).is_file():
        missing = f" ({path} no longer exists)" if path else ""
        raise ValueError(f"the model was trained on your own data ({data.get('name')}){missing}; pass "
                         f"--validation-file to evaluate it")
    return path


def refuse_options(config: Any, names: tuple[str, ...], applies_to: str, task_type: str) -> None:
    """ValueError when ``config`` sets any of the options ``names`` (not None), which only ``applies_to`` reads."""
    given = [n for n in names if getattr(config, n, None) is not None]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise ValueError(f"{flags} apply to {applies_to}; this run is {task_type}")


def check_cap_labels(task_type: TaskType, config: Any) -> None:
    """CAP's label term contrasts examples of the same class: ValueError when a run of a task type without one
    class per example (token classification, question answering) asks for it."""
    from sparsekit.prune.cap import parse_modules

    if parse_modules(getattr(config, "cap", None)) and config.cap_label_weight > 0:
        raise ValueError(f"CAP's label term contrasts sentences of the same class, and a {task_type.name} example "
                         f"has no class; pass --cap-label-weight 0 to train with CAP's instance terms only (they "
                         f"contrast the [CLS] / mean representations of the examples, which apply here)")
