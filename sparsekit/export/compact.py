"""Exact compaction of a pruned BERT-family classifier (spec methods-smp-movement.md §3.8).

Input: a Hugging Face sequence classifier, token classifier or QA model (export/heads.py) whose pruned
weights are exact zeros (the pruning engine's output, or any checkpoint with zeros). Output: a CompactModel
with the same head that computes the same function with fewer dimensions, plus a report of what was
removed and why. Only the encoder layers change; the head reads the same hidden states.

Rules (W stored ``[out, in]``; ``act`` is the FFN activation):

- FFN neuron i with an empty FFN-in row: it outputs the constant act(b_U,i); fold ``D[:, i] * act(b_U,i)``
  into b_D and remove the neuron. With an empty FFN-out column: unused, remove it.
- V dimension j with an empty V row: its context is the constant b_V,j (attention rows sum to 1); fold
  ``O[:, j] * b_V,j`` into b_O and remove V row j / O column j. With an empty O column: unused, remove it.
- Q·K dimension j with an empty K row: its score term q_j * b_K,j is the same for every key and cancels
  in the softmax; remove j from Q and K. With an empty Q row and b_Q,j == 0: q_j = 0, remove it.
  An empty Q row with b_Q,j != 0 is NOT removable exactly (its term varies with the key): kept, reported.
- A head whose V dimensions are all removed contributes nothing (its context was folded): removed whole.
  A head that keeps V but no Q·K dimension attends uniformly: kept with Q·K width 0.
- Empty O / FFN-out rows: that output is the bias; kept (the residual needs the dimension), reported,
  skipped by sparse kernels.

Lossy mode (``min_row_weights = k``): before the exact rules, every row of the six matrices with fewer
than k kept weights is zeroed, so more rows become removable; report the accuracy change.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from sparsekit.architectures import COMPACTION_RULES, Architecture, architecture_for
from sparsekit.errors import ModelError
from sparsekit.export.heads import SEQUENCE, task_type_of
from sparsekit.export.modeling import HEAD_MODULES, CompactModel, LayerShape


@dataclass
class MatrixChange:
    """Shape of one matrix before -> after, and the rows / columns removed by reason."""

    layer: int
    matrix: str
    before: tuple[int, int]
    after: tuple[int, int]
    nnz_before: int
    nnz_after: int
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def density_after(self) -> float:
        n = self.after[0] * self.after[1]
        return self.nnz_after / n if n else 0.0


@dataclass
class CompactionReport:
    """What compaction did: per-matrix changes, per-layer head / FFN counts, notes on what stayed."""

    matrices: list[MatrixChange]
    layers: list[dict]
    notes: list[str]
    lossy_min_row_weights: int = 0
    lossy_rows_zeroed: int = 0
    lossy_weights_dropped: int = 0

    def params(self) -> tuple[int, int]:
        """(dense parameters of the six matrix types before, after)."""
        before = sum(m.before[0] * m.before[1] for m in self.matrices)
        after = sum(m.after[0] * m.after[1] for m in self.matrices)
        return before, after

    def to_json(self) -> dict:
        before, after = self.params()
        return {"matrices": [asdict(m) | {"density_after": m.density_after} for m in self.matrices],
                "layers": self.layers, "notes": self.notes,
                "lossy": {"min_row_weights": self.lossy_min_row_weights, "rows_zeroed": self.lossy_rows_zeroed,
                          "weights_dropped": self.lossy_weights_dropped},
                "summary": {"dense_params_before": before, "dense_params_after": after,
                            "fraction_after": after / before if before else 0.0,
                            "nnz_before": sum(m.nnz_before for m in self.matrices),
                            "nnz_after": sum(m.nnz_after for m in self.matrices)}}


def _encoder_parts(model: nn.Module) -> tuple[object, Architecture, nn.Module, list[nn.Module]]:
    """(config, architecture, base model, list of encoder layers) of a BERT-family classifier, with clear errors."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("compact() expects a Hugging Face sequence classifier, token classifier or QA model "
                         "(a model with .config)")
    arch = architecture_for(config)
    missing = [rule for rule in COMPACTION_RULES if rule not in arch.compaction]
    if missing:
        raise ModelError(f"exact compaction of {config.model_type} models is not supported "
                         f"(rules that do not hold: {', '.join(missing)})")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type {config.position_embedding_type!r} is not supported; "
                         f"only absolute position embeddings can be compacted")
    base = model.base_model
    if getattr(base.embeddings, "embeddings_project", None) is not None or hasattr(base, "embeddings_project"):
        raise ValueError("models with an embedding projection (ELECTRA with embedding_size != hidden_size) "
                         "are not supported by compaction yet")
    return config, arch, base, arch.layer_modules(base)


