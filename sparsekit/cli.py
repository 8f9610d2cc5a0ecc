"""The ``sparsekit`` command line. Every command calls the same Python API a user would."""
from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from sparsekit.cli_options import config_command, config_option
from sparsekit.errors import format_error
from sparsekit.pipeline import MainJobConfig
from sparsekit.prune.config import PruneConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Prune BERT-style models for a task, export them compact, and run them fast.")
console = Console(stderr=False)
err = Console(stderr=True, soft_wrap=True)


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {format_error(exc)}")
    raise typer.Exit(code=2)


#: The main job's dense-reference and latency settings (one home: sparsekit.pipeline.MainJobConfig).
MAIN_JOB_TIMING = MainJobConfig(prune=None)
#: The main job's defaults: SMP-S at 10% remaining on the shipped MiniLM + SST-2, sized for ~10 min on
#: 2 CPU cores (1000 steps of batch 32, about half an epoch of SST-2). `sparsekit prune` exposes every setting.
MAIN_JOB = dict(method="smp-s", keep=0.1, task="sst2", model="minilm", train_samples=None, steps=1000,
                batch_size=32, max_length=64)


def _data_label(config) -> str:
    """The GLUE task, the train file's name or the dataset a run used (for titles)."""
    from sparsekit.data.source import DataSource

    return DataSource.from_config(config).label


def _run_prune(config, export_to: Path | None = None) -> None:
    """Prune, print the per-layer table and the summary; with ``export_to``, also export + verify an artifact."""
    from sparsekit.prune import prune
    from sparsekit.prune.report import render_table

    started = time.perf_counter()
    try:
        result = prune(config)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)
    if not result.metrics:  # stopped early on purpose (--stop-after)
        return
    console.print(render_table(result.stats, title=f"Per-layer sparsity ({config.method}, {_data_label(config)})"))
    extra = []
    if export_to is not None:
        from sparsekit.export.artifact import export, verify

        exported = export(result.output_dir, export_to)
        check = verify(export_to)
        before, after = exported.report.params()
        heads = sum(len(layer["heads_removed"]) for layer in exported.report.layers)
        extra = [("exact compaction", f"{100 * after / before:.2f}% of the encoder's dense parameters remain "
                                      f"({heads} heads removed)"),
                 ("artifact", f"{exported.path}: encoder matrices {exported.bytes_dense / 2**20:.1f} MiB dense fp32 -> "
                              f"{exported.bytes_exported / 2**20:.1f} MiB stored; verify max |Δlogit| "
                              f"{check['max_abs_error']:.1g}")]
    _print_summary(config, result, time.perf_counter() - started, extra)


