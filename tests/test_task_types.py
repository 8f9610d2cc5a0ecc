"""Token classification and question answering through the training loop: SMP-S and fine-tune + KD runs on tiny
data files the tests write, exact resume, evaluation of a run directory (Python API and CLI), the built-in
conll2003 / squad tasks, and bad data or settings refused before the output directory exists."""
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sparsekit.cli import app
from sparsekit.data.source import DataError, DataSource, recorded_description, recorded_task_type
from sparsekit.evaluate import evaluate_saved
from sparsekit.prune import PruneConfig, load_pruned, prune
from sparsekit.tasks import TASK_TYPES, get_task_type

runner = CliRunner()

SENTENCES = [
    ("the film is good", "O O O O"),
    ("a story of love", "O B-MISC I-MISC I-MISC"),
    ("it is the best movie", "O O O O B-MISC"),
    ("john and mary love it", "B-PER O B-PER O O"),
    ("the bad story of paris", "O O O O B-LOC"),
    ("yes it is funny", "O O O O"),
    ("not the worst", "O O O"),
    ("great film of rome and paris", "B-MISC I-MISC O B-LOC O B-LOC"),
]


def _conll(path, sentences, extra_column=True):
    lines = ["-DOCSTART- -X- -X- O", ""]
    for words, tags in sentences:
        for word, tag in zip(words.split(), tags.split()):
            lines.append(f"{word} X {tag}" if extra_column else f"{word} {tag}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def _squad(path, n_articles=3):
    data = []
    for a in range(n_articles):
        context = f"the story of film {a} is good and the best movie of paris is not bad"
        qas = []
        for q, answer in enumerate(("good", "paris", "not bad")):
            qas.append({"id": f"a{a}q{q}", "question": f"what is {answer.split()[0]} ?",
                        "answers": [{"text": answer, "answer_start": context.index(answer)}]})
        data.append({"title": f"article {a}", "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner-data")
    return _conll(root / "train.txt", SENTENCES * 2), _conll(root / "validation.txt", SENTENCES[:5])


@pytest.fixture(scope="module")
def qa_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa-data")
    return _squad(root / "train.json", 4), _squad(root / "dev.json", 2)


TOKEN = dict(task_type="token-classification", batch_size=4, max_length=32, progress=False, keep=0.3)
QA = dict(task_type="question-answering", batch_size=4, max_length=96, progress=False, keep=0.3)


def _token_config(model_dir, files, out, **kw):
    return PruneConfig(**{**TOKEN, "model": str(model_dir), "train_file": str(files[0]),
                          "validation_file": str(files[1]), "output_dir": str(out), **kw})


def _qa_config(model_dir, files, out, **kw):
    return PruneConfig(**{**QA, "model": str(model_dir), "train_file": str(files[0]),
                          "validation_file": str(files[1]), "output_dir": str(out), **kw})


def _same_run(a_dir, b_dir):
    a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (a_dir / "masks.bin").read_bytes() == (b_dir / "masks.bin").read_bytes()


def test_registry_names_the_three_task_types():
    assert list(TASK_TYPES) == ["sequence-classification", "token-classification", "question-answering"]
    assert get_task_type(None).name == "sequence-classification"
    with pytest.raises(ValueError, match="token-classification"):
        get_task_type("ner")


def test_sequence_classification_records_its_type_and_keeps_the_artifact_description():
    data = get_task_type(None).load_data(DataSource(task="sst2"), PruneConfig(train_samples=4, eval_samples=4))
    assert data.record["task_type"] == "sequence-classification" and len(data.train) == 4
    described = recorded_description({"data": data.record})
    assert "task_type" not in described and recorded_task_type(described) == "sequence-classification"


def test_token_classification_smp_s_records_labels_and_evaluates(tiny_model_dir, ner_files, tmp_path):
    out = tmp_path / "run"
    result = prune(_token_config(tiny_model_dir, ner_files, out, method="smp-s", steps=4))
    assert {"precision", "recall", "f1", "accuracy", "per_type"} <= set(result.metrics)
    assert result.metrics["eval_samples"] == 5 and 0.29 <= result.density <= 0.3
    loaded = load_pruned(out)
    assert type(loaded.model).__name__ == "BertForTokenClassification"
    data = loaded.recipe["data"]
    assert data["task_type"] == "token-classification" and data["metric"] == "f1"
    assert data["label_names"][0] == "O" and set(data["label_names"]) == {"O", "B-MISC", "I-MISC", "B-PER",
                                                                           "I-PER", "B-LOC", "I-LOC"}
    assert loaded.model.config.id2label == dict(enumerate(data["label_names"]))
    assert recorded_task_type(recorded_description(loaded.recipe)) == "token-classification"
    metrics, where = evaluate_saved(out)
    assert metrics["f1"] == pytest.approx(result.metrics["f1"]) and where == str(ner_files[1])
    cli = runner.invoke(app, ["evaluate", str(out), "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["accuracy"] == pytest.approx(result.metrics["accuracy"])


def test_token_classification_finetune_teacher_and_kd(tiny_model_dir, ner_files, tmp_path):
    teacher = tmp_path / "teacher"
    prune(_token_config(tiny_model_dir, ner_files, teacher, method="finetune", steps=3))
    result = prune(_token_config(tiny_model_dir, ner_files, tmp_path / "kd", method="smp-s", steps=3,
                                 teacher=str(teacher), kd_alpha=0.7, kd_temperature=3.0))
    assert result.metrics["f1"] >= 0 and load_pruned(tmp_path / "kd").recipe["config"]["teacher"]


def test_token_classification_resume_is_exact(tiny_model_dir, ner_files, tmp_path):
    prune(_token_config(tiny_model_dir, ner_files, tmp_path / "straight", method="movement", steps=6))
    out = tmp_path / "resumed"
    assert prune(_token_config(tiny_model_dir, ner_files, out, method="movement", steps=6, stop_after=3,
                               save_every=2)).metrics == {}
    prune(_token_config(tiny_model_dir, ner_files, out, method="movement", steps=6, resume=True))
    _same_run(tmp_path / "straight", out)


def test_question_answering_smp_s_finetune_kd_and_evaluate(tiny_model_dir, qa_files, tmp_path):
    teacher = tmp_path / "teacher"
    dense = prune(_qa_config(tiny_model_dir, qa_files, teacher, method="finetune", steps=3))
    assert {"exact_match", "f1"} <= set(dense.metrics) and dense.metrics["eval_samples"] == 6
    out = tmp_path / "kd"
    result = prune(_qa_config(tiny_model_dir, qa_files, out, method="smp-s", steps=3, teacher=str(teacher)))
    assert 0 <= result.metrics["f1"] <= 100 and 0.29 <= result.density <= 0.3
    loaded = load_pruned(out)
    assert type(loaded.model).__name__ == "BertForQuestionAnswering"
    data = loaded.recipe["data"]
    assert data["task_type"] == "question-answering" and data["metrics"] == ["exact_match", "f1"]
    assert data["qa"] == {"max_length": 96, "doc_stride": 14, "max_answer_length": 30, "n_best": 20,
                          "null_threshold": 0.0} and data["version_2_with_negative"] is False
    metrics, _ = evaluate_saved(out)
    assert metrics["f1"] == pytest.approx(result.metrics["f1"])
    assert metrics["exact_match"] == pytest.approx(result.metrics["exact_match"])


def test_question_answering_resume_is_exact(tiny_model_dir, qa_files, tmp_path):
    prune(_qa_config(tiny_model_dir, qa_files, tmp_path / "straight", method="smp-s", steps=5))
    out = tmp_path / "resumed"
    prune(_qa_config(tiny_model_dir, qa_files, out, method="smp-s", steps=5, stop_after=2, save_every=2))
    prune(_qa_config(tiny_model_dir, qa_files, out, method="smp-s", steps=5, resume=True))
    _same_run(tmp_path / "straight", out)


def test_builtin_conll2003_and_squad_tasks(tiny_model_dir, tmp_path):
    common = dict(model=str(tiny_model_dir), method="smp-s", keep=0.3, steps=2, batch_size=4, train_samples=8,
                  eval_samples=6, progress=False)
    ner = prune(PruneConfig(**common, task="conll2003", max_length=32, output_dir=str(tmp_path / "ner")))
    recipe = load_pruned(tmp_path / "ner").recipe["data"]
    assert recipe["task"] == "conll2003" and recipe["kind"] == "builtin" and "B-PER" in recipe["label_names"]
    assert recipe["files"]["validation"]["path"].endswith("validation.txt") and ner.metrics["eval_samples"] == 6
    qa = prune(PruneConfig(**common, task="squad", max_length=128, output_dir=str(tmp_path / "qa")))
    recipe = load_pruned(tmp_path / "qa").recipe["data"]
    assert recipe["task_type"] == "question-answering" and not recipe["resplit"]["comparable_to_official_dev"]
    assert qa.metrics["eval_samples"] == 6


def test_bad_data_and_settings_are_refused_before_the_output_dir_exists(tiny_model_dir, ner_files, qa_files,
                                                                        tmp_path):
    out = tmp_path / "never"
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("john X B-PER\nlikes O\n\n")
    with pytest.raises(DataError, match="ragged.txt"):
        prune(_token_config(tiny_model_dir, (ner_files[0], ragged), out))
    unseen = _conll(tmp_path / "unseen.txt", [("john likes rome", "B-PER O B-ORG")])
    with pytest.raises(DataError, match="B-ORG"):
        prune(_token_config(tiny_model_dir, (ner_files[0], unseen), out))
    bad_answer = tmp_path / "bad.json"
    bad_answer.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "the film is good", "qas": [
        {"id": "q1", "question": "what?", "answers": [{"text": "bad", "answer_start": 12}]}]}]}]}))
    with pytest.raises(DataError, match="q1"):
        prune(_qa_config(tiny_model_dir, (qa_files[0], bad_answer), out))
    with pytest.raises(ValueError, match="max_length=48"):  # no room for a question and its context
        prune(_qa_config(tiny_model_dir, qa_files, out, max_length=48))
    with pytest.raises(ValueError, match="cap-label-weight 0"):
        prune(_token_config(tiny_model_dir, ner_files, out, cap="prc"))
    with pytest.raises(ValueError, match="--doc-stride apply to question answering"):
        prune(_token_config(tiny_model_dir, ner_files, out, doc_stride=16))
    with pytest.raises(DataError, match="--tags-column do not apply to question-answering"):
        prune(_qa_config(tiny_model_dir, qa_files, out, tags_column="tags"))
    for name, config, message in (
            ("qa-teacher", {"architectures": ["BertForQuestionAnswering"]}, "is a BertForQuestionAnswering"),
            ("tag-teacher", {"architectures": ["BertForTokenClassification"], "id2label": {"0": "O", "1": "B-X"}},
             "predicts the tags O, B-X")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match=message):
            prune(_token_config(tiny_model_dir, ner_files, out, teacher=str(tmp_path / name)))
    with pytest.raises(DataError, match="conll2003 is a token-classification task"):
        prune(PruneConfig(task="conll2003", task_type="question-answering", output_dir=str(out)))
    assert not out.exists()


