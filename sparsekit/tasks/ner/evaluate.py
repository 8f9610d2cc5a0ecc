"""Run a token-classification model over a `TokenDataset` and score its word predictions."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sparsekit.tasks.ner.encode import TokenCollator, TokenDataset, word_predictions
from sparsekit.tasks.ner.metric import entity_metrics
from sparsekit.tasks.ner.predict import model_device, model_logits


def dataset_logits(model: Any, dataset: TokenDataset, batch_size: int = 32) -> list[torch.Tensor]:
    """The model's logits for every item of ``dataset``, in order: float32 CPU tensors ``[T_i, C]`` (each item's
    own length, padding dropped). The model runs in eval mode without gradients on its own device."""
    if hasattr(model, "eval"):
        model.eval()
    device = model_device(model)
    collate = TokenCollator(dataset.pad_token_id if dataset.pad_token_id is not None else 0)
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for first in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(first, min(first + batch_size, len(dataset)))])
            batch.pop("labels")
            logits = model_logits(model(**{k: v.to(device) for k, v in batch.items()})).float().cpu()
            lengths = batch["attention_mask"].sum(-1).tolist()
            out.extend(row[:length] for row, length in zip(logits, lengths))
    return out


def evaluate_entities(model: Any, dataset: TokenDataset, id2label: Mapping[int, str] | Sequence[str],
                      batch_size: int = 32) -> tuple[dict, list[list[str]]]:
    """``(entity_metrics(dataset.tags, predicted), predicted)``: the strict IOB2 scores of the model's word
    predictions (first sub-token per word; words cut by max_length predicted "O") and those predictions."""
    predicted = word_predictions(dataset_logits(model, dataset, batch_size), dataset, id2label)
    return entity_metrics(dataset.tags, predicted), predicted
