"""NER data: CoNLL reading, IOB1 → IOB2, the user's table data, label sets and the checks before training."""
import json
import warnings
from pathlib import Path

import pytest

from sparsekit.data.source import DataError
from sparsekit.tasks.ner import TokenExample, iob1_to_iob2, load_token_data, read_conll
from sparsekit.tasks.ner.data import DataWarning
from sparsekit.tasks.ner.tags import detect_scheme, lenient_entities, strict_entities

CONLL_DIR = Path("/work/shared/data/conll2003")

IOB2_TEXT = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""

IOB1_TEXT = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_iob1_to_iob2_cases():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC"]) == ("B-PER", "I-PER", "O", "B-LOC")
    # B- in IOB1 separates two adjacent entities of the same type; another type starts a new entity.
    assert iob1_to_iob2(["I-PER", "B-PER", "I-PER", "I-LOC"]) == ("B-PER", "B-PER", "I-PER", "B-LOC")
    valid_iob2 = ("B-ORG", "I-ORG", "O", "B-PER", "B-PER", "I-PER")
    assert iob1_to_iob2(valid_iob2) == valid_iob2
    assert detect_scheme([valid_iob2]) == "iob2"
    assert detect_scheme([valid_iob2, ("O", "I-MISC")]) == "iob1"


def test_entity_spans_strict_and_lenient():
    tags = ["B-PER", "I-PER", "I-LOC", "O", "I-ORG", "I-ORG", "B-ORG"]
    assert strict_entities(tags) == [("PER", 0, 2), ("ORG", 6, 7)]
    assert lenient_entities(tags) == [("PER", 0, 2), ("LOC", 2, 3), ("ORG", 4, 6), ("ORG", 6, 7)]
    with pytest.raises(ValueError, match="not an IOB tag"):
        strict_entities(["S-PER"])


def test_read_conll_iob1_and_iob2_agree(tmp_path):
    iob2 = read_conll(write(tmp_path, "a.txt", IOB2_TEXT))
    iob1 = read_conll(write(tmp_path, "eng.train", IOB1_TEXT))
    assert iob2 == iob1 == [TokenExample(("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O")),
                            TokenExample(("Peter", "Blackburn"), ("B-PER", "I-PER"))]
    # Explicit schemes; the chunk column is selectable as the tag column.
    assert read_conll(tmp_path / "eng.train", scheme="iob1") == iob2
    chunks = read_conll(tmp_path / "eng.train", tag_column=2)
    assert chunks[0].tags == ("B-NP", "B-VP", "B-NP", "I-NP")


def test_read_conll_tolerates_crlf_tabs_and_extra_blank_lines(tmp_path):
    text = "\r\n\r\nEU\tB-ORG\r\nsays\tO\r\n\r\n\r\n\r\nok\tO\r\n"
    assert read_conll(write(tmp_path, "x.conll", text)) == [
        TokenExample(("EU", "says"), ("B-ORG", "O")), TokenExample(("ok",), ("O",))]


def test_read_conll_iob2_keeps_stray_i_tags_with_a_counted_warning(tmp_path):
    path = write(tmp_path, "x.iob", "a O\nb I-PER\n\nc I-LOC\nd I-LOC\n")
    with pytest.warns(DataWarning, match=r"2 I- tag\(s\) start an entity \(first at .*x.iob:2\)"):
        examples = read_conll(path, scheme="iob2")
    assert examples[0].tags == ("O", "I-PER")
    assert read_conll(path)[1].tags == ("B-LOC", "I-LOC")  # auto: read as IOB1


@pytest.mark.parametrize("text, message", [
    ("EU NNP B-ORG\nsays VBZ\n", r"x.txt:2: 2 columns, but the file's token lines have 3 \(from line 1\)"),
    ("EU NNP B-ORG\nsays VBZ S-PER\n", r"x.txt:2: tag 'S-PER' \(column 2\) is not an IOB tag"),
    ("EU B-ORG\nsays\n", r"x.txt:2: 1 columns"),
    ("EU\n", r"x.txt:1: one column"),
    ("-DOCSTART- -X- O\n\n\n", r"x.txt has no sentences"),
])
def test_read_conll_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_conll(write(tmp_path, "x.txt", text))


