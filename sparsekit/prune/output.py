"""The directory a pruning run writes, and loading it back in one call.

Layout of ``<output_dir>/``:

- ``config.json``, ``model.safetensors``, tokenizer files: a standard Hugging Face checkpoint whose
  pruned weights are exact zeros (``AutoModelForSequenceClassification`` / ``...ForTokenClassification`` /
  ``...ForQuestionAnswering.from_pretrained``, by the run's task type, loads it too);
- ``masks.bin`` + ``masks.json``: the binary masks, bit-packed (see masks.py) with their index;
- ``recipe.json``: method, target, schedule, hyper-parameters, seed, data files (with checksums),
  model source, library versions, command line: everything needed to run it again;
- ``report.json``: per-matrix sparsity; ``metrics.json``: dev metrics and timings;
- ``checkpoints/``: training state for resume (removed when the run finishes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sparsekit.models import quiet_transformers
from sparsekit.prune.masks import pack_masks, unpack_masks

RECIPE_FILE, METRICS_FILE, REPORT_FILE = "recipe.json", "metrics.json", "report.json"
MASKS_FILE, MASKS_INDEX_FILE = "masks.bin", "masks.json"
FORMAT_VERSION = 1
#: Every name sparsekit writes in a run directory (the Hugging Face checkpoint with its tokenizer files, the
#: run's own files, checkpoints): ``--overwrite`` removes these and refuses a directory holding anything else.
RUN_OUTPUT_NAMES = frozenset({
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
    "model-*-of-*.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spm.model", "sentencepiece.bpe.model",
    "tokenizer.model", MASKS_FILE, MASKS_INDEX_FILE, RECIPE_FILE, REPORT_FILE, METRICS_FILE, "checkpoints"})


@dataclass
class PrunedModel:
    """A loaded pruning output.

    model: the Hugging Face model with pruned weights zeroed (eval mode, CPU).
    masks: bool masks ``[out, in]`` by module name (True = kept).
    recipe / metrics / report: the JSON files of the run.
    """

    path: Path
    model: nn.Module
    tokenizer: object
    masks: dict[str, torch.Tensor]
    recipe: dict
    metrics: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def save_pruned(path: Path, model: nn.Module, tokenizer, masks: dict[str, torch.Tensor], recipe: dict,
                metrics: dict, report: dict) -> None:
    """Write the run's final files into ``path`` (which must exist)."""
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    data, index = pack_masks(masks)
    (path / MASKS_FILE).write_bytes(data)
    write_json(path / MASKS_INDEX_FILE, index)
    write_json(path / RECIPE_FILE, {"format_version": FORMAT_VERSION, **recipe})
    write_json(path / REPORT_FILE, report)
    write_json(path / METRICS_FILE, metrics)


def load_pruned(path: str | Path) -> PrunedModel:
    """Load a directory written by ``sparsekit.prune`` (or ``sparsekit prune``) in one call.

    Checks that the masks match the stored weights (every pruned weight is zero); raises
    FileNotFoundError / ValueError with a clear message for a missing or inconsistent directory.
    """
    from transformers import AutoTokenizer

    from sparsekit.data.source import recorded_task_type
    from sparsekit.models import auto_model_class

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; pass the output directory of a `sparsekit prune` run")
    for name in (RECIPE_FILE, MASKS_FILE, MASKS_INDEX_FILE, "config.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path} has no {name}: it is not a finished sparsekit pruning output (an interrupted run can "
                f"be continued with `sparsekit prune --resume --output-dir {path}`)")
    recipe = json.loads((path / RECIPE_FILE).read_text())
    version = recipe.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} was written with output format {version}; this sparsekit reads format "
                         f"{FORMAT_VERSION}. Use the sparsekit version named in its recipe.json")
    masks = unpack_masks((path / MASKS_FILE).read_bytes(), json.loads((path / MASKS_INDEX_FILE).read_text()))
    with quiet_transformers():  # the head of the run's task type (sequence / token classification, QA)
        model = auto_model_class(recorded_task_type(recipe.get("data"))).from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    for name, mask in masks.items():
        try:
            weight = model.get_submodule(name).weight
        except AttributeError as exc:
            raise ValueError(f"{path}: mask {name} names no layer of the model") from exc
        if tuple(weight.shape) != tuple(mask.shape):
            raise ValueError(f"{path}: mask {name} has shape {tuple(mask.shape)}, weight has {tuple(weight.shape)}")
        if bool((weight.detach()[~mask] != 0).any()):
            raise ValueError(f"{path}: weights of {name} are non-zero where the mask prunes them; the files do "
                             f"not belong together")
    read = lambda name: json.loads((path / name).read_text()) if (path / name).is_file() else {}  # noqa: E731
    return PrunedModel(path, model, tokenizer, masks, recipe, read(METRICS_FILE), read(REPORT_FILE))
