"""The HTTP app: ``POST /predict``, ``GET /health``, ``GET /info`` around a Predictor and a MicroBatcher."""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from sparsekit.errors import format_error
from sparsekit.export.heads import QA, SEQUENCE, TOKEN
from sparsekit.serve.batcher import BatcherClosed, MicroBatcher, Overloaded, check_settings
from sparsekit.serve.schemas import SCHEMAS
from sparsekit.serve.validation import Limits, RequestError

log = logging.getLogger("sparsekit.serve")


@dataclass
class ModelInfo:
    """What the server says about its model: name, task, labels, input kind, how it runs, and its task type."""

    name: str
    task: str | None
    labels: list[str | int]
    regression: bool
    # sequence classification: "single" / "pair" when the task is known, else None (both accepted);
    # token classification: "texts or words"; question answering: "question-context"
    input_kind: str | None
    max_length: int | None
    compiled: bool
    backends: dict[str, int]  # encoder layers per backend chosen by sparsekit.compile
    task_type: str = SEQUENCE


def describe_model(predictor, name: str | None = None, task: str | None = None, compile_report=None) -> ModelInfo:
    """ModelInfo of a Predictor; the task comes from ``task`` or the data the artifact records (ValueError if
    ``task`` is unknown)."""
    from sparsekit.data import get_task
    from sparsekit.data.source import recorded_description, spec_from_description

    model = getattr(predictor, "model", None)
    manifest = getattr(model, "manifest", None) or {}
    task_type = getattr(predictor, "task_type", SEQUENCE)
    input_kind = {TOKEN: "texts or words", QA: "question-context"}.get(task_type)
    if task_type == SEQUENCE:
        spec = get_task(task) if task else spec_from_description(
            manifest.get("data") or recorded_description(manifest.get("recipe")))
        if spec is not None:
            task, input_kind = spec.name, "pair" if spec.is_pair else "single"
    elif task is None:
        task = (manifest.get("data") or {}).get("name") if isinstance(manifest.get("data"), dict) else None
    regression = bool(getattr(predictor, "regression", False))
    num_labels = getattr(getattr(model, "config", None), "num_labels", 0)
    id2label = getattr(predictor, "id2label", {}) or {}
    labels = [] if regression or task_type == QA else [id2label.get(i, i) for i in range(num_labels)]
    backends: dict[str, int] = {}
    for layer in getattr(compile_report, "layers", []):
        backends[layer.backend] = backends.get(layer.backend, 0) + 1
    return ModelInfo(name or type(model).__name__, task, labels, regression, input_kind,
                     getattr(predictor, "max_length", None), compile_report is not None, backends, task_type)


