"""Predictor, HTTP serving and bench for token-classification (NER) and question-answering artifacts."""
import json

import pytest
from fastapi.testclient import TestClient

from task_models import make_task_checkpoint
from sparsekit.export.artifact import export, load
from sparsekit.export.heads import QA, TOKEN
from sparsekit.export.predict import Predictor
from sparsekit.serve import create_app

TEXTS = ["john smith is in the film", "the story of a good movie"]
CONTEXT = "the film is about john smith . it is a great story and a good movie"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-artifacts")
    out = {}
    for task_type, model_type in ((TOKEN, "bert"), (QA, "distilbert")):
        checkpoint = make_task_checkpoint(root / f"ckpt-{task_type}", task_type, model_type)
        export(checkpoint, root / task_type, formats="csr")
        out[task_type] = root / task_type
    return out


@pytest.fixture(scope="module")
def ner(artifacts):
    return Predictor(load(artifacts[TOKEN]))


@pytest.fixture(scope="module")
def qa(artifacts):
    return Predictor(load(artifacts[QA]))


def test_ner_predictor_gives_entities_with_offsets(ner):
    assert ner.task_type == TOKEN and ner.id2label[1] == "B-PER"
    results = ner.predict(TEXTS)
    assert len(results) == 2 and any(results)  # a random head tags something
    for text, entities in zip(TEXTS, results):
        for e in entities:
            assert set(e) == {"entity", "start", "end", "word", "score"} and text[e["start"]:e["end"]] == e["word"]
            assert e["entity"] in ("PER", "ORG", "LOC") and 0 <= e["score"] <= 1
    words = [t.split() for t in TEXTS]
    assert ner.predict(words) == results  # the texts are their words joined by spaces


def test_qa_predictor_answers_from_the_context(qa):
    assert qa.task_type == QA and qa.max_length == 128  # capped by the tiny model's position embeddings
    answers = qa.predict([{"question": "who is it about", "context": CONTEXT}, ("what is it", CONTEXT * 6)])
    for a in answers:
        assert set(a) == {"answer", "start", "end", "score"}
        assert CONTEXT[a["start"]:a["end"]] == a["answer"] or (CONTEXT * 6)[a["start"]:a["end"]] == a["answer"]


def test_serve_ner(ner):
    with TestClient(create_app(ner, max_texts_per_request=3, max_text_chars=100)) as client:
        r = client.post("/predict", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == json.loads(json.dumps(ner.predict(TEXTS)))
        r = client.post("/predict", json={"texts": [t.split() for t in TEXTS]})
        assert r.status_code == 200 and r.json()["predictions"] == json.loads(json.dumps(ner.predict(TEXTS)))
        info = client.get("/info").json()["model"]
        assert info["task_type"] == TOKEN and info["labels"][:2] == ["O", "B-PER"]
        assert client.get("/health").json()["labels"][:2] == ["O", "B-PER"]
        for body, status, message in (
                ({"texts": ["a", ["b"]]}, 422, "mixes texts and word lists"),
                ({"texts": ["a"] * 4}, 413, "the limit is 3"),
                ({"texts": ["a" * 101]}, 413, "the limit is 100"),
                ({"texts": [[]]}, 422, "non-empty list of words"),
                ({"inputs": []}, 422, 'missing field "texts"')):
            r = client.post("/predict", json=body)
            assert r.status_code == status and message in r.json()["detail"], (body, r.text)


def test_serve_qa_with_context_limits(qa):
    item = {"question": "who is it about", "context": CONTEXT}
    with TestClient(create_app(qa, max_context_chars=200, max_body_bytes=2000)) as client:
        r = client.post("/predict", json={"inputs": [item, item]})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == json.loads(json.dumps(qa.predict([item, item])))
        info = client.get("/info").json()
        assert info["model"]["task_type"] == QA and info["model"]["labels"] == []
        assert info["model"]["input_kind"] == "question-context" and info["limits"]["max_context_chars"] == 200
        r = client.post("/predict", json={"inputs": [{"question": "q", "context": "x" * 201}]})
        assert r.status_code == 422
        assert r.json()["detail"] == "inputs[0].context is too long: 201 characters; the limit is 200 " \
                                     "(max_context_chars)"
        r = client.post("/predict", json={"inputs": [{"question": "q", "context": "x" * 190}] * 12})
        assert r.status_code == 413 and "the limit is 2000" in r.json()["detail"]
        for body, message in (({"inputs": [{"question": "q", "context": " "}]}, "inputs[0].context is empty"),
                              ({"inputs": [{"question": "q"}]}, 'exactly the fields "question" and "context"'),
                              ({"texts": ["a"]}, 'missing field "inputs"'),
                              ({"inputs": [["q", "c"]]}, "must be an object")):
            r = client.post("/predict", json=body)
            assert r.status_code == 422 and message in r.json()["detail"], (body, r.text)


def test_cli_predict_ner_and_qa(artifacts, tmp_path):
    from typer.testing import CliRunner

    from sparsekit.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(artifacts[TOKEN]), *TEXTS, "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["text"] for line in lines] == TEXTS and all("entities" in line for line in lines)
    result = runner.invoke(app, ["predict", str(artifacts[QA]), "--question", "who is it about", "--context", CONTEXT,
                                 "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert CONTEXT[answer["start"]:answer["end"]] == answer["answer"]
    result = runner.invoke(app, ["predict", str(artifacts[QA]), "a text"])
    assert result.exit_code == 2 and "--question" in result.output
    result = runner.invoke(app, ["verify", str(artifacts[QA])])
    assert result.exit_code == 0 and "question-answering" in result.output


def test_bench_both_task_types(artifacts, tmp_path):
    from sparsekit.bench import BenchConfig, run_bench

    fast = dict(batch=[1], threads=[1], repeats=1, rounds=1, min_seconds=0.0, warmup=0, compile_repeats=1)
    result = run_bench(BenchConfig(str(artifacts[TOKEN]), tmp_path / "ner", seq=[16], **fast))
    model = result.data["models"][0]
    assert model["task_type"] == TOKEN and model["dense_reference"]["max_abs_diff"] < 1e-4
    assert result.data["configs"][0]["variants"]["sparsekit"]["status"] == "ok"
    result = run_bench(BenchConfig("random:bert-tiny", tmp_path / "qa", sparsity=[0.9], seq=[128, 384],
                                   task_type=QA, **fast))
    assert result.data["models"][0]["task_type"] == QA
    assert [c["seq"] for c in result.data["configs"]] == [128, 384]
    assert all(c["variants"]["sparsekit"]["status"] == "ok" and c["variants"]["sparsekit"]["max_abs_diff"] < 1e-3
               for c in result.data["configs"])
    with pytest.raises(ValueError, match="does not match"):
        run_bench(BenchConfig(str(artifacts[QA]), tmp_path / "x", seq=[16], task_type=TOKEN, **fast))
