"""The model-structure table: which modules of an encoder are its prunable matrices, and its geometry.

sparsekit works on six matrix types per encoder layer (MATRIX_TYPES: Q, K, V, attention output,
FFN-in, FFN-out). An Architecture says, for one model family, where those matrices live:

- ``model_types``: the ``config.model_type`` values it covers;
- ``layers``: the dotted path of the layer list (module names are ``...{layers}.{i}.{suffix}``);
- ``matrices``: one Matrix per module of a layer, its ``suffix`` below the layer and the matrix types
  its rows hold, in row order;
- ``norms``: the LayerNorms after attention and after the FFN (post-LayerNorm layers);
- which config fields give the head count and hidden size (the FFN width is the FFN-in module's row count);
- ``compaction``: which exact-compaction rules of export/compact.py hold for it (COMPACTION_RULES).

ARCHITECTURES lists the Hugging Face families sparsekit loads and prunes; COMPACT describes sparsekit's own
compacted model (export/modeling.py), so ``encoder_linears`` finds the matrices of both.

Adding a family is one new entry in ARCHITECTURES. DistilBERT, for example, is
``layers="transformer.layer"`` with suffixes ``attention.q_lin`` / ``k_lin`` / ``v_lin`` / ``out_lin``,
``ffn.lin1`` / ``ffn.lin2``, norms ``sa_layer_norm`` / ``output_layer_norm`` and config fields ``n_heads`` /
``dim``. DeBERTa-v2 is ``attention.self.query_proj`` ... with ``compaction`` leaving out ``"qk-dims"`` (its
relative-position terms read Q and K rows), so compact() refuses it until that rule has a variant.

A *fused* module is one Matrix whose ``types`` lists several matrix types: its rows are those types' rows
stacked in that order, in equal parts. ModernBERT's ``attn.Wqkv`` is ``Matrix("attn.Wqkv", ("query", "key",
"value"))``; its GLU ``mlp.Wi`` stacks FFN-in rows on gate rows, ``Matrix("mlp.Wi", ("ffn_in", "ffn_gate"))``
with ``ffn_gate`` added to MATRIX_TYPES. ``encoder_linears`` reports a fused module once, under its joined
type name (``"query+key+value"``); code that needs one logical matrix takes its slice of rows. All entries
here are unfused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from torch import nn

from sparsekit.errors import ModelError

#: The six prunable matrix types of an encoder layer, in the order the spec lists them.
MATRIX_TYPES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
MATRIX_SHORT = {"query": "Q", "key": "K", "value": "V", "attn_out": "O", "ffn_in": "FFN-in", "ffn_out": "FFN-out"}

#: The exact-compaction rules of export/compact.py: removable FFN neurons, V / O dimensions (bias folded),
#: Q·K dimensions, and whole heads. They hold for post-LayerNorm attention with absolute positions.
COMPACTION_RULES = ("ffn-neurons", "vo-dims", "qk-dims", "heads")


@dataclass(frozen=True)
class Matrix:
    """One prunable module of a layer: its path below the layer and the matrix types its rows hold, in order."""

    suffix: str
    types: tuple[str, ...]

    @property
    def type(self) -> str:
        """The matrix type (``"query"`` ...); a fused module's types joined by ``+``."""
        return "+".join(self.types)