def _print_summary(config, result, wall: float, extra: list[tuple[str, str]] = ()) -> None:
    from sparsekit.data.source import DataSource
    from sparsekit.prune.report import describe_block
    from sparsekit.tasks import get_task_type

    m = result.metrics
    task_type = get_task_type(DataSource.from_config(config).resolved_task_type)
    table = Table(title="What sparsekit did", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("method", f"{config.method}, {describe_block(config.block)} (target {100 * m['target_keep']:.1f}% "
                            f"of encoder weights remaining)")
    table.add_row("model / data", f"{config.model} / {_data_label(config)}")
    table.add_row("remaining weights", f"{100 * result.density:.2f}% of the prunable encoder matrices")
    for key, value in task_type.summary_metrics(m):
        table.add_row(f"dev {key}", value)
    table.add_row("train", f"{result.steps} steps in {m['train_seconds']:.0f} s")
    table.add_row("evaluate", f"{m['eval_samples']} dev examples in {m['eval_seconds']:.1f} s")
    for key, value in extra:
        table.add_row(key, value)
    table.add_row("total time", f"{wall:.0f} s")
    table.add_row("output", str(result.output_dir))
    console.print(table)


@app.command()
@config_command(PruneConfig)
def prune(config: PruneConfig) -> None:
    """Prune (or fine-tune) a model on a GLUE task, conll2003 (NER), squad (QA) or your own data (--task-type
    sequence-classification, token-classification or question-answering) and save a directory that reloads in
    one call."""
    _run_prune(config)


@app.command()
def run(
    output_dir: Path = config_option(PruneConfig, "output_dir", default="runs/main-job"),
    data_dir: Optional[Path] = typer.Option(None, help="GLUE data root [default: ../shared/data/glue]."),
    steps: int = typer.Option(MAIN_JOB["steps"], help="Optimisation steps (more = better masks, longer)."),
    train_samples: Optional[int] = typer.Option(MAIN_JOB["train_samples"],
                                                help="Train on a fixed subset of this size [all 67,349]."),
    keep: float = typer.Option(MAIN_JOB["keep"], help="Remaining fraction of encoder weights."),
    dense_baseline_steps: int = typer.Option(
        MAIN_JOB_TIMING.dense_baseline_steps,
        help="Steps of the dense fine-tune that gives the accuracy reference (0: skip it)."),
    batch: list[int] = typer.Option(list(MAIN_JOB_TIMING.batches), "--batch",
                                    help="Batch sizes of the latency comparison (repeatable)."),
    seq: int = typer.Option(MAIN_JOB_TIMING.seq, help="Sequence length of the latency comparison (and of compile's "
                            "timing)."),
    latency_seconds: float = typer.Option(MAIN_JOB_TIMING.min_seconds, help="Timed seconds per model and batch size."),
    seed: int = config_option(PruneConfig, "seed"),
    overwrite: bool = config_option(PruneConfig, "overwrite"),
    progress: bool = config_option(PruneConfig, "progress"),
) -> None:
    """The main job: SMP-S prune the shipped MiniLM on SST-2, export it compact, compile, evaluate and time it
    against dense (~10 min on 2 CPU cores). More --steps (and --train-samples unset) give a better model."""
    from sparsekit.pipeline import run_main_job, summary_rows
    from sparsekit.prune.report import render_table

    if dense_baseline_steps < 0 or seq < 1 or any(b < 1 for b in batch):
        _fail(ValueError("--dense-baseline-steps must be >= 0, --seq and every --batch >= 1"))
    config = PruneConfig(**{**MAIN_JOB, "keep": keep, "steps": steps, "train_samples": train_samples},
                         output_dir=str(output_dir), data_dir=str(data_dir) if data_dir else None, seed=seed,
                         overwrite=overwrite, progress=progress)
    try:
        result = run_main_job(MainJobConfig(config, dense_baseline_steps, tuple(batch), seq, latency_seconds),
                              log=lambda msg: console.print(f"[bold]{msg}[/]"))
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)
    console.print(render_table(result.stats, title=f"Per-layer sparsity ({config.method}, {_data_label(config)})"))
    table = Table(title="sparsekit main job", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary_rows(result.summary):
        table.add_row(key, value)
    console.print(table)


@app.command()
def evaluate(
    path: Path = typer.Argument(..., help="A pruning output directory or an exported artifact."),
    task: Optional[str] = typer.Option(None, help="GLUE or built-in task [default: the run's data]."),
    data_dir: Optional[Path] = typer.Option(None, help="GLUE data root (a built-in task's data folder)."),
    split: str = typer.Option("dev", help="dev (dev_mismatched for MNLI; test or train for conll2003; train for "
                                          "squad, the re-split's train articles)."),
    validation_file: Optional[Path] = typer.Option(
        None, help="Evaluate on this labelled file (CSV, TSV, JSON, JSON Lines, Parquet; CoNLL for NER, SQuAD JSON "
                   "for QA) instead of a GLUE split."),
    text_column: Optional[str] = typer.Option(None, help="Text column of --validation-file [the run's]."),
    text_pair_column: Optional[str] = typer.Option(None, help="Second text column of --validation-file [the run's]."),
    label_column: Optional[str] = typer.Option(None, help="Label column of --validation-file [the run's]."),
    tokens_column: Optional[str] = typer.Option(None, help="NER: word-list column of --validation-file [the run's]."),
    tags_column: Optional[str] = typer.Option(None, help="NER: tag-list column of --validation-file [the run's]."),
    question_column: Optional[str] = typer.Option(None, help="QA: question column of --validation-file [the run's]."),
    context_column: Optional[str] = typer.Option(None, help="QA: context column of --validation-file [the run's]."),
    answers_column: Optional[str] = typer.Option(None, help="QA: answers column of --validation-file [the run's]."),
    batch_size: int = typer.Option(128),
    compile_model: bool = typer.Option(True, "--compile/--no-compile",
                                       help="Run sparsekit.compile first (an artifact evaluates on the fused "
                                            "runtime, reusing its saved plan)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a saved pruning run or artifact on a GLUE dev set, a built-in task's split, or your own labelled
    file."""
    from sparsekit.evaluate import evaluate_saved

    columns = dict(text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                   tokens_column=tokens_column, tags_column=tags_column, question_column=question_column,
                   context_column=context_column, answers_column=answers_column)
    try:
        metrics, where = evaluate_saved(path, task=task, data_dir=data_dir, split=split,
                                        validation_file=validation_file, batch_size=batch_size, progress=True,
                                        compile=compile_model, **columns)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    table = Table(title=f"{path} on {where}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, dict):  # NER's per_type: one row per entity type and measure
            for name, scores in value.items():
                for measure, number in scores.items():
                    table.add_row(f"{name} {measure}", f"{number:.4f}" if isinstance(number, float) else str(number))
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command()
def report(
    path: Path = typer.Argument(..., help="A pruning output directory or an exported artifact."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Per-layer report: sparsity of a pruning run, or compaction / formats of an artifact."""
    from sparsekit.export.artifact import REPORT
    from sparsekit.export.report import render_export_table, summary_lines
    from sparsekit.models import prunable_matrices
    from sparsekit.prune import load_pruned
    from sparsekit.prune.blocks import parse_block
    from sparsekit.prune.report import describe_block, matrix_stats, render_table, to_json
    from sparsekit.sources import ARTIFACT, directory_kind

    if directory_kind(path) == ARTIFACT:
        try:
            data = json.loads((path / REPORT).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            _fail(ValueError(f"{path / REPORT} cannot be read ({exc}); re-export the artifact"))
        if as_json:
            print(json.dumps(data, indent=2))
            return
        console.print(render_export_table(data, title=f"{path}"))
        for line in summary_lines(data):
            console.print(line)
        return
    try:
        pruned = load_pruned(path)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    stats = matrix_stats(prunable_matrices(pruned.model), pruned.masks)
    block = pruned.recipe.get("block")  # absent in runs recorded before block pruning: unstructured
    if as_json:
        print(json.dumps(to_json(stats, parse_block(block or "1x1")), indent=2))
    else:
        console.print(render_table(stats, title=f"{path} ({pruned.recipe.get('method')}, {describe_block(block)})"))


class Format(str, Enum):
    auto = "auto"
    dense = "dense"
    csr = "csr"
    bsr = "bsr"
    lowrank = "lowrank"


@app.command("export")
def export_cmd(
    source: Path = typer.Argument(..., help="A pruning output directory, or a Hugging Face checkpoint with zeros."),
    output: Path = typer.Option(..., "--output", "-o", help="Artifact directory to write."),
    fmt: Format = typer.Option(Format.auto, "--format", help="Per-matrix format: auto = smaller of dense / CSR."),
    min_row_weights: int = typer.Option(0, help="Lossy: drop rows with fewer kept weights (0 = exact only)."),
    task: Optional[str] = typer.Option(None, help="Measure dev metrics (masked dense vs lossy) on this task."),
    data_dir: Optional[Path] = typer.Option(None, help="GLUE data root."),
    eval_samples: Optional[int] = typer.Option(None, help="Evaluate on a seeded dev subset."),
    block: str = typer.Option("32x32", help="BSR block shape, rows x cols."),
    rank: Optional[int] = typer.Option(None, help="Low-rank: the rank."),
    tol: Optional[float] = typer.Option(None, help="Low-rank: smallest rank with this relative error."),
    bf16: bool = typer.Option(False, "--bf16", help="Store values in bfloat16."),
    precision: str = typer.Option("fp32", "--precision",
                                  help="fp32, or int8: every matrix stored as int8 1x4 blocks with a scale per row "
                                       "(lossy; compile runs them on the int8 kernels)."),
    int8_weight_bits: Optional[int] = typer.Option(None, "--int8-weight-bits",
                                                   help="With --precision int8: 8 (default), or 7: faster on "
                                                        "CPUs without VNNI (AVX2, AVX-512BW), half the weight "
                                                        "resolution."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing artifact."),
) -> None:
    """Compact a pruned model exactly (optionally lossily) and write one artifact that reloads in one call.

    Sequence classifiers, token classifiers (NER) and extractive QA models: the artifact records the task type.
    """
    import torch

    from sparsekit.export.artifact import REPORT, export
    from sparsekit.export.report import render_export_table, summary_lines

    try:
        br, bc = (int(v) for v in block.lower().split("x"))
    except ValueError:
        _fail(ValueError(f"--block must look like 32x32, got {block!r}"))
    try:
        result = export(source, output, formats=fmt.value, min_row_weights=min_row_weights, task=task,
                        data_dir=str(data_dir) if data_dir else None, eval_samples=eval_samples, block=(br, bc),
                        rank=rank, tol=tol, value_dtype=torch.bfloat16 if bf16 else torch.float32,
                        overwrite=overwrite, precision=precision, int8_weight_bits=int8_weight_bits)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)
    data = json.loads((result.path / REPORT).read_text())
    console.print(render_export_table(data, title=f"Export of {source}"))
    for line in summary_lines(data):
        console.print(line)
    task_type = json.loads((result.path / "manifest.json").read_text()).get("task_type")
    console.print(f"artifact: {result.path} ({task_type})")


@app.command("compile")
def compile_cmd(
    path: Path = typer.Argument(..., help="An artifact directory (from `sparsekit export` or the main job)."),
    tokens: int = typer.Option(128, min=1, help="Tokens (batch x length) of the deployment, timed per matrix."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads to measure with [torch's default]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a plan the artifact already has."),
) -> None:
    """Measure the fastest backend of every fused matrix on this machine and save the plan into the artifact
    (compile_plan.json): `sparsekit.load` + `sparsekit.compile`, `serve` and `evaluate` then reuse it on the same
    CPU, ISA and thread count instead of re-timing."""
    import torch

    from sparsekit.compiler import compile as compile_model
    from sparsekit.export.artifact import load
    from sparsekit.runtime.plan import save_plan

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model = load(path)
        report = compile_model(model, tokens=tokens, retime=True)
        saved = save_plan(report, path, overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)
    console.print(f"saved {saved} ({len(report.layers)} matrices, {report.tokens} tokens, {report.threads} threads)")


@app.command()
def verify(
    path: Path = typer.Argument(..., help="An artifact directory."),
    atol: float = typer.Option(1e-4, help="Largest accepted |logit difference| (per token for token "
                                           "classification and QA)."),
) -> None:
    """Load an artifact, re-run its sample inputs and compare with the recorded outputs (logits; per token for
    token classification; start / end logits for QA)."""
    from sparsekit.export.artifact import verify as run_verify

    try:
        result = run_verify(path, atol)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    status = "[green]OK[/]" if result["ok"] else "[red]MISMATCH[/]"
    console.print(f"{status}: {result['samples']} samples ({result['task_type']}), max |Δlogit| = "
                  f"{result['max_abs_error']:.3g} (tolerance {atol:g}), {result['label_mismatches']} changed "
                  f"predictions")
    if not result["ok"]:
        raise typer.Exit(code=1)


@app.command()
def predict(
    path: Path = typer.Argument(..., help="An artifact directory."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to classify, or to find entities in."),
    file: Optional[Path] = typer.Option(None, "--file", help="A file with one text per line (QA: one JSON object "
                                                             "{\"question\", \"context\"} per line)."),
    question: Optional[list[str]] = typer.Option(None, "--question", help="QA: a question (repeatable)."),
    context: Optional[str] = typer.Option(None, "--context", help="QA: the context every --question is asked of."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Predict with an exported artifact: labels of texts, entities in texts (NER), or answers (QA)."""
    from sparsekit.export.heads import QA, TOKEN
    from sparsekit.export.predict import Predictor

    try:
        predictor = Predictor.from_artifact(path)
        items = _predict_inputs(predictor.task_type, texts, file, question, context)
        results = predictor.predict(items)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    for item, p in zip(items, results):
        if predictor.task_type == TOKEN:
            text = item if isinstance(item, str) else " ".join(item)
            if as_json:
                print(json.dumps({"text": text, "entities": p}))
                continue
            console.print(text, markup=False)
            for e in p:
                console.print(f"  {e['entity']}\t{e['start']}-{e['end']}\t{e['score']:.3f}\t{e['word']}", markup=False)
        elif predictor.task_type == QA:
            if as_json:
                print(json.dumps({"question": item["question"], **p}))
            else:
                console.print(f"{p['answer']!r}\t{p['start']}-{p['end']}\t{p['score']:.3f}\t{item['question']}",
                              markup=False)
        elif as_json:
            print(json.dumps({"text": p.text, "label": p.label, "score": p.score, "scores": p.scores}))
        else:
            console.print(f"{p.label}\t{p.score:.3f}\t{p.text}")


def _predict_inputs(task_type: str, texts, file, question, context) -> list:
    """The inputs of ``sparsekit predict`` for the artifact's task type; ValueError naming what is missing."""
    from sparsekit.export.heads import QA

    lines = []
    if file is not None:
        lines = [line for line in file.read_text().splitlines() if line.strip()]
    if task_type != QA:
        if question or context:
            raise ValueError(f"--question / --context are for question-answering artifacts; this one is "
                             f"{task_type}: give texts")
        items = list(texts or []) + lines
        if not items:
            raise ValueError("give texts as arguments or --file FILE")
        return items
    if texts:
        raise ValueError("a question-answering artifact takes --question Q --context C (or --file with JSON lines "
                         "{\"question\", \"context\"}), not texts")
    items = []
    for i, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{file}:{i}: not a JSON object ({exc})") from None
        if not isinstance(item, dict) or not {"question", "context"} <= set(item):
            raise ValueError(f"{file}:{i}: expected a JSON object with \"question\" and \"context\"")
        items.append({"question": item["question"], "context": item["context"]})
    if question:
        if context is None:
            raise ValueError("--question needs --context (the text to find the answer in)")
        items += [{"question": q, "context": context} for q in question]
    elif context is not None:
        raise ValueError("--context needs at least one --question")
    if not items:
        raise ValueError("give --question Q --context C, or --file FILE with JSON lines {\"question\", \"context\"}")
    return items


@app.command()
def serve(
    path: Path = typer.Argument(..., help="An artifact directory."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    compile_model: bool = typer.Option(True, "--compile/--no-compile",
                                       help="Time every layer first and run each on its fastest kernel."),
    tokens: int = typer.Option(128, min=1, help="Tokens (batch x length) --compile times each layer with."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: torch's choice)."),
    max_batch_size: int = typer.Option(32, min=1, help="Most texts per model call (batched across requests)."),
    batch_wait_ms: float = typer.Option(5.0, min=0, help="How long a batch waits for more requests."),
    max_texts: int = typer.Option(256, min=1, help="Most texts per request."),
    max_text_chars: int = typer.Option(2000, min=1, help="Longest text (QA: question), in characters."),
    max_context_chars: int = typer.Option(20000, min=1, help="QA: longest context, in characters (longer: 422)."),
    max_body_bytes: int = typer.Option(1 << 20, min=1, help="Largest request body."),
    max_length: Optional[int] = typer.Option(None, min=1, help="Truncate inputs to this many tokens "
                                                               "(QA: per window; default: the artifact's, or 128; "
                                                               "QA 384)."),
    timeout_keep_alive: float = typer.Option(5.0, help="Seconds before an idle connection (also a new one that "
                                                       "sends nothing) is closed."),
    timeout_read: float = typer.Option(10.0, help="Seconds a client has to send a request's headers, and again "
                                                  "its body; a stalled one gets 408."),
    timeout_shutdown: float = typer.Option(30.0, min=0, help="On SIGTERM / Ctrl-C: seconds queued requests get to "
                                                             "finish; the rest get 503, then the server exits 0."),
    log_level: str = typer.Option("info", help="critical, error, warning, info or debug."),
) -> None:
    """Serve an artifact over HTTP: POST /predict (batched; the body depends on the task type: texts, texts or
    word lists for NER, question / context pairs for QA), GET /health, GET /info."""
    from sparsekit.serve import ServeError, build_app
    from sparsekit.serve import run as run_server
    from sparsekit.serve.server import interruptible_startup

    if log_level not in ("critical", "error", "warning", "info", "debug"):
        _fail(ValueError(f"--log-level must be critical, error, warning, info or debug, got {log_level!r}"))
    for flag, seconds in (("--timeout-keep-alive", timeout_keep_alive), ("--timeout-read", timeout_read)):
        if not seconds > 0:
            _fail(ValueError(f"{flag} must be > 0 seconds, got {seconds:g}"))
    try:
        with interruptible_startup():
            web = build_app(path, compile=compile_model, tokens=tokens, threads=threads, max_length=max_length,
                            max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
                            max_texts_per_request=max_texts, max_text_chars=max_text_chars,
                            max_context_chars=max_context_chars, max_body_bytes=max_body_bytes,
                            read_timeout_s=timeout_read,
                            shutdown_timeout_s=timeout_shutdown)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while loading / compiling: nothing is served yet
        err.print("stopped before serving (interrupted while loading the artifact)")
        return
    console.print(f"serving {path} at http://{host}:{port}: POST /predict, GET /health, GET /info (Ctrl-C stops)")
    try:
        run_server(web, host=host, port=port, log_level=log_level, timeout_keep_alive_s=timeout_keep_alive)
    except ServeError as exc:
        _fail(exc)


@app.command()
def tasks(data_dir: Optional[Path] = typer.Option(None, help="GLUE data root.")) -> None:
    """List the GLUE tasks, their metrics, and which splits are present in the data root; then the built-in
    NER and QA tasks."""
    from sparsekit.data import TASKS, resolve_data_root, split_path

    try:
        root = resolve_data_root(data_dir)
    except FileNotFoundError as exc:
        _fail(exc)
    table = Table(title=f"GLUE tasks in {root}")
    for col in ("task", "labels", "metrics", "train", "dev"):
        table.add_column(col)
    for spec in TASKS.values():
        present = []
        for split in ("train", "dev"):
            try:
                split_path(spec, split, root)
                present.append("yes")
            except (FileNotFoundError, ValueError):
                present.append("-")
        labels = "regression" if spec.is_regression else ", ".join(spec.label_names or ())
        table.add_row(spec.name, labels, ", ".join(spec.metrics), *present)
    console.print(table)
    _print_builtin_tasks()


def _print_builtin_tasks() -> None:
    """The built-in tasks of the other task types, and whether their data folder is present."""
    from sparsekit.data.source import BUILTIN_TASKS, builtin_data_dir
    from sparsekit.tasks import get_task_type

    table = Table(title="Built-in tasks (token classification, question answering; --data-dir: their folder)")
    for col in ("task", "task type", "metrics", "data"):
        table.add_column(col)
    for name, type_name in BUILTIN_TASKS.items():
        try:
            where = str(builtin_data_dir(name))
        except FileNotFoundError:
            where = "-"
        note = " (dev re-split by article: not comparable to the official dev set)" if name == "squad" else ""
        table.add_row(name, type_name, ", ".join(get_task_type(type_name).metrics) + note, where)
    console.print(table)


def _multi_value_command():
    """The command class that lets ``--batch 1 8`` take several values (sparsekit/bench/cliargs.py)."""
    from sparsekit.bench.cliargs import MultiValueCommand

    return MultiValueCommand


@app.command(cls=_multi_value_command())
def bench(
    ctx: typer.Context,
    model: Optional[str] = typer.Argument(None, help="Artifact dir, pruning run dir, checkpoint dir, minilm, or "
                                                     "random:<shape> (bert-base, minilm-shape, tiny)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o",
                                              help="Directory for bench.json, bench.csv and bench.png."),
    sparsity: Optional[list[float]] = typer.Option(None, help="Random unstructured masks removing this fraction of "
                                                              "encoder weights; several values sweep (random and "
                                                              "checkpoint models only)."),
    batch: list[int] = typer.Option([1, 8], help="Batch sizes, e.g. --batch 1 8."),
    seq: list[int] = typer.Option([128], help="Sequence lengths, e.g. --seq 64 128."),
    threads: Optional[list[int]] = typer.Option(None, help="torch thread counts (default: the current one)."),
    warmup: int = typer.Option(3, help="Untimed calls before each measurement."),
    repeats: int = typer.Option(20, help="Timed calls per variant and config (at least)."),
    min_seconds: float = typer.Option(1.0, help="Time each variant at least this long per config."),
    rounds: int = typer.Option(2, help="Interleaved rounds over the variants; the least disturbed is reported."),
    compile_repeats: int = typer.Option(15, help="Timed calls per backend and layer in sparsekit.compile."),
    torch_compile: bool = typer.Option(False, "--torch-compile", help="Also time torch.compile of the dense "
                                                                      "model (minutes of compiling on CPU)."),
    int8: bool = typer.Option(False, "--int8", help="Also time sparsekit.compile(precision='int8') (the int8 "
                                                    "1x4-block kernels where they are fastest; int8 numerics)."),
    layers: bool = typer.Option(False, "--layers", help="Layer-level mode: per-layer time of every backend."),
    seed: int = typer.Option(0, help="Seed of the random masks and inputs."),
    task_type: Optional[str] = typer.Option(None, help="Head of a random or checkpoint model: "
                                                       "sequence-classification, token-classification or "
                                                       "question-answering [a checkpoint's own; artifacts and runs "
                                                       "have theirs]. Inputs are shaped like the task."),
    compare: Optional[tuple[Path, Path]] = typer.Option(None, help="Compare two result files A.json B.json "
                                                                   "(matched by config) instead of measuring."),
    markdown: Optional[Path] = typer.Option(None, help="With --compare: also write the table as markdown here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
) -> None:
    """Latency and throughput of a pruned model vs dense PyTorch, torch.compile, torch.sparse, ONNX Runtime."""
    from sparsekit.bench import BenchConfig, compare_files, notes, result_table, run_bench

    if compare is not None and all(p is not None for p in compare):
        try:
            comparison = compare_files(*compare)
            if markdown is not None:
                comparison.write_markdown(markdown, overwrite)
        except (ValueError, FileNotFoundError, FileExistsError) as exc:
            _fail(exc)
        console.print(comparison.table())
        for line in comparison.lines():
            console.print(line, markup=False)
        if markdown is not None:
            console.print(f"markdown: {markdown}")
        return
    if model is None or output_dir is None:
        _fail(ValueError("give MODEL and -o OUTDIR (or --compare A.json B.json)"))
    config = BenchConfig(model=model, output_dir=output_dir, sparsity=sparsity, batch=batch, seq=seq,
                         threads=threads, warmup=warmup, repeats=repeats, min_seconds=min_seconds, rounds=rounds,
                         compile_repeats=compile_repeats, torch_compile=torch_compile, int8=int8, layers=layers,
                         seed=seed,
                         overwrite=overwrite, task_type=task_type)
    try:
        result = run_bench(config, command=["sparsekit", "bench", *ctx.meta.get("raw_args", [])],
                           log=lambda msg: err.print(msg, markup=False))
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)
    console.print(result_table(result.data))
    for line in notes(result.data):
        console.print(line, markup=False)
    for kind, path in result.paths.items():
        console.print(f"{kind}: {path}", markup=False)


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Which backends are built and usable here, and why not the others (ISA, OpenMP, CUDA, Triton, compilers)."""
    from sparsekit import info as doctor

    data = doctor.collect()
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    for renderable in doctor.render(data):
        console.print(renderable)


def main() -> None:
    """Entry point of the ``sparsekit`` console script."""
    app(prog_name="sparsekit")


if __name__ == "__main__":
    sys.exit(main())
