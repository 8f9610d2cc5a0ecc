"""PruneConfig: every setting of a pruning (or fine-tuning) run, shared by the Python API and the CLI."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class PruneConfig:
    """Settings of one run. ``None`` means "the method's default" (see recipes.py).

    method: smp-s, smp-l, smp-struct, movement, soft-movement, magnitude, l0, abp, lpaf or finetune.
    keep: remaining fraction of the encoder's prunable weights at the end (0.1 = 10% remaining).
    task / data_dir: GLUE task name and data root (default: ../shared/data/glue or $SPARSEKIT_DATA_DIR).
    model: "minilm" (shipped all-MiniLM-L6-v2), a local checkpoint directory, or "random:<shape>".
    train_samples / eval_samples: fixed, seeded subsets of train / dev (None = all).
    steps: optimisation steps (None = ``epochs`` passes over the training set).
    warmup / cooldown: fractions of the run at keep = 1 (start) and keep = v_f (end).
    lr_warmup: fraction of the run with a linear learning-rate warm-up (then linear decay to 0).
    lambda_ramp: override how the regulariser's lambda reaches regularizer_lambda: "whole-run" (SMP code),
        "follow-threshold" (movement paper: lambda_f * tau_t / tau_f), "constant", "adaptive".
    masking: override the method's masking function ("local", "smp-s", "global", ...).
    teacher: a fine-tuned model directory for knowledge distillation (T = kd_temperature, alpha = kd_alpha).
    abp_*: Adapting-by-Pruning (method abp): drift gamma per step (None = init_mean / (0.6 * steps)), its
        schedule ("constant", or the UNVERIFIED "follow-lr"), forward / backward temperatures t_l / t_s.
    cap / cap_*: CAP contrastive losses on top of any method: modules "prc,snc,fic" (fic needs ``teacher``),
        instance / label weights w_u / w_s, temperature, random extra examples per step, the snapshot bank's
        cap and refresh interval (None = every epoch), representation (pooler / cls / mean; None = pooler if
        the model has one), normaliser ("code" = the official code's, "mean" = per-anchor mean), fp16 banks.
    lpaf_*: LPAF (method lpaf), all UNVERIFIED readings of the paper: factor initialisation (masked-als,
        score-weighted, svd), rank policy (energy, uniform), mixed-rank fine-tuning (theseus, nested-dropout,
        none), the fraction of the run at which matrices are factorised, ALS iterations, Theseus probability.
    struct_*: structure-aware SMP (method smp-struct): group / head score coupling and group-lasso lambda.
    save_every: checkpoint interval in steps (for resume); stop_after: end this invocation after that many
        steps as if interrupted (e.g. to fit a job time limit); resume continues from the last checkpoint.
    """

    method: str = "smp-s"
    keep: float = 0.1
    task: str = "sst2"
    model: str = "minilm"
    output_dir: str = "runs/sst2-smp-s"
    data_dir: str | None = None
    train_samples: int | None = None
    eval_samples: int | None = None
    steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 32
    eval_batch_size: int = 128
    max_length: int = 128
    seed: int = 42
    weight_lr: float | None = None
    score_lr: float | None = None
    head_lr: float | None = None
    regularizer_lambda: float | None = None
    warmup: float | None = None
    cooldown: float | None = None
    lr_warmup: float = 0.0
    smp_temperature: float | None = None
    score_init: float | str | None = None  # None: the recipe's; a number, or "magnitude"
    lambda_ramp: str | None = None
    masking: str | None = None
    teacher: str | None = None
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    grad_clip: float = 1.0
    abp_gamma: float | None = None
    abp_gamma_schedule: str = "constant"
    abp_t_forward: float = 1e5
    abp_t_backward: float = 1.0
    cap: str | None = None
    cap_weight: float = 0.1
    cap_label_weight: float = 10.0
    cap_temperature: float = 0.1
    cap_extra_negatives: int = 4096
    cap_max_snapshots: int = 4
    cap_snapshot_every: int | None = None
    cap_representation: str | None = None
    cap_normalizer: str = "code"
    cap_fp16_banks: bool = False
    lpaf_init: str = "score-weighted"
    lpaf_rank: str = "uniform"
    lpaf_mixed_rank: str = "theseus"
    lpaf_factorize_at: float = 0.5
    lpaf_als_iters: int = 10
    lpaf_theseus_p: float = 0.5
    struct_coupling: float = 2.0
    struct_head_coupling: float = 1.0
    struct_lambda: float = 0.0
    save_every: int = 500
    stop_after: int | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Raise ValueError with a clear message for settings that cannot work."""
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1] (the remaining fraction, e.g. 0.1 = 10%), got {self.keep}")
        for name in ("batch_size", "eval_batch_size", "max_length", "save_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps must be > 0, got {self.steps}")
        if self.steps is None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        for name in ("train_samples", "eval_samples", "stop_after"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 when given, got {value}")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ValueError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        if isinstance(self.score_init, str):
            if self.score_init != "magnitude":
                try:
                    self.score_init = float(self.score_init)
                except ValueError:
                    raise ValueError(f"score_init must be a number or 'magnitude', got {self.score_init!r}") from None
        from sparsekit.prune.cap import parse_modules

        modules = parse_modules(self.cap)  # ValueError for an unknown module
        if "fic" in modules and not self.teacher:
            raise ValueError("the CAP module fic contrasts with a fine-tuned teacher: pass teacher (--teacher DIR)")
        if self.resume and self.overwrite:
            raise ValueError("choose either resume (continue the run in output_dir) or overwrite (replace it)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PruneConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PruneConfig fields: {sorted(unknown)}")
        return cls(**data)