def _drop_sparse_rows(weight: torch.Tensor, k: int) -> tuple[torch.Tensor, int, int]:
    """Zero the rows of ``weight`` with 0 < nnz < k. Returns (weight, rows zeroed, weights dropped)."""
    nnz = (weight != 0).sum(dim=1)
    rows = (nnz > 0) & (nnz < k)
    if not rows.any():
        return weight, 0, 0
    weight = weight.clone()
    weight[rows] = 0
    return weight, int(rows.sum()), int(nnz[rows].sum())


@dataclass
class _LayerResult:
    shape: LayerShape
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # matrix -> (weight, bias)
    changes: list[MatrixChange]
    info: dict
    lossy_rows: int
    lossy_weights: int


def _align_groups(keep: torch.Tensor, group: int) -> torch.Tensor:
    """``keep`` extended to whole aligned groups of ``group`` consecutive indices (any kept member keeps all)."""
    if group <= 1 or keep.numel() == 0:
        return keep
    pad = -keep.numel() % group
    grouped = torch.cat([keep, keep.new_zeros(pad)]).view(-1, group).any(dim=1, keepdim=True)
    return grouped.expand(-1, group).reshape(-1)[:keep.numel()]


def _compact_layer(li: int, linears: dict[str, nn.Module], heads: int, head_dim: int, act,
                   min_row_weights: int, ffn_align: int = 1) -> _LayerResult:
    W = {k: m.weight.detach().clone() for k, m in linears.items()}
    b = {k: m.bias.detach().clone() for k, m in linears.items()}
    nnz_before = {k: int((w != 0).sum()) for k, w in W.items()}
    lossy_rows = lossy_weights = 0
    if min_row_weights > 0:
        for name in W:
            W[name], rows, dropped = _drop_sparse_rows(W[name], min_row_weights)
            lossy_rows += rows
            lossy_weights += dropped

    # V / O dimensions: an empty V row has the constant context b_V (folded into b_O); an empty O column is unused.
    v_empty, o_unused = ~W["value"].any(dim=1), ~W["attn_out"].any(dim=0)
    fold_v = v_empty & ~o_unused
    b["attn_out"] = b["attn_out"] + W["attn_out"][:, fold_v] @ b["value"][fold_v]
    v_keep = ~(v_empty | o_unused)
    # Q·K dimensions: an empty K row cancels in the softmax; an empty Q row only if its bias is 0.
    k_empty, q_empty = ~W["key"].any(dim=1), ~W["query"].any(dim=1)
    q_zero = q_empty & (b["query"] == 0) & ~k_empty
    q_stuck = q_empty & (b["query"] != 0) & ~k_empty
    qk_keep = ~(k_empty | q_zero)
    # Heads: a head with no V dimension left contributes nothing and goes whole.
    qk_idx, v_idx, qk_widths, v_widths, removed_heads, qk_in_removed = [], [], [], [], [], 0
    for h in range(heads):
        sl = slice(h * head_dim, (h + 1) * head_dim)
        vh = torch.nonzero(v_keep[sl]).flatten() + h * head_dim
        qh = torch.nonzero(qk_keep[sl]).flatten() + h * head_dim
        if vh.numel() == 0:
            removed_heads.append(h)
            qk_in_removed += qh.numel()
            continue
        qk_idx.append(qh)
        v_idx.append(vh)
        qk_widths.append(qh.numel())
        v_widths.append(vh.numel())
    empty = torch.zeros(0, dtype=torch.long)
    qk_idx = torch.cat(qk_idx) if qk_idx else empty
    v_idx = torch.cat(v_idx) if v_idx else empty
    # FFN neurons: an empty FFN-in row outputs act(b_U) (folded into b_D); an empty FFN-out column is unused.
    u_empty, d_unused = ~W["ffn_in"].any(dim=1), ~W["ffn_out"].any(dim=0)
    fold_u = u_empty & ~d_unused
    b["ffn_out"] = b["ffn_out"] + W["ffn_out"][:, fold_u] @ act(b["ffn_in"][fold_u])
    ffn_keep = ~(u_empty | d_unused)
    if ffn_align > 1:
        # Keep neurons in whole aligned groups, so FFN-out's 1 x ffn_align weight blocks stay aligned after the
        # columns are removed (int8 block kernels). A neuron kept only for alignment contributes nothing: its
        # FFN-out column is zero (unused, or zeroed here because its constant was folded into the bias above).
        aligned = _align_groups(ffn_keep, ffn_align)
        W["ffn_out"][:, aligned & fold_u] = 0
        ffn_keep = aligned
    ffn_idx = torch.nonzero(ffn_keep).flatten()

    new = {"query": (W["query"][qk_idx], b["query"][qk_idx]), "key": (W["key"][qk_idx], b["key"][qk_idx]),
           "value": (W["value"][v_idx], b["value"][v_idx]), "attn_out": (W["attn_out"][:, v_idx], b["attn_out"]),
           "ffn_in": (W["ffn_in"][ffn_idx], b["ffn_in"][ffn_idx]), "ffn_out": (W["ffn_out"][:, ffn_idx], b["ffn_out"])}
    qk_removed = qk_keep.numel() - qk_idx.numel()
    reasons = {
        "query": {"rows: K row empty": int(k_empty.sum()), "rows: Q row empty, zero bias": int(q_zero.sum()),
                  "rows: head removed": qk_in_removed},
        "key": {"rows: removed with Q": qk_removed},
        "value": {"rows: V row empty, bias folded into O": int(fold_v.sum()),
                  "rows: O column empty": int(o_unused.sum())},
        "attn_out": {"cols: removed with V": v_keep.numel() - v_idx.numel(),
                     "rows empty, output = bias": int((~new["attn_out"][0].any(dim=1)).sum())},
        "ffn_in": {"rows: FFN-in row empty, folded into FFN-out bias": int(fold_u.sum()),
                   "rows: FFN-out column empty": int(d_unused.sum())},
        "ffn_out": {"cols: removed with FFN-in": u_empty.numel() - ffn_idx.numel(),
                    "rows empty, output = bias": int((~new["ffn_out"][0].any(dim=1)).sum())},
    }
    changes = [MatrixChange(li, name, tuple(W[name].shape), tuple(w.shape), nnz_before[name], int((w != 0).sum()),
                            {k: v for k, v in reasons[name].items() if v}) for name, (w, _) in new.items()]
    shape = LayerShape(tuple(qk_widths), tuple(v_widths), int(ffn_idx.numel()))
    info = {"layer": li, "heads_kept": len(v_widths), "heads_removed": removed_heads, **shape.to_dict(),
            "q_rows_not_removable": int(q_stuck.sum())}
    return _LayerResult(shape, new, changes, info, lossy_rows, lossy_weights)