def create_app(predictor, *, name: str | None = None, task: str | None = None, compile_report=None,
               max_batch_size: int = 32, batch_wait_ms: float = 5.0, max_texts_per_request: int = 256,
               max_text_chars: int = 2000, max_context_chars: int = 20000, max_body_bytes: int = 1 << 20,
               max_queue_texts: int = 4096,
               request_timeout_s: float = 60.0, read_timeout_s: float = 10.0,
               shutdown_timeout_s: float = 30.0) -> FastAPI:
    """A FastAPI app serving ``predictor`` (``predict(inputs) -> one result per input``, e.g. sparsekit.Predictor;
    its ``task_type`` (default sequence-classification) picks the request / response schema, see schemas.py).

    Concurrent requests are batched (up to ``max_batch_size`` texts per model call, waiting at most
    ``batch_wait_ms`` for more) on one worker thread, started and stopped by the app's lifespan (run it
    under uvicorn, or ``with TestClient(app)``). Limits: ``max_body_bytes`` (413), ``max_texts_per_request``
    (413), ``max_text_chars`` per text (413; a QA question over it: 422), ``max_context_chars`` per QA context
    (422, the message gives the limit), ``max_queue_texts`` waiting texts (503), ``request_timeout_s``
    for the model's answer (504), ``read_timeout_s`` for the request body to arrive (408); a body whose
    Content-Type is not JSON is refused (415; a missing Content-Type is read as JSON).
    Shutdown (``drain``, called by ``sparsekit.serve.run`` on SIGINT / SIGTERM and by the lifespan's end):
    queued requests get ``shutdown_timeout_s`` to finish, the rest are answered 503.
    ``compile_report``: the CompileReport of sparsekit.compile, shown by /health and /info.
    """
    limits = Limits(max_body_bytes=max_body_bytes, max_texts=max_texts_per_request, max_text_chars=max_text_chars,
                    max_context_chars=max_context_chars)
    for option, value in (("request_timeout_s", request_timeout_s), ("read_timeout_s", read_timeout_s)):
        if not value > 0:
            raise ValueError(f"{option} must be > 0, got {value}")
    if not shutdown_timeout_s >= 0:
        raise ValueError(f"shutdown_timeout_s must be >= 0, got {shutdown_timeout_s}")
    check_settings(max_batch_size, batch_wait_ms, max_queue_texts)  # fail now, not at startup
    info = describe_model(predictor, name, task, compile_report)
    schema = SCHEMAS[info.task_type]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(predictor.predict, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
                               max_queue_texts=max_queue_texts)
        batcher.start()
        app.state.batcher = batcher
        log.info("serving %s (%s, task %s, compiled %s)", info.name, info.task_type, info.task, info.compiled)
        try:
            yield
        finally:
            await drain(app)

    what = {SEQUENCE: "Text classification", TOKEN: "Token classification (entities)",
            QA: "Extractive question answering"}[info.task_type]
    app = FastAPI(title="sparsekit serve", summary=f"{what} with {info.name}", lifespan=lifespan)
    app.state.batcher = None
    app.state.info = info
    app.state.read_timeout_s, app.state.shutdown_timeout_s = read_timeout_s, shutdown_timeout_s
    app.add_exception_handler(Exception, _internal_error)

    def running_batcher(request: Request) -> MicroBatcher:
        batcher = request.app.state.batcher
        if batcher is None or not batcher.running:
            raise HTTPException(503, "the server is not running (starting up or shutting down)")
        return batcher

    @app.post("/predict", response_model=schema.response, description=schema.summary, openapi_extra={
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": schema.request.model_json_schema()}}}},
        responses={400: {"description": "Malformed JSON"}, 408: {"description": "Body not received in time"},
                   413: {"description": "Body, text count or a text too large"},
                   415: {"description": "Content-Type is not JSON"},
                   422: {"description": "Wrong shape or types (QA: also a question or context over its limit)"},
                   500: {"description": "Model error, or non-finite model outputs"},
                   503: {"description": "Overloaded or shutting down"}, 504: {"description": "Timed out"}})
    async def predict(request: Request):
        """One result per input, in order (the task type's schema: sparsekit/serve/schemas.py)."""
        started = time.perf_counter()
        content_type = request.headers.get("content-type")
        if content_type is not None and not _is_json(content_type):
            raise HTTPException(415, f"Content-Type must be application/json, got {content_type!r}")
        try:
            body = await asyncio.wait_for(_read_body(request, limits.max_body_bytes), read_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(408, f"the request body did not arrive within {read_timeout_s:g} s",
                                headers={"Connection": "close"}) from None
        except ClientDisconnect:  # nobody is left to read the answer; it only keeps the log free of tracebacks
            raise HTTPException(400, "the client disconnected before sending the whole body") from None
        try:
            texts, kind = schema.parse(body, limits)
        except RequestError as exc:
            raise HTTPException(exc.status, exc.detail) from None
        if info.task_type == SEQUENCE and info.input_kind is not None and kind != info.input_kind:
            wanted = "[text_a, text_b] pairs" if info.input_kind == "pair" else "single texts (strings)"
            raise HTTPException(422, f"task {info.task} takes {wanted}; got {kind} texts")
        batcher = running_batcher(request)
        try:
            future = batcher.submit(texts)
        except Overloaded as exc:
            raise HTTPException(503, f"server overloaded: {exc}; retry later", headers={"Retry-After": "1"}) from None
        except BatcherClosed as exc:
            raise HTTPException(503, str(exc)) from None
        try:
            results = await asyncio.wait_for(asyncio.wrap_future(future), request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no result within {request_timeout_s:g} s; the request was dropped") from None
        except BatcherClosed as exc:
            raise HTTPException(503, str(exc)) from None
        except Exception as exc:  # the model failed on this request; logged by the batcher
            raise HTTPException(500, f"model error: {format_error(exc, with_type=True)}") from None
        broken = schema.non_finite(results)
        if broken:
            log.error("the model produced NaN / Inf outputs for %d of %d texts", broken, len(results))
            raise HTTPException(500, f"model error: the model produced non-finite outputs (NaN or Inf) for {broken} "
                                     f"of {len(results)} texts; the model or artifact is broken, not the request")
        return schema.response(predictions=schema.outputs(results),
                               latency_ms=1e3 * (time.perf_counter() - started), model=info.name)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """``ok`` with the model's name, task, labels and whether it is compiled; 503 when not serving."""
        batcher = request.app.state.batcher
        ok = batcher is not None and batcher.running
        body = {"status": "ok" if ok else "unavailable", "model": info.name, "task": info.task,
                "labels": info.labels, "compiled": info.compiled}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/info")
    async def server_info(request: Request) -> dict:
        """Model (with its task type), limits, batching settings and counters, threads and versions."""
        import torch

        import sparsekit

        batcher = request.app.state.batcher
        return {"model": asdict(info), "limits": {**limits.to_json(), "max_queue_texts": max_queue_texts,
                                                  "request_timeout_s": request_timeout_s,
                                                  "read_timeout_s": read_timeout_s,
                                                  "shutdown_timeout_s": shutdown_timeout_s},
                "batching": {"max_batch_size": max_batch_size, "batch_wait_ms": batch_wait_ms,
                             "running": batcher is not None and batcher.running,
                             "stats": batcher.stats_json() if batcher is not None else None},
                "torch_threads": torch.get_num_threads(),
                "versions": {"sparsekit": sparsekit.__version__, "torch": torch.__version__}}

    return app


async def drain(app: FastAPI) -> None:
    """Shut ``app`` (from create_app) down: refuse new requests (503), give queued ones the app's
    ``shutdown_timeout_s`` to finish, answer the rest 503. Returns when done; safe to call again or
    concurrently (a later call waits no longer than the first one's deadline)."""
    state = getattr(app, "state", None)
    batcher = getattr(state, "batcher", None)
    if batcher is not None:
        await asyncio.to_thread(batcher.close, state.shutdown_timeout_s)


def _is_json(content_type: str) -> bool:
    """``application/json`` or ``application/*+json``, with any parameters (``; charset=utf-8``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug's answer: 500 with a JSON ``detail`` like every other error (the traceback goes to the log)."""
    return JSONResponse({"detail": f"internal server error ({type(exc).__name__}); see the server log"},
                        status_code=500)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, f"invalid Content-Length header {declared!r}") from None
        if size > limit:
            raise HTTPException(413, f"request body is {size} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies, which declare no length
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
