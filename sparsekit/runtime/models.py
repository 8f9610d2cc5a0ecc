"""Which models the fused encoder runtime runs, and how it goes into them.

Two kinds of model run on :class:`~sparsekit.runtime.encoder.FusedEncoder`:

- a compacted model (:class:`~sparsekit.export.modeling.CompactModel`, ``sparsekit.load`` of a compacted
  artifact): the runtime is its ``runtime`` attribute, which its forward calls instead of its layers;
- a Hugging Face model of a family sparsekit supports (BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT, DistilBERT,
  DeBERTa-v2 / v3, ModernBERT; ``Architecture.fused_layout`` says which layer kind), uncompacted: a pruned
  checkpoint, the pruning engine's output or ``sparsekit.load`` of a structure-keeping artifact. In the BERT
  layout the module that loops over the layers (``bert.encoder``, ``distilbert.transformer``) is replaced by
  :class:`FusedLayers`, which holds the same layer list under the same name (the state dict, ``save_pretrained``
  and parameter counts are unchanged) and runs the fused op. ModernBERT's and DeBERTa's base models loop over their
  layers in their own forward and build position tables there (rotary cos / sin, relative-position buckets), so
  that forward is taken over instead (:class:`FusedBaseForward`, an instance attribute that :func:`remove`
  deletes): their embeddings, rotary tables and final LayerNorm stay their own modules.

The model's embeddings, pooler and task head stay its own modules, so its outputs keep their types.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from sparsekit.kernels import encoder as encoder_ops
from sparsekit.runtime import packing
from sparsekit.runtime.encoder import FusedEncoder, LayerWeights, layer_weights, stacked_layer


def _check_inference(module: nn.Module, config, kwargs: dict) -> None:
    """RuntimeError for what a fused forward cannot give: training, cross-attention, per-layer outputs."""
    if module.training:
        raise RuntimeError("the fused runtime is inference-only (no dropout, no gradients): call model.eval(), "
                           "or compile with fused=False to train")
    if kwargs.get("encoder_hidden_states") is not None:
        raise RuntimeError("the fused runtime runs self-attention encoders only (no cross-attention inputs)")
    asked = [name for name in ("output_hidden_states", "output_attentions")
             if kwargs.get(name) or getattr(config, name, False)]
    if asked:
        raise RuntimeError(f"{' and '.join(asked)}: the fused runtime runs every layer in one op and records no "
                           f"per-layer hidden states or attention maps; compile with fused=False to get them")


class FusedLayers(nn.Module):
    """Stands in for a Hugging Face encoder's layer loop (``BertEncoder``, DistilBERT's ``Transformer``): the
    same call, ``forward(hidden_states [B, T, hidden], attention_mask)``, the same ``last_hidden_state``
    (padding positions are zeros: they are never computed), computed by one fused op call.

    ``attention_mask``: what the Hugging Face model passes its layers (``None``, a ``[B, T]`` 0/1 mask, or the
    ``[B, 1, T, T]`` bool / additive float mask it builds from one): it must be a padding mask (the same keys for
    every query), the only kind an encoder's user can give. Per-layer outputs (``output_hidden_states``,
    ``output_attentions``) are refused: the layers run as one op. The original loop module is kept (not as a
    submodule) so :func:`remove` can put it back.
    """

    def __init__(self, original: nn.Module, list_name: str, encoder: FusedEncoder, reads_first_token: bool,
                 config) -> None:
        super().__init__()
        self.config = config  # the model's: output_hidden_states / output_attentions set there are refused too
        setattr(self, list_name, getattr(original, list_name))  # same parameters, same state-dict keys
        self.__dict__["original"] = original
        self.__dict__["runtime"] = encoder  # holds no parameters of its own; kept out of the state dict
        self.reads_first_token = reads_first_token

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

        if args:
            raise RuntimeError("the fused runtime runs self-attention encoders only (no cross-attention inputs)")
        _check_inference(self, self.config, kwargs)
        key_mask = padding_mask(attention_mask, hidden_states.shape[:2])
        if self.reads_first_token:
            warn_if_left_padded(key_mask)
        out = self.runtime.run_padded(hidden_states, key_mask).to(hidden_states.dtype)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=out)

    def extra_repr(self) -> str:
        return f"runtime=FusedEncoder({self.runtime.extra_repr()})"


class FusedBaseForward:
    """Stands in for the forward of a base model that loops over its layers itself (ModernBERT's, DeBERTa's: theirs
    also build per-forward position tables): the same call (``input_ids`` or ``inputs_embeds``, a ``[B, T]``
    ``attention_mask``, optional ``position_ids`` / ``token_type_ids``) and the same ``last_hidden_state``
    (padding positions are zeros: never computed). The model's own embeddings run as its modules; every layer runs
    in one fused op call over packed tokens. A subclass per layout (BASE_FORWARDS) says when the model cannot take it
    and builds its layers, and gives the embeddings call, the per-forward tables and what follows the layers."""

    #: Whether the layers measure distance in positions (sliding windows, relative positions): a padding mask
    #: with holes would change the distances once packed, so it is refused.
    counts_positions = False

    def __init__(self, arch, base: nn.Module, encoder: FusedEncoder, reads_first_token: bool) -> None:
        self.base, self.runtime, self.reads_first_token = base, encoder, reads_first_token

    @staticmethod
    def reason(arch, base: nn.Module) -> str:
        """Why this layout's base model cannot take the fused forward, or ``""``."""
        raise NotImplementedError

    @staticmethod
    def layers(arch, base: nn.Module) -> list[LayerWeights]:
        """What the fused encoder computes with, per layer, for this layout's base model."""
        raise NotImplementedError

    def __call__(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        _check_inference(self.base, self.base.config, kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2):
            raise ValueError("the fused runtime takes a [batch, tokens] padding mask (0 / 1); got "
                             f"{type(attention_mask).__name__}: compile with fused=False for other masks")
        hidden = self.embed(input_ids, attention_mask, position_ids, inputs_embeds, token_type_ids)
        b, t = hidden.shape[:2]
        key_mask = padding_mask(attention_mask, (b, t))
        if self.reads_first_token:
            warn_if_left_padded(key_mask)
        if self.counts_positions and key_mask is not None:
            _refuse_holes(key_mask)
        packed = packing.pack(hidden.float(), key_mask)
        out = self.finish(self.runtime(packed.tokens, packed.cu_seqlens, **self.tables(packed, position_ids, t)))
        return BaseModelOutput(last_hidden_state=packing.unpack(out, packed).to(hidden.dtype))

    def embed(self, input_ids, attention_mask, position_ids, inputs_embeds, token_type_ids) -> torch.Tensor:
        """The model's embeddings ``[B, T, hidden]``."""
        raise NotImplementedError

    def tables(self, packed: packing.PackedBatch, position_ids: torch.Tensor | None, length: int) -> dict:
        """The per-forward tables of the fused layers (FusedEncoder.forward keyword arguments)."""
        return {}

    def finish(self, tokens: torch.Tensor) -> torch.Tensor:
        """What follows the layers, on packed tokens ``[N, hidden]``."""
        return tokens


class ModernBertForward(FusedBaseForward):
    """ModernBERT: rotary tables per attention type from the model's own ``rotary_emb`` (any rope type and scaling)
    at each real token's position (Hugging Face's positions: ``position_ids``, else 0 .. T-1 of the padded batch),
    then ``final_norm`` after the layers. Sliding windows count positions."""

    def __init__(self, arch, base: nn.Module, encoder: FusedEncoder, reads_first_token: bool) -> None:
        pooling_first = getattr(base.config, "classifier_pooling", "cls") == "cls"
        super().__init__(arch, base, encoder, reads_first_token and pooling_first)
        attention = arch.layer_attention(base.config)
        self.table_types = self.rotary_tables(attention)
        self.counts_positions = any(w >= 0 for _, w in attention)

    def embed(self, input_ids, attention_mask, position_ids, inputs_embeds, token_type_ids):
        return self.base.embeddings(input_ids=input_ids, inputs_embeds=inputs_embeds)

    def tables(self, packed, position_ids, length):
        positions = (torch.arange(length) if position_ids is None else position_ids).expand(packed.batch, length)
        positions = positions.reshape(-1)
        if packed.index is not None:
            positions = positions.index_select(0, packed.index)
        rope = []
        for layer_type in self.table_types:
            cos, sin = self.base.rotary_emb(packed.tokens, positions[None], layer_type)
            rope += [cos[0].float().contiguous(), sin[0].float().contiguous()]
        return {"rope": rope}

    def finish(self, tokens):
        return self.base.final_norm(tokens)

    @staticmethod
    def reason(arch, base: nn.Module) -> str:
        """Why ModernBERT's base model cannot take the fused forward, or ``""``."""
        config = base.config
        if arch.head_dim(config) % 2:
            return "rotary positions need an even head width"
        for name in ("embeddings", "rotary_emb", "final_norm"):
            if not isinstance(getattr(base, name, None), nn.Module):
                return f"the base model has no {name} module (not the Hugging Face ModernBertModel layout)"
        unknown = {t for t, _ in arch.layer_attention(config)} - {"full_attention", "sliding_attention"}
        return f"attention types {sorted(unknown)} are not known to the fused runtime" if unknown else ""

    @classmethod
    def layers(cls, arch, base: nn.Module) -> list[LayerWeights]:
        """ModernBERT's layers: pre-LayerNorm (the first without one before attention), GLU FFN, rotary table and
        window of each layer's attention type."""
        config = base.config
        heads, head_dim = arch.heads(config), arch.head_dim(config)
        attention = arch.layer_attention(config)
        tables = cls.rotary_tables(attention)
        fused = []
        for layer, (kind, window) in zip(arch.layer_modules(base), attention):
            norms = arch.layer_norms(layer)
            norm = encoder_ops.PRE_NORM_NO_FIRST if type(norms[0]) is nn.Identity else encoder_ops.PRE_NORM
            fused.append(stacked_layer(arch.layer_linears(layer), norms, heads, head_dim, head_dim, head_dim ** -0.5,
                                       arch.activation(config), norm=norm, window=window, rope=tables.index(kind)))
        return fused

    @staticmethod
    def rotary_tables(attention: list[tuple[str, int]]) -> list[str]:
        """The attention types whose rotary tables the fused layers use, in table order."""
        return sorted({kind for kind, _ in attention})


class DebertaForward(FusedBaseForward):
    """DeBERTa-v2 / v3: its embeddings (token types, the padding mask, absolute positions where the config has
    them), then the layers with their relative-position terms; ``rel_index`` maps each distance ``i - j`` of the
    padded length to its posK / posQ row with Hugging Face's own bucketing (``make_log_bucket_position``) and
    clamp. Relative positions count positions."""

    def __init__(self, arch, base: nn.Module, encoder: FusedEncoder, reads_first_token: bool) -> None:
        super().__init__(arch, base, encoder, reads_first_token)
        attention = _deberta_attention(base)
        self.counts_positions = bool(attention.relative_attention)  # without it: no position attributes either
        self.buckets = getattr(attention, "position_buckets", -1)
        self.max_positions = getattr(attention, "max_relative_positions", -1)
        self.span = getattr(attention, "pos_ebd_size", 0)
        self._rel_index: dict[int, torch.Tensor] = {}  # by padded length: built once, not on every forward

    def embed(self, input_ids, attention_mask, position_ids, inputs_embeds, token_type_ids):
        shape = (input_ids if input_ids is not None else inputs_embeds[..., 0]).shape
        mask = torch.ones(shape) if attention_mask is None else attention_mask
        types = torch.zeros(shape, dtype=torch.long) if token_type_ids is None else token_type_ids
        return self.base.embeddings(input_ids=input_ids, token_type_ids=types, position_ids=position_ids,
                                    mask=mask, inputs_embeds=inputs_embeds)

    def tables(self, packed, position_ids, length):
        if not self.runtime.relative:
            return {}
        if length not in self._rel_index:
            from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

            distance = torch.arange(-(length - 1), length)
            if self.buckets > 0 and self.max_positions > 0:
                distance = make_log_bucket_position(distance, self.buckets, self.max_positions)
            index = torch.clamp(distance.long() + self.span, 0, 2 * self.span - 1)
            self._rel_index[length] = index.to(torch.int32).contiguous()
        return {"rel_index": self._rel_index[length]}

    @staticmethod
    def reason(arch, base: nn.Module) -> str:
        """Why DeBERTa's base model cannot take the fused forward, or ``""``."""
        if not isinstance(getattr(base, "embeddings", None), nn.Module) or not hasattr(base, "encoder"):
            return "the base model is not the Hugging Face DebertaV2Model layout"
        if getattr(base.encoder, "conv", None) is not None:
            return "its convolution after the first layer (conv_kernel_size > 0) is not in the fused runtime"
        if getattr(base, "z_steps", 0) > 1:
            return "z_steps > 1 (the last layer re-run as an enhanced mask decoder) is not in the fused runtime"
        attention = _deberta_attention(base)
        unknown = set(attention.pos_att_type if attention.relative_attention else []) - {"c2p", "p2c"}
        return f"relative-attention terms {sorted(unknown)} are not in the fused runtime" if unknown else ""

    @staticmethod
    @torch.no_grad()
    def layers(arch, base: nn.Module) -> list[LayerWeights]:
        """DeBERTa's layers: post-LayerNorm, and with relative attention each layer's position keys / queries (its
        K / Q projections -- or pos_key_proj / pos_query_proj without share_att_key -- of the encoder's relative
        embeddings, LayerNorm'd when the config says so), and Hugging Face's score scale 1 / sqrt(d (1 + terms))."""
        from sparsekit.export.modeling import _weight_bias

        config = base.config
        rel = base.encoder.get_rel_embedding() if getattr(base.encoder, "relative_attention", False) else None
        fused = []
        for layer in arch.layer_modules(base):
            att = layer.attention.self
            heads, head_dim = att.num_attention_heads, att.attention_head_size
            terms = [t for t in ("c2p", "p2c") if att.relative_attention and t in att.pos_att_type]
            relative = None
            if terms:
                rows = rel[:2 * att.pos_ebd_size].float()
                key, query = ((att.key_proj, att.query_proj) if att.share_att_key
                              else (getattr(att, "pos_key_proj", None), getattr(att, "pos_query_proj", None)))
                relative = tuple(torch.nn.functional.linear(rows, *_weight_bias(module, torch.device("cpu")))
                                 if term in terms else None for term, module in (("c2p", key), ("p2c", query)))
            scale = (head_dim * (1 + len(terms))) ** -0.5
            fused.append(stacked_layer(arch.layer_linears(layer), arch.layer_norms(layer), heads, head_dim, head_dim,
                                       scale, arch.activation(config), relative=relative))
        return fused


def _deberta_attention(base: nn.Module) -> nn.Module:
    """The first layer's DisentangledSelfAttention (every layer's settings are the config's)."""
    return base.encoder.layer[0].attention.self


def _refuse_holes(key_mask: torch.Tensor) -> None:
    """ValueError unless the real tokens of each row are one run (padding only before or after them): sliding
    windows and relative positions count distance in positions, the packed layout in real tokens."""
    lengths = key_mask.sum(dim=1)
    idx = torch.arange(key_mask.shape[1])
    first = torch.where(key_mask, idx, key_mask.shape[1]).amin(dim=1)
    last = torch.where(key_mask, idx, -1).amax(dim=1)
    if bool(((last - first + 1 != lengths) & (lengths > 0)).any()):
        raise ValueError("the attention mask has holes (padding between real tokens); with sliding-window or "
                         "relative-position attention the fused runtime needs each sequence's tokens in one run: "
                         "compile with fused=False")


def padding_mask(attention_mask: torch.Tensor | None, batch_tokens: tuple[int, int]) -> torch.Tensor | None:
    """The ``[B, T]`` bool key mask (True = a real token) of the mask a Hugging Face encoder hands its layers, or
    None for no padding. ValueError when it is not a padding mask (different keys for different queries, or
    additive values other than 0 and a large negative)."""
    if attention_mask is None:
        return None
    b, t = batch_tokens
    if attention_mask.dim() == 2:
        if tuple(attention_mask.shape) != (b, t):
            raise ValueError(f"attention_mask is {list(attention_mask.shape)}, expected [batch, tokens] = [{b}, {t}]")
        return attention_mask.bool()
    if attention_mask.dim() != 4 or attention_mask.shape[0] != b or attention_mask.shape[-1] != t:
        raise ValueError(f"the fused runtime takes a [batch, tokens] padding mask; got a mask of shape "
                         f"{list(attention_mask.shape)} for {b} sequences of {t} tokens")
    if attention_mask.dtype == torch.bool:
        allowed = attention_mask
    else:
        allowed = attention_mask == 0
        if not bool((allowed | (attention_mask <= torch.finfo(attention_mask.dtype).min / 2)).all()):
            raise ValueError("the fused runtime takes padding masks only; this additive mask has values other than 0 "
                             "and the masked value (a position bias?): compile with fused=False")
    if not bool((allowed == allowed[:, :1, :1, :]).all()):
        raise ValueError("the fused runtime takes padding masks only (the same keys for every query and head); this "
                         "mask differs between queries: compile with fused=False")
    return allowed[:, 0, 0, :]


def warn_if_left_padded(key_mask: torch.Tensor | None) -> None:
    """Warn when a sequence of the batch (``key_mask [B, T]`` bool / 0-1, True = real) starts with padding: a
    sequence classifier reads position 0, whose hidden state the fused runtime does not compute (zeros)."""
    if key_mask is not None and key_mask.shape[1] and not bool(key_mask[:, 0].all()):
        warnings.warn("left-padded batch: the classifier reads position 0, which is padding here and is not computed "
                      "by the fused runtime (its hidden state is zeros); pad on the right (the tokenizers' default) "
                      "or compile with fused=False", RuntimeWarning, stacklevel=4)


def _hf_parts(model: nn.Module):
    """``(architecture, base model)`` of a Hugging Face model of a family sparsekit knows, else None."""
    from sparsekit.architectures import ARCHITECTURES

    config = getattr(model, "config", None)
    base = getattr(model, "base_model", None)
    if config is None or not isinstance(base, nn.Module):
        return None
    arch = next((a for a in ARCHITECTURES if getattr(config, "model_type", None) in a.model_types), None)
    return None if arch is None else (arch, base)


def _loop_path(arch) -> tuple[str, str]:
    """``(path of the module looping over the layers below the base model, name of its layer list)``."""
    parent, _, list_name = arch.layers.rpartition(".")
    return parent, list_name


#: The layouts (``Architecture.fused_layout``) whose runtime goes in by taking over the base model's forward (the
#: base model loops over its layers itself and builds position tables), rather than by replacing a loop module.
BASE_FORWARDS: dict[str, type[FusedBaseForward]] = {"modernbert": ModernBertForward, "deberta": DebertaForward}


def unsupported_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot run on the fused runtime, or None if it can."""
    from sparsekit.export.artifact import FormatLinear
    from sparsekit.export.modeling import CompactModel
    from sparsekit.kernels import cpu

    if isinstance(model, CompactModel):
        activation = getattr(model.config, "hidden_act", None)
        for layer in model.layers:
            for kind, module in layer.linears().items():
                if type(module) is not nn.Linear and not isinstance(module, FormatLinear):
                    return (f"layer matrix {kind} is a {type(module).__name__}: the model is already compiled per "
                            f"module (reload it to compile fused)")
    else:
        parts = _hf_parts(model)
        if parts is None:
            return (f"the fused runtime runs sparsekit's compacted models and Hugging Face encoders of the families "
                    f"sparsekit supports; {type(model).__name__} is neither")
        arch, base = parts
        config = model.config
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            return "the model is configured as a decoder (causal or cross-attention); the fused layer is an encoder's"
        if arch.fused_layout not in BASE_FORWARDS and not arch.layers.rpartition(".")[0]:
            return f"{arch.name}: the layer list is not held by its own loop module"
        for i, layer in enumerate(arch.layer_modules(base)):
            for kind, module in arch.layer_linears(layer).items():
                if type(module) is not nn.Linear and not isinstance(module, FormatLinear):
                    return (f"layer matrix {kind} is a {type(module).__name__}, not an nn.Linear: the model is in "
                            f"training (finish pruning) or already compiled per module (reload it to compile fused)")
            norms = arch.layer_norms(layer)
            first_absent = arch.fused_layout == "modernbert" and i == 0 and type(norms[0]) is nn.Identity
            if any(not isinstance(n, nn.LayerNorm) or n.weight is None for n in norms[first_absent:]):
                return "the fused layer needs LayerNorms with a weight around attention and the FFN"
        why = BASE_FORWARDS[arch.fused_layout].reason(arch, base) if arch.fused_layout in BASE_FORWARDS else ""
        if why:
            return f"{arch.name}: {why}"
        activation = arch.activation(config)
    params = list(model.parameters())
    if params and params[0].device.type != "cpu":
        return f"the fused runtime is CPU-only; the model is on {params[0].device}"
    if params and any(p.dtype != torch.float32 for p in params):
        return "the fused runtime computes in float32; the model has other dtypes (call model.float())"
    if activation not in encoder_ops.ACTIVATIONS:
        return f"activation {activation!r} has no fused epilogue (supported: {', '.join(encoder_ops.ACTIVATIONS)})"
    if not cpu.available():
        return f"the C++ kernels are not built: {cpu.unavailable_reason()}"
    return None


def remove(model: nn.Module) -> None:
    """Take the fused runtime out of ``model`` (if it has one): the model runs its own modules again."""
    from sparsekit.export.modeling import CompactModel

    if isinstance(model, CompactModel):
        model.runtime = None
        return
    parts = _hf_parts(model)
    if parts is None:
        return
    arch, base = parts
    if isinstance(base.__dict__.get("forward"), FusedBaseForward):
        del base.__dict__["forward"]
    if arch.fused_layout in BASE_FORWARDS:
        return
    path, _ = _loop_path(arch)
    current = base.get_submodule(path)
    if isinstance(current, FusedLayers):
        current.original.train(current.training)
        base.set_submodule(path, current.original)


def fused_layers(model: nn.Module) -> list[LayerWeights]:
    """What the fused encoder computes with, per layer, for a model :func:`unsupported_reason` accepts (its
    runtime removed first). A compacted model's heads are padded to one width first (``pad_layout``, exact)."""
    from sparsekit.export.modeling import CompactModel

    remove(model)
    if isinstance(model, CompactModel):
        model.pad_layout()
        return [layer_weights(layer, model.config.hidden_act) for layer in model.layers]
    arch, base = _hf_parts(model)
    if arch.fused_layout in BASE_FORWARDS:
        return BASE_FORWARDS[arch.fused_layout].layers(arch, base)
    config, heads = model.config, arch.heads(model.config)
    head_dim = arch.head_dim(config)
    return [stacked_layer(arch.layer_linears(layer), arch.layer_norms(layer), heads, head_dim, head_dim,
                          head_dim ** -0.5, arch.activation(config)) for layer in arch.layer_modules(base)]


def install(model: nn.Module, encoder: FusedEncoder) -> None:
    """Make ``model`` run its encoder layers on ``encoder`` (built from :func:`fused_layers` of it)."""
    from sparsekit.export.modeling import CompactModel

    if isinstance(model, CompactModel):
        model.runtime = encoder
        return
    arch, base = _hf_parts(model)
    from sparsekit.export.heads import SEQUENCE, task_type_of

    try:
        reads_first_token = task_type_of(model) == SEQUENCE
    except ValueError:  # a bare encoder: its user may read any position
        reads_first_token = False
    remove(model)
    if arch.fused_layout in BASE_FORWARDS:
        base.forward = BASE_FORWARDS[arch.fused_layout](arch, base, encoder, reads_first_token)
        return
    path, list_name = _loop_path(arch)
    loop = FusedLayers(base.get_submodule(path), list_name, encoder, reads_first_token, model.config)
    base.set_submodule(path, loop.train(base.training))


def runtime_of(model: nn.Module) -> FusedEncoder | None:
    """The FusedEncoder ``model`` runs on, or None."""
    runtime = getattr(model, "runtime", None)
    if isinstance(runtime, FusedEncoder):
        return runtime
    parts = _hf_parts(model)
    if parts is None:
        return None
    arch, base = parts
    forward = base.__dict__.get("forward")
    if isinstance(forward, FusedBaseForward):
        return forward.runtime
    if arch.fused_layout in BASE_FORWARDS:
        return None
    loop = base.get_submodule(_loop_path(arch)[0])
    return loop.runtime if isinstance(loop, FusedLayers) else None
