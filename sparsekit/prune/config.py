"""PruneConfig: every setting of a pruning (or fine-tuning) run, shared by the Python API and the CLI.

Each setting is a dataclass field declared with ``option`` (options.py): its default, its help text and how
``sparsekit prune`` offers it, in one place; the CLI command is generated from these fields. The settings of
a method that plugs into the loop as an extension live next to that extension, in a small option group
(AbPOptions in abp.py, CAPOptions in cap.py, LPAFOptions in lpaf.py, StructuredOptions in structured.py).

PruneConfig *inherits* the groups instead of holding them as nested members, so a run's settings stay one
flat namespace: ``PruneConfig(method="abp", abp_gamma=0.1)``, ``config.abp_gamma``, and ``to_dict()`` with
the same flat keys, in the same order, as before the groups existed (the ``config`` of every saved
recipe.json and the resume check's run_config.json), so old recipes load with ``from_dict`` unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from sparsekit.data.source import BUILTIN_TASKS, METRIC_CHOICES, DataError, DataSource
from sparsekit.prune.abp import AbPOptions
from sparsekit.prune.blocks import parse_block
from sparsekit.prune.cap import CAPOptions, parse_modules
from sparsekit.prune.lpaf import LPAFOptions
from sparsekit.prune.masked_linear import BLOCK_KINDS
from sparsekit.prune.options import DATA, PRUNING, TRAIN, option
from sparsekit.prune.pruner import MASKINGS
from sparsekit.prune.recipes import RECIPES, get_recipe
from sparsekit.prune.structured import StructuredOptions
from sparsekit.tasks.options import TaskOptions


@dataclass
class TrainSettings:
    """What is trained and how: method, target, data, model, schedule, optimisation, distillation.

    ``None`` means "the method's default" (see recipes.py).
    """

    method: str = option("smp-s", "Pruning method.", panel=PRUNING, choices=tuple(RECIPES))
    keep: float = option(0.1, "Remaining fraction of encoder weights at the end (0.1 = 10%).", panel=PRUNING)
    task: str | None = option(None, "GLUE task: sst2, mrpc, rte, stsb, cola, qnli, mnli, qqp; or conll2003 "
                                    "(NER) or squad (SQuAD v1.1 dev re-split by article, 38 train / 10 dev: "
                                    "figures on it are not comparable to the official dev set) [default: sst2 "
                                    "unless --train-file or --dataset gives your own data].", panel=DATA)
    model: str = option("minilm", "'minilm' (shipped), a local checkpoint dir, a hub id, or "
                                  "random:<arch>[-<shape>].", panel=DATA)
    output_dir: str = option("runs/sst2-smp-s", "Where to write the run.", flags=("--output-dir", "-o"), path=True)
    data_dir: str | None = option(None, "GLUE data root [default: ../shared/data/glue or $SPARSEKIT_DATA_DIR].",
                                  panel=DATA, path=True)
    train_file: str | None = option(None, "Your own train data: a CSV, TSV, JSON, JSON Lines or Parquet file.",
                                    panel=DATA, path=True)
    validation_file: str | None = option(None, "Your own validation data (same columns as --train-file).",
                                         panel=DATA, path=True)
    dataset: str | None = option(None, "A Hugging Face dataset (hub name, from the cache) or a save_to_disk "
                                       "directory, with train and validation splits.", panel=DATA)
    dataset_config: str | None = option(None, "The --dataset's configuration name.", panel=DATA)
    text_column: str | None = option(None, "Text column of your data [sentence1+sentence2, sentence or text].",
                                     panel=DATA)
    text_pair_column: str | None = option(None, "Second text column, for sentence pairs.", panel=DATA)
    label_column: str | None = option(None, "Label column of your data [label]: class names or numbers, or "
                                            "floats for regression.", panel=DATA)
    metric: str | None = option(None, "Metric on your data [accuracy; pearson+spearman for regression].",
                                panel=DATA, choices=METRIC_CHOICES)
    train_samples: int | None = option(None, "Train on a fixed, seeded subset of this many examples.", panel=DATA)
    eval_samples: int | None = option(None, "Evaluate on a seeded subset of the dev set.", panel=DATA)
    steps: int | None = option(None, "Optimisation steps [default: --epochs passes].", panel=TRAIN)
    epochs: float = option(1.0, "Passes over the training set when --steps is not given.", panel=TRAIN)
    batch_size: int = option(32, "Training examples per step (and process).", panel=TRAIN)
    eval_batch_size: int = option(128, "Examples per batch when evaluating (and encoding CAP's banks).", cli=False)
    max_length: int = option(128, "Truncate inputs to this many tokens.", panel=TRAIN)
    seed: int = option(42, "Random seed (new head, data subsets and order, dropout).", panel=TRAIN)
    weight_lr: float | None = option(None, "LR of encoder weights [method default].", panel=TRAIN)
    score_lr: float | None = option(None, "LR of mask scores [method default].", panel=TRAIN)
    head_lr: float | None = option(None, "LR of the new task head [method default].", panel=TRAIN)
    regularizer_lambda: float | None = option(None, "Final lambda of the score regulariser.", panel=PRUNING)
    warmup: float | None = option(None, "Fraction of steps before pruning starts.", panel=PRUNING)
    cooldown: float | None = option(None, "Fraction of final steps at the target keep ratio.", panel=PRUNING)
    lr_warmup: float = option(0.0, "Fraction of steps of linear LR warm-up (then linear decay to 0).", panel=TRAIN)
    smp_temperature: float | None = option(None, "SMP-S temperature p [4 if keep>=0.7 else 1].", panel=PRUNING)
    score_init: float | str | None = option(None, "Initial scores: a number, or 'magnitude' (|W| / mean|W|, first "
                                                  "mask = magnitude mask) [the method's].", panel=PRUNING)
    lambda_ramp: str | None = option(None, "whole-run (SMP code) | follow-threshold (movement paper: lambda_f * "
                                           "tau_t / tau_f) | constant | adaptive (soft movement's default: "
                                           "lambda steered, tau set by the density in the cool-down).",
                                           panel=PRUNING)
    masking: str | None = option(None, "Override the masking: local, smp-s, global, sigmoid, magnitude, l0.",
                                 panel=PRUNING)
    block: str = option("1x1", "Prune whole blocks of ROWSxCOLS weights, one score per block: 1x4 = four "
                               "consecutive input features of one output row (the layout of int8 dot-product "
                               "kernels); 1x1 = unstructured. For smp-s, smp-l, smp-struct, movement, "
                               "soft-movement, magnitude.", panel=PRUNING)
    teacher: str | None = option(None, "Fine-tuned model dir for knowledge distillation.", panel=TRAIN)
    kd_alpha: float = option(0.5, "Weight of the distillation loss.", panel=TRAIN)
    kd_temperature: float = option(2.0, "Distillation temperature T.", panel=TRAIN)
    grad_clip: float = option(1.0, "Clip the gradient norm of the trained parameters to this (0: no clipping).",
                              cli=False)


# The bases are listed last-first: dataclasses collects fields from the last base to the first, then the
# class's own, which gives to_dict() its historical key order (TrainSettings, abp, cap, lpaf, struct, control),
# with the task-type settings (added later, every one None by default) after TrainSettings.
@dataclass
class PruneConfig(StructuredOptions, LPAFOptions, CAPOptions, AbPOptions, TaskOptions, TrainSettings):
    """Settings of one run: TrainSettings, the method option groups, then checkpointing and output-directory
    control. Each field's help is declared with it (``option``)."""

    save_every: int = option(500, "Checkpoint every this many steps.", panel=TRAIN)
    stop_after: int | None = option(None, "Stop after this many steps, as if interrupted (resume later).", panel=TRAIN)
    resume: bool = option(False, "Continue the run in --output-dir from its last checkpoint.", flags=("--resume",))
    overwrite: bool = option(False, "Replace an existing --output-dir.", flags=("--overwrite",))
    progress: bool = option(True, "Show progress bars.", flags=("--progress/--no-progress",))

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
        self._check_block()
        modules = parse_modules(self.cap)  # ValueError for an unknown module
        if "fic" in modules and not self.teacher:
            raise ValueError("the CAP module fic contrasts with a fine-tuned teacher: pass teacher (--teacher DIR)")
        self.check_task_options()
        DataSource.from_config(self).check()  # DataError (a ValueError) for contradicting data options
        if self.task is None and not (self.train_file or self.validation_file or self.dataset):
            if self.task_type not in (None, "sequence-classification"):
                builtin = [t for t, kind in BUILTIN_TASKS.items() if kind == self.task_type]
                raise DataError(f"{self.task_type} needs data: --task {builtin[0]}, or your own with --train-file "
                                f"and --validation-file, or --dataset")
            self.task = "sst2"
        if self.resume and self.overwrite:
            raise ValueError("choose either resume (continue the run in output_dir) or overwrite (replace it)")

    def _check_block(self) -> None:
        """Normalise ``block`` ("1X4 " -> "1x4"); ValueError for a malformed one or a method it does not apply to."""
        block = parse_block(self.block)
        self.block = str(block)
        if block.unstructured:
            return
        recipe = get_recipe(self.method)
        masking = self.masking or recipe.masking
        if not recipe.blocks or MASKINGS.get(masking) not in BLOCK_KINDS:
            methods = ", ".join(name for name, r in RECIPES.items() if r.blocks)
            how = f"{recipe.name} with masking {masking}" if self.masking else recipe.name
            raise ValueError(f"--block {block} applies to the score-based methods ({methods}) with a TopK, "
                             f"threshold or magnitude masking, not to {how}; drop --block (or use --block 1x1)")

    def to_dict(self) -> dict:
        """Every setting by field name (the ``config`` of recipe.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PruneConfig":
        """The config saved by to_dict(); ValueError naming unknown fields."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PruneConfig fields: {sorted(unknown)}")
        return cls(**data)
