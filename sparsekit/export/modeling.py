"""The compacted model: BERT layers whose heads and FFNs have per-layer, per-head widths, and a task head.

After compaction (compact.py) every head keeps its own number of Q·K dimensions and V dimensions and
every FFN its own number of neurons, so no stock ``from_pretrained`` class can hold the model. This
module is the one that does. It keeps the original attention scaling ``1 / sqrt(head_dim)``.

The embeddings, pooler and task head (per task type, see heads.py) are the original Hugging Face
modules (they are not pruned); only the encoder layers are replaced. Linear layers are plain ``nn.Module``s
with the ``nn.Linear`` interface (``forward(x) = x Wᵀ + b``), so a later step can swap them for sparse-format layers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.architectures import COMPACT, architecture_for
from sparsekit.export.heads import QA, SEQUENCE, TOKEN, check_task_type
from sparsekit.formats import Int8BlockFormat


@dataclass(frozen=True)
class LayerShape:
    """Widths of one compacted layer.

    qk_widths[h] / v_widths[h]: kept Q·K and V dimensions of the h-th *remaining* head (heads whose V
    width fell to 0 are removed, so every v_width is >= 1; a qk_width of 0 means uniform attention).
    ffn: kept FFN neurons.
    """

    qk_widths: tuple[int, ...]
    v_widths: tuple[int, ...]
    ffn: int

    def __post_init__(self) -> None:
        if len(self.qk_widths) != len(self.v_widths):
            raise ValueError("qk_widths and v_widths must list the same heads")
        if any(w < 0 for w in self.qk_widths) or any(w < 1 for w in self.v_widths) or self.ffn < 0:
            raise ValueError(f"invalid layer widths {self}")

    def to_dict(self) -> dict:
        return {"qk_widths": list(self.qk_widths), "v_widths": list(self.v_widths), "ffn": self.ffn}

    @classmethod
    def from_dict(cls, data: dict) -> "LayerShape":
        return cls(tuple(int(w) for w in data["qk_widths"]), tuple(int(w) for w in data["v_widths"]), int(data["ffn"]))


def _pad_index(widths: tuple[int, ...], padded: int) -> torch.Tensor:
    """Gather index mapping [H * padded] slots to columns of the packed ``[sum(widths)]`` tensor.

    Slots beyond a head's width point at column ``sum(widths)``, an appended zero column.
    """
    zero = sum(widths)
    index, start = [], 0
    for w in widths:
        index += list(range(start, start + w)) + [zero] * (padded - w)
        start += w
    return torch.tensor(index, dtype=torch.long)


def _weight_bias(module: nn.Module, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense float weight ``[out, in]`` and bias ``[out]`` (zeros if none) of an nn.Linear or a FormatLinear, on
    ``device`` (None: where they are). A FormatLinear's format stays where it was loaded when the model moves."""
    fmt = getattr(module, "fmt", None)
    w = fmt.to_dense() if fmt is not None else module.weight.detach()
    w = w if device is None else w.to(device)
    b = module.bias.detach().to(w.device) if module.bias is not None else w.new_zeros(w.shape[0])
    return w.float(), b.float()


