"""CAP: contrastive pruning losses (Xu et al., AAAI 2022; spec methods-abp-cap-lpaf.md §2).

Three memory banks of sentence representations of the *training examples*, indexed by dataset
position: PrC (the model before any pruning step, encoded once at the start), SnC (snapshots of the
student, encoded at the start of every epoch after the first, or every ``snapshot_every`` steps; at
most ``max_snapshots`` are kept, oldest dropped first, so memory is bounded) and FiC (the fine-tuned
teacher, encoded once; the same teacher gives the KD logits). Each bank adds an instance term (same
example id = positive) and a label term (same label = positive; off for regression) to the loss:

    L_aux = sum over banks b of [w_u * L^u_b + w_s * L^s_b]

CAP is orthogonal to the mask scorer, so it combines with every method (movement, soft movement,
SMP, AbP, ...). The loss follows the official code exactly, including its normaliser (the sum over
anchors of the per-anchor mean log-probability of the positives, divided by the total number of
positive pairs; ``normalizer="code"``). ``normalizer="mean"`` (the standard per-anchor mean) is the
documented alternative. Banks are encoded in eval mode without gradient and kept on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.data.encode import MODEL_INPUTS
from sparsekit.prune.extensions import Extension, TrainContext
from sparsekit.prune.options import METHODS, option

CAP_MODULES = ("prc", "snc", "fic")
CAP_REPRESENTATIONS = ("pooler", "cls", "mean")
CAP_NORMALIZERS = ("code", "mean")
SELF_SCORE = -1e6  # the anchor's own detached copy (the official code's value)


@dataclass
class CAPOptions:
    """The cap / cap_* settings of a run (CAP on top of any method); PruneConfig inherits them as flat fields."""

    cap: str | None = option(None, "CAP contrastive modules on top of the method, e.g. prc,snc,fic (fic needs "
                                   "--teacher).", panel=METHODS)
    cap_weight: float = option(0.1, "CAP instance-term weight w_u.", panel=METHODS)
    cap_label_weight: float = option(10.0, "CAP label-term weight w_s.", panel=METHODS)
    cap_temperature: float = option(0.1, "CAP contrastive temperature.", panel=METHODS)
    cap_extra_negatives: int = option(4096, "CAP random extra bank vectors per step.", panel=METHODS)
    cap_max_snapshots: int = option(4, "CAP: most snapshots kept in the SnC bank (bounded memory).", panel=METHODS)
    cap_snapshot_every: int | None = option(None, "CAP: snapshot every N steps [every epoch].", panel=METHODS)
    cap_representation: str | None = option(None, "CAP: pooler | cls | mean [pooler if present].", panel=METHODS)
    cap_normalizer: str = option("code", "CAP loss normaliser: code (official) | mean (per-anchor mean).",
                                 panel=METHODS)
    cap_fp16_banks: bool = option(False, "CAP: keep the memory banks in fp16 (half the memory).", cli=False)


def parse_modules(spec: str | None) -> tuple[str, ...]:
    """``"prc,snc,fic"`` -> ``("prc", "snc", "fic")``; ValueError naming an unknown or repeated module."""
    if spec is None or not spec.strip():
        return ()
    parts = [p.strip().lower() for p in spec.split(",") if p.strip()]
    unknown = [p for p in parts if p not in CAP_MODULES]
    if unknown:
        raise ValueError(f"unknown CAP module(s) {unknown}; choose from {', '.join(CAP_MODULES)} (comma-separated)")
    if len(set(parts)) != len(parts):
        raise ValueError(f"CAP module listed twice in {spec!r}")
    return tuple(parts)


def representation(output, attention_mask: torch.Tensor | None, kind: str) -> torch.Tensor:
    """Sentence vectors ``[B, H]`` (not normalised) from a base model's output.

    ``pooler``: the pooler output tanh(Dense(h_CLS)) (CAP's ``alignrep=cls`` for classification);
    ``cls``: the last layer's [CLS] state; ``mean``: the attention-mask-aware mean over tokens.
    """
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    if kind == "pooler":
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            raise ValueError("this model has no pooler; use cap_representation='cls' or 'mean'")
        return pooled
    if kind == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def contrastive_terms(z: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor | None, candidates: torch.Tensor,
                      cand_ids: torch.Tensor, cand_labels: torch.Tensor | None, temperature: float,
                      normalizer: str = "code") -> tuple[torch.Tensor, torch.Tensor | None]:
    """CAP's instance and label terms for one bank.

    z: anchors ``[B, H]`` (unit vectors, with gradient); ids ``[B]`` int64 example ids; labels ``[B]``
    (None = no label term). candidates ``[N', H]`` (unit vectors, no gradient: bank vectors of the batch
    and of the random extra examples), cand_ids ``[N']``, cand_labels ``[N']``. The detached anchors are
    prepended as candidates, so ``N = B + N'``; each anchor's own copy is excluded (score -1e6).
    Returns ``(instance, label)`` scalars (label None without labels).
    """
    if normalizer not in CAP_NORMALIZERS:
        raise ValueError(f"unknown CAP normalizer {normalizer!r}; choose one of {', '.join(CAP_NORMALIZERS)}")
    b = z.shape[0]
    all_c = torch.cat([z.detach(), candidates.to(z.dtype)])
    all_ids = torch.cat([ids, cand_ids])
    scores = z @ all_c.T / temperature
    self_mask = torch.zeros_like(scores, dtype=torch.bool)
    self_mask[torch.arange(b), torch.arange(b)] = True
    scores = scores.masked_fill(self_mask, SELF_SCORE)
    logp = scores - torch.logsumexp(scores, dim=1, keepdim=True)

    def term(pos: torch.Tensor) -> torch.Tensor:
        pos = pos & ~self_mask
        count = pos.sum(1)
        has = count > 0
        if not bool(has.any()):
            return z.sum() * 0.0
        per_anchor = (logp * pos).sum(1)[has] / count[has]
        if normalizer == "code":
            return -per_anchor.sum() / count.sum()
        return -per_anchor.mean()

    instance = term(ids[:, None] == all_ids[None, :])
    label = None
    if labels is not None and cand_labels is not None:
        all_labels = torch.cat([labels, cand_labels])
        label = term(labels[:, None] == all_labels[None, :])
    return instance, label


@torch.no_grad()
def encode_dataset(model: nn.Module, dataset, collate, kind: str, batch_size: int, device) -> torch.Tensor:
    """L2-normalised representations ``[N, H]`` float32 (CPU) of every example of ``dataset``, in order.

    Runs ``model.base_model`` in eval mode without gradient (the training mode is restored after).
    Examples are batched by length for speed; the result is indexed by dataset position.
    """
    was_training = model.training
    model.eval()
    base = model.base_model
    order = sorted(range(len(dataset)), key=lambda i: len(dataset[i]["input_ids"]))
    out = None
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = collate([dataset[i] for i in idx])
            batch = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}  # no targets
            rep = F.normalize(representation(base(**batch), batch["attention_mask"], kind).float(), dim=-1).cpu()
            if out is None:
                out = torch.zeros(len(dataset), rep.shape[-1])
            out[torch.tensor(idx)] = rep
    finally:
        model.train(was_training)
    return out


class CAPExtension(Extension):
    """The three banks, their refresh schedule, and the auxiliary loss added to the task (+ KD) loss."""

    name = "cap"

    def __init__(self, modules: tuple[str, ...], weight: float = 0.1, label_weight: float = 10.0,
                 temperature: float = 0.1, extra_negatives: int = 4096, max_snapshots: int = 4,
                 snapshot_every: int | None = None, representation_kind: str | None = None,
                 normalizer: str = "code", bank_dtype: torch.dtype = torch.float32) -> None:
        if not modules:
            raise ValueError("CAP needs at least one module (prc, snc, fic)")
        if temperature <= 0:
            raise ValueError(f"cap_temperature must be > 0, got {temperature}")
        if weight < 0 or label_weight < 0:
            raise ValueError("CAP weights must be >= 0")
        if extra_negatives < 0:
            raise ValueError(f"cap_extra_negatives must be >= 0, got {extra_negatives}")
        if max_snapshots < 1:
            raise ValueError(f"cap_max_snapshots must be >= 1, got {max_snapshots}")
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError(f"cap_snapshot_every must be >= 1 when given, got {snapshot_every}")
        if representation_kind is not None and representation_kind not in CAP_REPRESENTATIONS:
            raise ValueError(f"unknown cap_representation {representation_kind!r}; choose one of "
                             f"{', '.join(CAP_REPRESENTATIONS)}")
        if normalizer not in CAP_NORMALIZERS:
            raise ValueError(f"unknown cap_normalizer {normalizer!r}; choose one of {', '.join(CAP_NORMALIZERS)}")
        self.modules, self.weight, self.label_weight = modules, weight, label_weight
        self.temperature, self.extra_negatives = temperature, extra_negatives
        self.max_snapshots, self.snapshot_every = max_snapshots, snapshot_every
        self.kind, self.normalizer, self.bank_dtype = representation_kind, normalizer, bank_dtype
        self.banks: dict[str, list[torch.Tensor]] = {}
        self.snapshot_steps: list[int] = []
        self._captured: tuple | None = None
        self._hook = None
        self.last_terms: dict[str, float] = {}
        self.labels: torch.Tensor | None = None

    @classmethod
    def from_options(cls, options: CAPOptions) -> "CAPExtension":
        """The extension for a run's cap / cap_* settings (a PruneConfig); ValueError for bad values."""
        return cls(parse_modules(options.cap), options.cap_weight, options.cap_label_weight,
                   options.cap_temperature, options.cap_extra_negatives, options.cap_max_snapshots,
                   options.cap_snapshot_every, options.cap_representation, options.cap_normalizer,
                   torch.float16 if options.cap_fp16_banks else torch.float32)

    # -- banks ----------------------------------------------------------------------------------
    def _encode(self, ctx: TrainContext, model: nn.Module) -> torch.Tensor:
        return encode_dataset(model, ctx.train_set, ctx.collate, self.kind, ctx.config.eval_batch_size,
                              ctx.device).to(self.bank_dtype)

    def setup(self, ctx: TrainContext) -> None:
        if "fic" in self.modules and ctx.teacher is None:
            raise ValueError("the CAP module fic needs a fine-tuned teacher: pass --teacher <model dir>")
        base = ctx.model.base_model
        if self.kind is None:
            self.kind = "pooler" if getattr(base, "pooler", None) is not None else "cls"
        if self.kind == "pooler" and getattr(base, "pooler", None) is None:
            raise ValueError("cap_representation 'pooler' needs a model with a pooler; use 'cls' or 'mean'")
        self.labels = ctx.task_type.example_labels(ctx.train_set)
        self._hook = base.register_forward_hook(self._capture, with_kwargs=True)
        self.banks = {m: [] for m in self.modules}

    def _capture(self, module, args, kwargs, output) -> None:
        self._captured = (output, kwargs.get("attention_mask"))

    def after_prepare(self, ctx: TrainContext) -> None:
        # PrC: the model before any pruning step (all masks 1, or nothing pruned yet); FiC: the teacher.
        if "prc" in self.modules and not self.banks["prc"]:
            self.banks["prc"] = [self._encode(ctx, ctx.model)]
        if "fic" in self.modules and not self.banks["fic"]:
            self.banks["fic"] = [self._encode(ctx, ctx.teacher)]

    def before_step(self, ctx: TrainContext, step: int) -> None:
        if "snc" not in self.modules or step == 0:
            return
        every = self.snapshot_every or ctx.steps_per_epoch
        if step % every == 0 and step not in self.snapshot_steps:
            self.banks["snc"].append(self._encode(ctx, ctx.model))
            self.snapshot_steps.append(step)
            del self.banks["snc"][:-self.max_snapshots]  # bounded memory: keep the newest
            del self.snapshot_steps[:-self.max_snapshots]

    # -- loss -----------------------------------------------------------------------------------
    def extra_loss(self, ctx: TrainContext, step: int, example_ids: torch.Tensor, labels: torch.Tensor,
                   logits: torch.Tensor) -> torch.Tensor | None:
        if self._captured is None:
            raise RuntimeError("CAP did not see the student's representation (forward hook missing)")
        output, attention = self._captured
        self._captured = None
        z = F.normalize(representation(output, attention, self.kind).float(), dim=-1)
        ids = example_ids.to(z.device)
        use_labels = self.labels is not None and self.label_weight > 0
        batch_labels = labels.to(z.device) if use_labels else None
        n = len(ctx.train_set)
        g = torch.Generator().manual_seed(ctx.config.seed * 7_919 + step)
        total = z.new_zeros(())
        terms = {}
        for name in self.modules:
            vectors = self.banks.get(name) or []
            k = len(vectors)
            if k == 0:
                continue  # SnC before its first snapshot
            extra = torch.randperm(n, generator=g)[:min(n, self.extra_negatives // k)]
            pick = torch.cat([ids.cpu(), extra])
            cand = torch.stack([v[pick] for v in vectors], dim=1)  # [B + E, K, H]
            cand_ids = pick[:, None].expand(-1, k).reshape(-1)
            cand = cand.reshape(-1, cand.shape[-1]).to(z.device, torch.float32)
            cand_labels = self.labels[cand_ids].to(z.device) if use_labels else None
            inst, lab = contrastive_terms(z, ids, batch_labels, cand, cand_ids.to(z.device), cand_labels,
                                          self.temperature, self.normalizer)
            total = total + self.weight * inst
            terms[f"{name}_instance"] = float(inst.detach())
            if lab is not None:
                total = total + self.label_weight * lab
                terms[f"{name}_label"] = float(lab.detach())
        self.last_terms = terms
        return total

    # -- records --------------------------------------------------------------------------------
    def record(self) -> dict:
        return {"modules": list(self.modules), "weight_instance": self.weight, "weight_label": self.label_weight,
                "temperature": self.temperature, "extra_negatives": self.extra_negatives,
                "max_snapshots": self.max_snapshots, "snapshot_every": self.snapshot_every,
                "snapshot_steps": self.snapshot_steps, "representation": self.kind, "normalizer": self.normalizer,
                "bank_dtype": str(self.bank_dtype).replace("torch.", ""), "last_terms": self.last_terms}

    def before_finalize(self, ctx: TrainContext) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def state_dict(self) -> dict:
        return {"banks": self.banks, "snapshot_steps": self.snapshot_steps}

    def load_state_dict(self, state: dict) -> None:
        self.banks = {k: list(v) for k, v in state["banks"].items()}
        self.snapshot_steps = list(state["snapshot_steps"])
