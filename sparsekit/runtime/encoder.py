"""sparsekit's CPU encoder runtime: every layer of a compacted model in one fused op call per forward.

:class:`FusedEncoder` holds, per layer, the four matrices the fused layer multiplies -- Q, K and V stacked into one
``qkv`` matrix (one pass over the activations, written in the head-major layout attention reads), ``attn_out``,
``ffn_in`` and ``ffn_out`` -- each packed for the backend chosen for it (``dense``: BLAS; ``csr-cpu`` / ``bsr-cpu``:
sparsekit's kernels; ``int8-b4-cpu``: the int8 kernel, on the stored ints of an int8 artifact's matrices), plus
the LayerNorms, the attention widths and the activation. ``forward`` runs the op
``sparsekit::encoder_layers`` (:mod:`sparsekit.kernels.encoder`) on packed tokens: padding never enters a Linear,
attention runs per sequence, bias + activation and bias + residual are fused into the Linears' epilogues and each
LayerNorm follows in the same call.

A layer is post-LayerNorm (BERT: the compacted model, BERT / RoBERTa / DistilBERT ...; DeBERTa's with its relative-
position terms in the attention scores) or pre-LayerNorm with rotary positions, a GLU FFN and sliding-window
attention (ModernBERT); the op's docstring gives them.

Built by ``sparsekit.compile`` (which measures the backend of each matrix) from the layers of a compacted model
(:func:`layer_weights`) or of a Hugging Face encoder (:func:`stacked_layer`); which models it runs and how it is
put into them: :mod:`sparsekit.runtime.models`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from sparsekit.formats import Int8BlockFormat
from sparsekit.kernels import encoder as encoder_ops
from sparsekit.kernels.cpu_layout import pack_cpu_bsr, pack_cpu_csr
from sparsekit.runtime import packing

#: The matrices of one fused layer, in the op's order.
MATRICES = ("qkv", "attn_out", "ffn_in", "ffn_out")
#: Backends the fused layer can run a matrix on (names of sparsekit.backends), and the op's matrix kind of each.
RUNTIME_BACKENDS = {"dense": encoder_ops.DENSE, "csr-cpu": encoder_ops.SPARSE, "bsr-cpu": encoder_ops.SPARSE,
                    "int8-b4-cpu": encoder_ops.INT8}


@dataclass
class LayerWeights:
    """What one fused layer computes with (float32, CPU). matrices: name -> (weight ``[out, in]``, bias ``[out]``);
    qkv stacks Q ``[H dq]``, K ``[H dq]`` and V ``[H dv]`` rows, each head-major; a GLU's ffn_in stacks its FFN-in
    rows on its gate rows. norms: (weight, bias, eps) of LayerNorm 1 and 2 -- after attention and after the FFN
    (``norm`` POST_NORM), or before them (PRE_NORM; PRE_NORM_NO_FIRST: no LayerNorm 1, its tensors empty).
    window: -1, or the sliding window ``|i - j| <= window`` of the attention; rope: -1, or which rotary table
    (``(cos, sin)`` pair given to the forward) rotates Q and K. relative: DeBERTa's position keys and queries
    ``(posK, posQ)``, each float32 ``[R, heads * dq]`` (rows: relative-position buckets) or None for an absent
    term; None for other layers. int8: the matrices stored int8 (an int8 artifact),
    by name; their ``matrices`` weight is the dequantised ``scale[:, None] * q``, and ``int8-b4-cpu`` packs the
    stored ints as they are (no re-quantisation)."""

    matrices: dict[str, tuple[torch.Tensor, torch.Tensor]]
    heads: int
    dq: int
    dv: int
    scale: float
    activation: str
    norms: tuple[tuple[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor, float]]
    int8: dict[str, Int8BlockFormat] = field(default_factory=dict)
    norm: int = encoder_ops.POST_NORM
    glu: bool = False
    window: int = -1
    rope: int = -1
    relative: tuple[torch.Tensor | None, torch.Tensor | None] | None = None


def layer_weights(layer: nn.Module, activation: str) -> LayerWeights:
    """The fused view of a :class:`~sparsekit.export.modeling.CompactLayer` whose ``pad_layout`` has run (Q / K / V
    emit every head at the same width)."""
    from sparsekit.architectures import COMPACT

    att = layer.attention
    if not (att.padded or att.uniform or att.heads == 0):
        raise ValueError("call model.pad_layout() first: ragged heads need the padded layout")
    heads = att.heads
    return stacked_layer(COMPACT.layer_linears(layer), COMPACT.layer_norms(layer), heads,
                         att.qk_pad if heads else 1, att.v_pad if heads else 1, float(att.scale), activation)


@torch.no_grad()
def stacked_layer(linears: dict[str, nn.Module], norms: tuple[nn.Module, nn.Module], heads: int, dq: int, dv: int,
                  scale: float, activation: str, *, norm: int = encoder_ops.POST_NORM, window: int = -1,
                  rope: int = -1, relative: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
                  ) -> LayerWeights:
    """The LayerWeights of one layer: ``linears`` by matrix type, each an ``nn.Linear`` or a FormatLinear --
    query, key, value (Q / K ``[heads * dq, hidden]``, V ``[heads * dv, hidden]``) or one ``query+key+value``
    module stacking them; attn_out; ffn_in, or a GLU's ``ffn_in+ffn_gate``; ffn_out. ``norms``: LayerNorm 1 and 2
    (weight and bias; no bias: zeros); with ``norm`` PRE_NORM_NO_FIRST LayerNorm 1 is absent (any module).
    ``window`` / ``rope`` / ``relative``: see LayerWeights."""
    from sparsekit.export.modeling import _weight_bias

    device = torch.device("cpu")
    if "query+key+value" in linears:
        qkv = _weight_bias(linears["query+key+value"], device)
        if qkv[0].shape[0] != heads * (2 * dq + dv):
            raise ValueError(f"QKV has {qkv[0].shape[0]} rows, expected {heads} heads of {dq} / {dq} / {dv}")
    else:
        q, k, v = (_weight_bias(linears[n], device) for n in ("query", "key", "value"))
        if heads and (q[0].shape[0] != heads * dq or k[0].shape[0] != heads * dq or v[0].shape[0] != heads * dv):
            raise ValueError(f"Q / K / V have {q[0].shape[0]} / {k[0].shape[0]} / {v[0].shape[0]} rows, expected "
                             f"{heads} heads of {dq} / {dq} / {dv}")
        qkv = (torch.cat([q[0], k[0], v[0]]), torch.cat([q[1], k[1], v[1]]))
    glu = "ffn_in+ffn_gate" in linears
    ffn_in = linears["ffn_in+ffn_gate" if glu else "ffn_in"]
    matrices = {"qkv": qkv, "attn_out": _weight_bias(linears["attn_out"], device),
                "ffn_in": _weight_bias(ffn_in, device), "ffn_out": _weight_bias(linears["ffn_out"], device)}
    matrices = {n: (w.contiguous(), b.contiguous()) for n, (w, b) in matrices.items()}
    fused_norms = tuple(_norm_params(n) if i or norm != encoder_ops.PRE_NORM_NO_FIRST
                        else (torch.empty(0), torch.empty(0), 0.0) for i, n in enumerate(norms))
    int8 = _int8_matrices({**linears, "ffn_in": ffn_in})
    return LayerWeights(matrices, heads, dq, dv, scale, activation, fused_norms, int8, norm, glu, window, rope,
                        relative)


def _norm_params(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(weight, bias, eps)`` float32 of a LayerNorm (no bias: zeros)."""
    weight = module.weight.detach().float().contiguous()
    bias = module.bias.detach().float().contiguous() if module.bias is not None else torch.zeros_like(weight)
    return weight, bias, float(module.eps)


