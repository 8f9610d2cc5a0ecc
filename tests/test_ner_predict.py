"""predict_entities: raw texts and word lists in, entities with character offsets out (aggregation "first")."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.models import load_tokenizer, minilm_path
from sparsekit.tasks.ner import TokenDataset, TokenExample, dataset_logits, evaluate_entities, predict_entities

LABELS = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")


class LookupModel(nn.Module):
    """Logits from a table: each token id gives (label, strength); every other token says "O"."""

    def __init__(self, tokenizer, table):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.table = {tokenizer.convert_tokens_to_ids(token): value for token, value in table.items()}

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        labels = torch.zeros_like(input_ids)
        strength = torch.full(input_ids.shape, 4.0)
        for token, (label, value) in self.table.items():
            labels[input_ids == token] = LABELS.index(label)
            strength[input_ids == token] = value
        return SimpleNamespace(logits=F.one_hot(labels, len(LABELS)).float() * strength[..., None])


def probability(strength):
    return math.exp(strength) / (math.exp(strength) + len(LABELS) - 1)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(minilm_path())


@pytest.fixture(scope="module")
def model(tokenizer):
    # [CLS] nad ##im lad ##ki lives in kuala lumpur . [SEP]; "##im" says B-LOC but only first sub-tokens count
    return LookupModel(tokenizer, {"nad": ("B-PER", 2.0), "##im": ("B-LOC", 9.0), "lad": ("I-PER", 4.0),
                                   "kuala": ("B-LOC", 3.0), "lumpur": ("I-LOC", 3.0), "lives": ("I-LOC", 1.0)})


def test_raw_text_entities_with_offsets_and_mean_scores(tokenizer, model):
    text = "Nadim Ladki  lives in Kuala Lumpur."
    [entities] = predict_entities(model, tokenizer, [text], LABELS)
    assert [(e["entity"], e["start"], e["end"], e["word"]) for e in entities] == [
        ("PER", 0, 11, "Nadim Ladki"), ("LOC", 13, 18, "lives"), ("LOC", 22, 34, "Kuala Lumpur")]
    for entity in entities:
        assert text[entity["start"]:entity["end"]] == entity["word"]
    assert entities[0]["score"] == pytest.approx((probability(2.0) + probability(4.0)) / 2)
    assert entities[1]["score"] == pytest.approx(probability(1.0))  # an I- that continues nothing starts one


def test_word_lists_offsets_into_the_joined_words(tokenizer, model):
    words = ["Nadim", "Ladki", "in", "Kuala", "Lumpur", "."]
    results = predict_entities(model, tokenizer, [words, ["nothing", "here"], []], LABELS, batch_size=2)
    assert [(e["entity"], e["start"], e["end"], e["word"]) for e in results[0]] == [
        ("PER", 0, 11, "Nadim Ladki"), ("LOC", 15, 27, "Kuala Lumpur")]
    assert results[1:] == [[], []]
    assert predict_entities(model, tokenizer, ["", "  "], LABELS) == [[], []]
    assert predict_entities(model, tokenizer, [], LABELS) == []


def test_long_inputs_are_read_in_overlapping_windows(tokenizer, model):
    text = "Kuala Lumpur is far from Nadim Ladki"
    # [CLS] + 4 sub-tokens + [SEP] per window, 2 shared: no word is lost and "##im" (B-LOC) is never read as
    # a first sub-token, although a window starts with it
    results = predict_entities(model, tokenizer, [text, "Kuala"], LABELS, max_length=6, stride=2)
    assert [(e["entity"], e["word"]) for e in results[0]] == [("LOC", "Kuala Lumpur"), ("PER", "Nadim Ladki")]
    assert [e["word"] for e in results[1]] == ["Kuala"]
    words = text.split()
    assert predict_entities(model, tokenizer, [words], LABELS, max_length=5, stride=1)[0] == \
        predict_entities(model, tokenizer, [words], LABELS)[0]
    with pytest.raises(ValueError, match="mix raw texts and word lists"):
        predict_entities(model, tokenizer, ["a", ["b"]], LABELS)


class ContextModel(nn.Module):
    """Says B-LOC for "paris" with strength 1 + its context in the window (sub-tokens to the nearer edge)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.paris = tokenizer.convert_tokens_to_ids("paris")

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        context = torch.minimum(positions, attention_mask.sum(-1, keepdim=True) - 1 - positions)
        logits = torch.zeros(*input_ids.shape, len(LABELS))
        logits[..., LABELS.index("B-LOC")] = torch.where(input_ids == self.paris, 1.0 + context.float(), -9.0)
        return (logits,)


