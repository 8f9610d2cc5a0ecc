"""LPAF: low-rank prune-and-factorize (Ren & Zhu 2024; spec methods-abp-cap-lpaf.md §3).

Pipeline, all inside the one training loop:

1. first-order pruning (movement scores, TopK with the sigmoid score regulariser) to the target
   density ``keep`` by step ``factorize_at * total`` (the cubic schedule's end);
2. per-matrix ranks under the same parameter budget, ``sum r_l (m_l + n_l) <= keep * sum m_l n_l``;
3. each pruned matrix ``W_s = W ⊙ M`` [out, in] is factorised into ``u [out, r] @ v [r, in]`` by a
   sparsity-aware SVD and its Linear becomes two Linears (``in -> r -> out``, the bias on the second);
4. the factors (and the rest of the model) are fine-tuned with mixed-rank fine-tuning;
5. the run saves ``W = u @ v`` as a Hugging Face checkpoint and records every rank in recipe.json, so
   the exporter stores the matrix in the LowRank format when that is smaller (export/lowrank.py).

Verified by the spec: first-order pruning, then factorising, with a sparsity-aware SVD initialisation
and mixed-rank fine-tuning. UNVERIFIED (the paper's formulas could not be read), each behind an option:

Defaults: ``init="score-weighted"``, ``rank_policy="uniform"``, ``mixed_rank="theseus"``. (On MiniLM at 10%,
``"masked-als"`` fits the kept entries but its product is far from W_s on the pruned ones, relative error
~1.2 vs W_s; ``"energy"`` gave the FFN matrices rank 2-3; both stay available as options.)

- ``init``: ``"masked-als"`` (pruned entries are "don't care": alternate ``X = M⊙W_s + (1-M)⊙uv`` and a
  rank-r SVD of X), ``"score-weighted"`` (rows weighted by ``sqrt`` of their first-order score mass, SVD of
  ``D W_s``, then ``u = D^-1 u``), or plain ``"svd"`` of W_s;
- ``rank_policy``: ``"energy"`` (greedy over all matrices: the singular direction with the largest share of
  its matrix's energy per parameter first) or ``"uniform"`` (the same fraction of every matrix);
- ``mixed_rank``: ``"theseus"`` (each factorised layer uses its frozen sparse parent with a probability
  annealed from ``theseus_p`` to 0 over the first half of stage 2), ``"nested-dropout"`` (each layer trains
  with a random leading rank ``r' in [r/4, r]`` half of the time), or ``"none"``;
- the schedule of stage 1 (cubic) and the split point ``factorize_at``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.models import set_submodule
from sparsekit.prune.extensions import Extension, TrainContext
from sparsekit.prune.options import METHODS, option

LPAF_INITS = ("masked-als", "score-weighted", "svd")
LPAF_RANK_POLICIES = ("energy", "uniform")
LPAF_MIXED_RANK = ("theseus", "nested-dropout", "none")


@dataclass
class LPAFOptions:
    """The lpaf_* settings of a run (method lpaf); PruneConfig inherits them as flat fields."""

    lpaf_init: str = option("score-weighted", "LPAF factor init: score-weighted | masked-als | svd (UNVERIFIED).",
                            panel=METHODS)
    lpaf_rank: str = option("uniform", "LPAF rank policy: uniform | energy (UNVERIFIED).", panel=METHODS)
    lpaf_mixed_rank: str = option("theseus", "LPAF mixed-rank fine-tuning: theseus | nested-dropout | none "
                                             "(UNVERIFIED).", panel=METHODS)
    lpaf_factorize_at: float = option(0.5, "LPAF: fraction of the run at which to factorise.", panel=METHODS)
    lpaf_als_iters: int = option(10, "LPAF: alternating least-squares iterations of the masked-als init.",
                                 cli=False)
    lpaf_theseus_p: float = option(0.5, "LPAF: initial probability that a factorised layer uses its sparse "
                                        "parent (theseus).", cli=False)


def _check_rank(rank, shape) -> int:
    kmax = min(shape)
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ValueError(f"rank must be an int, got {rank!r}")
    if not 0 <= rank <= kmax:
        raise ValueError(f"rank {rank} is out of range for a {shape[0]}x{shape[1]} matrix (0..{kmax})")
    return rank


def _balanced(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``rank`` SVD of ``x`` [m, n] split as ``u = U sqrt(s)`` [m, r], ``v = sqrt(s) Vh`` [r, n]."""
    U, s, Vh = torch.linalg.svd(x, full_matrices=False)
    root = s[:rank].sqrt()
    return U[:, :rank] * root, root[:, None] * Vh[:rank]


