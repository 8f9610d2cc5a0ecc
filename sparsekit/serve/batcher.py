"""Request batching: the texts of concurrent requests run through the model together, on one worker thread.

Requests are cut into pieces of at most ``max_batch_size`` texts and queued. The worker takes the oldest
piece, then keeps taking pieces of the same kind (single texts or pairs) for at most ``batch_wait_ms``
while they fit into ``max_batch_size`` texts, runs them as one ``predict`` call and hands every request
exactly its own results. A failing batch of several requests is re-run request by request, so a bad
request fails alone. ``close`` finishes what is queued within a deadline, stops the thread and fails
anything left with BatcherClosed.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict, dataclass, field

log = logging.getLogger("sparsekit.serve")

_STOP = object()


class BatcherClosed(RuntimeError):
    """The batcher is shut down (or never started): the request was not, or not completely, served."""


class Overloaded(RuntimeError):
    """Too many texts are already waiting; the client should retry later."""


@dataclass(eq=False)
class _Job:
    """One request: its texts, the future its caller waits on, and results filled in piece by piece."""

    texts: list
    kind: str
    future: Future
    results: list
    pending: int


@dataclass(eq=False)
class _Piece:
    """Up to ``max_batch_size`` consecutive texts of a job, starting at ``start``."""

    job: _Job
    start: int
    texts: list

    @property
    def kind(self) -> str:
        return self.job.kind


@dataclass
class BatchStats:
    """Counters since start: requests, texts run through the model, model calls (batches), their sizes,
    failed and cancelled requests, seconds spent in the model."""

    requests: int = 0
    texts: int = 0
    batches: int = 0
    max_batch_texts: int = 0
    failed_requests: int = 0
    cancelled_requests: int = 0
    model_seconds: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The counters plus ``mean_batch_texts`` (texts per model call)."""
        out = asdict(self)
        out["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        out["mean_batch_texts"] = self.texts / self.batches if self.batches else 0.0
        return out


def text_kind(texts: Sequence) -> str:
    """``"pair"`` when every item is a ``(text_a, text_b)`` pair, ``"single"`` when every item is a string.

    Raises ValueError for an empty or mixed list.
    """
    if not texts:
        raise ValueError("no texts")
    pairs = sum(not isinstance(t, str) for t in texts)
    if pairs and pairs != len(texts):
        raise ValueError("a request mixes single texts and pairs")
    return "pair" if pairs else "single"


def check_settings(max_batch_size: int, batch_wait_ms: float, max_queue_texts: int) -> None:
    """Raise ValueError for batching settings MicroBatcher cannot work with."""
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
    if batch_wait_ms < 0:
        raise ValueError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
    if max_queue_texts < max_batch_size:
        raise ValueError(f"max_queue_texts ({max_queue_texts}) must be >= max_batch_size ({max_batch_size})")


class MicroBatcher:
    """Runs ``predict(texts) -> list`` (one result per text) on one worker thread, batching requests.

    max_batch_size: most texts per ``predict`` call; larger requests are split and reassembled.
    batch_wait_ms: how long the worker waits for more requests after the first one of a batch.
    max_queue_texts: texts allowed to wait; ``submit`` raises Overloaded beyond it.
    """

    def __init__(self, predict: Callable[[list], list], *, max_batch_size: int = 32, batch_wait_ms: float = 5.0,
                 max_queue_texts: int = 4096, name: str = "sparsekit-batcher") -> None:
        check_settings(max_batch_size, batch_wait_ms, max_queue_texts)
        self._predict = predict
        self.max_batch_size, self.batch_wait_ms, self.max_queue_texts = max_batch_size, batch_wait_ms, max_queue_texts
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._jobs: set[_Job] = set()  # unfinished jobs, failed by close() if the worker cannot finish them
        self._queued_texts = 0
        self._closed = False
        self._close_timeout: float | None = None  # the first close()'s timeout and deadline (time.monotonic())
        self._close_deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.stats = BatchStats()

    @property
    def running(self) -> bool:
        """True between start() and close() while the worker thread is alive."""
        return self._thread.is_alive() and not self._closed

    def stats_json(self) -> dict:
        """A consistent snapshot of ``stats`` as JSON (BatchStats.to_json), safe while the worker runs."""
        with self._lock:
            return self.stats.to_json()

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._closed:
            raise BatcherClosed("the batcher was closed; create a new one")
        self._thread.start()

    def submit(self, texts: Sequence) -> Future:
        """Queue one request's texts (strings, or ``(a, b)`` pairs). Returns a Future of its result list.

        Raises BatcherClosed after close(), Overloaded when the queue is full, ValueError for an empty or
        mixed list. Cancelling the Future before its texts reach the model skips them.
        """
        texts = list(texts)
        kind = text_kind(texts)
        job = _Job(texts, kind, Future(), [None] * len(texts), 0)
        step = self.max_batch_size
        pieces = [_Piece(job, i, texts[i:i + step]) for i in range(0, len(texts), step)]
        job.pending = len(pieces)
        with self._lock:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if self._queued_texts and self._queued_texts + len(texts) > self.max_queue_texts:
                raise Overloaded(f"{self._queued_texts} texts are already waiting (limit {self.max_queue_texts})")
            self._queued_texts += len(texts)
            self._jobs.add(job)
            self.stats.requests += 1
            for piece in pieces:
                self._queue.put(piece)
        return job.future

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting requests, let the worker finish those already queued for at most ``timeout`` s
        (None: no limit), then stop it; requests still unfinished then fail with BatcherClosed. Idempotent:
        a later or concurrent call waits no longer than the first call's deadline."""
        with self._lock:
            if self._close_deadline is None:
                self._close_timeout = timeout
                self._close_deadline = math.inf if timeout is None else time.monotonic() + max(0.0, timeout)
                self._closed = True
                self._queue.put(_STOP)
            deadline, drain = self._close_deadline, self._close_timeout
        if self._thread.is_alive():
            self._thread.join(None if deadline == math.inf else max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("queued requests not finished by the shutdown deadline; failing them")
        limit = "" if drain is None else f" (queued requests get at most {drain:g} s to finish)"
        self._fail_all(BatcherClosed(f"the server shut down before this request finished{limit}; retry it"))

    # -- worker thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        held: deque[_Piece] = deque()  # taken from the queue but not yet run (did not fit the last batch)
        stopping = False
        try:
            while True:
                if held:
                    first = held.popleft()
                elif stopping:
                    return
                else:
                    item = self._queue.get()
                    if item is _STOP:
                        stopping = True
                        continue
                    first = item
                if self._skip(first):
                    continue
                batch, size = [first], len(first.texts)
                deadline = time.monotonic() + self.batch_wait_ms / 1e3
                while size < self.max_batch_size:
                    if held:
                        item = held.popleft()
                    elif stopping:
                        break
                    else:
                        try:
                            item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                        except queue.Empty:
                            break
                        if item is _STOP:
                            stopping = True
                            break
                    if self._skip(item):
                        continue
                    if item.kind != first.kind or size + len(item.texts) > self.max_batch_size:
                        held.appendleft(item)  # keeps FIFO order: it starts the next batch
                        break
                    batch.append(item)
                    size += len(item.texts)
                self._run_batch(batch)
        except Exception:  # a bug, never expected: stop taking requests rather than let them hang
            log.exception("batch worker crashed")
            with self._lock:
                self._closed = True
        finally:
            self._fail_all(BatcherClosed("the batch worker stopped"))

    def _skip(self, piece: _Piece) -> bool:
        """Drop a piece whose request was cancelled or already failed."""
        if not piece.job.future.done():
            return False
        self._release(piece)
        self._settle(piece.job)  # a cancelled job leaves the registry here
        return True

    def _release(self, piece: _Piece) -> None:
        with self._lock:
            self._queued_texts -= len(piece.texts)

    def _run_batch(self, batch: list[_Piece]) -> None:
        texts = [t for piece in batch for t in piece.texts]
        started = time.perf_counter()
        try:
            results = list(self._predict(texts))
            if len(results) != len(texts):
                raise RuntimeError(f"predict returned {len(results)} results for {len(texts)} texts")
        except Exception as exc:
            self._record(len(texts), time.perf_counter() - started)
            jobs = list(dict.fromkeys(piece.job for piece in batch))
            if len(jobs) > 1:  # find the culprit: re-run each request's pieces alone
                for job in jobs:
                    self._run_batch([piece for piece in batch if piece.job is job])
                return
            log.error("model error on a request of %d texts", len(texts), exc_info=exc)
            for piece in batch:
                self._release(piece)
            self._settle(jobs[0], error=exc)
            return
        self._record(len(texts), time.perf_counter() - started)
        offset = 0
        for piece in batch:
            piece.job.results[piece.start:piece.start + len(piece.texts)] = results[offset:offset + len(piece.texts)]
            offset += len(piece.texts)
            self._release(piece)
            piece.job.pending -= 1
            if piece.job.pending == 0:
                self._settle(piece.job, result=piece.job.results)

    def _record(self, size: int, seconds: float) -> None:
        with self._lock:
            s = self.stats
            s.batches += 1
            s.texts += size
            s.max_batch_texts = max(s.max_batch_texts, size)
            s.model_seconds += seconds
            s.batch_sizes[size] = s.batch_sizes.get(size, 0) + 1

    def _settle(self, job: _Job, result: list | None = None, error: BaseException | None = None) -> None:
        """Complete ``job`` once (later calls do nothing): its result, its error, or record its cancellation."""
        with self._lock:
            if job not in self._jobs:
                return
            self._jobs.discard(job)
            if job.future.cancelled():
                self.stats.cancelled_requests += 1
                return
            if error is not None:
                self.stats.failed_requests += 1
        try:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
        except InvalidStateError:  # cancelled by its caller (timeout, disconnect) or already failed
            pass

    def _fail_all(self, error: BatcherClosed) -> None:
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            self._settle(job, error=error)