def _take_rows(w: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Rows of ``w`` at ``slots``; the index ``len(w)`` (a padding slot, see _pad_index) gives a zero row."""
    return torch.cat([w, w.new_zeros(1, w.shape[1])]).index_select(0, slots)


def _remapped(module: nn.Module, device: torch.device, rows=None, cols=None) -> nn.Module:
    """``module``'s matrix with its rows (and bias) mapped by ``rows`` and its columns by ``cols``: functions of a
    2-D tensor that gather rows / columns, insert zero ones or pad with zeros (None: unchanged).

    An int8 FormatLinear (:class:`~sparsekit.formats.Int8BlockFormat`) stays int8: the maps apply to its ints
    ``q [out, in]`` and (rows) its scales ``[out]``, so every stored int is kept bit for bit (inserted rows have
    scale 0); anything else becomes an ``nn.Linear`` of its mapped dense weight on ``device``.
    """
    rows = rows if rows is not None else (lambda t: t)
    cols = cols if cols is not None else (lambda t: t)
    w, b = _weight_bias(module, device)
    bias = rows(b[:, None])[:, 0]
    fmt = getattr(module, "fmt", None)
    if isinstance(fmt, Int8BlockFormat):
        from sparsekit.export.artifact import FormatLinear

        q = cols(rows(fmt.to_int8()))
        return FormatLinear(Int8BlockFormat.from_quantized(q, rows(fmt.scale[:, None])[:, 0]), bias)
    return _linear(cols(rows(w)), bias)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device)
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(bias)
    return layer.requires_grad_(False)


class RaggedSelfAttention(nn.Module):
    """Multi-head self-attention whose heads have individual Q·K and V widths.

    Heads are computed together: each head's q / k / v slice is zero-padded to the largest width,
    which changes no dot product (the padding is zero on both sides) and yields zero context columns
    that are dropped again. Input ``[B, T, hidden]`` -> context ``[B, T, sum(v_widths)]``.
    """

    def __init__(self, hidden: int, shape: LayerShape, head_dim: int) -> None:
        super().__init__()
        self.shape = shape
        self.scale = head_dim ** -0.5
        qk, v = sum(shape.qk_widths), sum(shape.v_widths)
        self.query = nn.Linear(hidden, qk)
        self.key = nn.Linear(hidden, qk)
        self.value = nn.Linear(hidden, v)
        self.heads = len(shape.v_widths)
        self.uniform = len(set(shape.qk_widths)) <= 1 and len(set(shape.v_widths)) <= 1 and min(shape.qk_widths,
                                                                                                   default=1) > 0
        # At least one padded Q·K slot, so a head with no Q·K dimensions gets all-zero scores (uniform attention).
        self.qk_pad = max(max(shape.qk_widths, default=0), 1)
        self.v_pad = max(shape.v_widths, default=0)
        self.register_buffer("qk_index", _pad_index(shape.qk_widths, self.qk_pad), persistent=False)
        self.register_buffer("v_index", _pad_index(shape.v_widths, self.v_pad), persistent=False)
        unpad = [h * self.v_pad + j for h, w in enumerate(shape.v_widths) for j in range(w)]
        self.register_buffer("v_unpad", torch.tensor(unpad, dtype=torch.long), persistent=False)
        # True once query / key / value produce the padded [H * pad] layout themselves (see CompactLayer.pad_layout)
        self.padded = False

    def _heads(self, x: torch.Tensor, width: int, index: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        if not (self.uniform or self.padded):
            x = F.pad(x, (0, 1)).index_select(-1, index)
        return x.view(b, t, self.heads, width).transpose(1, 2)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """``key_mask``: bool ``[B, 1, 1, T]`` (True = attend) or None."""
        b, t, _ = x.shape
        if self.heads == 0:
            return x.new_zeros(b, t, 0)
        q = self._heads(self.query(x), self.qk_pad, self.qk_index)
        k = self._heads(self.key(x), self.qk_pad, self.qk_index)
        v = self._heads(self.value(x), self.v_pad, self.v_index)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=self.scale)
        ctx = ctx.transpose(1, 2).reshape(b, t, self.heads * self.v_pad)
        return ctx if self.uniform or self.padded else ctx.index_select(-1, self.v_unpad)


class CompactLayer(nn.Module):
    """One BERT layer (post-LayerNorm) with ragged attention and a narrowed FFN."""

    def __init__(self, hidden: int, shape: LayerShape, head_dim: int, act, eps: float) -> None:
        super().__init__()
        self.attention = RaggedSelfAttention(hidden, shape, head_dim)
        self.attn_out = nn.Linear(sum(shape.v_widths), hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, shape.ffn)
        self.act = act
        self.ffn_out = nn.Linear(shape.ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def linears(self) -> dict[str, nn.Module]:
        """The six matrices of this layer by type (query, key, value, attn_out, ffn_in, ffn_out)."""
        return COMPACT.layer_linears(self)

    def set_linear(self, name: str, module: nn.Module) -> None:
        """Replace the matrix ``name`` (a key of ``linears()``) by ``module``."""
        COMPACT.set_layer_linear(self, name, module)

    @torch.no_grad()
    def pad_layout(self, multiple: int = 16, head_multiple: int = 8) -> None:
        """Trade the ragged layout's gathers for zero weights (the function is unchanged, exactly).

        Q / K / V get zero rows so they emit every head's slice padded to the widest head, rounded up to a
        multiple of ``head_multiple`` (``[H * pad]``), directly, and attn_out gets the matching zero columns:
        attention needs no index_select (widths that are multiples of 8 are the conventional safe choice for
        fused attention; benchmarks/sdpa_head_width.py found no consistent cost for odd ones here). The FFN
        width is rounded up to a
        multiple of ``multiple`` with zero neurons (zero FFN-in rows and bias, zero FFN-out columns) when the
        activation maps 0 to 0, because BLAS runs odd widths slower. Zero rows / columns cost nothing in the
        sparse kernels, and at most restore the original width for dense. The padded matrices become ``nn.Linear``
        (a FormatLinear is densified; compile re-packs it), except int8 ones, which stay int8 FormatLinears with
        every stored int kept (see _remapped). Calling it again changes nothing.
        """
        att = self.attention
        device = att.qk_index.device  # the model's device: a buffer moves with it, a FormatLinear's format does not
        qk_pad = -(-att.qk_pad // head_multiple) * head_multiple
        v_pad = -(-att.v_pad // head_multiple) * head_multiple
        if not att.padded and att.heads > 0 and (not att.uniform or (qk_pad, v_pad) != (att.qk_pad, att.v_pad)):
            qk_slots = _pad_index(att.shape.qk_widths, qk_pad)
            v_slots = _pad_index(att.shape.v_widths, v_pad)
            for name in ("query", "key", "value"):
                slots = v_slots if name == "value" else qk_slots
                setattr(att, name, _remapped(getattr(att, name), device,
                                             rows=lambda t, s=slots: _take_rows(t, s.to(t.device))))
            self.attn_out = _remapped(self.attn_out, device,
                                      cols=lambda t: _take_rows(t.t(), v_slots.to(t.device)).t())
            att.qk_pad, att.v_pad, att.padded = qk_pad, v_pad, True
        width = self.ffn_in.out_features
        target = -(-width // multiple) * multiple
        if target > width and width > 0 and float(self.act(torch.zeros(1))) == 0.0:
            extra = target - width
            self.ffn_in = _remapped(self.ffn_in, device, rows=lambda t: F.pad(t, (0, 0, 0, extra)))
            self.ffn_out = _remapped(self.ffn_out, device, cols=lambda t: F.pad(t, (0, extra)))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attn_norm(self.attn_out(self.attention(x, key_mask)) + x)
        return self.ffn_norm(self.ffn_out(self.act(self.ffn_in(x))) + x)


#: The attribute (and artifact tensor prefix) of each task type's head, as the Hugging Face models name it.
HEAD_MODULES = {SEQUENCE: "classifier", TOKEN: "classifier", QA: "qa_outputs"}


class CompactModel(nn.Module):
    """A compacted BERT-family encoder with the head of its task type (export/heads.py).

    ``embeddings``, ``pooler`` (or None) and the head are the original Hugging Face modules; ``layers`` are
    CompactLayers. The head sits at the attribute the Hugging Face model uses (HEAD_MODULES: ``classifier``,
    or ``qa_outputs`` for QA). ``forward(input_ids [B, T] long, attention_mask [B, T] 0/1, token_type_ids [B, T])``
    returns what the Hugging Face model returns, so the same evaluation and prediction code runs on both:

    - sequence-classification: ``.logits [B, num_labels]`` (the head reads the pooler when ``head_uses_pooler``,
      BERT's, else the hidden states, e.g. RoBERTa's classification head takes the first token);
    - token-classification: ``.logits [B, T, num_labels]`` (dropout, then ``classifier`` on every token);
    - question-answering: ``.start_logits`` / ``.end_logits [B, T]`` (``qa_outputs`` on every token).
    """

    def __init__(self, config, shapes: list[LayerShape], embeddings: nn.Module, head: nn.Module, *,
                 task_type: str = SEQUENCE, pooler: nn.Module | None = None, head_uses_pooler: bool = False) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        if head_uses_pooler and (task_type != SEQUENCE or pooler is None):
            raise ValueError("only a sequence classifier with a pooler reads the pooler")
        self.config = config
        self.task_type = check_task_type(task_type)
        self.shapes = list(shapes)
        head_dim = architecture_for(config).head_dim(config)
        self.embeddings = embeddings
        with warnings.catch_warnings():  # removed FFNs / heads give 0-size Linears; their init is a no-op
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            self.layers = nn.ModuleList(
                CompactLayer(config.hidden_size, s, head_dim, ACT2FN[config.hidden_act], config.layer_norm_eps)
                for s in shapes)
        self.pooler = pooler
        self.dropout = nn.Dropout(getattr(config, "classifier_dropout", None) or config.hidden_dropout_prob)
        self.head_name = HEAD_MODULES[task_type]
        setattr(self, self.head_name, head)
        self.head_uses_pooler = head_uses_pooler
        #: The fused CPU encoder (sparsekit.runtime.FusedEncoder) that sparsekit.compile installs, or None: the
        #: layers then run as modules. Padding positions of its output are zeros (they are never computed).
        self.runtime = None

    @property
    def head(self) -> nn.Module:
        """The task head module (``classifier`` or ``qa_outputs``)."""
        return getattr(self, self.head_name)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None, **_):
        from transformers.modeling_outputs import (QuestionAnsweringModelOutput, SequenceClassifierOutput,
                                                   TokenClassifierOutput)

        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        x = self.embeddings(input_ids=input_ids, **kwargs)
        if self.runtime is not None:  # sparsekit.compile's fused encoder: real tokens only, one op call
            from sparsekit.runtime.models import warn_if_left_padded

            if self.task_type == SEQUENCE:
                warn_if_left_padded(attention_mask)
            x = self.runtime.run_padded(x, attention_mask)
        else:
            key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
            for layer in self.layers:
                x = layer(x, key_mask)
        if self.task_type == QA:
            start, end = self.head(x).split(1, dim=-1)
            return QuestionAnsweringModelOutput(start_logits=start.squeeze(-1).contiguous(),
                                                end_logits=end.squeeze(-1).contiguous())
        if self.task_type == TOKEN:
            return TokenClassifierOutput(logits=self.head(self.dropout(x)))
        if self.head_uses_pooler:
            return SequenceClassifierOutput(logits=self.head(self.dropout(self.pooler(x))))
        return SequenceClassifierOutput(logits=self.head(x))

    def pad_layout(self, multiple: int = 16, head_multiple: int = 8) -> "CompactModel":
        """CompactLayer.pad_layout on every layer (exact; no gathers, BLAS- and SDPA-friendly widths). Returns self."""
        for layer in self.layers:
            layer.pad_layout(multiple, head_multiple)
        return self
