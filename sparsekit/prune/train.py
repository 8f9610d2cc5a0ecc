"""The one training loop behind every method (SMP, movement, magnitude, L0, AbP, LPAF, fine-tuning).

Methods that need more than a mask and a regulariser plug in as extensions (extensions.py): AbP's
drift and stop criterion, CAP's contrastive losses, LPAF's factorisation, structure-aware SMP's coupled
scores. Every training example carries its dataset index (``example_ids``) through the loader.

Built on Hugging Face Accelerate, so the same code runs on one CPU here and on several GPUs or
nodes with ``accelerate launch -m sparsekit.cli prune ...`` or ``torchrun``. Checkpoints (model,
scores, optimizer, LR scheduler, RNG states, pruner state, step) are written every
``save_every`` steps and a run continues from the last one with ``resume=True``.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from sparsekit.data import EncodedDataset, get_task, load_split, make_collate, resolve_data_root, split_path
from sparsekit.evaluate import evaluate
from sparsekit.files import file_sha256
from sparsekit.models import head_parameter_names, load_classifier, load_tokenizer, resolve_model_source
from sparsekit.prune import report as report_mod
from sparsekit.prune.config import PruneConfig
from sparsekit.prune.extensions import Extension, TrainContext
from sparsekit.prune.output import save_pruned
from sparsekit.prune.pruner import MASKINGS, Pruner
from sparsekit.prune.recipes import Recipe, get_recipe
from sparsekit.prune.schedule import CubicSchedule, cubic_ramp
from sparsekit.versions import library_versions

CHECKPOINT_DIR = "checkpoints"
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
    from sparsekit.prune.abp import AbPExtension
    from sparsekit.prune.cap import CAPExtension, parse_modules
    from sparsekit.prune.lpaf import LPAFExtension
    from sparsekit.prune.structured import StructuredSMPExtension

    extensions: list[Extension] = []
    if recipe.extension == "abp":
        extensions.append(AbPExtension(config.abp_gamma, config.abp_gamma_schedule, config.abp_t_forward,
                                       config.abp_t_backward))
    elif recipe.extension == "lpaf":
        extensions.append(LPAFExtension(config.lpaf_init, config.lpaf_rank, config.lpaf_mixed_rank,
                                        config.lpaf_factorize_at, config.lpaf_als_iters, config.lpaf_theseus_p))
    elif recipe.extension == "structured":
        extensions.append(StructuredSMPExtension(config.struct_coupling, config.struct_head_coupling,
                                                 config.struct_lambda))
    modules = parse_modules(config.cap)
    if modules:
        extensions.append(CAPExtension(
            modules, config.cap_weight, config.cap_label_weight, config.cap_temperature, config.cap_extra_negatives,
            config.cap_max_snapshots, config.cap_snapshot_every, config.cap_representation, config.cap_normalizer,
            torch.float16 if config.cap_fp16_banks else torch.float32))
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
            shutil.rmtree(out)
        else:
            raise FileExistsError(
                f"{out} already exists and is not empty; pass --resume to continue that run, --overwrite to "
                f"replace it, or choose another --output-dir")
    elif config.resume:
        raise FileNotFoundError(f"nothing to resume: {out} does not exist or is empty")
    out.mkdir(parents=True, exist_ok=True)
    return out


#: Settings that may differ between a run and its resumption (they do not change what is computed).
_RESUME_FREE = {"resume", "overwrite", "progress", "stop_after", "save_every"}


def _check_resumed_config(out: Path, config: PruneConfig) -> None:
    """Record the run's settings; on resume, refuse settings that differ from the interrupted run's."""
    path = out / CHECKPOINT_DIR / "run_config.json"
    current = {k: v for k, v in config.to_dict().items() if k not in _RESUME_FREE}
    if config.resume and path.is_file():
        saved = json.loads(path.read_text())
        diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"--resume with settings that differ from the interrupted run ({detail}); "
                             f"resume with the same settings, or start a new run")
    elif not config.resume:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=2) + "\n")


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / CHECKPOINT_DIR).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


def _param_groups(model: nn.Module, pruner: Pruner | None, recipe: Recipe, config: PruneConfig) -> list[dict]:
    """Freeze what the recipe does not train; return AdamW groups (scores, head, other weights)."""
    score_ids = {id(p) for p in pruner.score_parameters()} if pruner else set()
    head_names = set(head_parameter_names(model))
    lr = lambda value, default: default if value is None else value  # noqa: E731
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
    rates = {"scores": lr(config.score_lr, recipe.score_lr), "head": lr(config.head_lr, recipe.head_lr),
             "weights": lr(config.weight_lr, recipe.weight_lr)}
    return [{"params": ps, "lr": rates[k], "name": k} for k, ps in groups.items() if ps]


def _task_loss(logits: torch.Tensor, labels: torch.Tensor, is_regression: bool) -> torch.Tensor:
    if is_regression:
        return F.mse_loss(logits.squeeze(-1), labels.float())
    return F.cross_entropy(logits, labels)


def _kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, is_regression: bool) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean (spec §2.3); MSE to the teacher for regression."""
    if is_regression:
        return F.mse_loss(student, teacher)
    return F.kl_div(F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1),
                    reduction="batchmean") * temperature**2


