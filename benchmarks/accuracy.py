"""Accuracy benchmark: pruning methods on the real MiniLM + a GLUE task, every configuration over several seeds.

Rows: the dense fine-tune, then each method of ``--methods`` at each remaining fraction of ``--keeps``, each
for every seed of ``--seeds`` (default 42 43 44). Each row is one ``sparsekit.prune`` run (the same code path
as the CLI) in its own directory ``<work-dir>/<task>-<budget>/seed<seed>/<method>-<keep>``: a finished row is
reused (after checking that its settings are the ones asked for), an interrupted row continues from its last
checkpoint (``resume=True``, every ``--save-every`` steps), so a table can be completed over several sittings:
stop the benchmark at any point and run the same command again. The run directories are not committed, so on a
fresh clone (or another machine) the finished rows of the committed table are the record: a row whose directory
holds no finished run is taken from the table's results file (``--reuse-results``, by default the file this
command writes) when that file was made with the same task, model, data and budget; the report says which rows were
taken so and which machine trained each row. A row whose recipe has since changed a default it left to the recipe
is not reused: a run directory is refused, a results-file row (when it records its ``resolved`` settings) trains
again. The seed is PruneConfig.seed: it changes the
new head's init, the data order, dropout and, at the CPU budget, the seeded train subset; the initial mask
scores of SMP / movement are a constant or |W| by definition (no seed in them; AbP's random logits are seeded).

Reported: mean ± sample std (n-1) over seeds and every per-seed value of each metric (accuracy; accuracy and F1
on MRPC), measured remaining weights, wall time per run (summed over sittings), machine, versions, command; each
"A >= B" of the method ordering is marked supported only when the difference of means exceeds the larger seed
std (with Welch's p-value). Results: ``benchmarks/results/<name>.{json,md,png}``.

Budgets. CPU (default): a seeded 16,000-example subset of the train set and 600 steps of batch 32 (~5 min per
SST-2 row on 2 cores). ``--full``: the paper's budget: SST-2 all train examples, 12 epochs, batch 64; MRPC all
3,668 train examples, batch 32, 10 epochs for pruning and 3 for the dense fine-tune (the SMP / movement-pruning
protocol).

    python benchmarks/accuracy.py --preset sst2-cpu      # SST-2, same CPU budget: 10% and 3%, 3 seeds
    python benchmarks/accuracy.py --preset mrpc-paper    # MRPC, paper budget: SMP-S and movement at 10%, 3 seeds
    python benchmarks/accuracy.py --seeds 0 1 2 --keeps 0.1 --methods smp-s movement

Issue-7 methods (same budget): ``smp-struct`` (structure-aware SMP), ``abp`` (Adapting-by-Pruning), ``lpaf``
(low-rank prune-and-factorize), ``cap-<base>`` (CAP's PrC + SnC + FiC contrastive losses on top of <base>,
with the same seed's finetune row as teacher and KD at w_ce 0.1 / w_kd 0.9, T 2) and ``kd-<base>`` (the same
KD without CAP, CAP's baseline). ``--compare-structure`` compares the compacted SMP-S and smp-struct models of
the finished rows of the first seed (size, exact compaction, latency with the export_compaction benchmark's
functions):

    python benchmarks/accuracy.py --keeps 0.1 0.03 --methods smp-s smp-struct abp lpaf kd-smp-s cap-smp-s
    python benchmarks/accuracy.py --keeps 0.1 0.03 --compare-structure

Block pruning (issue 16): ``--block 1x4`` runs the pruning rows with ``PruneConfig.block`` (masks of 1x4 blocks, the
int8 kernels' layout); their rows are named ``<method>-b1x4`` (directories ``<method>-b1x4-<keep>``), so the
unstructured rows of the same work dir are reused, not overwritten, and ``--block 1x1 1x4`` puts both in one table
(the cost of the block constraint at the same remaining fraction; the finetune row is shared):

    python benchmarks/accuracy.py --keeps 0.1 --methods smp-s --block 1x1 1x4

Score learning rate: ``--score-lr LR`` runs the pruning rows with that rate instead of each recipe's; their rows are
named ``<method>-slr<LR>`` (the target and ordering checks follow them), so the recipe-rate rows beside them are
reused, not overwritten; the rows without scores (dense fine-tune, magnitude) are shared (issue 14's CoNLL table
uses 0.05):

    python benchmarks/accuracy.py --preset conll-cpu --keeps 0.1 --score-lr 0.05
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import sparsekit
from sparsekit.bench import accuracy as report
from sparsekit.machine import machine_info
from sparsekit.prune import PruneConfig, prune
from sparsekit.prune.blocks import parse_block
from sparsekit.prune.checkpoints import complete_checkpoints, run_record
from sparsekit.prune.train import recipe_settings
from sparsekit.prune.recipes import RECIPES
from sparsekit.versions import library_versions

from results_io import RESULTS, write_result  # benchmarks/ is on sys.path when run as a script

METHODS = ("smp-s", "smp-l", "soft-movement", "movement", "magnitude")
NEW_METHODS = ("smp-struct", "abp", "lpaf") + tuple(f"{prefix}-{base}" for prefix in ("cap", "kd")
                                                   for base in ("smp-s", "movement", "soft-movement"))
CAP_SETTINGS = dict(cap="prc,snc,fic", kd_alpha=0.9, kd_temperature=2.0)
KEEPS = (0.5, 0.1, 0.03)
SEEDS = (42, 43, 44)
#: The metrics each task's rows report, all as fractions in [0, 1]. CoNLL-2003: entity precision / recall / F1
#: on the official validation file, and ``test_f1`` on the official test file (evaluated after the run); SQuAD:
#: EM / F1 on the re-split's 10 held-out dev articles (not comparable to the official dev set).
TASKS = {"sst2": ["accuracy"], "mrpc": ["accuracy", "f1"], "conll2003": ["precision", "recall", "f1", "test_f1"],
         "squad": ["exact_match", "f1"]}
#: What "dev" means where it is not the task's official validation split.
NOTES = {"squad": "dev = the 10 held-out articles (1,767 questions) of sparsekit's seeded re-split of the SQuAD v1.1 "
                  "dev file (SQuAD's train file is not available offline): **not comparable to the official SQuAD "
                  "dev set**. The JSON stores EM and F1 as fractions (points / 100).",
         "conll2003": "dev = the official validation file; test_f1 = entity F1 on the official test file."}
#: Tasks whose metrics sparsekit reports in points (0..100, like SQuAD's official script): divided by 100 here.
POINTS_TASKS = ("squad",)
#: "METHOD at KEEP within MARGIN of the dense fine-tune", per metric, on the means over seeds.
CLOSENESS = {"sst2": {"accuracy": [("smp-s", 0.5, 0.005), ("smp-s", 0.1, 0.015)]},
             "mrpc": {"f1": [("smp-s", 0.1, 0.01)]},
             "conll2003": {"f1": [("smp-s", 0.1, 0.02)], "test_f1": [("smp-s", 0.1, 0.02)]},
             "squad": {}}
#: Orderings whose adjacent "A >= B" the report checks against the seed spread, each row as (method, block).
_METHOD_CHAINS = [("smp-s", "movement", "magnitude"), ("smp-s", "smp-struct")] + [
    (f"cap-{base}", f"kd-{base}") for base in ("smp-s", "movement", "soft-movement")]
CHAINS = [tuple((m, "1x1") for m in chain) for chain in _METHOD_CHAINS] + [
    ((method, "1x1"), (method, "1x4")) for method in ("smp-s", "movement")]  # unstructured >= 1x4 blocks
PRESETS = {
    "sst2-cpu": dict(task="sst2", full=False, keeps=[0.1, 0.03], methods=["smp-s", "smp-struct", "movement",
                                                                          "magnitude"]),
    "mrpc-paper": dict(task="mrpc", full=True, keeps=[0.1], methods=["smp-s", "movement"]),
    # Issue 14's tables. CoNLL-2003: all 14,041 train sentences, 1,300 steps of batch 32 (~3 epochs), inputs up
    # to 192 tokens (no validation / test sentence is cut). SQuAD re-split: all 8,803 train questions in windows
    # of 256 tokens (stride 128), 600 steps of batch 16 (~1 epoch).
    "conll-cpu": dict(task="conll2003", full=False, keeps=[0.1, 0.03], methods=["smp-s"], steps=1300,
                      train_samples=None, batch_size=32, max_length=192),
    "squad-cpu": dict(task="squad", full=False, keeps=[0.1], methods=["smp-s"], steps=600, train_samples=None,
                      batch_size=16, max_length=256),
}


@dataclass(frozen=True)
class Budget:
    """What each row trains on. name: the work-dir component ("cpu" or "full"); finetune_epochs: the dense
    row's epochs where they differ from the pruning rows' (MRPC's paper budget: 3)."""

    name: str
    description: str
    train_samples: int | None
    steps: int | None
    epochs: float
    batch_size: int
    max_length: int
    finetune_epochs: float | None = None

    def settings(self, method: str) -> dict:
        """The PruneConfig fields of this budget for ``method``'s rows."""
        epochs = self.finetune_epochs if method == "finetune" and self.finetune_epochs else self.epochs
        return dict(train_samples=self.train_samples, steps=self.steps, epochs=epochs,
                    batch_size=self.batch_size, max_length=self.max_length)


def budget_for(args) -> Budget:
    """The budget of ``--full`` (per task) or the CPU budget from ``--steps`` / ``--train-samples`` / ..."""
    if args.full and args.task == "sst2":
        return Budget("full", "full: all 67,349 train examples, 12 epochs, batch 64", None, None, 12.0, 64, 128)
    if args.full:
        return Budget("full", "paper budget: all train examples, batch 32, 10 epochs (dense fine-tune: 3)",
                      None, None, 10.0, 32, 128, finetune_epochs=3.0)
    examples = ("all train examples" if args.train_samples is None
                else f"{args.train_samples} train examples (seeded subset, per seed)")
    score_lr = "" if args.score_lr is None else f", score LR {args.score_lr:g} for the pruning rows"
    return Budget("cpu", f"CPU budget: {examples}, {args.steps} steps of batch {args.batch_size}, inputs up to "
                         f"{args.max_length} tokens{score_lr}", args.train_samples, args.steps, 1.0,
                  args.batch_size, args.max_length)


def base_method(method: str) -> str:
    """The sparsekit method a row runs: ``<base>`` for ``cap-<base>`` / ``kd-<base>``, else ``method``."""
    return method.split("-", 1)[1] if method.startswith(("cap-", "kd-")) else method


def row_name(method: str, block: str = "1x1", score_lr: float | None = None) -> str:
    """A row's name in the table and its directory: the method, with ``-b<block>`` for block pruning and
    ``-slr<lr>`` for a pruning row whose score learning rate is not its recipe's (``--score-lr``; only methods that
    learn scores, so the rows without scores are shared)."""
    block = parse_block(block)
    name = method if block.unstructured else f"{method}-b{block}"
    return f"{name}-slr{score_lr:g}" if score_lr is not None and learns_scores(method) else name


def learns_scores(method: str) -> bool:
    """Whether a row's method learns mask scores (``--score-lr`` applies; not the dense fine-tune or magnitude)."""
    return RECIPES[base_method(method)].score_lr > 0


def row_dir(work: Path, seed: int, method: str, keep: float, block: str = "1x1",
            score_lr: float | None = None) -> Path:
    """The run directory of one row (``work`` is ``<work-dir>/<task>-<budget>``)."""
    return work / f"seed{seed}" / f"{row_name(method, block, score_lr)}-{keep:g}"


def row_config(method: str, keep: float, seed: int, args, budget: Budget, work: Path,
               block: str = "1x1") -> PruneConfig:
    """The PruneConfig of one row (without resume / overwrite, which depend on what its directory holds)."""
    base, extra = method, {}
    if method.startswith(("cap-", "kd-")):
        prefix, base = method.split("-", 1)
        teacher = row_dir(work, seed, "finetune", 1.0)
        if not (teacher / "metrics.json").is_file():
            raise SystemExit(f"{method} needs the finetune row of seed {seed} as its teacher ({teacher}); "
                             f"run it first")
        extra = dict(CAP_SETTINGS, teacher=str(teacher))
        if prefix == "kd":
            extra.pop("cap")
    if args.score_lr is not None and learns_scores(method):
        extra["score_lr"] = args.score_lr
    return PruneConfig(method=base, keep=keep, task=args.task, model=args.model,
                       output_dir=str(row_dir(work, seed, method, keep, block, args.score_lr)), seed=seed,
                       data_dir=args.data_dir,
                       save_every=args.save_every, progress=not args.quiet, block=str(parse_block(block)),
                       **budget.settings(method), **extra)


def _check_reusable(out: Path, config: PruneConfig) -> None:
    """Stop if the finished row in ``out`` was run with other settings than ``config`` (never mix budgets), also
    where ``config`` leaves a setting to the recipe and the recipe's default has changed since (recipe.json's
    ``resolved``; learning rates of the parameter groups that run had)."""
    record = json.loads((out / "recipe.json").read_text())
    saved = run_record(record["config"])
    wanted = run_record(config.to_dict())
    diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
    diff |= _recipe_changes(record.get("resolved", {}), config)
    if diff:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise SystemExit(f"{out} holds a finished run with other settings ({detail}); use another --work-dir")


def _recipe_changes(resolved: dict, config: PruneConfig) -> dict[str, tuple]:
    """``{setting (recipe default): (then, now)}`` where what ``config`` resolves to now (recipe_settings) differs
    from ``resolved``, a run's recorded settings (recipe.json; a results row's ``resolved``); learning rates only of
    the parameter groups that run had."""
    now = recipe_settings(config)
    now["learning_rates"] = {g: lr for g, lr in now["learning_rates"].items()
                             if g in resolved.get("learning_rates", {})}
    return {f"{k} (recipe default)": (resolved[k], v) for k, v in now.items() if k in resolved and resolved[k] != v}


def recorded_rows(path: Path | None, args, budget: Budget) -> dict[tuple[str, float, int], dict]:
    """The finished rows of an earlier results file of this table, keyed by (row name, target keep, seed).

    Empty when ``path`` is None or missing. Stops when the file was made for another task, model, data directory
    or budget (its rows would be a different experiment). Each row carries the machine that trained it
    (``machine``; rows of files written before rows recorded it: the file's machine) and ``reused_from``."""
    if path is None or not path.is_file():
        return {}
    try:
        saved = _saved_table(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--reuse-results {path}: not an accuracy results file ({exc}); pass another file or "
                         f"--reuse-results none") from None
    # Files written before the model and data were recorded are all MiniLM tables on the shipped data.
    wanted = {"task": args.task, "model": args.model, "data_dir": args.data_dir, "budget": budget.description}
    found = {"task": saved.get("task"), "model": saved.get("model", "minilm"), "data_dir": saved.get("data_dir"),
             "budget": saved.get("budget")}
    diff = {k: (found[k], v) for k, v in wanted.items() if found[k] != v}
    if diff:
        detail = "; ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in diff.items())
        raise SystemExit(f"--reuse-results {path} holds another table ({detail}); pass --reuse-results none or "
                         f"another --name")
    cpu = (saved.get("machine") or {}).get("cpu")
    try:  # as the repository names it, not this checkout's absolute path
        source = str(path.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        source = str(path)
    return {(r["method"], r["target_keep"], r["seed"]): dict(r, machine=r.get("machine") or cpu,
                                                           reused_from=r.get("reused_from") or source)
            for r in saved["rows"]}


def _saved_table(path: Path) -> dict:
    """An accuracy results JSON with its rows' keys checked; OSError / ValueError / KeyError / TypeError if not."""
    saved = json.loads(path.read_text())
    if not all({"method", "target_keep", "seed"} <= r.keys() for r in saved["rows"]):
        raise KeyError("a row lacks method / target_keep / seed")
    return saved


def planned_rows(args) -> set[tuple[str, float, int]]:
    """The (row name, target keep, seed) of every row this invocation's table holds."""
    return {(row_name(m, b, args.score_lr), k, seed) for seed in args.seeds
            for m, k, b in [("finetune", 1.0, "1x1")] + [(m, k, b) for k in args.keeps for b in args.block
                                                         for m in args.methods]}


def _check_no_rows_lost(target: Path, args) -> None:
    """Stop before any training when writing this table over ``target`` would drop rows it holds (other seeds,
    methods or remaining fractions): a smaller table goes to another ``--name``."""
    if not target.is_file():
        return
    try:
        held = {(r["method"], r["target_keep"], r["seed"]) for r in _saved_table(target)["rows"]}
    except (OSError, ValueError, KeyError, TypeError):
        return  # not a table of this benchmark: recorded_rows says so where it is read
    lost = sorted(held - planned_rows(args), key=str)
    if lost:
        names = ", ".join(f"{m} @{100 * k:g}% seed {s}" for m, k, s in lost[:6]) + (" ..." if len(lost) > 6 else "")
        raise SystemExit(f"{target} holds rows this table does not ({names}); writing it would drop them. Pass "
                         f"--name for a table of its own, or the seeds / methods / keeps that include them")


def run_row(method: str, keep: float, seed: int, args, budget: Budget, work: Path, block: str = "1x1",
            recorded: dict | None = None) -> dict:
    """Run (or reuse, or resume) one row; its record for the report (see sparsekit.bench.accuracy).

    A finished run in the row's directory is reused; else a row of ``recorded`` (see recorded_rows) with the same
    name, target keep and seed, unless the directory holds an interrupted run of it (which then resumes)."""
    config = row_config(method, keep, seed, args, budget, work, block)
    out = Path(config.output_dir)
    wall_file = out.parent / f"{out.name}.wall.json"
    key = (row_name(method, block, args.score_lr), keep if method != "finetune" else 1.0, seed)
    if (out / "metrics.json").is_file():
        _check_reusable(out, config)
        print(f"reusing {out}", file=sys.stderr)
    elif (recorded and key in recorded and not complete_checkpoints(out)
          and not (changed := _recipe_changes(recorded[key].get("resolved", {}), config))):
        print(f"reusing {key[0]} @{key[1]:g} seed {seed} from {recorded[key]['reused_from']}", file=sys.stderr)
        return recorded[key]
    else:
        if recorded and key in recorded and not complete_checkpoints(out):
            detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            print(f"not reusing {key[0]} @{key[1]:g} seed {seed} from {recorded[key]['reused_from']}: its recipe "
                  f"changed since ({detail}); training it again", file=sys.stderr)
        config.resume = bool(complete_checkpoints(out))
        config.overwrite = out.exists() and not config.resume
        print(f"{'resuming' if config.resume else 'running'} {out}", file=sys.stderr)
        # Wall time is summed over sittings (SIGTERM ends a sitting through SystemExit, see main; a sitting killed
        # with SIGKILL is not counted), with the torch thread counts the sittings trained on.
        wall = json.loads(wall_file.read_text()) if wall_file.is_file() else {"wall_seconds": 0.0, "sittings": 0}
        started = time.time()
        try:
            prune(config)
        finally:
            wall = {"wall_seconds": wall["wall_seconds"] + time.time() - started, "sittings": wall["sittings"] + 1,
                    "threads": sorted({*wall.get("threads", []), torch.get_num_threads()}),
                    "machine": machine_info()["cpu"]}
            out.parent.mkdir(parents=True, exist_ok=True)
            wall_file.write_text(json.dumps(wall) + "\n")
    metrics = json.loads((out / "metrics.json").read_text())
    if args.task == "conll2003":
        metrics["test_f1"] = test_metrics(out)["f1"]
    if args.task in POINTS_TASKS:
        metrics.update({name: metrics[name] / 100 for name in TASKS[args.task] if name in metrics})
    recipe = json.loads((out / "recipe.json").read_text())
    wall = json.loads(wall_file.read_text()) if wall_file.is_file() else {"wall_seconds": None, "sittings": None}
    return {"method": row_name(method, block, args.score_lr), "target_keep": keep if method != "finetune" else 1.0,
            "seed": seed, "density": metrics["density"],
            "metrics": {name: metrics[name] for name in TASKS[args.task] if name in metrics},
            "train_seconds": metrics["train_seconds"], "wall_seconds": wall["wall_seconds"],
            "sittings": wall["sittings"], "threads": wall.get("threads"), "steps": metrics["steps"],
            "run_dir": str(out), "resumed_from": recipe.get("resumed_from"),
            "machine": wall.get("machine") or machine_info()["cpu"], "resolved": recipe.get("resolved")}


def compare_structure(args, work: Path) -> dict:
    """SMP-S vs smp-struct at each keep: compacted size, exactness, artifact bytes, interleaved latency."""
    sys.path.insert(0, str(Path(__file__).parent))
    from export_compaction import latency, max_logit_error, model_bytes

    from sparsekit.export.artifact import export
    from sparsekit.export.compact import compact
    from sparsekit.prune import load_pruned

    torch.set_num_threads(args.threads)
    rows = []
    for keep in args.keeps:
        entry = {"target_keep": keep}
        compacted = {}
        for method in ("smp-s", "smp-struct"):
            run = row_dir(work, args.seeds[0], method, keep)
            if not (run / "metrics.json").is_file():
                raise SystemExit(f"{run} is missing: run the accuracy rows first (--methods smp-s smp-struct)")
            pruned = load_pruned(run)
            model_c, report = compact(pruned.model)
            before, after = report.params()
            art = export(pruned, work / "artifacts" / f"{method}-{keep:g}", overwrite=True)
            compacted[method] = model_c
            entry[method] = {"accuracy": pruned.metrics["accuracy"], "density": pruned.metrics["density"],
                             "encoder_fraction": after / before, "encoder_bytes_compact_fp32": after * 4,
                             "model_bytes_compact": model_bytes(model_c),
                             "artifact_encoder_bytes": art.bytes_exported,
                             "heads_removed": sum(len(layer["heads_removed"]) for layer in report.layers),
                             "max_abs_logit_error": max_logit_error(pruned.model, model_c, pruned.tokenizer),
                             "structure": pruned.report.get("structure", {}).get("total")}
        # latency(a, b) measures both interleaved; "masked_dense" is SMP-S compacted, "compacted" smp-struct.
        entry["latency"] = {f"{b}x{args.seq}": latency(compacted["smp-s"], compacted["smp-struct"], b, args.seq,
                                                       args.repeats) for b in args.batch}
        s, t = entry["smp-s"], entry["smp-struct"]
        entry["size_ratio_encoder"] = s["encoder_bytes_compact_fp32"] / t["encoder_bytes_compact_fp32"]
        entry["size_ratio_model"] = s["model_bytes_compact"] / t["model_bytes_compact"]
        entry["accuracy_change"] = t["accuracy"] - s["accuracy"]
        rows.append(entry)
        print(json.dumps(entry), file=sys.stderr)
    return {"benchmark": "structured_smp_compaction", "command": " ".join(["python"] + sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(), "versions": library_versions(),
            "rows": rows}


def structure_markdown(result: dict) -> str:
    lines = ["# Structure-aware SMP vs SMP-S: compacted size and latency (MiniLM-L6, SST-2)", "",
             f"Command: `{result['command']}`  ", f"Machine: {result['machine']['cpu']}, torch threads "
             f"{result['machine']['torch_threads']}  ", f"Date: {result['date']}", "",
             "Encoder = the six matrix types as dense fp32 after exact compaction; model = every parameter of the "
             "compacted model (embeddings included); artifact = encoder matrices as exported (auto dense/CSR). "
             "Latency: compacted models, median, interleaved in one process.", "",
             "| remaining | method | dev acc | encoder after | encoder MiB | model MiB | artifact MiB | heads gone |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        for m in ("smp-s", "smp-struct"):
            e = r[m]
            lines.append(f"| {100 * r['target_keep']:g}% | {m} | {100 * e['accuracy']:.2f} | "
                         f"{100 * e['encoder_fraction']:.2f}% | {e['encoder_bytes_compact_fp32'] / 2**20:.2f} | "
                         f"{e['model_bytes_compact'] / 2**20:.2f} | {e['artifact_encoder_bytes'] / 2**20:.2f} | "
                         f"{e['heads_removed']} |")
    lines += ["", "| remaining | encoder size ratio | model size ratio | accuracy change | latency SMP-S → struct |",
              "|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        lat = "; ".join(f"{k}: {v['masked_dense']['median_ms']:.1f} → {v['compacted']['median_ms']:.1f} ms "
                        f"({v['speedup']:.2f}×)" for k, v in r["latency"].items())
        lines.append(f"| {100 * r['target_keep']:g}% | {r['size_ratio_encoder']:.2f}× | {r['size_ratio_model']:.2f}× | "
                     f"{100 * r['accuracy_change']:+.2f} | {lat} |")
    return "\n".join(lines) + "\n"


def test_metrics(out: Path) -> dict:
    """The entity metrics of a finished CoNLL-2003 row on the official test file, cached beside the row."""
    from sparsekit.evaluate import evaluate_saved

    cache = out.parent / f"{out.name}.test.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    metrics, _ = evaluate_saved(out, split="test")
    cache.write_text(json.dumps(metrics) + "\n")
    return metrics


def build_result(rows: list[dict], args, budget: Budget, wall_seconds: float) -> dict:
    """The JSON result of a table: rows, per-configuration statistics, targets and inequality checks."""
    metric_names = TASKS[args.task]
    configs = report.configurations(rows, metric_names)
    chains = [tuple(row_name(method, block, args.score_lr) for method, block in chain) for chain in CHAINS]
    inequalities = [check for metric in metric_names for chain in chains
                    for check in report.inequality_checks(configs, metric, chain)]
    return {"benchmark": "accuracy", "task": args.task, "model": args.model, "data_dir": args.data_dir,
            "note": NOTES.get(args.task),
            "budget": budget.description,
            "budget_name": budget.name,
            "seeds": list(args.seeds), "metric_names": metric_names,
            "command": " ".join(["python"] + sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "wall_seconds": wall_seconds, "machine": machine_info(), "versions": library_versions(),
            "sparsekit": sparsekit.__version__, "rows": rows, "configurations": configs,
            "closeness": [check for metric, targets in CLOSENESS[args.task].items()
                          for check in report.closeness_checks(
                              configs, metric, [(row_name(m, score_lr=args.score_lr), keep, margin)
                                                for m, keep, margin in targets])],
            "inequalities": inequalities}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a ``--preset`` sets defaults that explicit options still override."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=tuple(PRESETS), default=None,
                        help="a named table: sst2-cpu (same CPU budget, 10%% and 3%%) or mrpc-paper (paper budget)")
    parser.add_argument("--task", choices=tuple(TASKS), default="sst2")
    parser.add_argument("--full", action="store_true", help="paper budget (see the module docstring)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--train-samples", type=int, default=16000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="one row per seed [42 43 44]")
    seeds.add_argument("--seed", type=int, default=None, help="a single seed (same as --seeds SEED)")
    parser.add_argument("--save-every", type=int, default=100,
                        help="checkpoint every this many steps, where an interrupted row resumes")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + NEW_METHODS)
    parser.add_argument("--block", nargs="+", default=["1x1"],
                        help="block shapes of the pruning rows: 1x1 (unstructured, rows named by the method) and/or "
                             "e.g. 1x4 (rows named <method>-b1x4) [1x1]")
    parser.add_argument("--score-lr", type=float, default=None,
                        help="score learning rate of the pruning rows instead of each recipe's; their rows are "
                             "named <method>-slr<lr>, so rows with the recipe's rate are reused, not overwritten")
    parser.add_argument("--keeps", nargs="*", type=float, default=list(KEEPS),
                        help="remaining fractions of the pruning rows (none: the dense rows only)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/accuracy"),
                        help="where the per-row runs go (finished rows are reused, interrupted ones resumed)")
    parser.add_argument("--reuse-results", default=None, metavar="FILE",
                        help="take the rows whose directory holds no finished run from this earlier results file of "
                             "the same table ('none': never) [the JSON this command writes]")
    parser.add_argument("--name", default=None,
                        help="results file stem [accuracy_<task>_<cpu|full>_seeds; structured_smp_<cpu|full>]")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--compare-structure", action="store_true",
                        help="compare the finished smp-s and smp-struct rows: compacted size and latency")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8], help="--compare-structure: batch sizes")
    parser.add_argument("--seq", type=int, default=128, help="--compare-structure: sequence length")
    parser.add_argument("--repeats", type=int, default=20, help="--compare-structure: timed runs per model")
    parser.add_argument("--threads", type=int, default=2, help="--compare-structure: torch threads")
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    if args.seed is not None:
        args.seeds = [args.seed]
    try:
        args.block = list(dict.fromkeys(str(parse_block(b)) for b in args.block))
    except ValueError as exc:
        parser.error(str(exc))
    no_blocks = [m for m in args.methods if not RECIPES[base_method(m)].blocks]
    if args.block != ["1x1"] and no_blocks:
        parser.error(f"--block {' '.join(args.block)}: {', '.join(no_blocks)} cannot prune in blocks; drop them from "
                     f"--methods")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result written (the table's JSON, or --compare-structure's)."""
    # A plain `kill` ends a sitting like Ctrl-C, so the row's wall time of that sitting is still recorded.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return _main(parse_args(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> dict:
    """The benchmark for parsed arguments (see main)."""
    budget = budget_for(args)
    work = args.work_dir / f"{args.task}-{budget.name}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    if args.compare_structure:
        result = compare_structure(args, work)
        stem = args.name or f"structured_smp_{budget.name}"
        write_result(args.results_dir / stem, result, structure_markdown(result))
        return result
    started = time.time()
    stem = args.name or f"accuracy_{args.task}_{budget.name}_seeds"
    target = args.results_dir / f"{stem}.json"
    reuse = {None: target, "none": None}.get(args.reuse_results, args.reuse_results)
    if args.reuse_results not in (None, "none") and not Path(reuse).is_file():
        raise SystemExit(f"--reuse-results {reuse}: no such file (give an accuracy results JSON, or 'none')")
    recorded = recorded_rows(None if reuse is None else Path(reuse), args, budget)
    _check_no_rows_lost(target, args)
    rows = []
    for seed in args.seeds:
        rows.append(run_row("finetune", 1.0, seed, args, budget, work, recorded=recorded))
        for keep in args.keeps:
            for block in args.block:
                for method in args.methods:
                    rows.append(run_row(method, keep, seed, args, budget, work, block, recorded=recorded))
    result = build_result(rows, args, budget, time.time() - started)
    write_result(args.results_dir / stem, result, report.to_markdown(result))
    report.plot(result, args.results_dir / f"{stem}.png")
    return result


if __name__ == "__main__":
    main()
