"""``sparsekit serve``: load an artifact (any task type), optionally compile it, and run the HTTP app under uvicorn."""
from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import uvicorn

from sparsekit.serve.app import create_app, drain
from sparsekit.serve.protocol import TimedH11Protocol


def build_app(path: str | Path, *, compile: bool = True, tokens: int = 128, threads: int | None = None,
              max_length: int | None = None, name: str | None = None, verbose: bool = True, **app_options):
    """The FastAPI app serving the artifact at ``path``.

    compile: run ``sparsekit.compile(model, tokens=tokens)`` first (each encoder Linear on the fastest
        backend measured here). threads: torch intra-op threads (None: torch's default).
    max_length: truncate inputs to this many tokens (QA: the window) [default: the artifact's training max_length,
        or 128 (QA: 384)].
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
    if max_length is None:  # None: Predictor's default for the task type (128; QA 384)
        max_length = ((model.manifest.get("recipe") or {}).get("config") or {}).get("max_length")
    report = compile_model(model, tokens=tokens, verbose=verbose) if compile else None
    # One forward call per micro-batch: the Predictor's own chunking never splits a batch further.
    predictor = Predictor(model, max_length=max_length, batch_size=app_options.get("max_batch_size", 32))
    return create_app(predictor, name=name or str(path), compile_report=report, **app_options)


@contextmanager
def interruptible_startup() -> Iterator[None]:
    """Inside the block (loading and compiling, before uvicorn handles signals) SIGTERM stops the process like
    Ctrl-C: it raises KeyboardInterrupt, so the caller can end cleanly instead of dying with status -15."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ServeError(RuntimeError):
    """The server could not start, e.g. its address is in use."""


def run(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", access_log: bool = True,
        timeout_keep_alive_s: float = 5.0) -> None:
    """Serve ``app`` with uvicorn until SIGINT / SIGTERM, shut down within a bound, and return normally.

    On the signal the server stops accepting connections, closes idle ones and drains an app made by
    create_app (queued requests get its ``shutdown_timeout_s`` to finish, the rest are answered 503), then
    returns, so the process exits with status 0. A second SIGINT stops at once.
    Timeouts: a connection idle for ``timeout_keep_alive_s`` (also a new one that sends nothing) is closed;
    a request head not complete within the app's ``read_timeout_s`` of its first byte is answered 408.
    Raises ServeError if the server cannot start (address in use, ...).
    """
    if not timeout_keep_alive_s > 0:
        raise ValueError(f"timeout_keep_alive_s must be > 0, got {timeout_keep_alive_s}")
    state = getattr(app, "state", None)
    read_timeout = getattr(state, "read_timeout_s", 10.0)
    # A backstop only: by then every request was answered (drained or 503) or timed out reading its body.
    backstop = getattr(state, "shutdown_timeout_s", 30.0) + read_timeout + 5.0
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            http=TimedH11Protocol.with_read_timeout(read_timeout),
                            timeout_keep_alive=timeout_keep_alive_s, timeout_graceful_shutdown=backstop)
    _check_bindable(host, port)
    server = _DrainingServer(config, lambda: drain(app))
    try:
        server.run()
    except SystemExit:  # uvicorn's way to give up at startup, after logging why
        if server.started:
            raise
        raise ServeError(f"the server did not start on {host}:{port}; see the log above") from None


def _check_bindable(host: str, port: int) -> None:
    """Raise ServeError if ``host:port`` cannot be listened on (uvicorn would log it and exit)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
            probe.bind(address)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class _DrainingServer(uvicorn.Server):
    """uvicorn's Server, but shutdown starts ``on_shutdown()`` (the app's drain) at once, alongside
    uvicorn's wait for open requests, which are what the drain answers; and a signal ends the process
    normally rather than being re-raised after shutdown (uvicorn's way, which exits with status -15)."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets=None) -> None:
        drain = asyncio.ensure_future(self._on_shutdown())
        try:
            await super().shutdown(sockets)
        finally:
            if not self.force_exit:
                await drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop without waiting
        else:
            self.should_exit = True