def prune(config: PruneConfig) -> PruneResult:
    """Run one pruning (or fine-tuning) job described by ``config``; see PruneConfig for the settings.

    Writes the output directory (output.py) and returns a PruneResult. Raises ValueError /
    FileNotFoundError / FileExistsError with a clear message for bad settings, data or paths.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    config.validate()
    recipe = get_recipe(config.method)
    task = get_task(config.task)
    masking = config.masking or recipe.masking
    if recipe.masking is None and config.masking:
        raise ValueError("finetune trains a dense model; --masking does not apply")
    if masking is not None and masking not in MASKINGS:
        raise ValueError(f"unknown masking {masking!r}; choose one of {', '.join(MASKINGS)}")
    lam_final = recipe.regularizer_lambda if config.regularizer_lambda is None else config.regularizer_lambda
    lambda_ramp = config.lambda_ramp or recipe.lambda_ramp
    if lambda_ramp not in LAMBDA_RAMPS:
        raise ValueError(f"unknown lambda ramp {lambda_ramp!r}; choose one of {', '.join(LAMBDA_RAMPS)}")
    warmup = recipe.warmup if config.warmup is None else config.warmup
    cooldown = recipe.cooldown if config.cooldown is None else config.cooldown
    CubicSchedule.from_fractions(100, config.keep, warmup, cooldown)  # refuse bad fractions before touching files
    if recipe.extension in ("abp", "lpaf", "structured") and masking != recipe.masking and not (
            recipe.extension == "structured" and masking == "local"):
        raise ValueError(f"{recipe.name} needs its own masking ({recipe.masking}); drop --masking {masking}")
    extensions = build_extensions(config, recipe)  # ValueError for bad extension settings, before touching files
    data_root = resolve_data_root(config.data_dir)
    source = resolve_model_source(config.model)
    teacher_source = resolve_model_source(config.teacher) if config.teacher else None
    out = _prepare_output_dir(config)
    _check_resumed_config(out, config)

    accelerator = Accelerator()
    set_seed(config.seed)
    main = accelerator.is_main_process
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, task.num_labels, seed=config.seed)
    if task.label_names:
        model.config.id2label = dict(enumerate(task.label_names))
        model.config.label2id = {n: i for i, n in enumerate(task.label_names)}

    smp_temperature = config.smp_temperature or (4.0 if config.keep >= 0.7 else 1.0)
    score_init = recipe.score_init if config.score_init is None else config.score_init
    pruner = Pruner(model, masking, score_init=score_init, smp_temperature=smp_temperature) \
        if masking else None
    train_examples = load_split(task, "train", data_root, limit=config.train_samples, seed=config.seed)
    dev_examples = load_split(task, "dev", data_root, limit=config.eval_samples, seed=config.seed)
    train_set = EncodedDataset(train_examples, tokenizer, config.max_length, task.is_regression)
    dev_set = EncodedDataset(dev_examples, tokenizer, config.max_length, task.is_regression)
    sampler = EpochSampler(len(train_set), config.seed, [len(ids) for ids in train_set.input_ids],
                           config.batch_size)
    collate = make_collate(tokenizer, task.is_regression)
    loader = DataLoader(IndexedDataset(train_set), batch_size=config.batch_size, sampler=sampler, drop_last=False,
                        collate_fn=CollateWithIds(collate))
    steps_per_epoch = math.ceil(len(train_set) / (config.batch_size * accelerator.num_processes))
    total = config.steps or max(1, math.ceil(config.epochs * steps_per_epoch))

    keep_schedule = CubicSchedule.from_fractions(total, config.keep if masking else 1.0, warmup, cooldown)
    tau_schedule = CubicSchedule.from_fractions(total, recipe.soft_threshold, warmup, cooldown, initial=0.0)

    teacher = None
    if teacher_source is not None:
        teacher = load_classifier(teacher_source, task.num_labels).eval().requires_grad_(False)
        teacher.to(accelerator.device)
    ctx = TrainContext(model=model, pruner=pruner, config=config, recipe=recipe, task=task, train_set=train_set,
                       collate=collate, total=total, steps_per_epoch=steps_per_epoch, device=accelerator.device,
                       teacher=teacher)
    for ext in extensions:
        ext.setup(ctx)
    groups = _param_groups(model, pruner, recipe, config)
    # The fused kernel computes the same AdamW update in one pass; on CPU the per-tensor default is slow for the
    # tens of millions of scores of an SMP run (fused was ~4x faster in an ad-hoc check). Only where it exists.
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, eps=1e-8, weight_decay=0.0, fused=fused or None)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.lr_warmup * total), total)

    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    state = TrainState(pruner, lam_final if lambda_ramp == "adaptive" else 0.0, extensions)
    accelerator.register_for_checkpointing(state)
    resumed_from = None
    if config.resume:
        ckpt = _latest_checkpoint(out)
        if ckpt is None:
            raise FileNotFoundError(f"{out} has no checkpoint to resume from ({out / CHECKPOINT_DIR}/step-*)")
        accelerator.load_state(str(ckpt))
        resumed_from = str(ckpt)
    trainable = [p for g in groups for p in g["params"]]
    ctx.optimizer, ctx.scheduler, ctx.trainable = optimizer, scheduler, trainable
    ctx.model = accelerator.unwrap_model(model)
    for ext in extensions:
        ext.after_prepare(ctx)

    def lambda_at(step: int, keep_t: float) -> float:
        if lam_final == 0 or pruner is None:
            return 0.0
        if lambda_ramp == "whole-run":
            return cubic_ramp(step, total, lam_final)
        if lambda_ramp == "follow-threshold":
            return lam_final * tau_schedule(step) / recipe.soft_threshold
        if lambda_ramp == "adaptive":
            return state.lam
        return lam_final

    start_step, run_start = state.step, time.perf_counter()
    bar = tqdm(total=total, initial=start_step, desc=f"{recipe.name} {task.display_name}", disable=not (
        main and config.progress), dynamic_ncols=True, file=sys.stderr)
    model.train()
    step = state.step
    stop = min(total, start_step + config.stop_after) if config.stop_after else total
    finished_early = False  # an extension ended the run (AbP reached its target sparsity)
    while step < stop and not finished_early:
        epoch, offset = divmod(step, steps_per_epoch)
        sampler.use_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, offset) if offset else loader
        for batch in batches:
            keep_t, tau_t = keep_schedule(step), tau_schedule(step)
            if pruner:
                pruner.update(keep_t, step, threshold=tau_t)
            for ext in extensions:
                ext.before_step(ctx, step)
            example_ids = batch.pop("example_ids")
            labels = batch.pop("labels")
            logits = model(**batch).logits
            loss = _task_loss(logits, labels, task.is_regression)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(**batch).logits
                kd = _kd_loss(logits, t_logits, config.kd_temperature, task.is_regression)
                loss = (1 - config.kd_alpha) * loss + config.kd_alpha * kd
            lam = lambda_at(step, keep_t)
            total_loss = loss + lam * pruner.regularization() if lam else loss
            for ext in extensions:
                extra = ext.extra_loss(ctx, step, example_ids, labels, logits)
                if extra is not None:
                    total_loss = total_loss + extra
            accelerator.backward(total_loss)
            if config.grad_clip:
                accelerator.clip_grad_norm_(ctx.trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            state.step = step
            finished_early = any([ext.after_step(ctx, step) for ext in extensions])  # every hook runs
            if lambda_ramp == "adaptive" and pruner:
                # Steer lambda so the density tracks the keep schedule: more pruning pressure while too
                # dense, less while too sparse (sparsekit's answer to "final sparsity is an outcome").
                density = pruner.density()
                state.lam = float(min(max(state.lam * math.exp(0.05 * math.log(max(density, 1e-6) / keep_t)),
                                          1e-3), 1e6))
            if main and config.progress:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", keep=f"{keep_t:.3f}", lam=f"{lam:.3g}", refresh=False)
            if step % config.save_every == 0 and step < total and all(e.checkpointable for e in extensions):
                _save_checkpoint(accelerator, out, step)
            if step >= stop or finished_early:
                break
    bar.close()
    train_seconds = time.perf_counter() - run_start
    if step < total and not finished_early:
        _save_checkpoint(accelerator, out, step)
        if main:
            print(f"stopped after step {step}/{total}; continue with --resume (checkpoint in {out / CHECKPOINT_DIR})",
                  file=sys.stderr)
        return PruneResult(out, {}, [], float("nan"), train_seconds, step)

    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(model)
    for ext in extensions:
        ext.before_finalize(ctx)
    if pruner:
        pruner.update(config.keep, total, threshold=recipe.soft_threshold, final=True)
        owner = [e for e in extensions if e.owns_finalize]
        masks = owner[0].finalize(ctx) if owner else pruner.finalize()
        matrices = pruner.matrices
    else:
        from sparsekit.models import prunable_matrices

        matrices = prunable_matrices(model)
        masks = {m.name: model.get_submodule(m.name).weight.detach() != 0 for m in matrices}
    stats = report_mod.matrix_stats(matrices, masks)
    summary = report_mod.summary(stats)
    density = next((d for d in (e.density() for e in extensions) if d is not None), summary["density"])
    metrics = evaluate(model, dev_set, tokenizer, task, config.eval_batch_size, progress=main and config.progress)
    metrics.update(train_seconds=train_seconds, steps=step, density=density,
                   target_keep=config.keep if masking else 1.0)
    if main:
        recipe_record = {
            "method": recipe.name, "description": recipe.description, "masking": masking,
            "config": config.to_dict(), "steps": total, "steps_done": step, "steps_per_epoch": steps_per_epoch,
            "resolved": {"warmup": warmup, "cooldown": cooldown, "regularizer_lambda": lam_final,
                         "lambda_ramp": lambda_ramp, "smp_temperature": smp_temperature,
                         "score_init": score_init,
                         "learning_rates": {g["name"]: g["lr"] for g in groups}},
            "data": {"task": task.name, "root": str(data_root), "train_examples": len(train_set),
                     "dev_examples": len(dev_set), "files": {
                         split: {"path": str(p), "sha256": file_sha256(p)}
                         for split in ("train", "dev") for p in [split_path(task, split, data_root)]}},
            "model": {"source": str(source), "teacher": str(teacher_source) if teacher_source else None},
            "versions": library_versions(), "command": sys.argv, "resumed_from": resumed_from,
            "num_processes": accelerator.num_processes,
            "extensions": {e.name: e.record() for e in extensions},
        }
        report = report_mod.to_json(stats)
        if masking:
            from sparsekit.prune.structured import structure_stats

            report["structure"] = structure_stats(model, masks)
        report.update({e.name: e.report(ctx, masks) for e in extensions})
        save_pruned(out, model, tokenizer, masks, recipe_record, metrics, report)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return PruneResult(out, metrics, stats, density, train_seconds, step)


def _save_checkpoint(accelerator, out: Path, step: int, keep_last: int = 2) -> None:
    ckpt_root = out / CHECKPOINT_DIR
    accelerator.save_state(str(ckpt_root / f"step-{step}"))
    if accelerator.is_main_process:
        old = sorted(ckpt_root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep_last]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        (ckpt_root / "latest.json").write_text(json.dumps({"step": step}) + "\n")
