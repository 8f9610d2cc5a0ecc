"""The user's own data: CSV / TSV / JSON / JSON Lines / Parquet files and save_to_disk datasets load to the same
examples; bad data is refused before any training with a message naming the file and row; SST-2 through a CSV
gives the same masks and metrics as --task sst2; the artifact records the data and evaluate / predict / serve
work from it."""
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from sparsekit.cli import app
from sparsekit.data import get_task
from sparsekit.data.glue import default_data_root
from sparsekit.data.source import DataError, DataSource, load_data, load_evaluation_file, spec_from_description
from sparsekit.prune import PruneConfig, load_pruned, prune

runner = CliRunner()
TINY_RUN = dict(train_samples=48, eval_samples=24, batch_size=8, max_length=24, progress=False, steps=4,
                method="smp-s", keep=0.3)
TRAIN = pd.DataFrame({"text": ["a good film", "the worst story", "great and funny", "boring, not good",
                               "i love it", "i hate it"],
                      "label": ["pos", "neg", "pos", "neg", "pos", "neg"]})
DEV = pd.DataFrame({"text": ["good story", "bad film", "the best movie"], "label": ["pos", "neg", "pos"]})


def _write(frame: pd.DataFrame, path):
    """Write ``frame`` in the format ``path``'s suffix names."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


def _files(tmp_path, suffix=".csv", train=TRAIN, dev=DEV):
    return (str(_write(train, tmp_path / f"train{suffix}")), str(_write(dev, tmp_path / f"dev{suffix}")))


def _load(train, dev, **kw):
    return load_data(DataSource(train_file=train, validation_file=dev, **kw))


def _sst2_as_csv(out, names: bool) -> list[str]:
    """SST-2 train and dev written as CSV files as the README's one-liner does (pandas, from GLUE's TSV), with
    the class names of the README (``names``) or GLUE's ids."""
    paths = []
    for split in ("train", "dev"):
        frame = pd.read_csv(default_data_root() / "SST-2" / f"{split}.tsv", sep="\t", quoting=3,
                            keep_default_na=False)
        if names:
            frame = frame.assign(label=lambda d: d.label.map({0: "negative", 1: "positive"}))
        frame.to_csv(out / f"sst2_{split}.csv", index=False)
        paths.append(str(out / f"sst2_{split}.csv"))
    return paths


@pytest.fixture(scope="module")
def sst2_csv(tmp_path_factory):
    return _sst2_as_csv(tmp_path_factory.mktemp("sst2csv"), names=False)


def test_the_readme_csv_holds_exactly_the_glue_examples(tmp_path):
    from sparsekit.data import load_split

    data = _load(*_sst2_as_csv(tmp_path, names=True))
    assert data.train == load_split("sst2", "train") and data.dev == load_split("sst2", "dev")
    assert data.spec.label_names == ("negative", "positive")


# ------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_file_format_loads_the_same_examples(tmp_path, suffix):
    data = _load(*_files(tmp_path, suffix))
    assert [(e.text_a, e.text_b, e.label) for e in data.train] == \
        [(t, None, int(lab == "pos")) for t, lab in zip(TRAIN.text, TRAIN.label)]
    assert data.spec.label_names == ("neg", "pos") and data.spec.metrics == ("accuracy",)
    assert data.record["kind"] == "files" and data.record["files"]["train"]["sha256"]
    assert data.record["label_names"] == ["neg", "pos"] and data.record["task"] is None


def test_save_to_disk_dataset_loads(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict(train=Dataset.from_pandas(TRAIN), validation=Dataset.from_pandas(DEV)).save_to_disk(tmp_path / "ds")
    data = load_data(DataSource(dataset=str(tmp_path / "ds")))
    files = _load(*_files(tmp_path))
    assert data.train == files.train and data.dev == files.dev
    assert data.record["kind"] == "dataset" and data.record["dataset"]["splits"]["validation"] == "validation"


def test_class_label_dataset_keeps_its_names_and_ids(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["bad", "good", "meh"])})
    make = lambda n: Dataset.from_dict({"sentence": ["x y"] * n, "label": [i % 3 for i in range(n)]},  # noqa: E731
                                       features=features)
    DatasetDict(train=make(6), validation=make(3)).save_to_disk(tmp_path / "ds")
    data = load_data(DataSource(dataset=str(tmp_path / "ds")))
    assert data.spec.label_names == ("bad", "good", "meh") and [e.label for e in data.dev] == [0, 1, 2]


def test_hub_dataset_not_cached_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="cache"):
        load_data(DataSource(dataset="sparsekit-no-such-user/no-such-dataset"))


