"""In-process predictions from a loaded artifact (or any Hugging Face head model), by task type.

- sequence-classification: texts (or ``(a, b)`` pairs) in, one Prediction (label, score, scores) per text;
- token-classification: texts (or word lists) in, one list of entities ``{"entity", "start", "end", "word",
  "score"}`` per input (``sparsekit.tasks.ner.predict_entities``: character offsets into the text, or into
  ``" ".join(words)`` for a word list; sub-tokens merged, aggregation "first");
- question-answering: ``{"question", "context"}`` dicts (or ``(question, context)`` pairs) in, one answer
  ``{"answer", "start", "end", "score"}`` per item (``sparsekit.tasks.qa.answer_questions``: long contexts in
  windows with a stride, the best span across them; character offsets into the context).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsekit.architectures import max_input_tokens
from sparsekit.data.inputs import build_inputs
from sparsekit.export.heads import QA, SEQUENCE, TOKEN, task_type_of

#: The token budget per input when neither the caller nor the artifact gives one (QA: SQuAD's usual window).
DEFAULT_MAX_LENGTH = {SEQUENCE: 128, TOKEN: 128, QA: 384}


@dataclass
class Prediction:
    """One text's prediction: ``label`` (name or id; None for regression), ``score`` (probability of the
    label, or the regression value), ``scores`` (all class probabilities)."""

    text: str
    label: str | int | None
    score: float
    scores: list[float]


def qa_items(items: list) -> list[dict]:
    """QA inputs as ``{"question", "context"}`` dicts (``(question, context)`` pairs are converted). TypeError for
    anything else."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, (tuple, list)) and len(item) == 2:
            item = {"question": item[0], "context": item[1]}
        if not (isinstance(item, dict) and isinstance(item.get("question"), str)
                and isinstance(item.get("context"), str)):
            raise TypeError(f"item {i}: a question-answering input is a {{'question', 'context'}} dict of strings "
                            f"or a (question, context) pair")
        out.append({"question": item["question"], "context": item["context"]})
    return out


class Predictor:
    """Wraps a model + tokenizer. ``predict(inputs)`` -> one result per input, batched; what the inputs and
    results are depends on the model's task type (``task_type``; see the module docstring).

    max_length: tokens per input (per window for QA) [default: what the artifact's run recorded (QA: its
    ``data.qa.max_length``), else DEFAULT_MAX_LENGTH of the task type], capped by the model's position embeddings.
    stride, n_best, max_answer_length, null_threshold: QA's windowing and span choice
    (``sparsekit.tasks.qa.answer_questions``; ignored by the other task types) [default: the run's recorded
    ``data.qa`` settings, else 128, 20, 30 and None (always answer, SQuAD v1.1)]. The question takes at most 64
    tokens of a window (fewer in short windows) and the stride at most half of the context tokens left.
    """

    def __init__(self, model, tokenizer=None, max_length: int | None = None, batch_size: int = 64, *,
                 stride: int | None = None, n_best: int | None = None, max_answer_length: int | None = None,
                 null_threshold: float | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer or getattr(model, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("Predictor needs a tokenizer (artifacts loaded with sparsekit.load carry one)")
        config = model.config
        self.task_type = task_type_of(model)
        recorded = self._recorded_qa(model) if self.task_type == QA else {}
        max_length = max_length or recorded.get("max_length") or DEFAULT_MAX_LENGTH[self.task_type]
        limit = max_input_tokens(config)  # a longer input would index past the position embeddings
        self.max_length, self.batch_size = min(max_length, limit) if limit else max_length, batch_size
        self.regression = self.task_type == SEQUENCE and config.num_labels == 1
        self.id2label = {} if self.task_type == QA else \
            {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
        question_tokens = max(1, min(64, self.max_length - 3 - 16))  # 3 special tokens, >= 16 context tokens
        stride = stride if stride is not None else recorded.get("doc_stride", 128)
        self.qa_options = {
            "stride": min(stride, (self.max_length - question_tokens - 3) // 2), "max_question_tokens": question_tokens,
            "n_best": n_best or recorded.get("n_best", 20),
            "max_answer_length": max_answer_length or recorded.get("max_answer_length", 30),
            "null_threshold": null_threshold if null_threshold is not None else recorded.get("null_threshold")}

    @staticmethod
    def _recorded_qa(model) -> dict:
        """The QA windowing / post-processing settings the artifact's run evaluated with (``data.qa``), or {}."""
        data = (getattr(model, "manifest", None) or {}).get("data") or {}
        recorded = data.get("qa") if isinstance(data, dict) else None
        if not isinstance(recorded, dict):
            return {}
        recorded = {k: v for k, v in recorded.items() if v is not None}
        if data.get("version_2_with_negative") is False:  # SQuAD v1.1 data: every question has an answer
            recorded.pop("null_threshold", None)
        return recorded

    @classmethod
    def from_artifact(cls, path, **kw) -> "Predictor":
        from sparsekit.export.artifact import load

        return cls(load(path), **kw)

    @torch.no_grad()
    def predict(self, inputs: list) -> list:
        """One result per input: a Prediction (sequence classification), a list of entity dicts (token
        classification) or an answer dict (QA)."""
        if isinstance(inputs, (str, dict)):
            raise TypeError("predict() takes a list of inputs; wrap a single one in a list")
        if self.task_type == TOKEN:
            from sparsekit.tasks.ner import predict_entities

            return predict_entities(self.model, self.tokenizer, list(inputs), self.id2label,
                                    max_length=self.max_length, batch_size=self.batch_size)
        if self.task_type == QA:
            from sparsekit.tasks.qa import answer_questions

            return answer_questions(self.model, self.tokenizer, qa_items(list(inputs)), max_length=self.max_length,
                                    batch_size=self.batch_size, **self.qa_options)
        return self._classify(list(inputs))

    def _classify(self, texts: list) -> list[Prediction]:
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            logits = self.model(**build_inputs(self.tokenizer, chunk, self.max_length)).logits.float()
            for text, row in zip(chunk, logits):
                if self.regression:
                    out.append(Prediction(str(text), None, float(row[0]), [float(row[0])]))
                    continue
                probs = row.softmax(-1)
                idx = int(probs.argmax())
                out.append(Prediction(str(text), self.id2label.get(idx, idx), float(probs[idx]), probs.tolist()))
        return out
