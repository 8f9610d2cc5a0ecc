"""Prune -> export -> load -> verify -> predict -> evaluate for token classification and QA runs (tiny data)."""
import pytest

from test_task_types import SENTENCES, _conll, _qa_config, _squad, _token_config
from sparsekit.evaluate import evaluate_saved
from sparsekit.export.artifact import export, load, verify
from sparsekit.export.predict import Predictor
from sparsekit.prune import prune


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("task-runs")
    ner_files = _conll(root / "train.txt", SENTENCES * 2), _conll(root / "validation.txt", SENTENCES[:5])
    qa_files = _squad(root / "train.json", 4), _squad(root / "dev.json", 2)
    ner = prune(_token_config(tiny_model_dir, ner_files, root / "ner", method="smp-s", steps=3))
    qa = prune(_qa_config(tiny_model_dir, qa_files, root / "qa", method="smp-s", steps=3))
    return {"token-classification": (root / "ner", ner), "question-answering": (root / "qa", qa)}


@pytest.mark.parametrize("task_type", ["token-classification", "question-answering"])
def test_a_run_exports_with_its_task_and_evaluates_the_same(runs, tmp_path, task_type):
    run, result = runs[task_type]
    export(run, tmp_path / "art")
    model = load(tmp_path / "art")
    manifest = model.manifest
    assert manifest["task_type"] == task_type == manifest["data"]["task_type"] and manifest["metric"] == "f1"
    if task_type == "token-classification":
        assert manifest["labels"] == manifest["data"]["label_names"] and manifest["labels"][0] == "O"
    else:
        assert manifest["labels"] == [] and manifest["data"]["qa"]["max_length"] == 96
    assert verify(tmp_path / "art")["ok"]
    metrics, _ = evaluate_saved(tmp_path / "art")
    assert metrics["f1"] == pytest.approx(result.metrics["f1"], abs=1e-6)  # exact compaction: same predictions
    predictor = Predictor(model)
    if task_type == "question-answering":
        assert predictor.max_length == 96 and predictor.qa_options["null_threshold"] is None  # v1.1 data
        answer = predictor.predict([{"question": "what is good ?", "context": "the film is good"}])[0]
        assert "the film is good"[answer["start"]:answer["end"]] == answer["answer"]
    else:
        assert isinstance(predictor.predict(["john and mary love paris"])[0], list)
