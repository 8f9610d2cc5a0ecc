"""Data: GLUE task specs and TSV loading, the user's own files and datasets (source.py), tokenization with
dynamic padding, and metrics."""

from __future__ import annotations

from sparsekit.data.encode import EncodedDataset, PadCollator, make_collate
from sparsekit.data.glue import (
    TASKS,
    Example,
    TaskSpec,
    default_data_root,
    get_task,
    load_split,
    resolve_data_root,
    split_path,
)
from sparsekit.data.metrics import (
    METRICS,
    accuracy,
    compute_metrics,
    f1_binary,
    matthews_corrcoef,
    pearson,
    spearman,
)

__all__ = [
    "TASKS",
    "METRICS",
    "EncodedDataset",
    "Example",
    "PadCollator",
    "TaskSpec",
    "accuracy",
    "compute_metrics",
    "default_data_root",
    "f1_binary",
    "get_task",
    "load_split",
    "make_collate",
    "matthews_corrcoef",
    "pearson",
    "resolve_data_root",
    "spearman",
    "split_path",
]