def _int8_matrices(linears: dict[str, nn.Module]) -> dict[str, Int8BlockFormat]:
    """The fused matrices stored int8 (an int8 artifact's FormatLinears), by name; qkv is int8 when one stacked
    QKV module is, or Q, K and V all are (their ints and scales stacked, exactly)."""
    def int8_of(module: nn.Module | None) -> Int8BlockFormat | None:
        fmt = getattr(module, "fmt", None)
        return fmt if isinstance(fmt, Int8BlockFormat) else None

    found = {name: int8_of(linears.get(name)) for name in MATRICES[1:]}
    if "query+key+value" in linears:
        found["qkv"] = int8_of(linears["query+key+value"])
    else:
        qkv = [int8_of(linears[n]) for n in ("query", "key", "value")]
        if all(f is not None for f in qkv):
            found["qkv"] = Int8BlockFormat.from_quantized(torch.cat([f.to_int8() for f in qkv]),
                                                          torch.cat([f.scale for f in qkv]))
    return {name: fmt for name, fmt in found.items() if fmt is not None}


def _position_table(pos: torch.Tensor | None, heads: int, dq: int, cols: int) -> torch.Tensor:
    """DeBERTa's posK / posQ ``[R, heads * dq]`` as the op reads it: ``[heads][dq][cols]`` (columns past R zero), or
    empty."""
    if pos is None:
        return torch.empty(0)
    table = torch.zeros(heads, dq, cols)
    table[:, :, :pos.shape[0]] = pos.float().view(pos.shape[0], heads, dq).permute(1, 2, 0)
    return table.reshape(-1).contiguous()