def test_read_conll_tag_column_and_encoding_errors(tmp_path):
    path = write(tmp_path, "x.txt", "EU NNP B-ORG\n")
    with pytest.raises(DataError, match="tag column 5 does not exist"):
        read_conll(path, tag_column=5)
    with pytest.raises(DataError, match="tag 'NNP' .* pick the tag column"):
        read_conll(path, tag_column=1)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"EU B-ORG\n\xff O\n")
    with pytest.raises(DataError, match="bad.txt:2: not UTF-8"):
        read_conll(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_conll(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="unknown tag scheme 'bioes'"):
        read_conll(path, scheme="bioes")


def test_load_conll_files_labels_record_and_subsets(tmp_path):
    train = write(tmp_path, "train.txt", IOB2_TEXT)
    dev = write(tmp_path, "eng.testa", IOB1_TEXT)
    data = load_token_data(train, dev)
    assert data.labels == ("O", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    assert data.train == data.dev
    assert data.record["scheme"] == {"train": "iob2", "validation": "iob1"}
    assert data.record["formats"] == {"train": "conll", "validation": "conll"}
    assert data.record["train_examples"] == 2 and data.record["dev_words"] == 6
    assert len(data.record["files"]["train"]["sha256"]) == 64
    json.dumps(data.record)
    small = load_token_data(train, dev, train_limit=1, dev_limit=1, seed=3)
    assert len(small.train) == len(small.dev) == 1
    assert small.train == load_token_data(train, dev, train_limit=1, seed=3).train


def test_dev_tag_of_an_unseen_type_is_an_error(tmp_path):
    train = write(tmp_path, "train.txt", "EU B-ORG\nsays O\n")
    dev = write(tmp_path, "dev.txt", "EU B-ORG\n\nsays O\nBob B-PER\n")
    with pytest.raises(DataError, match=r"dev.txt:4: tag 'B-PER' is not in the label set .*entity types: ORG"):
        load_token_data(train, dev)
    # a type's I- label exists even when train only has one-word entities of it
    ok = write(tmp_path, "ok.txt", "European B-ORG\nUnion I-ORG\n")
    assert load_token_data(train, ok).labels == ("O", "B-ORG", "I-ORG")


def write_jsonl(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_load_jsonl_tags_as_names_and_as_ids(tmp_path):
    rows = [{"tokens": ["Bob", "lives", "in", "Paris"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]},
            {"tokens": ["New", "York"], "ner_tags": ["I-LOC", "I-LOC"]}]
    data = load_token_data(write_jsonl(tmp_path, "t.jsonl", rows), write_jsonl(tmp_path, "d.jsonl", rows[:1]))
    assert data.record["scheme"]["train"] == "iob1" and data.train[1].tags == ("B-LOC", "I-LOC")
    assert data.labels == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    ids = [{"words": ["Bob", "ran"], "tags": [1, 0]}]
    path = write_jsonl(tmp_path, "ids.jsonl", ids)
    with pytest.raises(DataError, match=r"ids.jsonl, row 1, token 1: tag 1 is an id.*label_names"):
        load_token_data(path, path, tokens_column="words", tags_column="tags")
    data = load_token_data(path, path, tokens_column="words", tags_column="tags", label_names=["O", "B-PER"])
    assert data.train[0].tags == ("B-PER", "O") and data.labels == ("O", "B-PER", "I-PER")


def test_dataset_with_classlabel_keeps_its_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    split = datasets.Dataset.from_dict({"tokens": [["Bob", "ran"], ["EU", "x"]], "ner_tags": [[1, 0], [3, 0]]},
                                       features=features)
    datasets.DatasetDict(train=split, validation=split).save_to_disk(str(tmp_path / "ds"))
    data = load_token_data(dataset=str(tmp_path / "ds"))
    assert data.labels == tuple(names)
    assert data.train[1] == TokenExample(("EU", "x"), ("B-ORG", "O"))
    assert data.record["kind"] == "dataset" and data.record["dataset"]["splits"]["validation"] == "validation"
    split.to_parquet(str(tmp_path / "t.parquet"))  # Parquet written by datasets keeps the ClassLabel
    parquet = load_token_data(tmp_path / "t.parquet", tmp_path / "t.parquet")
    assert parquet.labels == tuple(names) and parquet.train == data.train
    assert parquet.record["formats"] == {"train": "parquet", "validation": "parquet"}


@pytest.mark.parametrize("row, message", [
    ({"tokens": [], "ner_tags": []}, "row 2: the sentence has no tokens"),
    ({"tokens": ["a", "b"], "ner_tags": ["O"]}, "row 2: 2 tokens but 1 tags"),
    ({"tokens": ["a", 3], "ner_tags": ["O", "O"]}, "row 2, token 2: int 3 is not a string"),
    ({"tokens": "a b", "ner_tags": ["O", "O"]}, "row 2: 'tokens' holds str 'a b', not a list"),
    ({"tokens": ["a"], "ner_tags": ["E-PER"]}, "row 2, token 1: tag 'E-PER' is not an IOB tag"),
])
def test_bad_rows_name_file_and_row(tmp_path, row, message):
    good = {"tokens": ["Bob"], "ner_tags": ["B-PER"]}
    path = write_jsonl(tmp_path, "bad.jsonl", [good, row])
    good_path = write_jsonl(tmp_path, "good.jsonl", [good])
    with pytest.raises(DataError, match=message):
        load_token_data(good_path, path)


def test_empty_tokens_are_a_counted_warning_and_missing_columns_an_error(tmp_path):
    path = write_jsonl(tmp_path, "e.jsonl", [{"tokens": ["Bob", " ", ""], "ner_tags": ["B-PER", "O", "O"]}])
    with pytest.warns(DataWarning, match=r"2 empty token\(s\) \(first at .*e.jsonl, row 1, token 2\)"):
        load_token_data(path, path)
    with pytest.raises(DataError, match="has no column 'words'"):
        load_token_data(path, path, tokens_column="words")
    with pytest.raises(DataError, match="--validation-file is missing"):
        load_token_data(path)
    with pytest.raises(DataError, match="not both"):
        load_token_data(path, path, dataset="conll2003")


@pytest.mark.skipif(not (CONLL_DIR / "original_iob1").is_dir(), reason="CoNLL-2003 data not present")
def test_real_conll2003_iob1_and_iob2_agree_and_counts_match_sources():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real files read without a quirk
        data = load_token_data(CONLL_DIR / "train.txt", CONLL_DIR / "validation.txt")
        iob1 = read_conll(CONLL_DIR / "original_iob1" / "eng.testa")
    assert iob1 == data.dev
    assert data.record["scheme"] == {"train": "iob2", "validation": "iob2"}
    assert (data.record["dev_examples"], data.record["dev_words"]) == (3250, 51362)
    assert (data.record["train_examples"], data.record["train_words"]) == (14041, 203621)
    assert sum(tag.startswith("B-") for e in data.dev for tag in e.tags) == 5942
    assert data.labels == ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")


def test_csv_json_named_as_conll_and_non_iob_label_names_are_errors(tmp_path):
    conll = write(tmp_path, "ok.txt", "[ O\nEU B-ORG\n")
    assert read_conll(conll)[0].words == ("[", "EU")  # a bracket token is not JSON
    for name, text, message in [("x.csv", "tokens,ner_tags\n", "a CSV file cannot hold a list of tokens"),
                                ("x.txt", '{"tokens": ["a"], "ner_tags": ["O"]}\n', "holds JSON.*rename it")]:
        with pytest.raises(DataError, match=message):
            load_token_data(write(tmp_path, name, text), conll)
    with pytest.raises(DataError, match="label name\\(s\\) 'S-PER' are not IOB tags"):
        load_token_data(conll, conll, label_names=["O", "S-PER"])