@dataclass(frozen=True)
class Architecture:
    """Where one model family keeps its encoder matrices, and how to read its geometry from the config."""

    name: str
    model_types: tuple[str, ...]
    layers: str
    matrices: tuple[Matrix, ...]
    norms: tuple[str, str]
    heads_field: str = "num_attention_heads"
    hidden_field: str = "hidden_size"
    compaction: tuple[str, ...] = ()

    @cached_property
    def pattern(self) -> re.Pattern:
        """Matches a full module name; group 1 is the layer index, group 2 the suffix."""
        suffixes = "|".join(re.escape(m.suffix) for m in self.matrices)
        return re.compile(rf"(?:^|\.){re.escape(self.layers)}\.(\d+)\.({suffixes})$")

    @cached_property
    def _type_of_suffix(self) -> dict[str, str]:
        return {m.suffix: m.type for m in self.matrices}

    @cached_property
    def _suffix_of_type(self) -> dict[str, str]:
        return {m.type: m.suffix for m in self.matrices}

    def match(self, name: str) -> tuple[int, str] | None:
        """``(layer index, matrix type)`` if ``name`` is one of this family's encoder matrices, else None."""
        found = self.pattern.search(name)
        return None if found is None else (int(found.group(1)), self._type_of_suffix[found.group(2)])

    def heads(self, config) -> int:
        """Attention heads per layer."""
        return int(getattr(config, self.heads_field))

    def head_dim(self, config) -> int:
        """Dimensions per head: hidden size / heads (before compaction; compacted heads have their own widths)."""
        return int(getattr(config, self.hidden_field)) // self.heads(config)

    def layer_modules(self, base_model: nn.Module) -> list[nn.Module]:
        """The encoder layers of a base model (``model.base_model``), in order."""
        return list(base_model.get_submodule(self.layers))

    def layer_linears(self, layer: nn.Module) -> dict[str, nn.Module]:
        """The matrices of one layer by type, in MATRIX_TYPES order."""
        return {m.type: layer.get_submodule(m.suffix) for m in self.matrices}

    def set_layer_linear(self, layer: nn.Module, matrix_type: str, module: nn.Module) -> None:
        """Put ``module`` in ``layer`` at the place of the matrix ``matrix_type``."""
        parent, _, child = self._suffix_of_type[matrix_type].rpartition(".")
        setattr(layer.get_submodule(parent) if parent else layer, child, module)

    def layer_norms(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        """The LayerNorms after attention and after the FFN of one layer."""
        return layer.get_submodule(self.norms[0]), layer.get_submodule(self.norms[1])


def _unfused(**suffixes: str) -> tuple[Matrix, ...]:
    return tuple(Matrix(suffixes[t], (t,)) for t in MATRIX_TYPES)


BERT = Architecture(
    "bert", model_types=("bert", "roberta", "xlm-roberta", "electra", "camembert"), layers="encoder.layer",
    matrices=_unfused(query="attention.self.query", key="attention.self.key", value="attention.self.value",
                      attn_out="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense"),
    norms=("attention.output.LayerNorm", "output.LayerNorm"), compaction=COMPACTION_RULES)

#: sparsekit's compacted model (export/modeling.py); its config is the original model's.
COMPACT = Architecture(
    "sparsekit-compact", model_types=(), layers="layers",
    matrices=_unfused(query="attention.query", key="attention.key", value="attention.value", attn_out="attn_out",
                      ffn_in="ffn_in", ffn_out="ffn_out"),
    norms=("attn_norm", "ffn_norm"))

#: The Hugging Face families sparsekit loads, prunes and compacts.
ARCHITECTURES = (BERT,)
#: Every layout whose matrices ``encoder_linears`` finds.
ALL_ARCHITECTURES = ARCHITECTURES + (COMPACT,)


def supported_model_types() -> tuple[str, ...]:
    """Every ``config.model_type`` sparsekit supports."""
    return tuple(t for arch in ARCHITECTURES for t in arch.model_types)


def architecture_for(config) -> Architecture:
    """The Architecture of a Hugging Face config; ModelError for a model type sparsekit does not support."""
    model_type = getattr(config, "model_type", None)
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    raise ModelError(f"model type {model_type!r} is not supported; sparsekit prunes BERT-family encoders "
                     f"({', '.join(supported_model_types())})")


def match_name(name: str, architectures=ARCHITECTURES) -> tuple[int, str] | None:
    """``(layer index, matrix type)`` of a module name under any of ``architectures``, else None."""
    for arch in architectures:
        found = arch.match(name)
        if found is not None:
            return found
    return None


def encoder_linears(model: nn.Module, architectures=ALL_ARCHITECTURES) -> list[tuple[str, int, str, nn.Module]]:
    """``(module name, layer index, matrix type, module)`` of every encoder matrix, by (layer, MATRIX_TYPES order).

    Works for Hugging Face models of every entry of ARCHITECTURES and for compacted models (COMPACT); the
    modules are whatever sits at those names (``nn.Linear``, a FormatLinear, a compiled backend module).
    """
    found = []
    for name, module in model.named_modules():
        hit = match_name(name, architectures)
        if hit is not None:
            found.append((name, hit[0], hit[1], module))
    order = {t: i for i, t in enumerate(MATRIX_TYPES)}
    return sorted(found, key=lambda f: (f[1], order.get(f[2], len(order))))
