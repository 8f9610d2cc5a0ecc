"""NER encoding: labels on first sub-tokens, truncation, collation, word predictions and the losses."""
import pytest
import torch
import torch.nn.functional as F

from sparsekit.errors import ModelError
from sparsekit.models import load_tokenizer, minilm_path
from sparsekit.tasks.ner import (TokenDataset, TokenExample, entity_metrics, make_token_collate, token_kd_loss,
                                 token_loss, word_predictions)
from sparsekit.tasks.ner.data import DataWarning

LABELS = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
LABEL2ID = {label: i for i, label in enumerate(LABELS)}
# [CLS] nad ##im lad ##ki in al - ain , uae [SEP]
SENTENCE = TokenExample(("Nadim", "Ladki", "in", "AL-AIN", ",", "UAE"),
                        ("B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"))
SHORT = TokenExample(("Peter", "ran"), ("B-PER", "O"))


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(minilm_path())


def test_labels_sit_on_first_sub_tokens(tokenizer):
    dataset = TokenDataset([SENTENCE, SHORT], tokenizer, LABEL2ID, max_length=32)
    i = -100
    assert dataset.word_ids[0] == [None, 0, 0, 1, 1, 2, 3, 3, 3, 4, 5, None]
    assert dataset[0]["labels"] == [i, 3, i, 4, i, 0, 1, i, i, 0, 1, i]
    assert dataset[1]["labels"] == [i, 3, 0, i]
    assert set(dataset[0]) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert dataset.record == {"examples": 2, "truncated_examples": 0, "truncated_words": 0,
                              "words_without_tokens": 0}


def test_truncated_words_are_counted_and_predicted_o(tokenizer):
    with pytest.warns(DataWarning, match=r"1 of 2 sentence\(s\) are longer than max_length=6 .* last 4 word"):
        dataset = TokenDataset([SENTENCE, SHORT], tokenizer, LABEL2ID, max_length=6)
    assert dataset[0]["labels"] == [-100, 3, -100, 4, -100, -100]
    assert dataset.record["truncated_words"] == 4 and dataset.record["truncated_examples"] == 1
    logits = torch.zeros(2, 6, len(LABELS))
    logits[:, :, LABEL2ID["B-LOC"]] = 1.0  # every position says B-LOC
    assert word_predictions(logits, dataset, LABELS) == [["B-LOC", "B-LOC", "O", "O", "O", "O"],
                                                         ["B-LOC", "B-LOC"]]


def test_words_without_sub_tokens_and_unknown_tags(tokenizer):
    dataset = TokenDataset([TokenExample(("Bob", "", "ran"), ("B-PER", "O", "O"))], tokenizer, LABEL2ID, 16)
    assert dataset.record["words_without_tokens"] == 1 and dataset.record["truncated_words"] == 0
    assert dataset.word_ids[0] == [None, 0, 2, None]
    with pytest.raises(ValueError, match=r"sentence 1, word 2 \('ran'\): tag 'B-ORG' is not one of"):
        TokenDataset([TokenExample(("Bob", "ran"), ("O", "B-ORG"))], tokenizer, LABEL2ID, 16)


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ModelError, match="needs a fast tokenizer"):
        TokenDataset([SHORT], Slow(), LABEL2ID, 16)


def test_collate_pads_inputs_and_labels(tokenizer):
    dataset = TokenDataset([SENTENCE, SHORT], tokenizer, LABEL2ID, max_length=32)
    batch = make_token_collate(tokenizer)([dataset[0], dataset[1]])
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "input_ids": (2, 12), "attention_mask": (2, 12), "token_type_ids": (2, 12), "labels": (2, 12)}
    assert batch["input_ids"][1, 4:].tolist() == [tokenizer.pad_token_id] * 8
    assert batch["attention_mask"][1].tolist() == [1] * 4 + [0] * 8
    assert batch["labels"][1].tolist() == [-100, 3, 0] + [-100] * 9
    assert all(v.dtype == torch.long for v in batch.values())


def test_word_predictions_use_first_sub_tokens(tokenizer):
    dataset = TokenDataset([SENTENCE, SHORT], tokenizer, LABEL2ID, max_length=32)
    logits = torch.zeros(2, 12, len(LABELS))
    for row, labels in enumerate(dataset.labels):
        for position, label in enumerate(labels):
            # the gold label at first sub-tokens, I-LOC (wrong) everywhere else
            logits[row, position, label if label >= 0 else LABEL2ID["I-LOC"]] = 5.0
    predicted = word_predictions(logits, dataset, {str(i): label for i, label in enumerate(LABELS)})
    assert predicted == [list(SENTENCE.tags), list(SHORT.tags)]
    ragged = [logits[0, :12].numpy(), logits[1, :4].numpy()]
    assert word_predictions(ragged, dataset, LABELS) == predicted
    assert entity_metrics([list(SENTENCE.tags), list(SHORT.tags)], predicted)["f1"] == 1.0


def test_token_loss_ignores_unlabelled_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, requires_grad=True)
    labels = torch.tensor([[-100, 1, -100, 2], [-100, 0, -100, -100]])
    expected = (F.cross_entropy(logits[0, 1:2], labels[0, 1:2]) + F.cross_entropy(logits[0, 3:4], labels[0, 3:4])
                + F.cross_entropy(logits[1, 1:2], labels[1, 1:2])) / 3
    assert token_loss(logits, labels).item() == pytest.approx(expected.item())
    empty = token_loss(logits, torch.full((2, 4), -100))
    assert empty.item() == 0.0
    empty.backward()
    assert logits.grad is not None


def test_token_kd_loss_is_t2_kl_mean_over_labelled_positions():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    labels = torch.tensor([[-100, 1, 2], [0, -100, -100]])
    temperature = 2.0
    positions = [(0, 1), (0, 2), (1, 0)]
    kls = []
    for b, t in positions:
        p = F.softmax(teacher[b, t] / temperature, -1)
        q = F.log_softmax(student[b, t] / temperature, -1)
        kls.append((p * (p.log() - q)).sum())
    expected = temperature ** 2 * sum(kls) / len(kls)
    assert token_kd_loss(student, teacher, labels, temperature).item() == pytest.approx(expected.item(), rel=1e-5)
    assert token_kd_loss(teacher, teacher, labels, temperature).item() == pytest.approx(0.0, abs=1e-6)
    assert token_kd_loss(student, teacher, torch.full((2, 3), -100), temperature).item() == 0.0
