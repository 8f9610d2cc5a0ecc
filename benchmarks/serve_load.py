"""Load test of `sparsekit serve`: throughput and p50 / p99 latency, dense vs compiled, on loopback.

For each mode (``dense`` = ``--no-compile``, ``compiled`` = ``--compile``) a server is started in a
subprocess on a free port, the client waits for ``/health``, warms it up, then runs closed-loop clients at
each concurrency level (every client sends its next request as soon as the previous one is answered),
bounded by ``--requests`` and ``--duration`` per level. Inputs follow the artifact's task type (``/info``):
sequence classification gets SST-2 dev sentences (the dev pairs of the artifact's task for pair tasks), token
classification CoNLL-2003 validation sentences as texts, question answering SQuAD v1.1 dev question / context
pairs (``{"inputs": [...]}``), each when the shared data is present (built-in examples otherwise); one
"text" of the report is one input. The server is stopped with SIGINT and its
shutdown time and exit code are recorded. Client and server share this machine's cores: the client's
own cost (one asyncio process) is part of the measurement, as it is for any loopback load test.

    python benchmarks/serve_load.py runs/main-job/artifact --concurrency 1 4 16
    python benchmarks/serve_load.py --smoke          # a tiny random artifact, a few requests (about a minute)
    python benchmarks/serve_load.py --smoke --task-type question-answering   # the same for a QA artifact

Writes ``benchmarks/results/serve_load_cpu.{json,md}`` (``--smoke``: ``$TMPDIR/sparsekit_serve_load_smoke.*``,
unless ``--out``). The shutdown time is from SIGINT to the process's exit, interpreter teardown included.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from results_io import RESULTS, write_result  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ARTIFACTS = ("runs/main-job/artifact", "runs/sst2-smp-s/artifact")
FALLBACK_TEXTS = ("a charming and often affecting journey.", "unflinchingly bleak and desperate",
                  "the acting is fine but the story goes nowhere.", "one of the best films of the year!",
                  "it 's a bad sign when you 're rooting for the film to end .",
                  "a thoughtful , provocative , insistently humanizing film .")
MODES = {"dense": "--no-compile", "compiled": "--compile"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_artifact(path: Path, task_type: str = "sequence-classification") -> Path:
    """Export a random tiny BERT with ``task_type``'s head (MiniLM tokenizer, 30% random masks) at ``path``."""
    import torch

    from sparsekit.export.artifact import export
    from sparsekit.models import load_model, load_tokenizer, prunable_matrices

    torch.manual_seed(0)
    model = load_model("random:tiny", task_type, num_labels=9 if task_type == "token-classification" else 2).eval()
    with torch.no_grad():
        for m in prunable_matrices(model):
            w = model.get_submodule(m.name).weight
            w.mul_(torch.rand_like(w) < 0.3)
    export((model, load_tokenizer("random:tiny")), path)
    return path


def request_inputs(model: dict, n: int = 512) -> tuple[str, list]:
    """``(body field, inputs)`` for the served model's task type (``/info``'s ``model``): see request_texts,
    ner_texts and qa_pairs."""
    task_type = model.get("task_type", "sequence-classification")
    if task_type == "token-classification":
        return "texts", ner_texts(n)
    if task_type == "question-answering":
        return "inputs", qa_pairs(n)
    return "texts", request_texts(model["task"], n)


def ner_texts(n: int = 512) -> list[str]:
    """Up to ``n`` CoNLL-2003 validation sentences (words joined by spaces); built-in sentences without data."""
    from sparsekit.data.source import builtin_data_dir
    from sparsekit.tasks.ner import read_conll

    try:
        sentences = read_conll(builtin_data_dir("conll2003") / "validation.txt")[:n]
    except (FileNotFoundError, ValueError):
        sentences = []
    return [" ".join(s.words) for s in sentences] or ["John Smith works for Acme Corporation in Berlin.",
                                                      "EU rejects German call to boycott British lamb."]


def qa_pairs(n: int = 512) -> list[dict]:
    """Up to ``n`` SQuAD v1.1 dev ``{"question", "context"}`` items; a built-in one without data."""
    from sparsekit.data.source import builtin_data_dir
    from sparsekit.tasks.qa import read_squad

    try:
        examples = read_squad(builtin_data_dir("squad") / "dev-v1.1.json")[:n]
    except (FileNotFoundError, ValueError):
        examples = []
    return [{"question": e.question, "context": e.context} for e in examples] or [
        {"question": "Where does John Smith work?", "context": "John Smith works for Acme Corporation in Berlin."}]


def request_texts(task: str | None, n: int = 512) -> list:
    """Up to ``n`` dev inputs of ``task`` (pairs as [a, b] for pair tasks); built-in sentences without data."""
    from sparsekit.data import get_task, load_split

    spec = get_task(task or "sst2")
    try:
        examples = load_split(spec, "dev", None, limit=n)
    except (FileNotFoundError, ValueError):
        examples = []
    if examples:
        return [[e.text_a, e.text_b] if spec.is_pair else e.text_a for e in examples]
    return [[a, b] for a, b in zip(FALLBACK_TEXTS, FALLBACK_TEXTS[1:])] if spec.is_pair else list(FALLBACK_TEXTS)


