"""`sparsekit serve`: endpoints, request batching, every bad-request case, model errors, shutdown, the CLI."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sparsekit.export.artifact import load
from sparsekit.export.predict import Predictor
from sparsekit.serve import BatcherClosed, Limits, MicroBatcher, Overloaded, RequestError, create_app, parse_texts

TEXTS = ["the film is great", "a boring story", "not good , not bad", "i love it", "the worst movie",
         "funny and good", "it is a story", "no"]


@pytest.fixture(scope="module")
def predictor(artifact):
    return Predictor(load(artifact))


def _same(response_predictions, expected):
    assert [p["label"] for p in response_predictions] == [p.label for p in expected]
    for got, want in zip(response_predictions, expected):
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
        assert got["scores"] == pytest.approx(want.scores, abs=1e-5)


# -- endpoints ---------------------------------------------------------------------------------------------

def test_predict_health_info(predictor):
    app = create_app(predictor, name="tiny")
    with TestClient(app) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "model": "tiny", "task": None, "labels": ["LABEL_0", "LABEL_1"],
                                 "compiled": False}
        r = client.post("/predict", json={"texts": TEXTS[:3]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "tiny" and body["latency_ms"] > 0
        _same(body["predictions"], predictor.predict(TEXTS[:3]))
        info = client.get("/info").json()
        assert info["limits"]["max_texts"] == 256 and info["batching"]["max_batch_size"] == 32
        assert info["batching"]["running"] and info["batching"]["stats"]["texts"] == 3
        assert client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["required"]


def test_pairs_follow_the_task(predictor):
    pairs = [["the film", "a story"], ["good", "bad"]]
    with TestClient(create_app(predictor, task="mrpc")) as client:
        r = client.post("/predict", json={"texts": pairs})
        assert r.status_code == 200, r.text
        _same(r.json()["predictions"], predictor.predict([tuple(p) for p in pairs]))
        r = client.post("/predict", json={"texts": ["a single text"]})
        assert r.status_code == 422 and "mrpc takes [text_a, text_b] pairs" in r.json()["detail"]
        assert client.get("/health").json()["task"] == "mrpc"
    with TestClient(create_app(predictor, task="sst2")) as client:
        r = client.post("/predict", json={"texts": pairs})
        assert r.status_code == 422 and "sst2 takes single texts" in r.json()["detail"]
    with pytest.raises(ValueError, match="Unknown GLUE task"):
        create_app(predictor, task="squad")


def test_concurrent_requests_are_batched_and_get_their_own_results(predictor):
    app = create_app(predictor, max_batch_size=8, batch_wait_ms=150)
    requests = [TEXTS[i % 8:i % 8 + 1 + i % 3] for i in range(12)]
    barrier = threading.Barrier(len(requests))
    with TestClient(app) as client:
        def post(texts):
            barrier.wait()
            return client.post("/predict", json={"texts": texts})

        with ThreadPoolExecutor(len(requests)) as pool:
            responses = list(pool.map(post, requests))
        stats = client.get("/info").json()["batching"]["stats"]
    for texts, r in zip(requests, responses):
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == len(texts)
        _same(r.json()["predictions"], predictor.predict(texts))
    assert stats["requests"] == len(requests) and stats["texts"] == sum(map(len, requests))
    assert stats["batches"] < len(requests) and 1 < stats["max_batch_texts"] <= 8


# -- bad requests --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict_client(predictor):
    app = create_app(predictor, max_texts_per_request=4, max_text_chars=40, max_body_bytes=2000)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("body, status, reason", [
    (b'{"texts": ["a", ', 400, "malformed JSON"),
    (b"", 400, "empty body"),
    (b"\xff\xfe", 400, "malformed JSON"),
    (b'["a"]', 422, "must be a JSON object"),
    (b'{"text": ["a"]}', 422, 'missing field "texts"'),
    (b'{"texts": ["a"], "top_k": 2}', 422, "unknown field(s) 'top_k'"),
    (b'{"texts": "a film"}', 422, "wrap a single text in a list"),
    (b'{"texts": 3}', 422, "got number"),
    (b'{"texts": {"a": 1}}', 422, "got object"),
    (b'{"texts": []}', 422, "empty"),
    (b'{"texts": ["a", "b", "c", "d", "e"]}', 413, "5 items; the limit is 4"),
    (b'{"texts": ["' + b"x" * 41 + b'"]}', 413, "texts[0] has 41 characters; the limit is 40"),
    (b'{"texts": ["a", ["b", "' + b"y" * 41 + b'"]]}', 413, "texts[1][1] has 41 characters"),
    (b'{"texts": ["' + b"x" * 2100 + b'"]}', 413, "the limit is 2000"),
    (b'{"texts": ["a", 1]}', 422, "texts[1] must be a string or a [text_a, text_b] pair of strings, got number"),
    (b'{"texts": [null]}', 422, "got null"),
    (b'{"texts": [true]}', 422, "got boolean"),
    (b'{"texts": [["a", 2]]}', 422, "texts[0][1] must be a string, got number"),
    (b'{"texts": [["a", "b", "c"]]}', 422, "exactly 2"),
    (b'{"texts": [[["a"], "b"]]}', 422, "texts[0][0] must be a string, got array"),
    (b'{"texts": ["a", ["b", "c"]]}', 422, "mixes single texts and pairs"),
])
def test_bad_requests_get_4xx_with_a_reason(strict_client, body, status, reason):
    r = strict_client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert reason in r.json()["detail"]
    ok = strict_client.post("/predict", json={"texts": ["still serving"]})  # nothing broke
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


@pytest.mark.parametrize("body, content_type, status, reason", [
    (b'{"texts": ["a"]}', "text/plain", 415, "Content-Type must be application/json, got 'text/plain'"),
    (b"texts=a", "application/x-www-form-urlencoded", 415, "must be application/json"),
    (b'{"texts": [' + b"1" * 5000 + b"]}", "application/json", 422, "texts[0] must be a string"),
    (b'{"texts": ["a"], "n": -' + b"9" * 100_000 + b"}", "application/json", 422, "unknown field(s) 'n'"),
    (b"1" * 5000, "application/json", 422, "must be a JSON object"),
    (b'{"texts": ["\\ud800"]}', "application/json", 422, "texts[0] is not valid Unicode: a lone surrogate \\ud800"),
    (b'{"texts": ["ok", "x\\udfff"]}', "application/json", 422, "texts[1] is not valid Unicode"),
    (b'{"texts": [["a", "\\ud800\\ud800"]]}', "application/json", 422, "texts[0][1] is not valid Unicode"),
    (b'{"texts": ["\xed\xa0\x80"]}', "application/json", 422, "lone surrogate"),  # one in raw "UTF-8" too
    (b'{"texts": ["\\ud83d\\ude00 a pair is fine"]}', "application/json; charset=utf-8", 200, None),
    (b'{"texts": ["a"]}', "application/vnd.sparsekit+json", 200, None),
    (b'{"texts": ["a"]}', None, 200, None),  # no Content-Type: read as JSON
])
def test_hostile_bodies_are_client_errors(predictor, body, content_type, status, reason):
    with TestClient(create_app(predictor)) as client:
        headers = {} if content_type is None else {"content-type": content_type}
        r = client.post("/predict", content=body, headers=headers)
        assert r.status_code == status, r.text
        if reason is not None:
            assert reason in r.json()["detail"]


def test_chunked_body_is_bounded_too(strict_client):
    def chunks():
        for _ in range(10):
            yield b" " * 500

    r = strict_client.post("/predict", content=chunks())
    assert r.status_code == 413 and "exceeds the limit of 2000 bytes" in r.json()["detail"]


def test_deeply_nested_json_is_refused():
    with pytest.raises(RequestError, match="nested too deeply") as info:
        parse_texts(b"[" * 100_000, Limits(max_body_bytes=1 << 20))
    assert info.value.status == 400
    with pytest.raises(ValueError, match="max_texts must be a positive integer"):
        Limits(max_texts=0)


def test_invalid_settings_are_refused(predictor):
    with pytest.raises(ValueError, match="max_batch_size"):
        create_app(predictor, max_batch_size=0)
    with pytest.raises(ValueError, match="max_text_chars"):
        create_app(predictor, max_text_chars=-1)


# -- model errors, timeouts --------------------------------------------------------------------------------

class Flaky:
    """A Predictor that fails on any batch containing "boom" and sleeps on "slow"."""

    def __init__(self, predictor):
        self.inner = predictor
        self.model, self.id2label, self.regression = predictor.model, predictor.id2label, predictor.regression

    def predict(self, texts):
        if "boom" in texts:
            raise RuntimeError("tensor exploded")
        if "slow" in texts:
            time.sleep(0.6)
        return self.inner.predict(texts)


def test_model_error_is_500_and_the_server_keeps_serving(predictor):
    with TestClient(create_app(Flaky(predictor), request_timeout_s=0.2)) as client:
        r = client.post("/predict", json={"texts": ["fine", "boom"]})
        assert r.status_code == 500 and r.json()["detail"] == "model error: RuntimeError: tensor exploded"
        r = client.post("/predict", json={"texts": ["slow"]})
        assert r.status_code == 504 and "no result within 0.2 s" in r.json()["detail"]
        deadline = time.monotonic() + 5
        while client.get("/info").json()["batching"]["stats"]["batches"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the one worker is still busy with "slow"; let it finish
        r = client.post("/predict", json={"texts": ["fine"]})
        assert r.status_code == 200, r.text
        _same(r.json()["predictions"], predictor.predict(["fine"]))
        stats = client.get("/info").json()["batching"]["stats"]
        assert stats["failed_requests"] == 1
        assert client.get("/health").json()["status"] == "ok"


def test_non_finite_outputs_are_a_500_never_null_scores(artifact):
    model = load(artifact)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    with TestClient(create_app(Predictor(model))) as client:
        r = client.post("/predict", json={"texts": ["a film", "the story"]})
        assert r.status_code == 500, r.text
        assert r.json()["detail"] == ("model error: the model produced non-finite outputs (NaN or Inf) for 2 of 2 "
                                      "texts; the model or artifact is broken, not the request")
        assert client.get("/health").json()["status"] == "ok"


def test_a_bug_is_a_json_500():
    class Broken:  # predict returns something that is not a list of Predictions
        model, id2label, regression = None, {}, False

        def predict(self, texts):
            return [object() for _ in texts]

    with TestClient(create_app(Broken()), raise_server_exceptions=False) as client:
        r = client.post("/predict", json={"texts": ["a"]})
        assert r.status_code == 500
        assert r.json() == {"detail": "internal server error (AttributeError); see the server log"}


# -- the batcher itself (deterministic: requests are queued before the worker starts) ------------------------

class Recorder:
    def __init__(self, fail_on=None, delay=0.0):
        self.calls, self.fail_on, self.delay = [], fail_on, delay

    def __call__(self, texts):
        self.calls.append(list(texts))
        time.sleep(self.delay)
        if self.fail_on in texts:
            raise ValueError(f"cannot handle {self.fail_on}")
        return [f"r:{t}" for t in texts]


def test_batcher_groups_splits_and_keeps_kinds_apart():
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=8, batch_wait_ms=0)
    jobs = {"a": [f"a{i}" for i in range(3)], "b": [f"b{i}" for i in range(4)],
            "c": [(f"c{i}", "x") for i in range(2)], "d": [f"d{i}" for i in range(3)],
            "e": [f"e{i}" for i in range(20)]}
    futures = {name: batcher.submit(texts) for name, texts in jobs.items()}
    batcher.start()
    try:
        for name, texts in jobs.items():
            assert futures[name].result(timeout=10) == [f"r:{t}" for t in texts]
    finally:
        batcher.close()
    # a + b fill one batch; the pairs of c run alone; d does not fit with 8 texts of e; e is split 8 + 8 + 4.
    assert [len(c) for c in rec.calls] == [7, 2, 3, 8, 8, 4]
    assert all(len({isinstance(t, str) for t in call}) == 1 for call in rec.calls)
    stats = batcher.stats.to_json()
    assert stats["batches"] == 6 and stats["texts"] == 32 and stats["max_batch_texts"] == 8
    with pytest.raises(ValueError, match="mixes"):
        MicroBatcher(rec).submit(["a", ("b", "c")])


def test_batcher_isolates_a_failing_request():
    rec = Recorder(fail_on="boom")
    batcher = MicroBatcher(rec, max_batch_size=16)
    good1, bad, good2 = batcher.submit(["x", "y"]), batcher.submit(["boom", "z"]), batcher.submit(["w"])
    batcher.start()
    try:
        assert good1.result(timeout=10) == ["r:x", "r:y"] and good2.result(timeout=10) == ["r:w"]
        with pytest.raises(ValueError, match="cannot handle boom"):
            bad.result(timeout=10)
    finally:
        batcher.close()
    assert rec.calls[0] == ["x", "y", "boom", "z", "w"]  # one batch, then each request alone
    assert batcher.stats.failed_requests == 1


def test_batcher_limits_cancellation_and_drain_on_close():
    rec = Recorder(delay=0.02)
    batcher = MicroBatcher(rec, max_batch_size=2, max_queue_texts=8)
    futures = [batcher.submit([f"t{i}", f"u{i}"]) for i in range(4)]
    with pytest.raises(Overloaded, match="8 texts are already waiting"):
        batcher.submit(["one more"])
    assert futures[1].cancel()
    batcher.start()
    batcher.close(timeout=10)  # finishes what was queued, then stops
    assert not batcher.running and not batcher._thread.is_alive()
    assert [f.result() for i, f in enumerate(futures) if i != 1] == [[f"r:t{i}", f"r:u{i}"] for i in (0, 2, 3)]
    assert ["t1", "u1"] not in rec.calls and batcher.stats.cancelled_requests == 1
    with pytest.raises(BatcherClosed):
        batcher.submit(["late"])


def test_batcher_close_fails_requests_a_stuck_model_cannot_finish():
    release = threading.Event()
    batcher = MicroBatcher(lambda texts: release.wait(10) and list(texts), max_batch_size=4)
    batcher.start()
    stuck, waiting = batcher.submit(["a"]), batcher.submit(["b"] * 4)
    started = time.perf_counter()
    batcher.close(timeout=0.2)
    assert time.perf_counter() - started < 2
    for future in (stuck, waiting):
        with pytest.raises(BatcherClosed, match="shut down"):
            future.result(timeout=1)
    release.set()
    batcher._thread.join(5)
    assert not batcher._thread.is_alive()


# -- lifespan: start, clean shutdown ----------------------------------------------------------------------

def test_close_deadline_is_shared_by_every_call():
    release = threading.Event()
    batcher = MicroBatcher(lambda texts: release.wait(10) and list(texts), max_batch_size=1)
    batcher.start()
    futures = [batcher.submit([f"t{i}"]) for i in range(3)]
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # e.g. the signal's drain and the lifespan's end
        list(pool.map(lambda timeout: batcher.close(timeout), [0.3, 30]))
    batcher.close(30)
    assert time.perf_counter() - started < 3
    for future in futures:
        with pytest.raises(BatcherClosed, match=r"shut down before this request finished \(queued requests get at "
                                                r"most 0.3 s to finish\); retry it"):
            future.result(timeout=1)
    release.set()


def test_lifespan_starts_and_stops_the_worker(predictor):
    before = set(threading.enumerate())
    app = create_app(predictor)
    client = TestClient(app)  # without `with`, the lifespan does not run: nothing serves
    assert client.get("/health").status_code == 503
    r = client.post("/predict", json={"texts": ["a"]})
    assert r.status_code == 503 and "not running" in r.json()["detail"]
    for _ in range(2):  # an app can be started again after a shutdown
        with TestClient(app) as client:
            assert client.post("/predict", json={"texts": ["a"]}).status_code == 200
            batcher = app.state.batcher
            assert batcher.running
        assert not batcher.running and not batcher._thread.is_alive()
    assert not [t for t in set(threading.enumerate()) - before if t.name == "sparsekit-batcher"]


# -- CLI ------------------------------------------------------------------------------------------------------

def test_cli_serve(artifact, tmp_path, monkeypatch):
    import shutil
    import socket

    import uvicorn

    from sparsekit.cli import app as cli

    runner = CliRunner()
    result = runner.invoke(cli, ["serve", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a directory" in result.output
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    (broken / "samples.json").write_text("{}")
    result = runner.invoke(cli, ["serve", str(broken)])
    assert result.exit_code == 2 and "checksum" in result.output
    result = runner.invoke(cli, ["serve", str(artifact), "--log-level", "loud"])
    assert result.exit_code == 2 and "--log-level" in result.output

    with socket.socket() as taken:  # the port is in use: one clear error, no traceback
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(cli, ["serve", str(artifact), "--no-compile", "--port", port, "--log-level", "critical"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.output
    result = runner.invoke(cli, ["serve", str(artifact), "--timeout-read", "0"])
    assert result.exit_code == 2 and "--timeout-read must be > 0 seconds, got 0" in result.output

    served = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: served.update(
        app=server.config.app, port=server.config.port, host=server.config.host, log_level=server.config.log_level))
    result = runner.invoke(cli, ["serve", str(artifact), "--port", "8123", "--tokens", "8", "--max-texts", "3",
                                 "--log-level", "warning"])
    assert result.exit_code == 0, result.output
    assert served["port"] == 8123 and served["host"] == "127.0.0.1" and served["log_level"] == "warning"
    with TestClient(served["app"]) as client:
        health = client.get("/health").json()
        assert health["compiled"] and health["model"] == str(artifact)
        assert client.post("/predict", json={"texts": ["a"] * 4}).status_code == 413
        assert client.post("/predict", json={"texts": ["a film"]}).status_code == 200


def test_sigterm_while_loading_stops_cleanly(artifact, monkeypatch):
    """SIGTERM before uvicorn handles signals (loading / compiling) ends `sparsekit serve` with status 0 and a
    message, not -15; outside the startup block SIGTERM's handler is restored."""
    import os
    import signal

    import sparsekit.serve

    from sparsekit.cli import app as cli
    from sparsekit.serve.server import interruptible_startup

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with interruptible_startup():
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before

    def slow_load(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while "loading"
        raise AssertionError("SIGTERM did not stop the load")

    monkeypatch.setattr(sparsekit.serve, "build_app", slow_load)
    result = CliRunner().invoke(cli, ["serve", str(artifact)])
    assert result.exit_code == 0, result.output
    assert "stopped before serving" in result.output and "Traceback" not in result.output
