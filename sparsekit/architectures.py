"""The model-structure table: which modules of an encoder are its prunable matrices, and its geometry.

sparsekit works on six matrix types per encoder layer (MATRIX_TYPES: Q, K, V, attention output,
FFN-in, FFN-out; GLU FFNs add FFN-gate). An Architecture says, for one model family, where those matrices live:

- ``model_types``: the ``config.model_type`` values it covers;
- ``layers``: the dotted path of the layer list (module names are ``...{layers}.{i}.{suffix}``);
- ``matrices``: one Matrix per module of a layer, its ``suffix`` below the layer and the matrix types
  its rows hold, in row order;
- ``norms``: the LayerNorms after attention and after the FFN (post-LayerNorm layers), or before them (ModernBERT,
  whose first layer has none before attention);
- which config fields give the head count, hidden size and FFN activation (the FFN width is the FFN-in
  module's row count);
- ``fused_layout``: how sparsekit's fused CPU runtime (sparsekit.runtime) runs the family's layers: ``"bert"``
  (post-LayerNorm layers with absolute positions), ``"deberta"`` (post-LayerNorm with disentangled relative-position
  attention), ``"modernbert"`` (pre-LayerNorm with rotary positions, GLU FFN and sliding windows);
- ``compaction``: which exact-compaction rules of export/compact.py hold for it and are applied
  (COMPACTION_RULES), and ``skipped``: why each other rule is not. A family with every rule is exported
  compact (export/compact.py); any other keeps its structure and stores its matrices in sparse formats
  (export/module_artifact.py), and the export report lists the skipped rules with these reasons.

ARCHITECTURES lists the Hugging Face families sparsekit loads and prunes; COMPACT describes sparsekit's own
compacted model (export/modeling.py), so ``encoder_linears`` finds the matrices of both.

Adding a family is one new entry in ARCHITECTURES (plus a ``random:`` config in models.py for its tests).

A *fused* module is one Matrix whose ``types`` lists several matrix types: its rows are those types' rows
stacked in that order, in equal parts. ModernBERT's ``attn.Wqkv`` is ``Matrix("attn.Wqkv", ("query", "key",
"value"))``; its GLU ``mlp.Wi`` stacks FFN-in rows on gate rows, ``Matrix("mlp.Wi", ("ffn_in", "ffn_gate"))``.
``encoder_linears`` reports a fused module once, under its joined type name (``"query+key+value"``); code that
needs one logical matrix takes its slice of rows (``Matrix.slices``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from torch import nn

from sparsekit.errors import ModelError

#: The six prunable matrix types of an encoder layer, in the order the spec lists them.
MATRIX_TYPES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
#: The gate half of a GLU FFN-in (a fused module's second part; not one of the six).
GATE = "ffn_gate"
MATRIX_SHORT = {"query": "Q", "key": "K", "value": "V", "attn_out": "O", "ffn_in": "FFN-in", "ffn_out": "FFN-out",
                GATE: "FFN-gate", "query+key+value": "QKV", "ffn_in+ffn_gate": "FFN-in+gate"}

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

    def slices(self, rows: int) -> dict[str, slice]:
        """The row range of each of its types in a module with ``rows`` rows (equal parts, in order)."""
        part = rows // len(self.types)
        return {t: slice(i * part, (i + 1) * part) for i, t in enumerate(self.types)}


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
    activation_field: str = "hidden_act"
    compaction: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    fused_layout: str = "bert"

    @property
    def compacts(self) -> bool:
        """Whether every exact-compaction rule applies: export compacts it (else it keeps its structure)."""
        return set(COMPACTION_RULES) <= set(self.compaction)

    def skipped_rules(self) -> dict[str, str]:
        """Each rule of COMPACTION_RULES not applied to this family, with why."""
        reasons = dict(self.skipped)
        return {r: reasons.get(r, "not implemented for this family") for r in COMPACTION_RULES
                if r not in self.compaction}

    def matrix(self, matrix_type: str) -> Matrix:
        """The Matrix entry of a (possibly joined) matrix type."""
        return next(m for m in self.matrices if m.type == matrix_type)

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

    def activation(self, config) -> str:
        """The FFN activation's name (``"gelu"`` ...), as transformers' ACT2FN names it."""
        return str(getattr(config, self.activation_field))

    def layer_modules(self, base_model: nn.Module) -> list[nn.Module]:
        """The encoder layers of a base model (``model.base_model``), in order."""
        return list(base_model.get_submodule(self.layers))

    def layer_linears(self, layer: nn.Module) -> dict[str, nn.Module]:
        """The modules of one layer by (possibly joined) type, in the order of ``matrices``."""
        return {m.type: layer.get_submodule(m.suffix) for m in self.matrices}

    def set_layer_linear(self, layer: nn.Module, matrix_type: str, module: nn.Module) -> None:
        """Put ``module`` in ``layer`` at the place of the matrix ``matrix_type``."""
        parent, _, child = self._suffix_of_type[matrix_type].rpartition(".")
        setattr(layer.get_submodule(parent) if parent else layer, child, module)

    def layer_norms(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        """The LayerNorms after (ModernBERT: before) attention and the FFN of one layer; ModernBERT's first
        layer has an ``nn.Identity`` before attention."""
        return layer.get_submodule(self.norms[0]), layer.get_submodule(self.norms[1])

    def layer_attention(self, config) -> list[tuple[str, int]]:
        """Per layer, its attention type (``config.layer_types``: ``"full_attention"`` / ``"sliding_attention"``)
        and window: -1 (every key) or ``w`` (``config.sliding_window``: keys ``|i - j| <= w``, Hugging Face's
        bidirectional sliding mask)."""
        n = int(config.num_hidden_layers if hasattr(config, "num_hidden_layers") else config.n_layers)
        types = list(getattr(config, "layer_types", None) or ["full_attention"] * n)
        window = getattr(config, "sliding_window", None)
        return [(t, int(window) if t == "sliding_attention" and window is not None else -1) for t in types]


def _unfused(**suffixes: str) -> tuple[Matrix, ...]:
    return tuple(Matrix(suffixes[t], (t,)) for t in MATRIX_TYPES)


BERT = Architecture(
    "bert", model_types=("bert", "roberta", "xlm-roberta", "electra", "camembert"), layers="encoder.layer",
    matrices=_unfused(query="attention.self.query", key="attention.self.key", value="attention.self.value",
                      attn_out="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense"),
    norms=("attention.output.LayerNorm", "output.LayerNorm"), compaction=COMPACTION_RULES)

#: What the compacted model (export/modeling.py) holds: BERT's embeddings, pooler / head and post-LN layers.
_NO_COMPACT_MODEL = "sparsekit's compacted model holds BERT-layout embeddings and heads only"

DISTILBERT = Architecture(
    "distilbert", model_types=("distilbert",), layers="transformer.layer",
    matrices=_unfused(query="attention.q_lin", key="attention.k_lin", value="attention.v_lin",
                      attn_out="attention.out_lin", ffn_in="ffn.lin1", ffn_out="ffn.lin2"),
    norms=("sa_layer_norm", "output_layer_norm"), heads_field="n_heads", hidden_field="dim",
    activation_field="activation",
    skipped=tuple((r, f"the rule holds (post-LN, biases, absolute positions) but {_NO_COMPACT_MODEL}; DistilBERT's "
                      f"embeddings (no token types) and pre_classifier head are not written yet")
                  for r in COMPACTION_RULES))

_RELATIVE = "DeBERTa's disentangled relative-position attention"
DEBERTA_V2 = Architecture(
    "deberta-v2", model_types=("deberta-v2",), layers="encoder.layer",
    matrices=_unfused(query="attention.self.query_proj", key="attention.self.key_proj",
                      value="attention.self.value_proj", attn_out="attention.output.dense",
                      ffn_in="intermediate.dense", ffn_out="output.dense"),
    norms=("attention.output.LayerNorm", "output.LayerNorm"),
    skipped=(("ffn-neurons", f"the rule holds but {_NO_COMPACT_MODEL}; {_RELATIVE} is not in it"),
             ("vo-dims", f"the rule holds but {_NO_COMPACT_MODEL}; {_RELATIVE} is not in it"),
             ("qk-dims", f"{_RELATIVE} multiplies Q and K rows with the position embeddings (c2p / p2c terms): an "
                         f"empty K row does not cancel in the softmax"),
             ("heads", f"{_RELATIVE} is not in sparsekit's compacted model")),
    fused_layout="deberta")

_PRE_LN = "ModernBERT is pre-LayerNorm with rotary positions and no biases"
MODERNBERT = Architecture(
    "modernbert", model_types=("modernbert",), layers="layers",
    matrices=(Matrix("attn.Wqkv", ("query", "key", "value")), Matrix("attn.Wo", ("attn_out",)),
              Matrix("mlp.Wi", ("ffn_in", GATE)), Matrix("mlp.Wo", ("ffn_out",))),
    norms=("attn_norm", "mlp_norm"), activation_field="hidden_activation", fused_layout="modernbert",
    skipped=(("ffn-neurons", "a GLU neuron is removable only when its FFN-in and gate rows are both empty or its "
                             f"FFN-out column is; {_NO_COMPACT_MODEL} ({_PRE_LN})"),
             ("vo-dims", f"the rule holds (no V bias to fold) but {_NO_COMPACT_MODEL} ({_PRE_LN})"),
             ("qk-dims", "rotary positions rotate Q / K dimensions in pairs: a dimension is removable only with its "
                         "rotary partner"),
             ("heads", f"{_NO_COMPACT_MODEL} ({_PRE_LN})")))

#: sparsekit's compacted model (export/modeling.py); its config is the original model's.
COMPACT = Architecture(
    "sparsekit-compact", model_types=(), layers="layers",
    matrices=_unfused(query="attention.query", key="attention.key", value="attention.value", attn_out="attn_out",
                      ffn_in="ffn_in", ffn_out="ffn_out"),
    norms=("attn_norm", "ffn_norm"))

#: The Hugging Face families sparsekit loads, prunes and exports.
ARCHITECTURES = (BERT, DISTILBERT, DEBERTA_V2, MODERNBERT)
#: Every layout whose matrices ``encoder_linears`` finds.
ALL_ARCHITECTURES = ARCHITECTURES + (COMPACT,)


def supported_model_types() -> tuple[str, ...]:
    """Every ``config.model_type`` sparsekit supports."""
    return tuple(t for arch in ARCHITECTURES for t in arch.model_types)


#: Model types whose position ids start after the padding id (RoBERTa's embeddings), so a sequence may hold
#: ``max_position_embeddings - pad_token_id - 1`` tokens, not ``max_position_embeddings``.
PADDING_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")


def max_input_tokens(config) -> int | None:
    """How many tokens one sequence may hold under ``config``'s position embeddings (None: no stated limit)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    if getattr(config, "model_type", None) in PADDING_OFFSET_POSITIONS:
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    return max(positions, 1)


def architecture_for(config) -> Architecture:
    """The Architecture of a Hugging Face config; ModelError for a model type sparsekit does not support."""
    model_type = getattr(config, "model_type", None)
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    raise ModelError(f"model type {model_type!r} is not supported; sparsekit prunes these encoder families: "
                     f"{', '.join(supported_model_types())}")


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
    return sorted(found, key=lambda f: (f[1], order.get(f[2].split("+")[0], len(order))))
