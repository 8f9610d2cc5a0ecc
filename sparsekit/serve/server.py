"""``sparsekit serve``: load an artifact, optionally compile it, and run the HTTP app under uvicorn."""
from __future__ import annotations

from pathlib import Path

from sparsekit.serve.app import create_app


def build_app(path: str | Path, *, compile: bool = True, tokens: int = 128, threads: int | None = None,
              max_length: int | None = None, name: str | None = None, verbose: bool = True, **app_options):
    """The FastAPI app serving the artifact at ``path``.

    compile: run ``sparsekit.compile(model, tokens=tokens)`` first (each encoder Linear on the fastest
        backend measured here). threads: torch intra-op threads (None: torch's default).
    max_length: truncate inputs to this many tokens [default: the artifact's training max_length, or 128].
    name: the model name in responses [default: ``path`` as given]. verbose: print the compile table.
    app_options: create_app's options (max_batch_size, batch_wait_ms, limits, timeouts).
    Raises FileNotFoundError for a missing artifact, ArtifactError (a ValueError) for a corrupt one, and
    ValueError for invalid options.
    """
    import torch

    from sparsekit.compiler import compile as compile_model
    from sparsekit.export.artifact import load
    from sparsekit.export.predict import Predictor

    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    model = load(path)
    if max_length is None:
        max_length = ((model.manifest.get("recipe") or {}).get("config") or {}).get("max_length") or 128
    report = compile_model(model, tokens=tokens, verbose=verbose) if compile else None
    # One forward call per micro-batch: the Predictor's own chunking never splits a batch further.
    predictor = Predictor(model, max_length=max_length, batch_size=app_options.get("max_batch_size", 32))
    return create_app(predictor, name=name or str(path), compile_report=report, **app_options)


def run(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", access_log: bool = True,
        shutdown_timeout_s: int = 30) -> None:
    """Serve ``app`` with uvicorn until SIGINT / SIGTERM; open requests get ``shutdown_timeout_s`` to finish."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                timeout_graceful_shutdown=shutdown_timeout_s)
