"""QA losses (CE, movement-pruning distillation) and answer_questions on long contexts."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.data.source import DataError
from sparsekit.models import load_tokenizer, minilm_path
from sparsekit.tasks.qa import answer_questions, qa_kd_loss, qa_loss


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(minilm_path())


def tiny_qa_model(tokenizer):
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return BertForQuestionAnswering(config).eval()


def test_qa_loss_is_the_models_loss(tokenizer):
    model = tiny_qa_model(tokenizer)
    torch.manual_seed(1)
    input_ids = torch.randint(1000, 2000, (3, 20))
    starts, ends = torch.tensor([0, 4, 7]), torch.tensor([0, 6, 30])  # 30: outside, ignored
    output = model(input_ids=input_ids, start_positions=starts, end_positions=ends)
    loss = qa_loss(output.start_logits, output.end_logits, starts, ends)
    assert loss.item() == pytest.approx(output.loss.item(), rel=1e-6)


def test_qa_kd_loss_formula():
    torch.manual_seed(0)
    s_start, s_end, t_start, t_end = (torch.randn(4, 12) for _ in range(4))
    T = 2.0
    expected = sum(F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
                   for s, t in ((s_start, t_start), (s_end, t_end))) / 2
    assert qa_kd_loss(s_start, s_end, t_start, t_end, T).item() == pytest.approx(expected.item(), rel=1e-6)
    assert qa_kd_loss(t_start, t_end, t_start, t_end, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[:, 8:] = 0
    masked = qa_kd_loss(s_start, s_end, t_start, t_end, T, attention_mask=mask)
    cut = qa_kd_loss(s_start[:, :8], s_end[:, :8], t_start[:, :8], t_end[:, :8], T)
    assert masked.item() == pytest.approx(cut.item(), rel=1e-4)


class PointingModel(nn.Module):
    """Start logits high on ``start_word``'s token, end logits high on ``end_word``'s (a stand-in QA head)."""

    def __init__(self, tokenizer, start_word: str, end_word: str):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.start_id = tokenizer.convert_tokens_to_ids(start_word)
        self.end_id = tokenizer.convert_tokens_to_ids(end_word)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        start = (input_ids == self.start_id).float() * 10 + self.weight
        end = (input_ids == self.end_id).float() * 10 + self.weight
        return SimpleNamespace(start_logits=start, end_logits=end)


def test_answer_questions_windows_long_contexts(tokenizer):
    filler = "the river runs past green fields and old farms . " * 40
    context = filler + "The treasure is buried under the oak tree. " + filler  # ~900 tokens: several windows
    items = [{"question": "Where is the treasure?", "context": context},
             {"question": "Where is the treasure?", "context": "It lies under the oak."}]
    answers = answer_questions(PointingModel(tokenizer, "under", "oak"), tokenizer, items, max_length=128,
                               stride=32, batch_size=4)
    assert answers[0]["answer"] == "under the oak" and context[answers[0]["start"]:answers[0]["end"]] == \
        "under the oak" and answers[0]["start"] == context.index("under the oak")
    assert answers[1]["answer"] == "under the oak" and answers[1]["start"] == 8
    assert set(answers[0]) == {"answer", "start", "end", "score"}


def test_answer_questions_with_a_real_head_and_bad_items(tokenizer):
    model = tiny_qa_model(tokenizer)
    items = [{"question": "Who?", "context": "Marie Curie won two Nobel prizes. " * 30}]
    (answer,) = answer_questions(model, tokenizer, items, max_length=64, stride=16, max_question_tokens=16)
    assert items[0]["context"][answer["start"]:answer["end"]] == answer["answer"] != ""
    (maybe_none,) = answer_questions(model, tokenizer, items, max_length=64, stride=16,
                                    max_question_tokens=16, null_threshold=-1e9)
    assert maybe_none["answer"] == "" and maybe_none["start"] == maybe_none["end"] == 0
    assert answer_questions(model, tokenizer, []) == []
    with pytest.raises(DataError, match="item 1: \"context\" must be a non-empty text"):
        answer_questions(model, tokenizer, [items[0], {"question": "Who?", "context": " "}])


def test_answer_questions_takes_any_callable_returning_logits(tokenizer):
    pointing = PointingModel(tokenizer, "under", "oak")

    def model(**inputs):  # e.g. a compiled runner: no parameters, a dict of logits
        output = pointing(**inputs)
        return {"start_logits": output.start_logits, "end_logits": output.end_logits}

    (answer,) = answer_questions(model, tokenizer, [{"question": "Where?", "context": "It lies under the oak."}])
    assert answer["answer"] == "under the oak" and (answer["start"], answer["end"]) == (8, 21)


def test_predict_answers_feeds_squad_metrics(tokenizer):
    from sparsekit.tasks.qa import Answer, QAExample, predict_answers, squad_metrics

    context = "It lies under the oak, not under the elm."
    examples = [QAExample("a", "", "Where?", context, (Answer("under the oak", 8),)),
                QAExample("b", "", "Where else?", context, (Answer("under the elm", context.index("under the elm")),))]
    answers = predict_answers(PointingModel(tokenizer, "under", "oak"), tokenizer, examples)
    assert answers["a"]["answer"] == answers["b"]["answer"] == "under the oak"
    metrics = squad_metrics(answers, examples)
    assert metrics["exact_match"] == 50.0 and metrics["f1"] == pytest.approx(50 + 50 * 0.5)  # b: "under" of "under elm"


def test_windows_collate_and_qa_loss_train_a_head(tokenizer):
    """The pieces fit together: QADataset -> make_qa_collate -> model -> qa_loss, and the loss falls."""
    from sparsekit.tasks.qa import Answer, QADataset, QAExample, make_qa_collate

    context = "The river runs past green fields. " * 3 + "The treasure lies under the oak tree near the old farm."
    examples = [QAExample(str(i), "", "Where is the treasure?", context,
                          (Answer("under the oak tree", context.index("under the oak tree")),)) for i in range(4)]
    dataset = QADataset(examples, tokenizer, max_length=32, stride=8, max_question_tokens=8)
    assert any(item["start_positions"] > 0 for item in dataset) and any(item["start_positions"] == 0
                                                                        for item in dataset)
    batch = make_qa_collate(tokenizer)([dataset[i] for i in range(len(dataset))])
    model = tiny_qa_model(tokenizer).train()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)  # 30k x 32: the slow part, not needed
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        output = model(**{k: v for k, v in batch.items() if not k.endswith("_positions")})
        loss = qa_loss(output.start_logits, output.end_logits, batch["start_positions"], batch["end_positions"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2
