"""predict_entities: raw texts and word lists in, entities with character offsets out (aggregation "first")."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.models import load_tokenizer, minilm_path
from sparsekit.tasks.ner import predict_entities
from sparsekit.tasks.ner.data import DataWarning

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


def test_long_inputs_are_cut_with_a_counted_warning(tokenizer, model):
    text = "Kuala Lumpur is far from Nadim Ladki"
    with pytest.warns(DataWarning, match=r"1 of 2 input\(s\) are longer than max_length=5 .* last 4 word"):
        results = predict_entities(model, tokenizer, [text, "Kuala"], LABELS, max_length=5)
    assert [e["word"] for e in results[0]] == ["Kuala Lumpur"] and [e["word"] for e in results[1]] == ["Kuala"]
    with pytest.raises(ValueError, match="mix raw texts and word lists"):
        predict_entities(model, tokenizer, ["a", ["b"]], LABELS)


def test_tiny_random_bert_end_to_end(tokenizer):
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=len(LABELS))
    model = BertForTokenClassification(config)
    texts = ["Peter Blackburn went to Paris.", "EU rejects German call to boycott British lamb."]
    results = predict_entities(model, tokenizer, texts, dict(enumerate(LABELS)), max_length=32)
    assert len(results) == 2
    for text, entities in zip(texts, results):
        for entity in entities:
            assert set(entity) == {"entity", "start", "end", "word", "score"}
            assert entity["entity"] in {"LOC", "PER"} and 0 < entity["score"] <= 1
            assert text[entity["start"]:entity["end"]] == entity["word"]