def sparsity_aware_svd(weight: torch.Tensor, mask: torch.Tensor, rank: int, method: str = "masked-als",
                       scores: torch.Tensor | None = None, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Factorise the pruned matrix ``W_s = weight ⊙ mask`` into ``u @ v`` of rank ``rank``.

    weight: float ``[out, in]``; mask: bool or 0/1 ``[out, in]``; scores: first-order scores ``[out, in]``
    (needed by ``"score-weighted"``). Returns float32 ``u [out, rank]`` and ``v [rank, in]`` (computed in
    float64). At ``rank = min(out, in)`` every method reproduces W_s exactly (up to float rounding).
    Methods: see the module docstring (all three are UNVERIFIED readings of the paper).
    """
    if weight.dim() != 2 or tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(f"weight must be 2-D and mask the same shape, got {list(weight.shape)} / {list(mask.shape)}")
    if method not in LPAF_INITS:
        raise ValueError(f"unknown LPAF init {method!r}; choose one of {', '.join(LPAF_INITS)}")
    rank = _check_rank(rank, tuple(weight.shape))
    m = mask.detach().to(torch.float64)
    ws = weight.detach().to(torch.float64) * m
    if method == "svd":
        u, v = _balanced(ws, rank)
    elif method == "masked-als":
        if iters < 1:
            raise ValueError(f"lpaf_als_iters must be >= 1, got {iters}")
        u, v = _balanced(ws, rank)
        for _ in range(iters):
            u, v = _balanced(m * ws + (1 - m) * (u @ v), rank)
    else:
        if scores is None:
            raise ValueError("the score-weighted LPAF init needs the first-order scores")
        mass = (scores.detach().to(torch.float64).clamp_min(0) * m).sum(1)
        d = mass / mass.mean() if float(mass.mean()) > 0 else torch.ones_like(mass)
        d = d.clamp_min(1e-3).sqrt()
        u, v = _balanced(d[:, None] * ws, rank)
        u = u / d[:, None]
    return u.float().contiguous(), v.float().contiguous()


def relative_error(weight: torch.Tensor, mask: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """``||W_s - u v||_F / ||W_s||_F`` with ``W_s = weight ⊙ mask`` (0.0 when both are zero)."""
    ws = weight.detach().double() * mask.double()
    diff = float(torch.linalg.norm(ws - u.double() @ v.double()))
    norm = float(torch.linalg.norm(ws))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)


def allocate_ranks(shapes: dict[str, tuple[int, int]], spectra: dict[str, torch.Tensor], budget: int,
                   policy: str = "energy") -> dict[str, int]:
    """Ranks per matrix with ``sum r (out + in) <= budget`` parameters (each at least 1, at most min(out, in)).

    shapes: name -> (out, in); spectra: name -> singular values (descending) of the pruned matrix (used by
    ``"energy"``). ``"uniform"``: ``r = floor(f * out * in / (out + in))`` with ``f = budget / sum(out * in)``.
    ``"energy"``: greedily take the singular direction with the largest ``s_i^2 / ||W||_F^2 / (out + in)``.
    """
    if policy not in LPAF_RANK_POLICIES:
        raise ValueError(f"unknown LPAF rank policy {policy!r}; choose one of {', '.join(LPAF_RANK_POLICIES)}")
    if budget < 0:
        raise ValueError(f"parameter budget must be >= 0, got {budget}")
    if policy == "uniform":
        frac = budget / max(1, sum(m * n for m, n in shapes.values()))
        return {k: max(1, min(min(m, n), math.floor(frac * m * n / (m + n)))) for k, (m, n) in shapes.items()}
    ranks = dict.fromkeys(shapes, 1)
    used = sum(m + n for m, n in shapes.values())
    gains = []
    for name, s in spectra.items():
        m, n = shapes[name]
        energy = s.double().square()
        total = float(energy.sum()) or 1.0
        gains += [(float(e) / total / (m + n), name, i) for i, e in enumerate(energy.tolist()) if i > 0]
    gains.sort(key=lambda g: -g[0])
    for _, name, i in gains:
        m, n = shapes[name]
        if ranks[name] == i and used + m + n <= budget:  # components are taken in order within a matrix
            ranks[name] += 1
            used += m + n
    return ranks


class LowRankLinear(nn.Module):
    """``y = (x vᵀ) uᵀ + b``: a factorised Linear. u ``[out, r]``, v ``[r, in]`` (trainable), bias ``[out]``.

    ``active_rank`` (nested dropout) uses only the leading components; ``use_parent`` (Theseus) computes
    with the frozen sparse parent ``sparse_weight`` ``[out, in]`` instead. Both are reset for evaluation.
    """

    def __init__(self, u: torch.Tensor, v: torch.Tensor, bias: nn.Parameter | None,
                 sparse_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.u, self.v = nn.Parameter(u), nn.Parameter(v)
        self.bias = bias
        self.out_features, self.in_features = u.shape[0], v.shape[1]
        self.register_buffer("sparse_weight", sparse_weight, persistent=False)
        self.active_rank: int | None = None
        self.use_parent = False

    @property
    def rank(self) -> int:
        return self.u.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_parent and self.training and self.sparse_weight is not None:
            return F.linear(x, self.sparse_weight, self.bias)
        r = self.rank if self.active_rank is None or not self.training else self.active_rank
        return F.linear(F.linear(x, self.v[:r]), self.u[:, :r], self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}"


class LPAFExtension(Extension):
    """Stage 2 of LPAF: factorise at ``factorize_at * total`` steps, then mixed-rank fine-tuning."""

    name = "lpaf"
    owns_finalize = True

    def __init__(self, init: str = "score-weighted", rank_policy: str = "uniform", mixed_rank: str = "theseus",
                 factorize_at: float = 0.5, als_iters: int = 10, theseus_p: float = 0.5) -> None:
        for value, allowed, what in ((init, LPAF_INITS, "lpaf_init"), (rank_policy, LPAF_RANK_POLICIES, "lpaf_rank"),
                                     (mixed_rank, LPAF_MIXED_RANK, "lpaf_mixed_rank")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        if not 0.0 < factorize_at < 1.0:
            raise ValueError(f"lpaf_factorize_at must be in (0, 1) (a fraction of the run), got {factorize_at}")
        if als_iters < 1:
            raise ValueError(f"lpaf_als_iters must be >= 1, got {als_iters}")
        if not 0.0 <= theseus_p <= 1.0:
            raise ValueError(f"lpaf_theseus_p must be in [0, 1], got {theseus_p}")
        self.init, self.rank_policy, self.mixed_rank = init, rank_policy, mixed_rank
        self.factorize_at, self.als_iters, self.theseus_p = factorize_at, als_iters, theseus_p
        self.factorize_step = 0
        self.layers: dict[str, LowRankLinear] = {}
        self.ranks: dict[str, int] = {}
        self.init_errors: dict[str, float] = {}
        self.init_kept_errors: dict[str, float] = {}
        self.shapes: dict[str, tuple[int, int]] = {}

    @classmethod
    def from_options(cls, options: LPAFOptions) -> "LPAFExtension":
        """The extension for a run's lpaf_* settings (a PruneConfig); ValueError for bad values."""
        return cls(options.lpaf_init, options.lpaf_rank, options.lpaf_mixed_rank, options.lpaf_factorize_at,
                   options.lpaf_als_iters, options.lpaf_theseus_p)

    def setup(self, ctx: TrainContext) -> None:
        if ctx.pruner is None or ctx.pruner.masking not in ("local", "smp-s", "global"):
            raise ValueError("LPAF factorises a first-order (TopK) pruned model: use the lpaf method's local masking")
        self.factorize_step = max(1, round(self.factorize_at * ctx.total))
        cooldown = ctx.config.cooldown if ctx.config.cooldown is not None else ctx.recipe.cooldown
        if self.factorize_step < ctx.total - round(cooldown * ctx.total):
            raise ValueError(f"lpaf_factorize_at ({self.factorize_at}) comes before the keep schedule reaches its "
                             f"target (cool-down {cooldown}); use lpaf_factorize_at >= 1 - cooldown")
        if ctx.config.stop_after is not None:
            raise ValueError("an LPAF run changes shape when it factorises, so it cannot be split with stop_after; "
                             "run it in one go (an interrupted run resumes from its last checkpoint before the "
                             "factorisation)")
        self.shapes = {name: tuple(m.weight.shape) for name, m in ctx.pruner.modules.items()}

    @torch.no_grad()
    def factorize(self, ctx: TrainContext) -> None:
        """Replace every masked matrix by its LowRankLinear (ranks under the keep budget) and train the factors."""
        pruner = ctx.pruner
        masks, weights, scores = {}, {}, {}
        for name, m in pruner.modules.items():
            m.eval()
            masks[name] = m.mask() > 0
            m.train()
            weights[name] = m.weight.detach().float()
            scores[name] = m.mask_scores.detach().float() if m.mask_scores is not None else None
        spectra = {n: torch.linalg.svdvals((weights[n] * masks[n]).double()) for n in masks}
        budget = math.floor(ctx.config.keep * sum(a * b for a, b in self.shapes.values()))
        self.ranks = allocate_ranks(self.shapes, spectra, budget, self.rank_policy)
        new_params = []
        for name, m in pruner.modules.items():
            u, v = sparsity_aware_svd(weights[name], masks[name], self.ranks[name], self.init, scores[name],
                                      self.als_iters)
            self.init_errors[name] = relative_error(weights[name], masks[name], u, v)
            ws = weights[name] * masks[name]
            norm = float(torch.linalg.norm(ws))
            self.init_kept_errors[name] = float(torch.linalg.norm(masks[name] * (ws - u @ v))) / norm if norm else 0.0
            layer = LowRankLinear(u.to(m.weight.device), v.to(m.weight.device), m.bias,
                                  (weights[name] * masks[name]).to(m.weight.device))
            m.weight.requires_grad_(False)  # the sparse parent is frozen from here on
            if m.mask_scores is not None:
                m.mask_scores.requires_grad_(False)
            set_submodule(ctx.model, name, layer)
            self.layers[name] = layer
            new_params += [layer.u, layer.v]
        self._add_to_optimizer(ctx, new_params)
        self.checkpointable = False

    @staticmethod
    def _add_to_optimizer(ctx: TrainContext, params: list[nn.Parameter]) -> None:
        weights = next((g for g in ctx.optimizer.param_groups if g.get("name") == "weights"), None)
        lr0 = weights.get("initial_lr", weights["lr"]) if weights else ctx.recipe.weight_lr
        if ctx.config.weight_lr is not None:
            lr0 = ctx.config.weight_lr
        ctx.optimizer.add_param_group({"params": params, "lr": lr0, "initial_lr": lr0, "name": "factors"})
        sched = getattr(ctx.scheduler, "scheduler", ctx.scheduler)
        # The LR schedule (LambdaLR) keeps one base LR and lambda per group: extend it for the new group.
        sched.base_lrs.append(lr0)
        sched.lr_lambdas.append(sched.lr_lambdas[0])
        ctx.optimizer.param_groups[-1]["lr"] = lr0 * sched.lr_lambdas[0](sched.last_epoch)
        ctx.trainable.extend(params)

    def before_step(self, ctx: TrainContext, step: int) -> None:
        if step == self.factorize_step and not self.layers:
            self.factorize(ctx)
        if not self.layers:
            return
        g = torch.Generator().manual_seed(ctx.config.seed * 104_729 + step)
        stage2 = max(1, ctx.total - self.factorize_step)
        anneal = max(0.0, 1.0 - (step - self.factorize_step) / max(1, stage2 // 2))
        for layer in self.layers.values():
            layer.use_parent, layer.active_rank = False, None
            if self.mixed_rank == "theseus":
                layer.use_parent = bool(torch.rand((), generator=g) < self.theseus_p * anneal)
            elif self.mixed_rank == "nested-dropout" and torch.rand((), generator=g) < 0.5 and layer.rank > 1:
                low = max(1, layer.rank // 4)
                layer.active_rank = int(torch.randint(low, layer.rank + 1, (), generator=g))

    def before_finalize(self, ctx: TrainContext) -> None:
        if not self.layers:  # the run ended before the factorisation step (e.g. very few steps)
            self.factorize(ctx)
        for layer in self.layers.values():
            layer.use_parent, layer.active_rank = False, None

    @torch.no_grad()
    def finalize(self, ctx: TrainContext) -> dict[str, torch.Tensor]:
        products = {name: (layer.u.detach() @ layer.v.detach(), layer.bias) for name, layer in self.layers.items()}
        masks = ctx.pruner.finalize()
        for name, (weight, bias) in products.items():
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device)
            linear.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
            if bias is not None:
                linear.bias = bias
            set_submodule(ctx.model, name, linear)
            masks[name] = torch.ones(weight.shape, dtype=torch.bool)
        return masks

    def density(self) -> float | None:
        if not self.ranks:
            return None
        params = sum(r * sum(self.shapes[n]) for n, r in self.ranks.items())
        return params / sum(a * b for a, b in self.shapes.values())

    def record(self) -> dict:
        return {"init": self.init, "rank_policy": self.rank_policy, "mixed_rank": self.mixed_rank,
                "factorize_at": self.factorize_at, "factorize_step": self.factorize_step,
                "als_iters": self.als_iters, "theseus_p": self.theseus_p, "parameter_fraction": self.density(),
                "ranks": [{"name": n, "rank": r, "shape": list(self.shapes[n])} for n, r in self.ranks.items()]}

    def report(self, ctx: TrainContext, masks: dict[str, torch.Tensor]) -> dict:
        errors = list(self.init_errors.values())
        return {"matrices": [{"name": n, "rank": r, "params": r * sum(self.shapes[n]),
                              "init_relative_error": self.init_errors.get(n),
                              "init_kept_relative_error": self.init_kept_errors.get(n)} for n, r in self.ranks.items()],
                "parameter_fraction": self.density(),
                "init_relative_error_mean": sum(errors) / len(errors) if errors else None}