def test_each_word_is_read_where_it_has_most_context(tokenizer):
    # windows: [a b c paris] (context 1), [c paris d e] (context 2), [d e f g]
    [entities] = predict_entities(ContextModel(tokenizer), tokenizer, ["a b c paris d e f g"], LABELS,
                                  max_length=6, stride=2)
    assert [(e["word"], e["start"]) for e in entities] == [("paris", 6)]
    assert entities[0]["score"] == pytest.approx(math.exp(3.0) / (math.exp(3.0) + len(LABELS) - 1))


@pytest.fixture(scope="module")
def tiny_bert(tokenizer):
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=len(LABELS))
    return BertForTokenClassification(config).eval()


def test_tiny_random_bert_end_to_end(tokenizer, tiny_bert):
    model = tiny_bert
    texts = ["Peter Blackburn went to Paris.", "EU rejects German call to boycott British lamb."]
    results = predict_entities(model, tokenizer, texts, dict(enumerate(LABELS)), max_length=32)
    assert len(results) == 2
    for text, entities in zip(texts, results):
        for entity in entities:
            assert set(entity) == {"entity", "start", "end", "word", "score"}
            assert entity["entity"] in {"LOC", "PER"} and 0 < entity["score"] <= 1
            assert text[entity["start"]:entity["end"]] == entity["word"]


def test_evaluate_entities_batches_like_single_items(tokenizer, tiny_bert):
    examples = [TokenExample(("Peter", "Blackburn", "went", "home"), ("B-PER", "I-PER", "O", "O")),
                TokenExample(("Paris",), ("B-LOC",)), TokenExample(("EU", "rejects", "Ladki"), ("O", "O", "B-PER"))]
    dataset = TokenDataset(examples, tokenizer, {label: i for i, label in enumerate(LABELS)}, max_length=32)
    batched = dataset_logits(tiny_bert, dataset, batch_size=2)
    for i, logits in enumerate(batched):
        item = {k: torch.tensor([v]) for k, v in dataset[i].items() if k != "labels"}
        with torch.no_grad():
            alone = tiny_bert(**item).logits[0]
        assert logits.shape == alone.shape and torch.allclose(logits, alone, atol=1e-5)
    metrics, predicted = evaluate_entities(tiny_bert, dataset, LABELS)
    assert [len(p) for p in predicted] == [4, 1, 3]
    assert set(metrics) >= {"precision", "recall", "f1", "accuracy", "per_type"}


def test_a_few_training_steps_on_the_collated_batch_lower_the_loss(tokenizer):
    from transformers import BertConfig, BertForTokenClassification

    from sparsekit.tasks.ner import make_token_collate, token_kd_loss, token_loss

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=len(LABELS))
    student, teacher = BertForTokenClassification(config), BertForTokenClassification(config).eval()
    examples = [TokenExample(("Peter", "Blackburn", "went", "home"), ("B-PER", "I-PER", "O", "O")),
                TokenExample(("Paris",), ("B-LOC",))]
    dataset = TokenDataset(examples, tokenizer, {label: i for i, label in enumerate(LABELS)}, max_length=32)
    batch = make_token_collate(tokenizer)([dataset[0], dataset[1]])
    labels = batch.pop("labels")
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        logits = student(**batch).logits
        with torch.no_grad():
            teacher_logits = teacher(**batch).logits
        loss = token_loss(logits, labels) + 0.0 * token_kd_loss(logits, teacher_logits, labels, 2.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
