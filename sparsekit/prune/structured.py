"""Structure-aware SMP: masks that favour what exact compaction (export/compact.py) can remove.

SMP (weights frozen, scores learn the mask, SMP-S budgets per layer) with *coupled* scores: the score
fed to the TopK of every weight is its own score plus the (standardised) mean score of the structural
groups it belongs to, so whole groups rise and fall together and TopK keeps weights in few groups:

- FFN neuron i: FFN-in row i together with FFN-out column i (compaction removes the neuron when either is
  empty; coupling both keeps the budget off the half that would be removed anyway);
- V/O dimension j: V row j with O column j;
- Q/K dimension j: Q row j with K row j (an empty K row removes the pair);
- head h (``head_coupling``): all Q/K/V rows and O columns of head h (a head whose V dimensions are all
  gone is removed whole).

``S_eff = S + beta * std(S) * z(group mean) + beta_h * std(S) * z(head mean)`` where ``z`` standardises the
group means over the groups of that layer (the std factors carry no gradient). ``beta = 0`` is SMP-S.
An optional group-lasso regulariser (``group_lambda``) adds ``mean_g sqrt(mean_{e in g} sigmoid(S_e)^2)``.
The remaining-weight budget and its per-layer reallocation are SMP-S's (Pruner, masking "smp-s").

Fused modules (ModernBERT's ``Wqkv``, its GLU ``Wi``) are split into their logical matrices by row slices
(architectures.Matrix.slices); a GLU's gate row joins its FFN neuron's group.

Block pruning (blocks.py, ``--block 1x4``): the groups are defined on weights, so each layer's block scores are
expanded to ``[out, in]`` (every weight takes its block's score), the effective scores computed as above, and
block-pooled back (the mean over each block's weights) for the block TopK.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from sparsekit.architectures import GATE, architecture_for
from sparsekit.prune.extensions import Extension, TrainContext
from sparsekit.prune.options import METHODS, option


@dataclass
class StructuredOptions:
    """The struct_* settings of a run (method smp-struct); PruneConfig inherits them as flat fields."""

    struct_coupling: float = option(2.0, "smp-struct: row/column group score coupling.", panel=METHODS)
    struct_head_coupling: float = option(1.0, "smp-struct: head score coupling.", panel=METHODS)
    struct_lambda: float = option(0.0, "smp-struct: group-lasso regulariser weight.", panel=METHODS)

# (matrix type, axis of its group index): rows (dim 1 reduced) for Q, K, V, FFN-in (and a GLU's gate);
# columns for O, FFN-out. A member a layer does not have (the gate of a plain FFN) is left out.
GROUPS = {"ffn": (("ffn_in", 1), ("ffn_out", 0), (GATE, 1)), "vo": (("value", 1), ("attn_out", 0)),
          "qk": (("query", 1), ("key", 1))}


def _members(layer: dict[str, torch.Tensor], kind: str) -> tuple[tuple[str, int], ...]:
    return tuple((t, ax) for t, ax in GROUPS[kind] if t in layer)


def _group_sums(layer: dict[str, torch.Tensor], kind: str) -> tuple[torch.Tensor, int]:
    """Sum of scores per group ``[G]`` and the number of weights per group."""
    members = _members(layer, kind)
    sums = sum(layer[t].sum(dim=ax) for t, ax in members)
    size = sum(layer[t].shape[ax] for t, ax in members)
    return sums, size


def _standardise(x: torch.Tensor) -> torch.Tensor:
    std = x.detach().std() if x.numel() > 1 else x.new_zeros(())
    return (x - x.detach().mean()) / (std + 1e-12) if float(std) > 0 else x * 0.0


def effective_scores(layer: dict[str, torch.Tensor], heads: int, beta: float,
                     beta_head: float) -> dict[str, torch.Tensor]:
    """Coupled scores of one layer. ``layer``: matrix type -> scores ``[out, in]`` (all six types, and the
    gate of a GLU FFN).

    Returns the same keys with ``S_eff`` of the same shapes (differentiable in the scores).
    """
    out = {}
    group_terms: dict[str, torch.Tensor] = {}
    for kind in GROUPS:
        sums, size = _group_sums(layer, kind)
        group_terms[kind] = _standardise(sums / size)
    head_terms = {}
    if beta_head:
        for kind in ("qk", "vo"):
            (a, ax_a), (b, ax_b) = GROUPS[kind]
            head_sum = (layer[a].sum(dim=ax_a) + layer[b].sum(dim=ax_b)).reshape(heads, -1).sum(1)
            head_terms[kind] = head_sum
        per_head = (head_terms["qk"] + head_terms["vo"])
        n_head = sum(layer[t].numel() for t in ("query", "key", "value", "attn_out")) / heads
        head_z = _standardise(per_head / n_head)
    for kind in GROUPS:
        for mtype, axis in _members(layer, kind):
            s = layer[mtype]
            scale = s.detach().std() if s.numel() > 1 else s.new_zeros(())
            term = beta * group_terms[kind]
            if beta_head and kind in ("qk", "vo"):
                term = term + beta_head * head_z.repeat_interleave(s.shape[1 - axis] // heads)
            term = term * scale
            out[mtype] = s + (term[:, None] if axis == 1 else term[None, :])
    return out


def group_lasso(layer: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over this layer's groups of ``sqrt(mean_e sigmoid(S_e)^2)`` (pushes whole groups to 0)."""
    terms = []
    for kind in GROUPS:
        members = _members(layer, kind)
        sq = sum(torch.sigmoid(layer[t]).square().sum(dim=ax) for t, ax in members)
        size = sum(layer[t].shape[ax] for t, ax in members)
        terms.append((sq / size + 1e-12).sqrt().mean())
    return torch.stack(terms).mean()


