"""The one training loop behind every method (SMP, movement, magnitude, L0, AbP, LPAF, fine-tuning).

What differs between task types (sentence classification, token classification, question answering: data,
model head, datasets, losses, evaluation) comes from the run's TaskType (sparsekit/tasks/). Methods that need more
than a mask and a regulariser plug in as extensions (extensions.py): AbP's
drift and stop criterion, CAP's contrastive losses, LPAF's factorisation, structure-aware SMP's coupled
scores. Every training example carries its dataset index (``example_ids``) through the loader.

Built on Hugging Face Accelerate, so the same code runs on one CPU here and on several GPUs or
nodes with ``accelerate launch -m sparsekit.cli prune ...`` or ``torchrun``. Checkpoints (model,
scores, optimizer, LR scheduler, RNG states, pruner state, step) are written every
``save_every`` steps and a run continues from the last one with ``resume=True``.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from sparsekit.data.source import DataSource
from sparsekit.files import remove_owned_output
from sparsekit.models import head_parameter_names, load_tokenizer, resolve_model_source
from sparsekit.prune import checkpoints
from sparsekit.prune import report as report_mod
from sparsekit.prune.abp import AbPExtension
from sparsekit.prune.blocks import Block, parse_block
from sparsekit.prune.cap import CAPExtension, parse_modules
from sparsekit.prune.config import PruneConfig
from sparsekit.prune.extensions import Extension, TrainContext
from sparsekit.prune.lpaf import LPAFExtension
from sparsekit.prune.output import RUN_OUTPUT_NAMES, save_pruned
from sparsekit.prune.pruner import MASKINGS, Pruner
from sparsekit.prune.recipes import Recipe, get_recipe
from sparsekit.prune.schedule import CubicSchedule, cubic_ramp
from sparsekit.prune.structured import StructuredSMPExtension, structure_stats
from sparsekit.tasks import TaskData, TaskType, get_task_type
from sparsekit.versions import library_versions

CHECKPOINT_DIR = checkpoints.CHECKPOINT_DIR
LAMBDA_RAMPS = ("whole-run", "follow-threshold", "constant", "adaptive")
DONE_FILE = "metrics.json"


@dataclass
class PruneResult:
    """What a run produced: the output directory, final dev metrics, per-matrix stats, timings."""

    output_dir: Path
    metrics: dict
    stats: list
    density: float
    train_seconds: float
    steps: int


class EpochSampler(Sampler):
    """Shuffled indices whose order depends only on (seed, epoch), so a resumed run sees the same batches.

    With ``lengths``, each run of ``batch_size * group`` shuffled examples is sorted by length and cut into
    batches, and the batches are shuffled: similar lengths share a batch, so dynamic padding wastes little
    compute (HF Trainer's ``group_by_length`` idea). The order is otherwise as random as a plain shuffle.
    """

    def __init__(self, n: int, seed: int, lengths: list[int] | None = None, batch_size: int = 1,
                 group: int = 50) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.lengths, self.batch_size, self.group = lengths, batch_size, group

    # Not named set_epoch on purpose: Accelerate's loader would call set_epoch(<its own iteration count>),
    # which restarts at 0 after a resume.
    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if self.lengths is None or self.batch_size <= 1:
            return iter(order)
        chunk = self.batch_size * self.group
        batches = []
        for start in range(0, self.n, chunk):
            part = sorted(order[start:start + chunk], key=lambda i: self.lengths[i])
            batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        # Keep the one short batch (if any) last so every other batch is full.
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) != self.batch_size]
        perm = torch.randperm(len(full), generator=g).tolist()
        return iter([i for b in [full[j] for j in perm] + short for i in b])

    def __len__(self) -> int:
        return self.n


class IndexedDataset(Dataset):
    """A dataset whose items also carry their position (``example_id``), for per-example memory banks."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "example_id": index}


class CollateWithIds:
    """Wraps a collate function: the batch gets ``example_ids`` (int64 ``[B]``) next to the padded inputs."""

    def __init__(self, collate) -> None:
        self.collate = collate

    def __call__(self, items: list[dict]) -> dict:
        ids = torch.tensor([item["example_id"] for item in items], dtype=torch.long)
        batch = self.collate([{k: v for k, v in item.items() if k != "example_id"} for item in items])
        batch["example_ids"] = ids
        return batch


class TrainState:
    """Loop state saved in checkpoints (Accelerate calls state_dict / load_state_dict)."""

    def __init__(self, pruner: Pruner | None, lam: float, extensions: list[Extension] = ()) -> None:
        self.step, self.lam, self.pruner, self.extensions = 0, lam, pruner, list(extensions)

    def state_dict(self) -> dict:
        return {"step": self.step, "lam": self.lam, "pruner": self.pruner.state_dict() if self.pruner else {},
                "extensions": {e.name: e.state_dict() for e in self.extensions}}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.lam = int(state["step"]), float(state["lam"])
        if self.pruner:
            self.pruner.load_state_dict(state["pruner"])
        for e in self.extensions:
            if e.name in state.get("extensions", {}):
                e.load_state_dict(state["extensions"][e.name])


def build_extensions(config: PruneConfig, recipe: Recipe) -> list[Extension]:
    """The training-loop extensions of this run: the method's own (recipe.extension) and CAP if asked for."""
    extensions: list[Extension] = []
    if recipe.extension == "abp":
        extensions.append(AbPExtension.from_options(config))
    elif recipe.extension == "lpaf":
        extensions.append(LPAFExtension.from_options(config))
    elif recipe.extension == "structured":
        extensions.append(StructuredSMPExtension.from_options(config))
    if parse_modules(config.cap):
        extensions.append(CAPExtension.from_options(config))
    return extensions


def _prepare_output_dir(config: PruneConfig) -> Path:
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file; choose another --output-dir")
    if out.exists() and any(out.iterdir()):
        if config.resume:
            if (out / DONE_FILE).exists():
                raise FileExistsError(f"{out} holds a finished run; nothing to resume (use --overwrite to redo it)")
        elif config.overwrite:
            remove_owned_output(out, RUN_OUTPUT_NAMES, "sparsekit pruning run")
        else:
            raise FileExistsError(
                f"{out} already exists and is not empty; pass --resume to continue that run, --overwrite to "
                f"replace it, or choose another --output-dir")
    elif config.resume:
        raise FileNotFoundError(f"nothing to resume: {out} does not exist or is empty")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _param_groups(model: nn.Module, pruner: Pruner | None, recipe: Recipe, config: PruneConfig) -> list[dict]:
    """Freeze what the recipe does not train; return AdamW groups (scores, head, other weights)."""
    score_ids = {id(p) for p in pruner.score_parameters()} if pruner else set()
    head_names = set(head_parameter_names(model))
    groups = {"scores": [], "head": [], "weights": []}
    for name, p in model.named_parameters():
        if id(p) in score_ids:
            groups["scores"].append(p)
        elif name in head_names:
            groups["head"].append(p)
        elif recipe.train_encoder and (recipe.masking is None or ".embeddings." not in f".{name}"):
            # Movement-family methods freeze the embeddings (spec §2.3); dense fine-tuning trains them.
            groups["weights"].append(p)
        else:
            p.requires_grad_(False)
    rates = recipe_settings(config)["learning_rates"]
    return [{"params": ps, "lr": rates[k], "name": k} for k, ps in groups.items() if ps]


@dataclass
class RunPlan:
    """A run's settings checked and resolved against its recipe (every "method default" filled in).

    task_type: the run's TaskType (sparsekit/tasks/); block: the mask's block shape (blocks.py; 1x1 unstructured);
    extensions: the run's extension objects, not yet set up;
    data: the train / validation examples, read and checked by the task type, with their record for recipe.json;
    tokenizer, train_set, dev_set: the model's tokenizer and the tokenized datasets (built here, so that data
    that cannot be encoded, such as a question longer than QA's window, is refused before the output directory
    is touched); out: the prepared output directory;
    run_record: the settings every checkpoint records and a resume must match (checkpoints.run_record).
    """

    config: PruneConfig
    recipe: Recipe
    task_type: TaskType
    masking: str | None
    lam_final: float
    lambda_ramp: str
    warmup: float
    cooldown: float
    smp_temperature: float
    score_init: float | str
    block: Block
    extensions: list[Extension]
    data: TaskData
    tokenizer: Any
    train_set: Any
    dev_set: Any
    source: Path | str
    teacher_source: Path | str | None
    out: Path
    run_record: dict


@dataclass
class RunSetup:
    """What a run trains with, built from its plan.

    model: the Accelerate-prepared model the loop calls (``ctx.model`` is the unwrapped one); ctx holds the
    pruner, teacher, training data, step budget, optimizer, LR scheduler and trainable parameters shared with
    the extensions; groups: the AdamW parameter groups; resumed_from: the checkpoint loaded, if any.
    """

    accelerator: Any
    tokenizer: Any
    model: nn.Module
    ctx: TrainContext
    dev_set: Any
    sampler: EpochSampler
    loader: DataLoader
    keep_schedule: CubicSchedule
    tau_schedule: CubicSchedule
    groups: list[dict]
    state: TrainState
    resumed_from: str | None


@dataclass
class LoopEnd:
    """Where the training loop stopped: after ``step`` steps, early if an extension ended the run."""

    step: int
    finished_early: bool
    train_seconds: float


def prune(config: PruneConfig) -> PruneResult:
    """Run one pruning (or fine-tuning) job described by ``config``; see PruneConfig for the settings.

    Writes the output directory (output.py) and returns a PruneResult. Raises ValueError /
    FileNotFoundError / FileExistsError with a clear message for bad settings, data or paths.
    """
    plan = _resolve(config)
    run = _build(plan)
    end = _train(plan, run)
    if end.step < run.ctx.total and not end.finished_early:
        return _interrupt(plan, run, end)
    return _finalise(plan, run, end)


def recipe_settings(config: PruneConfig) -> dict:
    """What a run of ``config`` trains with where ``config`` leaves a setting to its method's recipe (None): the
    schedule fractions, the regulariser, the SMP temperature, the initial scores and the learning rate of each
    parameter group (``{"scores", "head", "weights"}``; a run records only the groups its model has). recipe.json
    records them as ``resolved``: a run made before a recipe changed a default says so there."""
    recipe = get_recipe(config.method)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return {"warmup": pick(config.warmup, recipe.warmup), "cooldown": pick(config.cooldown, recipe.cooldown),
            "regularizer_lambda": pick(config.regularizer_lambda, recipe.regularizer_lambda),
            "lambda_ramp": config.lambda_ramp or recipe.lambda_ramp,
            "smp_temperature": config.smp_temperature or (4.0 if config.keep >= 0.7 else 1.0),
            "score_init": pick(config.score_init, recipe.score_init),
            "learning_rates": {"scores": pick(config.score_lr, recipe.score_lr),
                               "head": pick(config.head_lr, recipe.head_lr),
                               "weights": pick(config.weight_lr, recipe.weight_lr)}}


def _resolve(config: PruneConfig) -> RunPlan:
    """Check ``config`` against its recipe and resolve the method defaults, then prepare the output directory.

    Every setting that cannot work is refused here, before any file is touched.
    """
    config.validate()
    recipe = get_recipe(config.method)
    masking = config.masking or recipe.masking
    if recipe.masking is None and config.masking:
        raise ValueError("finetune trains a dense model; --masking does not apply")
    if masking is not None and masking not in MASKINGS:
        raise ValueError(f"unknown masking {masking!r}; choose one of {', '.join(MASKINGS)}")
    settings = recipe_settings(config)
    lam_final, lambda_ramp = settings["regularizer_lambda"], settings["lambda_ramp"]
    if lambda_ramp not in LAMBDA_RAMPS:
        raise ValueError(f"unknown lambda ramp {lambda_ramp!r}; choose one of {', '.join(LAMBDA_RAMPS)}")
    warmup, cooldown = settings["warmup"], settings["cooldown"]
    CubicSchedule.from_fractions(100, config.keep, warmup, cooldown)  # ValueError for bad fractions
    if recipe.extension in ("abp", "lpaf", "structured") and masking != recipe.masking and not (
            recipe.extension == "structured" and masking == "local"):
        raise ValueError(f"{recipe.name} needs its own masking ({recipe.masking}); drop --masking {masking}")
    data_source = DataSource.from_config(config)
    task_type = get_task_type(data_source.resolved_task_type)
    task_type.check_config(config)  # ValueError for settings that cannot apply to this task type
    extensions = build_extensions(config, recipe)  # ValueError for bad extension settings
    source = resolve_model_source(config.model)
    teacher_source = resolve_model_source(config.teacher) if config.teacher else None
    smp_temperature, score_init = settings["smp_temperature"], settings["score_init"]
    # The data is read and checked whole before the output directory is touched.
    data = task_type.load_data(data_source, config)
    if teacher_source is not None:
        task_type.check_teacher(teacher_source, data)
    tokenizer = load_tokenizer(source)
    train_set, dev_set = task_type.datasets(data, tokenizer, config)
    out = _prepare_output_dir(config)
    return RunPlan(config=config, recipe=recipe, task_type=task_type, masking=masking, lam_final=lam_final,
                   lambda_ramp=lambda_ramp, warmup=warmup, cooldown=cooldown, smp_temperature=smp_temperature,
                   score_init=score_init, block=parse_block(config.block), extensions=extensions, data=data,
                   tokenizer=tokenizer, train_set=train_set, dev_set=dev_set, source=source,
                   teacher_source=teacher_source, out=out,
                   run_record=checkpoints.run_record(config.to_dict()))


def _build(plan: RunPlan) -> RunSetup:
    """Load the model, pruner, data and teacher; set up the extensions, the optimizer and the LR schedule,
    prepare them with Accelerate and, for ``resume``, load the last checkpoint."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config, task_type, extensions = plan.config, plan.task_type, plan.extensions
    accelerator = Accelerator()
    set_seed(config.seed)
    tokenizer, train_set, dev_set = plan.tokenizer, plan.train_set, plan.dev_set
    model = task_type.load_model(plan.source, plan.data, seed=config.seed)
    pruner = Pruner(model, plan.masking, score_init=plan.score_init, smp_temperature=plan.smp_temperature,
                    block=plan.block) if plan.masking else None

    sampler = EpochSampler(len(train_set), config.seed, task_type.lengths(train_set), config.batch_size)
    collate = task_type.collate(tokenizer, plan.data)
    loader = DataLoader(IndexedDataset(train_set), batch_size=config.batch_size, sampler=sampler, drop_last=False,
                        collate_fn=CollateWithIds(collate),
                        # The loader draws its per-iterator seed from this generator, not the global RNG: a run
                        # resumed mid-epoch then replays the exact random stream (dropout) of an uninterrupted one.
                        generator=torch.Generator().manual_seed(config.seed))
    steps_per_epoch = math.ceil(len(train_set) / (config.batch_size * accelerator.num_processes))
    total = config.steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    keep_schedule = CubicSchedule.from_fractions(total, config.keep if plan.masking else 1.0, plan.warmup,
                                                 plan.cooldown)
    tau_schedule = CubicSchedule.from_fractions(total, plan.recipe.soft_threshold, plan.warmup, plan.cooldown,
                                                initial=0.0)

    teacher = None
    if plan.teacher_source is not None:
        teacher = task_type.load_model(plan.teacher_source, plan.data).eval().requires_grad_(False)
        teacher.to(accelerator.device)
    ctx = TrainContext(model=model, pruner=pruner, config=config, recipe=plan.recipe, task=plan.data.spec,
                       train_set=train_set, collate=collate, total=total, steps_per_epoch=steps_per_epoch,
                       device=accelerator.device, teacher=teacher, task_type=task_type)
    for ext in extensions:
        ext.setup(ctx)
    groups = _param_groups(model, pruner, plan.recipe, config)
    optimizer, scheduler = _optimizer(groups, config.lr_warmup, total)

    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    state = TrainState(pruner, plan.lam_final if plan.lambda_ramp == "adaptive" else 0.0, extensions)
    accelerator.register_for_checkpointing(state)
    resumed_from = str(checkpoints.resume(accelerator, plan.out, plan.run_record)) if config.resume else None
    ctx.optimizer, ctx.scheduler = optimizer, scheduler
    ctx.trainable = [p for g in groups for p in g["params"]]
    ctx.model = accelerator.unwrap_model(model)
    for ext in extensions:
        ext.after_prepare(ctx)
    return RunSetup(accelerator=accelerator, tokenizer=tokenizer, model=model, ctx=ctx, dev_set=dev_set,
                    sampler=sampler, loader=loader, keep_schedule=keep_schedule, tau_schedule=tau_schedule,
                    groups=groups, state=state, resumed_from=resumed_from)


def _optimizer(groups: list[dict], lr_warmup: float, total: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over ``groups`` (no weight decay) and its LR schedule: linear warm-up over ``lr_warmup * total``
    steps, then linear decay to 0 at ``total``."""
    from transformers import get_linear_schedule_with_warmup

    # The fused kernel computes the same AdamW update in one pass; on CPU the per-tensor default is slow for the
    # tens of millions of scores of an SMP run (fused was ~4x faster in an ad-hoc check). Only where it exists.
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, eps=1e-8, weight_decay=0.0, fused=fused or None)
    return optimizer, get_linear_schedule_with_warmup(optimizer, round(lr_warmup * total), total)


