"""What a model argument names, and opening it: the one place that tells the kinds of model source apart.

A source is one of

- an **artifact** directory (``sparsekit export``; holds ``manifest.json``): the compacted model;
- a **run** directory (``sparsekit prune``; holds ``recipe.json``): the masked Hugging Face model;
- a **checkpoint**: a Hugging Face directory (holds ``config.json``), a hub id (read through the Hugging Face
  cache) or ``minilm``, the shipped MiniLM;
- **random**: ``random:<arch>[-<shape>]``, random weights of a known shape (models.random_config).

The file that marks a directory is checked in that order (an artifact or a run also holds other files).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from sparsekit.errors import ModelError
from sparsekit.export.artifact import MANIFEST
from sparsekit.prune.output import RECIPE_FILE

ARTIFACT, RUN, CHECKPOINT, RANDOM = "artifact", "run", "checkpoint", "random"
KINDS = (ARTIFACT, RUN, RANDOM, CHECKPOINT)

#: The file that marks each kind of directory.
MARKERS = {ARTIFACT: MANIFEST, RUN: RECIPE_FILE, CHECKPOINT: "config.json"}


def directory_kind(path: str | os.PathLike) -> str | None:
    """ARTIFACT, RUN or CHECKPOINT for a directory holding that kind's marker file; None for anything else."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    return next((kind for kind, marker in MARKERS.items() if (path / marker).is_file()), None)


def kind_of(source: str | os.PathLike) -> str:
    """Which kind of source this is (one of KINDS), without loading it.

    Raises FileNotFoundError for a path that does not exist and ModelError (a ValueError) for anything else
    that is no source, each with a message that says what a source is.
    """
    text = str(source)
    if text.startswith("random:"):
        return RANDOM
    from sparsekit.models import DEFAULT_MODEL, HUB_ID, resolve_model_source

    if text == DEFAULT_MODEL:
        return CHECKPOINT
    path = Path(text).expanduser()
    if path.is_dir():
        kind = directory_kind(path)
        if kind is None:
            raise ModelError(f"{path} is neither a sparsekit artifact (manifest.json), a pruning run (recipe.json) "
                             f"nor a Hugging Face checkpoint (config.json)")
        return kind
    if path.exists():
        raise ModelError(f"{path} is a file; MODEL is a directory (artifact, run, checkpoint), a hub id or "
                         f"random:<arch>[-<shape>]")
    hub_id = HUB_ID.fullmatch(text) is not None and not text.startswith(".")  # "owner/name" is not a path
    if (os.sep in text or text.startswith(".")) and not hub_id:
        raise FileNotFoundError(f"{path} does not exist; MODEL is an artifact dir, a run dir, a checkpoint dir, "
                                f"a hub id, 'minilm' or random:<arch>[-<shape>]")
    resolve_model_source(text)  # a hub id in the cache, or ModelError saying why not
    return CHECKPOINT


@dataclass
class Opened:
    """An opened source.

    model: the artifact's compacted model (``sparsekit.load``), the run's masked model (``load_pruned``), or
        a Hugging Face sequence classifier; eval mode, CPU.
    tokenizer: its tokenizer (None when not asked for). recipe: the pruning recipe (a run's, or the one an
        artifact records), or None.
    """

    kind: str
    model: nn.Module
    tokenizer: object
    recipe: dict | None


def open_trained(path: str | os.PathLike) -> Opened:
    """Open an artifact or a finished pruning run. Anything else gets the run loader's explanation
    (FileNotFoundError / ValueError), which names the files a run needs and how to resume an unfinished one."""
    if directory_kind(path) == ARTIFACT:
        from sparsekit.export.artifact import load

        model = load(path)
        return Opened(ARTIFACT, model, model.tokenizer, model.manifest.get("recipe"))
    from sparsekit.prune.output import load_pruned

    pruned = load_pruned(path)
    return Opened(RUN, pruned.model, pruned.tokenizer, pruned.recipe)


def open_source(source: str | os.PathLike, *, num_labels: int | None = None, seed: int = 0,
                tokenizer: bool = True) -> Opened:
    """Open any source (see kind_of for the errors).

    For a checkpoint or random model: a sequence classifier with ``num_labels`` outputs (default: the
    checkpoint's own head, 2 for random models; a new head is initialised with ``seed``), float32, eval.
    tokenizer: also load the tokenizer (random models use MiniLM's).
    """
    kind = kind_of(source)
    if kind in (ARTIFACT, RUN):
        return open_trained(source)
    from sparsekit.models import load_classifier, load_tokenizer, resolve_model_source

    resolved = resolve_model_source(source)
    if num_labels is None:
        num_labels = 2
        if kind == CHECKPOINT:
            from transformers import AutoConfig

            num_labels = AutoConfig.from_pretrained(str(resolved)).num_labels
    model = load_classifier(resolved, num_labels=num_labels, seed=seed).float().eval()
    return Opened(kind, model, load_tokenizer(resolved) if tokenizer else None, None)