@torch.no_grad()
def structure_stats(model, masks: dict[str, torch.Tensor]) -> dict:
    """What exact compaction can remove, from the masks (bool ``[out, in]``) and the model's Q biases.

    Per layer and in total: removable FFN neurons (empty FFN-in row or FFN-out column), V/O dimensions
    (empty V row or O column), Q/K dimensions (empty K row, or empty Q row with a zero Q bias), whole heads
    (every V/O dimension removable), and the compacted dense size of the six matrices as a fraction of the
    original (the same rule as compact.py: removed heads also drop their Q/K dimensions).
    """
    from sparsekit.models import prunable_matrices

    layers: dict[int, dict[str, str]] = defaultdict(dict)
    for m in prunable_matrices(model):
        layers[m.layer][m.type] = m.name
    heads = architecture_for(model.config).heads(model.config)
    hidden = model.config.hidden_size
    per_layer, tot = [], defaultdict(int)
    for li in sorted(layers):
        names = layers[li]
        if set(names) != {"query", "key", "value", "attn_out", "ffn_in", "ffn_out"} or any(
                n not in masks for n in names.values()):
            continue  # fused modules (ModernBERT): not compacted, see architectures.MODERNBERT.skipped
        mk = {t: masks[n].bool().cpu() for t, n in names.items()}
        q_bias = model.get_submodule(names["query"]).bias
        q_bias = torch.zeros(mk["query"].shape[0]) if q_bias is None else q_bias.detach().cpu()
        ffn = ~mk["ffn_in"].any(1) | ~mk["ffn_out"].any(0)
        vo = ~mk["value"].any(1) | ~mk["attn_out"].any(0)
        qk = ~mk["key"].any(1) | (~mk["query"].any(1) & (q_bias == 0))
        head_dim = vo.numel() // heads
        head_gone = vo.reshape(heads, head_dim).all(1)
        qk_kept = int((~qk).reshape(heads, -1)[~head_gone].sum())
        vo_kept = int((~vo).sum())
        ffn_kept = int((~ffn).sum())
        entry = {"layer": li, "ffn_removable": int(ffn.sum()), "ffn_total": ffn.numel(),
                 "vo_removable": int(vo.sum()), "vo_total": vo.numel(), "qk_removable": int(qk.sum()),
                 "qk_total": qk.numel(), "heads_removable": int(head_gone.sum()), "heads_total": heads,
                 "params_before": hidden * (2 * qk.numel() + 2 * vo.numel() + 2 * ffn.numel()),
                 "params_after": hidden * (2 * qk_kept + 2 * vo_kept + 2 * ffn_kept)}
        per_layer.append(entry)
        for k, v in entry.items():
            if k != "layer":
                tot[k] += v
    total = dict(tot)
    frac = {k.replace("_removable", ""): total[k] / total[k.replace("removable", "total")]
            for k in ("ffn_removable", "vo_removable", "qk_removable", "heads_removable") if total.get(k, 0) or
            total.get(k.replace("removable", "total"))}
    total["removable_fraction"] = frac
    total["compacted_fraction"] = total["params_after"] / total["params_before"] if total.get("params_before") else 1.0
    return {"total": total, "layers": per_layer}