class Server:
    """`sparsekit serve` in a subprocess: start, wait for /health, stop with SIGINT and time the shutdown."""

    def __init__(self, artifact: Path, mode: str, args, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "sparsekit.cli", "serve", str(artifact), "--port", str(self.port),
                        MODES[mode], "--log-level", "warning", "--tokens", str(args.tokens),
                        "--max-batch-size", str(args.max_batch_size), "--batch-wait-ms", str(args.batch_wait_ms)]
        if args.threads:
            self.command += ["--threads", str(args.threads)]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float) -> float:
        """Start the server; returns seconds until /health answered ok (load + compile included)."""
        started = time.perf_counter()
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not healthy after {timeout:.0f} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> dict:
        """SIGINT, then wait: ``{"exit_code", "seconds", "clean"}`` (killed if it does not stop in time)."""
        if self.proc is None:
            return {}
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout)
            clean = code == 0
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code, clean = self.proc.wait(), False
        self._log.close()
        return {"exit_code": code, "seconds": round(time.perf_counter() - started, 3), "clean": clean}


async def run_level(url: str, field: str, texts: list, concurrency: int, per_request: int, max_requests: int,
                    max_seconds: float) -> dict:
    """``concurrency`` closed-loop clients until ``max_requests`` were sent or ``max_seconds`` passed; each request
    is ``{field: [per_request inputs]}``."""
    latencies, server_ms, errors, sent = [], [], {}, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal sent
            while sent < max_requests and time.perf_counter() - started < max_seconds:
                i, sent = sent, sent + 1
                body = {field: [texts[(i * per_request + k) % len(texts)] for k in range(per_request)]}
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict", json=body)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if r.status_code != 200 or len(r.json()["predictions"]) != per_request:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)
                server_ms.append(r.json()["latency_ms"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    lat = 1e3 * np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {"concurrency": concurrency, "texts_per_request": per_request, "requests": len(latencies),
            "errors": errors, "seconds": round(wall, 3), "requests_per_s": len(latencies) / wall,
            "texts_per_s": len(latencies) * per_request / wall,
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                           "p99": float(np.percentile(lat, 99)), "mean": float(lat.mean()), "max": float(lat.max())},
            "server_latency_ms_p50": float(np.median(server_ms)) if server_ms else None}


def batch_stats(url: str) -> dict:
    return httpx.get(url + "/info", timeout=10).json()["batching"]["stats"]


def bench_mode(artifact: Path, mode: str, args, workdir: Path) -> dict:
    """Start a server in ``mode``, run every concurrency level against it, stop it."""
    server = Server(artifact, mode, args, workdir / f"server-{mode}.log")
    print(f"[{mode}] starting: {shlex.join(server.command)}", flush=True)
    startup = server.start(args.startup_timeout)
    try:
        health = httpx.get(server.url + "/health", timeout=10).json()
        info = httpx.get(server.url + "/info", timeout=10).json()
        field, texts = request_inputs(info["model"])
        asyncio.run(run_level(server.url, field, texts, max(args.concurrency), args.texts_per_request, args.warmup,
                              60))
        levels = []
        for c in args.concurrency:
            before = batch_stats(server.url)
            level = asyncio.run(run_level(server.url, field, texts, c, args.texts_per_request, args.requests,
                                          args.duration))
            after = batch_stats(server.url)
            batches = after["batches"] - before["batches"]
            level["batches"] = batches
            level["mean_batch_texts"] = (after["texts"] - before["texts"]) / batches if batches else None
            levels.append(level)
            print(f"[{mode}] {c:3d} clients: {level['requests_per_s']:8.1f} req/s {level['texts_per_s']:8.1f} texts/s"
                  f"  p50 {level['latency_ms']['p50']:7.2f} ms  p99 {level['latency_ms']['p99']:7.2f} ms"
                  f"  mean batch {level['mean_batch_texts'] or 0:5.1f}  errors {sum(level['errors'].values())}",
                  flush=True)
    finally:
        shutdown = server.stop()
    print(f"[{mode}] shutdown: {shutdown}", flush=True)
    return {"mode": mode, "server_command": shlex.join(server.command), "startup_seconds": round(startup, 2),
            "compiled": health["compiled"], "backends": info["model"]["backends"], "task": health["task"],
            "task_type": info["model"].get("task_type"),
            "torch_threads": info["torch_threads"], "levels": levels, "shutdown": shutdown}


def to_markdown(result: dict) -> str:
    """The result as a markdown report: setup, one row per mode and concurrency, compiled / dense ratios."""
    machine, cfg = result["header"]["machine"], result["config"]
    task_types = sorted({str(m.get("task_type")) for m in result["modes"]})
    lines = [f"# `sparsekit serve` load test: {result['artifact']} ({', '.join(task_types)})", "",
             f"Command: `{result['command']}`", "",
             *(["**Smoke run**: a tiny random model and a few requests; these numbers are not a benchmark.", ""]
               if result["smoke"] else []),
             f"Machine: {machine['cpu']}, {machine['cores']} cores, flags {' '.join(machine['cpu_flags'])}; "
             f"versions {json.dumps(result['header']['versions'])}.", "",
             f"Closed-loop clients on loopback (client and server share the cores), {cfg['texts_per_request']} "
             f"text(s) per request, at most {cfg['requests']} requests or {cfg['duration']} s per level, "
             f"max batch {cfg['max_batch_size']}, batch wait {cfg['batch_wait_ms']} ms.",
             "", "| mode | clients | requests/s | texts/s | p50 ms | p99 ms | mean batch | requests | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in result["modes"]:
        for lv in mode["levels"]:
            lines.append(f"| {mode['mode']} | {lv['concurrency']} | {lv['requests_per_s']:.1f} | "
                         f"{lv['texts_per_s']:.1f} | {lv['latency_ms']['p50']:.2f} | {lv['latency_ms']['p99']:.2f} | "
                         f"{lv['mean_batch_texts'] or 0:.1f} | {lv['requests']} | {sum(lv['errors'].values())} |")
    by_mode = {m["mode"]: m for m in result["modes"]}
    if {"dense", "compiled"} <= set(by_mode):
        lines += ["", "| clients | throughput compiled / dense | p50 dense / compiled | p99 dense / compiled |",
                  "|---:|---:|---:|---:|"]
        for d, c in zip(by_mode["dense"]["levels"], by_mode["compiled"]["levels"]):
            lines.append(f"| {d['concurrency']} | {c['texts_per_s'] / d['texts_per_s']:.2f}x | "
                         f"{d['latency_ms']['p50'] / c['latency_ms']['p50']:.2f}x | "
                         f"{d['latency_ms']['p99'] / c['latency_ms']['p99']:.2f}x |")
    lines += [""]
    for mode in result["modes"]:
        lines.append(f"- {mode['mode']}: ready in {mode['startup_seconds']} s, backends {mode['backends'] or 'dense'}, "
                     f"{mode['torch_threads']} torch threads, shutdown {mode['shutdown']}")
    return "\n".join(lines) + "\n"


def find_artifact(given: str | None) -> Path:
    if given:
        return Path(given)
    for candidate in DEFAULT_ARTIFACTS:
        if (REPO / candidate / "manifest.json").is_file():
            return REPO / candidate
    raise SystemExit(f"no artifact given and none of {', '.join(DEFAULT_ARTIFACTS)} exists; run `sparsekit run` "
                     f"first, pass an artifact path, or use --smoke")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact", nargs="?", help=f"artifact directory [default: first of {DEFAULT_ARTIFACTS}]")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["dense", "compiled"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16], help="clients per level")
    parser.add_argument("--requests", type=int, default=2000, help="most requests per level")
    parser.add_argument("--duration", type=float, default=30.0, help="most seconds per level")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before the levels")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="server torch threads [torch's default]")
    parser.add_argument("--tokens", type=int, default=128, help="--tokens of `sparsekit serve --compile`")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for /health")
    parser.add_argument("--out", type=Path, default=None, help="output prefix [benchmarks/results/serve_load_cpu]")
    parser.add_argument("--smoke", action="store_true", help="tiny random artifact, 2 levels, a few requests")
    parser.add_argument("--task-type", default="sequence-classification",
                        choices=["sequence-classification", "token-classification", "question-answering"],
                        help="--smoke: the tiny artifact's head (a given artifact has its own)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        workdir = Path(tmp)
        if args.smoke:
            artifact = tiny_artifact(workdir / "tiny-artifact", args.task_type)
            args.concurrency, args.requests, args.duration, args.warmup = [1, 4], 40, 10.0, 8
            args.threads = args.threads or 1
            out = args.out or Path(tempfile.gettempdir()) / "sparsekit_serve_load_smoke"
        else:
            artifact = find_artifact(args.artifact)
            out = args.out or RESULTS / "serve_load_cpu"

        from sparsekit.machine import header

        result = {"header": header(), "command": shlex.join([Path(sys.executable).name, *sys.argv]),
                  "artifact": str(artifact), "smoke": args.smoke,
                  "config": {k: v for k, v in vars(args).items() if k not in ("artifact", "out")},
                  "modes": [bench_mode(artifact, mode, args, workdir) for mode in args.modes]}
        write_result(out.with_suffix(""), result, to_markdown(result))
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
        if not all(m["shutdown"].get("clean") for m in result["modes"]):
            sys.exit("a server did not shut down cleanly (see the shutdown entries)")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
