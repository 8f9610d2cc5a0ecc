"""Sequence classification (and regression): GLUE tasks and the user's text / label data, one label per example."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.tasks.base import TaskData, TaskType, refuse_options

#: Settings only the other task types read (their column options are refused by DataSource.check).
OTHER_TYPES_OPTIONS = {"question answering": ("doc_stride", "max_answer_length", "n_best", "version_2_with_negative",
                                              "null_threshold")}


class SequenceClassification(TaskType):
    """One label per text (or text pair): cross-entropy, or MSE for regression; GLUE metrics."""

    name = "sequence-classification"
    auto_class = "AutoModelForSequenceClassification"
    target_keys = ("labels",)
    main_metric = "accuracy"  # the default; each task's own is its TaskSpec.main_metric (recorded as data.metric)
    metrics = ("accuracy", "f1", "matthews", "pearson", "spearman")

    def check_config(self, config: Any) -> None:
        for applies_to, names in OTHER_TYPES_OPTIONS.items():
            refuse_options(config, names, applies_to, self.name)

    def load_data(self, source: Any, config: Any) -> TaskData:
        from sparsekit.data.source import load_data

        loaded = load_data(source, config.train_samples, config.eval_samples, config.seed)
        spec = loaded.spec
        record = {"task_type": self.name, **loaded.record}
        return TaskData(loaded.train, loaded.dev, record, spec.label_names, spec.display_name, spec)

    def num_labels(self, data: TaskData) -> int:
        return data.spec.num_labels

    def datasets(self, data: TaskData, tokenizer: Any, config: Any) -> tuple[Any, Any]:
        from sparsekit.data import EncodedDataset

        regression = data.spec.is_regression
        return (EncodedDataset(data.train, tokenizer, config.max_length, regression),
                EncodedDataset(data.dev, tokenizer, config.max_length, regression))

    def collate(self, tokenizer: Any, data: TaskData):
        from sparsekit.data import make_collate

        return make_collate(tokenizer, data.spec.is_regression)

    def lengths(self, dataset: Any) -> list[int]:
        return [len(ids) for ids in dataset.input_ids]

    def loss(self, outputs: torch.Tensor, targets: dict) -> torch.Tensor:
        """Cross-entropy of logits ``[B, C]`` against class ids ``[B]``; MSE of ``[B, 1]`` against floats."""
        labels = targets["labels"]
        if labels.is_floating_point():
            return F.mse_loss(outputs.squeeze(-1), labels.float())
        return F.cross_entropy(outputs, labels)

    def kd_loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: dict, inputs: dict,
                temperature: float) -> torch.Tensor:
        """T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean (spec §2.3); MSE to the teacher for regression."""
        if targets["labels"].is_floating_point():
            return F.mse_loss(student, teacher)
        return F.kl_div(F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1),
                        reduction="batchmean") * temperature**2

    def example_labels(self, dataset: Any) -> torch.Tensor | None:
        return None if dataset.is_regression else dataset.labels.clone()

    def evaluate(self, model: nn.Module, dataset: Any, data: TaskData, tokenizer: Any, config: Any,
                 progress: bool = False) -> dict:
        from sparsekit.evaluate import evaluate

        return evaluate(model, dataset, tokenizer, data.spec, config.eval_batch_size, progress=progress)

    def evaluate_saved(self, model: nn.Module, tokenizer: Any, recipe: dict, *, split: str = "dev",
                       data_dir: str | None = None, validation_file: str | None = None,
                       columns: dict | None = None, batch_size: int = 128, progress: bool = False,
                       task: str | None = None) -> tuple[dict, str]:
        """GLUE metrics on a GLUE split (``task``: another GLUE task than the recorded one) or on a labelled
        file (``columns``: text_column, text_pair_column, label_column)."""
        from sparsekit.data import EncodedDataset, get_task, load_split
        from sparsekit.data.source import load_evaluation_file, spec_from_description
        from sparsekit.evaluate import evaluate

        spec = get_task(task) if task else spec_from_description(recipe.get("data"))
        if spec is None:
            raise ValueError("the model does not record its data; pass --task (and --validation-file for your own "
                             "data)")
        if validation_file is not None:
            columns = columns or {}
            examples = load_evaluation_file(spec, validation_file, columns.get("text_column"),
                                            columns.get("text_pair_column"), columns.get("label_column"))
            where = str(validation_file)
        else:
            if not spec.is_glue:
                raise ValueError(f"the model was trained on your own data ({spec.display_name}); pass "
                                 f"--validation-file to evaluate it")
            examples = load_split(spec, split, data_dir)
            where = f"{spec.display_name} {split}"
        max_length = recipe.get("config", {}).get("max_length", 128)
        metrics = evaluate(model, EncodedDataset(examples, tokenizer, max_length, spec.is_regression), tokenizer,
                           spec, batch_size, progress=progress)
        return metrics, where