class StructuredSMPExtension(Extension):
    """Installs the coupled scores on the Pruner's layers and adds the optional group-lasso term."""

    name = "structured"

    def __init__(self, coupling: float = 2.0, head_coupling: float = 1.0, group_lambda: float = 0.0) -> None:
        if coupling < 0 or head_coupling < 0 or group_lambda < 0:
            raise ValueError("struct_coupling, struct_head_coupling and struct_lambda must be >= 0")
        self.coupling, self.head_coupling, self.group_lambda = coupling, head_coupling, group_lambda
        self.layers: list[dict] = []
        self.matrices: dict = {}  # module type (possibly joined) -> its architectures.Matrix
        self.heads = 0
        self._cache: dict = {}  # (layer index, grad enabled) -> effective scores; cleared every step

    @classmethod
    def from_options(cls, options: StructuredOptions) -> "StructuredSMPExtension":
        """The extension for a run's struct_* settings (a PruneConfig); ValueError for bad values."""
        return cls(options.struct_coupling, options.struct_head_coupling, options.struct_lambda)

    def setup(self, ctx: TrainContext) -> None:
        pruner = ctx.pruner
        if pruner is None or pruner.masking not in ("smp-s", "local"):
            raise ValueError("structure-aware SMP couples TopK scores: use masking smp-s or local")
        arch = architecture_for(ctx.model.config)
        self.heads = arch.heads(ctx.model.config)
        by_layer: dict[int, dict] = defaultdict(dict)
        for m in pruner.matrices:
            by_layer[m.layer][m.type] = pruner.modules[m.name]
        self.layers = [by_layer[li] for li in sorted(by_layer)]
        self.matrices = {t: arch.matrix(t) for layer in self.layers for t in layer}
        for i, layer in enumerate(self.layers):
            for mtype, module in layer.items():
                module.score_fn = self._score_fn(i, mtype)

    def _scores(self, index: int) -> dict[str, torch.Tensor]:
        """Logical matrix type -> elementwise scores ``[out, in]`` of one layer (block scores expanded, a fused
        module's scores split by its row slices)."""
        scores = {}
        for mtype, module in self.layers[index].items():
            s = module.block.expand(module.mask_scores, module.weight.shape)
            scores.update({t: s[rows] for t, rows in self.matrices[mtype].slices(s.shape[0]).items()})
        return scores

    def _score_fn(self, index: int, mtype: str):
        def fn() -> torch.Tensor:
            key = (index, torch.is_grad_enabled())
            if key not in self._cache:  # one computation per layer and forward pass, shared by its matrices
                self._cache[key] = effective_scores(self._scores(index), self.heads, self.coupling,
                                                    self.head_coupling)
            parts = [self._cache[key][t] for t in self.matrices[mtype].types]
            return self.layers[index][mtype].block.pool(parts[0] if len(parts) == 1 else torch.cat(parts, dim=0))
        return fn

    def before_step(self, ctx, step):
        self._cache = {}

    def after_step(self, ctx, step):
        self._cache = {}
        return False

    def before_finalize(self, ctx):
        self._cache = {}

    def extra_loss(self, ctx, step, example_ids, labels, logits):
        if not self.group_lambda:
            return None
        return self.group_lambda * torch.stack([group_lasso(self._scores(i)) for i in range(len(self.layers))]).mean()

    def record(self) -> dict:
        return {"coupling": self.coupling, "head_coupling": self.head_coupling, "group_lambda": self.group_lambda}