def test_cap_instance_terms_run_for_token_classification(tiny_model_dir, ner_files, tmp_path):
    result = prune(_token_config(tiny_model_dir, ner_files, tmp_path / "cap", method="movement", steps=3,
                                 cap="prc,snc", cap_label_weight=0.0, cap_snapshot_every=2))
    recipe = load_pruned(tmp_path / "cap").recipe
    assert result.metrics["f1"] >= 0 and recipe["extensions"]["cap"]["representation"] == "cls"


def test_tag_column_and_label_names_reach_the_reader(tiny_model_dir, tmp_path):
    """--tag-column picks a CoNLL file's tag column (here the middle one; 0 is a valid index, not "unset"), and is
    recorded for evaluation; --label-names must be comma-separated non-empty names; both only for NER data."""
    lines = []
    for words, tags in SENTENCES:
        lines += [f"{w} {t} X" for w, t in zip(words.split(), tags.split())] + [""]
    train = tmp_path / "train.conll"
    train.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    prune(PruneConfig(**{**TOKEN, "model": str(tiny_model_dir), "train_file": str(train),
                         "validation_file": str(train), "output_dir": str(out), "tag_column": 1, "steps": 1}))
    data = json.loads((out / "recipe.json").read_text())["data"]
    assert data["tag_column"] == 1 and "B-PER" in data["label_names"]
    assert evaluate_saved(out)[0]["true_entities"] > 0
    from sparsekit.tasks.token import split_names

    assert split_names("O, B-PER,I-PER") == ("O", "B-PER", "I-PER") and split_names(None) is None
    with pytest.raises(DataError, match="empty name"):
        split_names("O,,B-PER")
    with pytest.raises(DataError, match="--tag-column"):
        DataSource(task="sst2", tag_column=0).check()