def test_pairs_int_labels_floats_and_metrics(tmp_path):
    pairs = pd.DataFrame({"sentence1": ["a", "b", "c", "d"], "sentence2": ["e", "f", "g", "h"],
                          "label": [0, 1, 2, 1]})
    data = _load(*_files(tmp_path, ".csv", pairs, pairs), metric="matthews")
    assert data.spec.is_pair and data.spec.label_names == ("0", "1", "2") and data.spec.metrics == ("matthews",)
    scores = pairs.assign(label=[0.5, 1.0, 4.5, 2.0])
    data = _load(*_files(tmp_path, ".jsonl", scores, scores))
    assert data.spec.is_regression and data.spec.metrics == ("pearson", "spearman")
    assert data.train[0].label == 0.5
    with pytest.raises(DataError, match="regression"):
        _load(*_files(tmp_path, ".jsonl", scores, scores), metric="accuracy")
    custom = TRAIN.rename(columns={"text": "review", "label": "stars"})
    data = _load(*_files(tmp_path, ".csv", custom, custom), text_column="review", label_column="stars")
    assert data.spec.text_fields == ("review",) and data.spec.label_field == "stars"


# ----------------------------------------------------------------------------------------------- bad data


def test_missing_file_and_unknown_suffix(tmp_path):
    train, dev = _files(tmp_path)
    with pytest.raises(FileNotFoundError, match="--validation-file .*nope.csv does not exist"):
        _load(train, str(tmp_path / "nope.csv"))
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown file type '.xlsx'"):
        _load(str(tmp_path / "data.xlsx"), dev)
    with pytest.raises(DataError, match="both --train-file and --validation-file"):
        load_data(DataSource(train_file=train))


def test_missing_column_lists_the_columns_found(tmp_path):
    frame = TRAIN.rename(columns={"text": "review"})
    with pytest.raises(DataError, match=r"train.csv: no text column found .*'review', 'label'.*--text-column"):
        _load(*_files(tmp_path, ".csv", frame, frame))
    with pytest.raises(DataError, match=r"dev.csv has no column 'review'; the columns found are 'text', 'label'"):
        _load(*_files(tmp_path, ".csv", frame, DEV), text_column="review")


def test_empty_split(tmp_path):
    with pytest.raises(DataError, match="dev.csv has no examples"):
        _load(*_files(tmp_path, ".csv", TRAIN, DEV.iloc[:0]))


def test_validation_label_that_train_never_saw(tmp_path):
    dev = DEV.assign(label=["pos", "neutral", "neg"])
    with pytest.raises(DataError, match=r"dev.csv, row 2: label 'neutral' is not one .*train has: neg, pos"):
        _load(*_files(tmp_path, ".csv", TRAIN, dev))


def test_empty_and_non_string_texts(tmp_path):
    train = TRAIN.assign(text=["a", "b", "", "d", "e", "f"])
    with pytest.raises(DataError, match=r"train.csv, row 3: 'text' is empty"):
        _load(*_files(tmp_path, ".csv", train, DEV))
    train = TRAIN.assign(text=["a", "b", "c", 4, "e", "f"]).astype({"text": object})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train.to_dict("records")))
    with pytest.raises(DataError, match=r"train.jsonl, row 4: .text. holds int 4, not a text"):
        _load(str(tmp_path / "train.jsonl"), _files(tmp_path)[1])
    numbers = TRAIN.assign(text=[1, 2, 3, 4, 5, 6])
    with pytest.raises(DataError, match=r"train.csv, row 1: 'text' holds int 1, not a text"):
        _load(*_files(tmp_path, ".csv", numbers, DEV))


def test_mixed_label_types(tmp_path):
    train = TRAIN.assign(label=["0", "1", "pos", "neg", "1", "0"])
    with pytest.raises(DataError, match=r"train.csv: the labels in 'label' mix types"):
        _load(*_files(tmp_path, ".csv", train, DEV))
    numeric = TRAIN.assign(label=[0, 1, 0, 1, 0, 1])
    with pytest.raises(DataError, match=r"labels in 'label' are int in .*train.csv but str in .*dev.csv"):
        _load(*_files(tmp_path, ".csv", numeric, DEV))
    missing = TRAIN.assign(label=["pos", "neg", "", "neg", "pos", "neg"])
    with pytest.raises(DataError, match=r"train.csv, row 3: the label \('label'\) is empty"):
        _load(*_files(tmp_path, ".csv", missing, DEV))


def test_conflicting_options_and_nothing_written_before_the_data_is_valid(tiny_model_dir, tmp_path):
    train, dev = _files(tmp_path, ".csv", TRAIN, DEV.assign(label=["pos", "neutral", "neg"]))
    out = tmp_path / "run"
    with pytest.raises(DataError, match="neutral"):
        prune(PruneConfig(**TINY_RUN, model=str(tiny_model_dir), output_dir=str(out), train_file=train,
                          validation_file=dev))
    assert not out.exists()
    with pytest.raises(ValueError, match="drop --task"):
        PruneConfig(task="mrpc", train_file=train, validation_file=dev).validate()
    with pytest.raises(ValueError, match="--label-column apply to your own data"):
        PruneConfig(label_column="y").validate()


# ---------------------------------------------------------------------------------- training and downstream


