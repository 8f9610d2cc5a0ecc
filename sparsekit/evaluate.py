"""Evaluating a sequence-classification model on a GLUE split."""
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