def _slots(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """``tensors`` padded with empty tensors to the op's MATRIX_TENSORS slots of one matrix."""
    return [*tensors, *(torch.empty(0) for _ in range(encoder_ops.MATRIX_TENSORS - len(tensors)))]


def _packed_matrix(weight: torch.Tensor, bias: torch.Tensor, backend: str, int8: Int8BlockFormat | None = None,
                   int8_weight_bits: int = 8) -> tuple[list[torch.Tensor], list[int]]:
    """The op's six tensors and five ints (kind, in, out, group_rows, chunk) of one matrix on ``backend``; an int8
    matrix's stored format ``int8`` is packed as stored on ``int8-b4-cpu`` (else ``weight`` is quantised to
    ``int8_weight_bits``)."""
    out, inp = weight.shape
    kind = RUNTIME_BACKENDS[backend]
    if backend == "dense":
        return _slots(weight, bias), [kind, inp, out, 1, 1]
    if backend == "int8-b4-cpu":
        from sparsekit.kernels.cpu_int8_layout import pack_cpu_int8_b4

        q = pack_cpu_int8_b4(int8 if int8 is not None else weight, int8_weight_bits)
        return [q.ptr, q.col, q.val, bias, q.scale, q.wsum], [kind, inp, out, 1, 1]
    packed = pack_cpu_csr(weight) if backend == "csr-cpu" else pack_cpu_bsr(weight, block=(4, 1))
    return _slots(packed.ptr, packed.col, packed.val, bias), [kind, inp, out, packed.group_rows, packed.chunk]


class FusedEncoder(nn.Module):
    """The encoder layers of a compacted model as one ``sparsekit::encoder_layers`` call.

    Args:
        layers: one :class:`LayerWeights` per layer.
        backends: per layer, the backend of each matrix of MATRICES (a key of RUNTIME_BACKENDS).
        int8_weight_bits: 8 or 7, the width ``int8-b4-cpu`` quantises a float matrix to (matrices stored int8 keep
            their ints).
    ``forward(tokens [N, hidden], cu_seqlens [nseq + 1])`` runs packed tokens; :meth:`run_padded` a padded batch.
    """

    def __init__(self, layers: list[LayerWeights], backends: list[dict[str, str]], int8_weight_bits: int = 8) -> None:
        super().__init__()
        if len(layers) != len(backends):
            raise ValueError(f"{len(layers)} layers but {len(backends)} backend choices")
        self.backends = [dict(b) for b in backends]
        self._tensors: list[torch.Tensor] = []
        self._meta: list[int] = []
        self._scalars: list[float] = []
        self._stage_log: list[dict[str, torch.Tensor]] | None = None  # set inside timing_stages()
        for lw, chosen in zip(layers, backends):
            unknown = {b for b in chosen.values() if b not in RUNTIME_BACKENDS}
            if unknown or set(chosen) != set(MATRICES):
                raise ValueError(f"each layer needs a backend for {MATRICES} among {tuple(RUNTIME_BACKENDS)}; "
                                 f"got {chosen}")
            pos_key, pos_query = lw.relative or (None, None)
            rows = next((p.shape[0] for p in (pos_key, pos_query) if p is not None), 0)
            cols = -(-rows // 16) * 16  # a whole number of vectors of every ISA
            bits = (encoder_ops.C2P if pos_key is not None else 0) | (encoder_ops.P2C if pos_query is not None else 0)
            self._meta += [lw.heads, lw.dq, lw.dv, encoder_ops.ACTIVATIONS[lw.activation], lw.norm, int(lw.glu),
                           lw.window, lw.rope, bits, cols]
            for name in MATRICES:
                tensors, meta = _packed_matrix(*lw.matrices[name], chosen[name], lw.int8.get(name), int8_weight_bits)
                self._tensors += tensors
                self._meta += meta
            for weight, bias, _ in lw.norms:
                self._tensors += [weight, bias]
            self._tensors += [_position_table(p, lw.heads, lw.dq, cols) for p in (pos_key, pos_query)]
            self._scalars += [lw.scale, lw.norms[0][2], lw.norms[1][2]]
        #: How many rotary tables (``(cos, sin)`` pairs) the forward needs.
        self.rotary_tables = max((lw.rope + 1 for lw in layers), default=0)
        #: Whether the forward needs ``rel_index`` (a layer has relative-position terms).
        self.relative = any(lw.relative is not None for lw in layers)

    def forward(self, tokens: torch.Tensor, cu_seqlens: torch.Tensor, rope: list[torch.Tensor] | tuple = (),
                rel_index: torch.Tensor | None = None) -> torch.Tensor:
        """Packed tokens ``[N, hidden]`` float32 -> ``[N, hidden]`` after every layer. rope: the rotary tables of
        the layers that have them, ``(cos_0, sin_0, cos_1, sin_1, ...)``, each float32 ``[N, dq]`` (the cos / sin
        of each packed token's position). rel_index: int32 ``[2 c + 1]``, the posK / posQ row of each distance
        ``-c .. c`` (layers with relative terms; c >= the longest sequence - 1)."""
        if len(rope) != 2 * self.rotary_tables:
            raise ValueError(f"the fused layers need {self.rotary_tables} rotary tables (cos, sin pairs); got "
                             f"{len(rope)} tensors")
        if self.relative and rel_index is None:
            raise ValueError("the fused layers have relative-position terms: give rel_index")
        if not self._meta:
            return tokens
        if self._stage_log is not None:
            out, stages = encoder_ops.encoder_layers_timed(tokens, cu_seqlens, self._tensors, self._meta,
                                                           self._scalars, rope, rel_index)
            self._stage_log.append(stages)
            return out
        return encoder_ops.encoder_layers(tokens, cu_seqlens, self._tensors, self._meta, self._scalars, rope,
                                          rel_index)

    @contextlib.contextmanager
    def timing_stages(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        """Context manager: inside the block every forward runs through
        :func:`sparsekit.kernels.encoder.encoder_layers_timed` (same output) and appends its stage times to the
        yielded list, one dict per forward (stage name -> int64 ns per layer ``[layers]``; the Linear stages are
        ``sparsekit.kernels.encoder.LINEAR_STAGES``). For profiles of the real forward, pieces timed where they run::

            with model.runtime.timing_stages() as calls:
                model(**inputs)
            linear_ms = sum(calls[0][s].sum().item() for s in LINEAR_STAGES) / 1e6
        """
        if self._stage_log is not None:
            raise RuntimeError("timing_stages() is already active on this runtime (blocks do not nest)")
        self._stage_log = log = []
        try:
            yield log
        finally:
            self._stage_log = None

    def run_padded(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """A padded batch ``[B, T, hidden]`` (attention_mask ``[B, T]``, 1 = real) -> ``[B, T, hidden]``: only the
        real tokens are computed; padding positions come back as zeros."""
        packed = packing.pack(hidden.float(), attention_mask)
        return packing.unpack(self(packed.tokens, packed.cu_seqlens), packed)

    def extra_repr(self) -> str:
        counts: dict[str, int] = {}
        for chosen in self.backends:
            for b in chosen.values():
                counts[b] = counts.get(b, 0) + 1
        return f"layers={len(self.backends)}, " + ", ".join(f"{b}={n}" for b, n in sorted(counts.items()))