def test_sst2_csv_gives_the_same_masks_and_metrics_as_the_glue_task(tiny_model_dir, tmp_path, sst2_csv):
    glue = prune(PruneConfig(**TINY_RUN, task="sst2", model=str(tiny_model_dir), output_dir=str(tmp_path / "g")))
    csv = prune(PruneConfig(**TINY_RUN, model=str(tiny_model_dir), output_dir=str(tmp_path / "c"),
                            train_file=sst2_csv[0], validation_file=sst2_csv[1]))
    assert (tmp_path / "g" / "masks.bin").read_bytes() == (tmp_path / "c" / "masks.bin").read_bytes()
    timing = {"train_seconds", "eval_seconds"}
    assert {k: v for k, v in glue.metrics.items() if k not in timing} == \
        {k: v for k, v in csv.metrics.items() if k not in timing}
    recipe = load_pruned(tmp_path / "c").recipe
    assert recipe["data"]["kind"] == "files" and recipe["data"]["label_names"] == ["0", "1"]
    assert recipe["data"]["train_examples"] == 48


def test_user_data_through_export_evaluate_predict_and_serve(tiny_model_dir, tmp_path):
    from sparsekit.export import export, load
    from sparsekit.export.predict import Predictor
    from sparsekit.serve.app import describe_model

    train, dev = _files(tmp_path, ".parquet")
    prune(PruneConfig(**{**TINY_RUN, "train_samples": None, "eval_samples": None}, model=str(tiny_model_dir),
                      output_dir=str(tmp_path / "run"), train_file=train, validation_file=dev, metric="f1"))
    export(tmp_path / "run", tmp_path / "art")
    model = load(tmp_path / "art")
    data = model.manifest["data"]
    assert data["kind"] == "files" and data["label_names"] == ["neg", "pos"] and data["metric"] == "f1"
    assert data["text_columns"] == ["text"] and data["files"]["validation"]["path"].endswith("dev.parquet")
    predictor = Predictor(model)
    assert predictor.predict(["a good film"])[0].label in ("neg", "pos")
    info = describe_model(predictor)
    assert info.task == "train.parquet" and info.input_kind == "single" and info.labels == ["neg", "pos"]

    new = _write(pd.DataFrame({"text": ["fine", "awful", "great"], "label": ["pos", "neg", "pos"]}),
                 tmp_path / "new.csv")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "art"), "--validation-file", str(new), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout[result.stdout.index("{"):])
    assert set(metrics) >= {"f1", "eval_samples"} and metrics["eval_samples"] == 3
    result = runner.invoke(app, ["evaluate", str(tmp_path / "art")])
    assert result.exit_code == 2 and "--validation-file" in result.output
    import shutil

    from artifact_forge import rewrite_manifest
    from sparsekit.export.errors import ArtifactError

    forged = shutil.copytree(tmp_path / "art", tmp_path / "forged")
    rewrite_manifest(forged, lambda m: m["data"].update(label_names=["neg", "pos", "meh"]))
    with pytest.raises(ArtifactError, match="data.label_names"):
        load(forged)
    rewrite_manifest(forged, lambda m: m.pop("data"))  # artifacts exported before `data` existed still load
    assert load(forged).manifest.get("data") is None

    from sparsekit.bench import BenchConfig, run_bench

    bench = run_bench(BenchConfig(str(tmp_path / "art"), tmp_path / "bench", batch=[2], seq=[8], threads=[1],
                                  repeats=2, rounds=1, min_seconds=0.0, warmup=1, compile_repeats=1))
    assert bench.data["configs"][0]["variants"]["sparsekit"]["status"] == "ok"
    bad = _write(pd.DataFrame({"text": ["fine"], "label": ["meh"]}), tmp_path / "bad.csv")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--validation-file", str(bad)])
    assert result.exit_code == 2 and "'meh' is not one the model was trained on" in result.output


def test_a_glue_model_evaluates_on_a_file(tiny_model_dir, tmp_path, sst2_csv):
    spec = get_task("sst2")
    examples = load_evaluation_file(spec, sst2_csv[1])
    assert len(examples) == 872 and examples[0].label in (0, 1)
    assert spec_from_description({"task": "sst2"}) is spec


def test_sentence_pair_regression_on_user_data(tiny_model_dir, tmp_path):
    from sparsekit.export import export, load
    from sparsekit.export.predict import Predictor
    from sparsekit.serve.app import describe_model

    pairs = pd.DataFrame({"question": ["is it good", "a bad film", "the best", "not funny", "i love it", "boring"],
                          "answer": ["yes", "no", "great story", "boring", "love", "the worst"],
                          "score": [4.5, 1.0, 5.0, 0.5, 4.0, 2.5]})
    train, dev = _files(tmp_path, ".jsonl", pairs, pairs)
    result = prune(PruneConfig(**TINY_RUN, model=str(tiny_model_dir), output_dir=str(tmp_path / "run"),
                               train_file=train, validation_file=dev, text_column="question",
                               text_pair_column="answer", label_column="score", metric="spearman"))
    assert "spearman" in result.metrics and "pearson" not in result.metrics
    export(tmp_path / "run", tmp_path / "art")
    model = load(tmp_path / "art")
    assert model.manifest["data"]["is_regression"] and model.manifest["data"]["label_names"] is None
    info = describe_model(Predictor(model))
    assert info.input_kind == "pair" and info.regression
