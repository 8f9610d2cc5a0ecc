"""`sparsekit serve` as a real process on loopback: stalled connections time out, and SIGTERM with more queued
work than the drain time answers every request (200 or 503 with a reason, never 500) and exits 0 in time.

One server process serves the whole module (starting one takes seconds); the SIGTERM test stops it, so it
comes last.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from sparsekit.export.artifact import load
from sparsekit.export.predict import Predictor

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 1.0  # --timeout-keep-alive, --timeout-read and --timeout-shutdown of the server under test
# Long enough to be truncated to the 128 tokens of the model: about 1 ms of model time per text on a fast core.
TEXTS = [(f"{words} " * 60)[:600] for words in ("the film is great", "a boring story", "not good , not bad",
                                                 "i love it", "the worst movie", "funny and good", "it is a story",
                                                 "no")]


class Server:
    """A ``python -m sparsekit.cli serve`` subprocess and its log."""

    def __init__(self, artifact: Path, log_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "sparsekit.cli", "serve", str(artifact), "--no-compile", "--port",
                   str(self.port), "--threads", "1", "--max-batch-size", "1", "--batch-wait-ms", "0",
                   "--timeout-keep-alive", str(TIMEOUT), "--timeout-read", str(TIMEOUT),
                   "--timeout-shutdown", str(TIMEOUT), "--log-level", "info"]
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                         env={**os.environ, "PYTHONPATH": str(REPO)})

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited with {self.proc.returncode}:\n{self.log()}"
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not healthy after {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def requests_seen(self) -> int:
        return httpx.get(self.url + "/info", timeout=10).json()["batching"]["stats"]["requests"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def server(artifact, tmp_path_factory):
    server = Server(artifact, tmp_path_factory.mktemp("serve-log") / "server.log")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _until_closed(sock: socket.socket, limit: float, trickle: bytes = b"") -> tuple[bytes, float]:
    """Read until the server closes ``sock`` (at most ``limit`` s), sending ``trickle`` a byte at a time, one
    every 0.2 s, meanwhile. Returns what the server sent and the seconds it took."""
    started = time.monotonic()
    data, pending = b"", list(trickle)
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            if pending:
                try:
                    sock.sendall(bytes([pending.pop(0)]))
                except OSError:  # closed by the server meanwhile
                    pass
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


HEAD = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"


@pytest.mark.parametrize("sent, trickle, answer", [
    (b"", b"", b""),  # a connection that never says anything is closed silently
    (HEAD, b"", b"request headers not received within 1 s"),
    (b"P", HEAD[1:], b"request headers not received within 1 s"),  # a slowloris head, a byte per 0.2 s
    (HEAD + b"content-length: 100\r\n\r\n" + b'{"texts": ["a', b"", b"the request body did not arrive within 1 s"),
], ids=["idle", "partial-head", "trickled-head", "partial-body"])
def test_stalled_connections_time_out(server, sent, trickle, answer):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(sent)
        data, seconds = _until_closed(sock, limit=TIMEOUT + 8, trickle=trickle)
    assert 0.8 * TIMEOUT <= seconds <= TIMEOUT + 5, (seconds, data)
    if answer:
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and answer in data, data
    else:
        assert data == b""
    r = httpx.post(server.url + "/predict", json={"texts": ["still serving"]}, timeout=10)
    assert r.status_code == 200, r.text


def test_a_client_gone_mid_body_is_no_error(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(HEAD + b"content-length: 100\r\n\r\n" + b'{"texts": ["a')
        time.sleep(0.2)
    r = httpx.post(server.url + "/predict", json={"texts": ["still serving"]}, timeout=10)
    assert r.status_code == 200, r.text
    assert "Traceback" not in server.log()


def test_client_mistakes_are_4xx_over_http(server):
    def post(body: bytes, content_type: str) -> httpx.Response:
        return httpx.post(server.url + "/predict", content=body, headers={"content-type": content_type}, timeout=10)

    r = post(b'{"texts": ["a"]}', "text/plain")
    assert r.status_code == 415 and "must be application/json" in r.json()["detail"]
    r = post(b'{"texts": [' + b"7" * 5000 + b"]}", "application/json")
    assert r.status_code == 422 and "must be a string" in r.json()["detail"]
    r = post(b'{"texts": ["\\ud800"]}', "application/json")
    assert r.status_code == 422 and "lone surrogate" in r.json()["detail"]


def test_sigterm_drains_in_time_answers_the_rest_503_and_exits_0(server, artifact):
    """40 requests of 100 long texts, one text per model call: several seconds of work, 1 s to drain it."""
    reference = {p.text: p for p in Predictor(load(artifact), batch_size=1).predict(TEXTS)}
    bodies = [[TEXTS[(i + k) % len(TEXTS)] for k in range(100)] for i in range(40)]
    seen = server.requests_seen()

    def post(texts):
        try:
            return client.post("/predict", json={"texts": texts})
        except httpx.HTTPError as exc:  # a hang (timeout) or a dropped connection: both are failures
            return exc

    client = httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=len(bodies)), timeout=30)
    with client, ThreadPoolExecutor(len(bodies)) as pool:
        futures = [pool.submit(post, texts) for texts in bodies]
        deadline = time.monotonic() + 30
        while server.requests_seen() < seen + len(bodies):  # every request is queued
            assert time.monotonic() < deadline, "the requests never reached the queue"
            time.sleep(0.05)
        stopped = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        responses = [future.result() for future in futures]
        answered = time.monotonic() - stopped
        code = server.proc.wait(timeout=TIMEOUT + 15)
        exited = time.monotonic() - stopped

    log = server.log()
    assert code == 0, log[-3000:]
    assert answered < TIMEOUT + 5 and exited < TIMEOUT + 8, (answered, exited)
    statuses = Counter(r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for r in responses)
    assert set(statuses) == {200, 503}, statuses  # some finished, the queue outlasted the drain; nothing else
    for texts, r in zip(bodies, responses):
        if r.status_code == 200:
            predictions = r.json()["predictions"]
            assert len(predictions) == len(texts)
            for text, got in zip(texts, predictions):
                want = reference[text]
                assert got["label"] == want.label and got["scores"] == pytest.approx(want.scores, abs=1e-5)
        else:
            assert r.json()["detail"] == ("the server shut down before this request finished (queued requests get "
                                          "at most 1 s to finish); retry it")
    assert "Traceback" not in log and " 500 " not in log
    with pytest.raises(httpx.ConnectError):  # and nothing listens any more
        httpx.get(server.url + "/health", timeout=2)