@torch.no_grad()
def compact(model: nn.Module, min_row_weights: int = 0, ffn_align: int = 1) -> tuple[CompactModel, CompactionReport]:
    """Compact ``model`` exactly (or lossily with ``min_row_weights > 0``). The input is not modified.

    ffn_align: keep FFN neurons in whole aligned groups of this many (the block width of a ``--block 1xC`` run),
    so FFN-out's 1 x C blocks survive compaction (export passes the recorded block's width).

    Returns the compacted model (eval mode, same device and dtype, the input's head: see heads.py) and the
    report. In exact mode the compacted outputs (logits, or QA start / end logits) equal the input's up to
    float rounding (fp32 max |Δ| ~1e-6).
    """
    from transformers.activations import ACT2FN

    if min_row_weights < 0:
        raise ValueError(f"min_row_weights must be >= 0, got {min_row_weights}")
    config, arch, base, layers = _encoder_parts(model)
    act = ACT2FN[config.hidden_act]
    if ffn_align < 1:
        raise ValueError(f"ffn_align must be >= 1, got {ffn_align}")
    results = [_compact_layer(i, arch.layer_linears(layer), arch.heads(config), arch.head_dim(config), act,
                              min_row_weights, ffn_align) for i, layer in enumerate(layers)]

    task_type = task_type_of(model)
    head_uses_pooler = task_type == SEQUENCE and config.model_type == "bert"
    compacted = CompactModel(
        config, [r.shape for r in results], copy.deepcopy(base.embeddings),
        copy.deepcopy(getattr(model, HEAD_MODULES[task_type])), task_type=task_type,
        pooler=copy.deepcopy(base.pooler) if head_uses_pooler else None, head_uses_pooler=head_uses_pooler)
    ref = next(model.parameters())
    compacted.to(device=ref.device, dtype=ref.dtype)
    for layer, result, old in zip(compacted.layers, results, layers):
        targets = layer.linears()
        for name, (w, b) in result.tensors.items():
            targets[name].weight.copy_(w)
            targets[name].bias.copy_(b)
        attn_norm, ffn_norm = arch.layer_norms(old)
        layer.attn_norm.load_state_dict(attn_norm.state_dict())
        layer.ffn_norm.load_state_dict(ffn_norm.state_dict())
    notes = [f"layer {r.info['layer']}: {r.info['q_rows_not_removable']} empty Q rows with a non-zero bias kept "
             f"(not removable exactly)" for r in results if r.info["q_rows_not_removable"]]
    report = CompactionReport([c for r in results for c in r.changes], [r.info for r in results], notes,
                              min_row_weights, sum(r.lossy_rows for r in results),
                              sum(r.lossy_weights for r in results))
    return compacted.eval(), report