def _regularizer_lambda(plan: RunPlan, run: RunSetup, step: int) -> float:
    """The regulariser's weight at ``step``: plan.lam_final reached along the run's lambda ramp."""
    if plan.lam_final == 0 or run.ctx.pruner is None:
        return 0.0
    if plan.lambda_ramp == "whole-run":
        return cubic_ramp(step, run.ctx.total, plan.lam_final)
    if plan.lambda_ramp == "follow-threshold":
        return plan.lam_final * run.tau_schedule(step) / plan.recipe.soft_threshold
    if plan.lambda_ramp == "adaptive":
        return run.state.lam
    return plan.lam_final


def _loss(plan: RunPlan, run: RunSetup, batch: dict, step: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Forward one batch; return (task loss, with distillation), (everything optimised) and lambda."""
    ctx, config, task_type = run.ctx, plan.config, plan.task_type
    example_ids = batch.pop("example_ids")
    targets = {key: batch.pop(key) for key in task_type.target_keys}
    outputs = task_type.forward(run.model, batch)
    loss = task_type.loss(outputs, targets)
    if ctx.teacher is not None:
        with torch.no_grad():
            t_outputs = task_type.forward(ctx.teacher, batch)
        kd = task_type.kd_loss(outputs, t_outputs, targets, batch, config.kd_temperature)
        loss = (1 - config.kd_alpha) * loss + config.kd_alpha * kd
    lam = _regularizer_lambda(plan, run, step)
    total_loss = loss + lam * ctx.pruner.regularization() if lam else loss
    for ext in plan.extensions:
        extra = ext.extra_loss(ctx, step, example_ids, targets.get("labels"), outputs)
        if extra is not None:
            total_loss = total_loss + extra
    return loss, total_loss, lam


#: The adaptive lambda stays within [LAMBDA_FLOOR, LAMBDA_CAP_FACTOR * lambda_f].
LAMBDA_FLOOR, LAMBDA_CAP_FACTOR = 1e-3, 10.0


def _adapt_lambda(state: TrainState, density: float, keep_t: float, lam_final: float) -> None:
    """Steer the adaptive lambda so the density tracks the keep schedule: more pruning pressure while too
    dense, less while too sparse (sparsekit's answer to "final sparsity is an outcome").

    Bounded at 10 x lambda_f. The old cap of 1e6 let lambda wind up by three orders of magnitude while the
    density lagged the schedule; scores are trained by Adam, whose step is ~lr whatever the gradient's scale,
    so once the regulariser dominates a larger lambda does not prune faster, it only makes lambda take
    longer to come back down, and the scores kept falling well past the target (1.8% remaining for 10%).
    """
    ratio = math.log(max(density, 1e-6) / keep_t)
    state.lam = float(min(max(state.lam * math.exp(0.05 * ratio), LAMBDA_FLOOR), LAMBDA_CAP_FACTOR * lam_final))


def _steers_threshold(plan: RunPlan) -> bool:
    """Whether this run's cool-down and final masks take tau from the density (soft movement, adaptive).

    A lambda controller alone cannot land the density: lambda acts on the scores only through Adam's
    momentum, so the density keeps moving for many steps after lambda changes, and at the end of the run
    there are no steps left to correct. So in the cool-down (where the keep schedule is already at its
    final value) the mask stays sigmoid(S) > tau with one tau for all matrices, but tau is the value that
    leaves the target fraction, recomputed every few steps and once more for the final masks. The method's
    mask function, scores, regulariser and training are unchanged; only tau's schedule is replaced by the
    density, as lambda's is in the pruning phase. The paper's fixed-lambda version (``--lambda-ramp
    follow-threshold``, tau 0 -> 0.1 and an outcome density) does not steer.
    """
    return plan.lambda_ramp == "adaptive" and plan.masking == "sigmoid"


def _train(plan: RunPlan, run: RunSetup) -> LoopEnd:
    """The training loop: from the (resumed) step to the end, ``stop_after`` steps, or an extension's stop."""
    from tqdm.auto import tqdm

    config, ctx, state, accelerator = plan.config, run.ctx, run.state, run.accelerator
    pruner, total, extensions = ctx.pruner, ctx.total, plan.extensions
    show = accelerator.is_main_process and config.progress
    start_step, run_start = state.step, time.perf_counter()
    bar = tqdm(total=total, initial=start_step, desc=f"{plan.recipe.name} {plan.data.display_name}",
               disable=not show, dynamic_ncols=True, file=sys.stderr)
    run.model.train()
    step = state.step
    stop = min(total, start_step + config.stop_after) if config.stop_after else total
    finished_early = False  # an extension ended the run (AbP reached its target sparsity)
    steer, cooldown_start = _steers_threshold(plan), total - run.keep_schedule.cooldown_steps
    while step < stop and not finished_early:
        epoch, offset = divmod(step, ctx.steps_per_epoch)
        run.sampler.use_epoch(epoch)
        batches = accelerator.skip_first_batches(run.loader, offset) if offset else run.loader
        for batch in batches:
            keep_t, tau_t = run.keep_schedule(step), run.tau_schedule(step)
            if pruner and steer and step > cooldown_start:
                pruner.steer_threshold(keep_t, step)
            elif pruner:
                pruner.update(keep_t, step, threshold=tau_t)
            for ext in extensions:
                ext.before_step(ctx, step)
            loss, total_loss, lam = _loss(plan, run, batch, step)
            accelerator.backward(total_loss)
            if config.grad_clip:
                accelerator.clip_grad_norm_(ctx.trainable, config.grad_clip)
            ctx.optimizer.step()
            ctx.scheduler.step()
            ctx.optimizer.zero_grad(set_to_none=True)
            step += 1
            state.step = step
            finished_early = any([ext.after_step(ctx, step) for ext in extensions])  # every hook runs
            if plan.lambda_ramp == "adaptive" and pruner:
                _adapt_lambda(state, pruner.density(), keep_t, plan.lam_final)
            if show:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", keep=f"{keep_t:.3f}", lam=f"{lam:.3g}", refresh=False)
            if step % config.save_every == 0 and step < total and all(e.checkpointable for e in extensions):
                checkpoints.save_checkpoint(accelerator, plan.out, step, plan.run_record)
            if step >= stop or finished_early:
                break
    bar.close()
    return LoopEnd(step, finished_early, time.perf_counter() - run_start)


def _interrupt(plan: RunPlan, run: RunSetup, end: LoopEnd) -> PruneResult:
    """A run stopped before its end (``stop_after``): checkpoint it for ``resume``; no metrics."""
    checkpoints.save_checkpoint(run.accelerator, plan.out, end.step, plan.run_record)
    if run.accelerator.is_main_process:
        print(f"stopped after step {end.step}/{run.ctx.total}; continue with --resume (checkpoint in "
              f"{plan.out / CHECKPOINT_DIR})", file=sys.stderr)
    return PruneResult(plan.out, {}, [], float("nan"), end.train_seconds, end.step)


def _finalise(plan: RunPlan, run: RunSetup, end: LoopEnd) -> PruneResult:
    """Fix the final masks, evaluate on the dev set, and save the output directory (without checkpoints)."""
    config, ctx, accelerator, pruner = plan.config, run.ctx, run.accelerator, run.ctx.pruner
    main = accelerator.is_main_process
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(run.model)
    for ext in plan.extensions:
        ext.before_finalize(ctx)
    if pruner:
        if _steers_threshold(plan):
            pruner.steer_threshold(config.keep, ctx.total, final=True)
        else:
            pruner.update(config.keep, ctx.total, threshold=plan.recipe.soft_threshold, final=True)
        owner = [e for e in plan.extensions if e.owns_finalize]
        masks = owner[0].finalize(ctx) if owner else pruner.finalize()
        matrices = pruner.matrices
    else:
        from sparsekit.models import prunable_matrices

        matrices = prunable_matrices(model)
        masks = {m.name: model.get_submodule(m.name).weight.detach() != 0 for m in matrices}
    stats = report_mod.matrix_stats(matrices, masks)
    summary = report_mod.summary(stats)
    density = next((d for d in (e.density() for e in plan.extensions) if d is not None), summary["density"])
    metrics = plan.task_type.evaluate(model, run.dev_set, plan.data, run.tokenizer, config,
                                      progress=main and config.progress)
    metrics.update(train_seconds=end.train_seconds, steps=end.step, density=density,
                   target_keep=config.keep if plan.masking else 1.0)
    if main:
        report = report_mod.to_json(stats, plan.block)
        if plan.masking:
            report["structure"] = structure_stats(model, masks)
        report.update({e.name: e.report(ctx, masks) for e in plan.extensions})
        save_pruned(plan.out, model, run.tokenizer, masks, _recipe_record(plan, run, end), metrics, report)
        shutil.rmtree(plan.out / CHECKPOINT_DIR, ignore_errors=True)
    return PruneResult(plan.out, metrics, stats, density, end.train_seconds, end.step)


def _recipe_record(plan: RunPlan, run: RunSetup, end: LoopEnd) -> dict:
    """recipe.json: the method, every setting as given and as resolved, the data files, model and versions."""
    ctx = run.ctx
    return {
        "method": plan.recipe.name, "description": plan.recipe.description, "masking": plan.masking,
        "block": str(plan.block),
        "config": plan.config.to_dict(), "steps": ctx.total, "steps_done": end.step,
        "steps_per_epoch": ctx.steps_per_epoch,
        "resolved": {"warmup": plan.warmup, "cooldown": plan.cooldown, "regularizer_lambda": plan.lam_final,
                     "lambda_ramp": plan.lambda_ramp, "smp_temperature": plan.smp_temperature,
                     "score_init": plan.score_init,
                     "learning_rates": {g["name"]: g["lr"] for g in run.groups}},
        "data": plan.data.record,
        "model": {"source": str(plan.source), "teacher": str(plan.teacher_source) if plan.teacher_source else None},
        "versions": library_versions(), "command": sys.argv, "resumed_from": run.resumed_from,
        "num_processes": run.accelerator.num_processes,
        "extensions": {e.name: e.record() for e in plan.extensions},
    }
