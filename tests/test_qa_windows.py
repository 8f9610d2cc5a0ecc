"""QA windows and post-processing: answers recovered exactly from logits that point at them, across windows."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparsekit.models import load_tokenizer, minilm_path
from sparsekit.tasks.qa import (Answer, QADataset, QAExample, best_answers, make_qa_collate, read_squad,
                               squad_metrics, squad_resplit)

WORDS = ("the quick brown fox jumps over the lazy dog while seven small birds sing in green trees near a "
         "river and children play on the grass under a warm summer sun").split()
CONTEXT = " ".join(WORDS * 3)
QUESTION = "what happens by the river?"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(minilm_path())


def context_tokens(dataset: QADataset, window: int) -> list[int]:
    return [i for i, o in enumerate(dataset.offsets[window]) if o is not None]


def logits_pointing_at(dataset: QADataset, targets: dict[int, tuple[int, int, float]]):
    """[N, T] start / end logits: small noise, plus ``value`` at the (start, end) token of each target window."""
    length = max(len(f["input_ids"]) for f in dataset.features)
    generator = torch.Generator().manual_seed(0)
    start = torch.rand(len(dataset), length, generator=generator)
    end = torch.rand(len(dataset), length, generator=generator)
    for window, (s, e, value) in targets.items():
        start[window, s] = value
        end[window, e] = value
    return start, end


def test_windows_cover_the_context_with_stride(tokenizer):
    example = QAExample("q", "", QUESTION, CONTEXT, ())
    dataset = QADataset([example], tokenizer, max_length=40, stride=8, max_question_tokens=16)
    assert len(dataset) > 2 and dataset.example_index == [0] * len(dataset)
    for w in range(len(dataset)):
        item = dataset[w]
        assert len(item["input_ids"]) <= 40 and item["start_positions"] == item["end_positions"] == 0
        assert item["input_ids"][0] == tokenizer.cls_token_id
        assert all(o is None for o in dataset.offsets[w][:context_tokens(dataset, w)[0]])  # question: no offsets
    for w in range(len(dataset) - 1):  # consecutive windows share `stride` context tokens
        shared = set(map(tuple, (dataset.offsets[w][i] for i in context_tokens(dataset, w)))) & \
            set(map(tuple, (dataset.offsets[w + 1][i] for i in context_tokens(dataset, w + 1))))
        assert len(shared) == 8
    last = dataset.offsets[-1][context_tokens(dataset, len(dataset) - 1)[-1]]
    assert last[1] == len(CONTEXT)


def boundary_example(tokenizer) -> tuple[QAExample, QADataset, int, int]:
    """An example whose answer starts in window 0 but ends past it: only window 1 holds it whole."""
    probe = QADataset([QAExample("q", "", QUESTION, CONTEXT, ())], tokenizer, max_length=40, stride=8,
                      max_question_tokens=16)
    first = context_tokens(probe, 0)
    start_char = probe.offsets[0][first[-3]][0]   # the answer starts 3 tokens before window 0 ends ...
    after = [o for o in probe.offsets[1] if o is not None and o[0] > probe.offsets[0][first[-1]][0]]
    end_char = after[1][1]                        # ... and ends 2 tokens after it
    example = QAExample("q", "", QUESTION, CONTEXT, (Answer(CONTEXT[start_char:end_char], start_char),))
    return example, QADataset([example], tokenizer, max_length=40, stride=8, max_question_tokens=16), \
        start_char, end_char


def test_answer_across_a_window_boundary_is_recovered_exactly(tokenizer):
    example, dataset, start_char, end_char = boundary_example(tokenizer)
    answer = example.answers[0].text
    assert len(answer.split()) == 5
    window0, window1 = dataset[0], dataset[1]
    assert window0["start_positions"] == window0["end_positions"] == 0  # not whole in window 0: [CLS]
    s, e = window1["start_positions"], window1["end_positions"]
    assert s > 0 and dataset.offsets[1][s][0] == start_char and dataset.offsets[1][e][1] == end_char
    # window 0 points (less surely) at the cut-off part, window 1 at the whole answer
    cut_end = context_tokens(dataset, 0)[-1]
    cut_start = next(i for i in context_tokens(dataset, 0) if dataset.offsets[0][i][0] == start_char)
    start_logits, end_logits = logits_pointing_at(dataset, {0: (cut_start, cut_end, 6.0), 1: (s, e, 9.0)})
    result = best_answers([example], dataset, start_logits, end_logits)["q"]
    assert result["answer"] == answer and (result["start"], result["end"]) == (start_char, end_char)
    assert CONTEXT[result["start"]:result["end"]] == answer and 0 < result["score"] <= 1
    # rows of each window's own length work the same as one padded [N, T] tensor
    rows_start = [start_logits[w, :len(f["input_ids"])] for w, f in enumerate(dataset.features)]
    rows_end = [end_logits[w, :len(f["input_ids"])] for w, f in enumerate(dataset.features)]
    assert best_answers([example], dataset, rows_start, rows_end)["q"] == result


def test_spans_outside_the_context_or_too_long_are_not_answers(tokenizer):
    example, dataset, _, _ = boundary_example(tokenizer)
    first = context_tokens(dataset, 1)[0]
    question_token = 2
    start, end = logits_pointing_at(dataset, {1: (question_token, first + 3, 20.0)})
    start[1, first] = 10.0  # a valid span first..first+3 (less than the question start)
    result = best_answers([example], dataset, start, end)["q"]
    assert result["start"] == dataset.offsets[1][first][0] and result["end"] == dataset.offsets[1][first + 3][1]
    result = best_answers([example], dataset, start, end, max_answer_length=3)["q"]
    assert (result["start"], result["end"]) != (dataset.offsets[1][first][0], dataset.offsets[1][first + 3][1])


def test_version_2_no_answer_and_threshold(tokenizer):
    example = QAExample("n", "", QUESTION, CONTEXT, (), is_impossible=True)
    dataset = QADataset([example], tokenizer, max_length=40, stride=8, max_question_tokens=16)
    assert all(item["start_positions"] == item["end_positions"] == 0 for item in dataset)
    s = context_tokens(dataset, 1)[2]
    start, end = logits_pointing_at(dataset, {1: (s, s + 1, 5.0)})
    start[:, 0] = 8.0
    end[:, 0] = 8.0  # null 16 vs span 10
    assert best_answers([example], dataset, start, end, version_2=True)["n"]["answer"] == ""
    assert best_answers([example], dataset, start, end, version_2=True)["n"]["start"] == 0
    answered = best_answers([example], dataset, start, end, version_2=True, null_threshold=7.0)["n"]
    assert answered["answer"] == CONTEXT[dataset.offsets[1][s][0]:dataset.offsets[1][s + 1][1]]
    assert best_answers([example], dataset, start, end)["n"]["answer"] != ""  # v1: always a span


def test_long_questions_are_cut_and_counted_and_collate_pads(tokenizer):
    long_question = " ".join(["why"] * 30) + "?"
    examples = [QAExample("long", "", long_question, CONTEXT, ()), QAExample("short", "", QUESTION, CONTEXT, ())]
    dataset = QADataset(examples, tokenizer, max_length=64, stride=8, max_question_tokens=10)
    assert dataset.truncated_questions == ["long"]
    window = dataset.example_index.index(0)
    assert dataset[window]["input_ids"][1:12] == [tokenizer.convert_tokens_to_ids("why")] * 10 + \
        [tokenizer.sep_token_id]
    with pytest.raises(ValueError, match="max_question_tokens"):
        QADataset(examples, tokenizer, max_length=32, stride=4, max_question_tokens=20)
    batch = make_qa_collate(tokenizer)([dataset[0], dataset[len(dataset) - 1]])
    assert batch["input_ids"].shape[0] == 2 and batch["start_positions"].shape == (2,)
    assert batch["attention_mask"].sum(1).tolist() == [len(dataset[0]["input_ids"]),
                                                       len(dataset[len(dataset) - 1]["input_ids"])]


SQUAD_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "dev-v1.1.json"


@pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=f"{SQUAD_DEV} is not here")
def test_real_squad_answers_come_back_from_their_training_positions(tokenizer):
    """Logits that point at each window's training labels give back the gold answers on real SQuAD (up to
    the few answers that are part of a word piece, e.g. "gold" in "golden")."""
    _, dev = squad_resplit(read_squad(SQUAD_DEV))
    examples = dev[:300]
    dataset = QADataset(examples, tokenizer)
    length = max(len(f["input_ids"]) for f in dataset.features)
    start, end = torch.zeros(len(dataset), length), torch.zeros(len(dataset), length)
    for w, item in enumerate(dataset):
        start[w, item["start_positions"]] = end[w, item["end_positions"]] = 5.0
    answers = best_answers(examples, dataset, start, end)
    metrics = squad_metrics(answers, examples)
    assert metrics["exact_match"] >= 98.0 and metrics["missing"] == 0
    assert all(e.context[answers[e.id]["start"]:answers[e.id]["end"]] == answers[e.id]["answer"] for e in examples)
