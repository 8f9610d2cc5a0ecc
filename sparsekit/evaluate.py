"""Evaluating a model: a sequence classifier on a dataset (predict_logits, evaluate), and a saved run or artifact
of any task type on its data (evaluate_saved)."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sparsekit.data import EncodedDataset, compute_metrics, make_collate


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: EncodedDataset, tokenizer, batch_size: int = 128,
                   device: torch.device | str | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over ``dataset``. Returns ``(logits [N, num_labels] float32, labels [N])``."""
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=make_collate(tokenizer, dataset.is_regression))
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            labels.append(batch.pop("labels").numpy())
            batch = {k: v.to(device) for k, v in batch.items()}
            logits.append(model(**batch).logits.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(logits), np.concatenate(labels)


def evaluate(model: nn.Module, dataset: EncodedDataset, tokenizer, task, batch_size: int = 128,
             progress: bool = False) -> dict[str, float]:
    """GLUE metrics of ``model`` on ``dataset`` plus ``eval_seconds`` and ``eval_samples``."""
    start = time.perf_counter()
    logits, labels = predict_logits(model, dataset, tokenizer, batch_size, progress=progress)
    metrics = compute_metrics(task, logits, labels)
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics["eval_samples"] = int(len(labels))
    return metrics


def evaluate_saved(path, task: str | None = None, data_dir=None, split: str = "dev", validation_file=None,
                   batch_size: int = 128, progress: bool = False, compile: bool = False,
                   **columns: str | None) -> tuple[dict, str]:
    """Metrics of a saved pruning run or exported artifact at ``path`` (what ``sparsekit evaluate`` prints), and
    a name of what it was evaluated on.

    The run's recorded task type decides the data and metrics: a GLUE split (``task``: another GLUE task), a
    split of a built-in task (conll2003: train / dev / test; squad: the re-split's dev / train articles), or a
    labelled ``validation_file`` whose columns ``columns`` names (text_column, text_pair_column, label_column;
    tokens_column, tags_column; question_column, context_column, answers_column; None: the run's).
    compile: run ``sparsekit.compile`` first (an artifact then evaluates on the fused runtime, packed batches,
    reusing its saved plan; exact within 1e-4).
    ValueError / FileNotFoundError say what is wrong.
    """
    from sparsekit.data.source import BUILTIN_TASKS, recorded_task_type
    from sparsekit.sources import open_trained
    from sparsekit.tasks import get_task_type

    opened = open_trained(path)
    recipe = opened.recipe or {}
    type_name = recorded_task_type(recipe.get("data"))
    if task is not None and task in BUILTIN_TASKS:
        if BUILTIN_TASKS[task] != type_name:
            raise ValueError(f"{path} is a {type_name} model; --task {task} is {BUILTIN_TASKS[task]}")
    elif task is not None and type_name != "sequence-classification":
        raise ValueError(f"{path} is a {type_name} model; --task {task} is a GLUE (sequence-classification) task")
    task_type = get_task_type(type_name)
    if compile:
        from sparsekit.compiler import compile as sparse_compile

        sparse_compile(opened.model, tokens=512, verbose=False)  # the saved plan, if any, wins
    given = {key: value for key, value in columns.items() if value is not None}
    return task_type.evaluate_saved(opened.model, opened.tokenizer, recipe, split=split,
                                    data_dir=str(data_dir) if data_dir is not None else None,
                                    validation_file=str(validation_file) if validation_file is not None else None,
                                    columns=given, batch_size=batch_size, progress=progress, task=task)
