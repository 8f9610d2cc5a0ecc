"""What ``POST /predict`` takes and answers, per task type (export/heads.py).

- sequence-classification: ``{"texts": ["...", ...]}`` (or ``[text_a, text_b]`` pairs) ->
  ``{"predictions": [{"label", "score", "scores"}, ...]}``;
- token-classification: ``{"texts": ["...", ...]}`` (or word lists ``[["EU", "rejects", ...], ...]``) ->
  ``{"predictions": [[{"entity", "start", "end", "word", "score"}, ...], ...]}`` (one entity list per input;
  character offsets into the text, or into the words joined by spaces);
- question-answering: ``{"inputs": [{"question", "context"}, ...]}`` ->
  ``{"predictions": [{"answer", "start", "end", "score"}, ...]}`` (character offsets into the context).

Every response also has ``latency_ms`` and ``model``. A TaskSchema bundles, per task type, the documented
request and response models, the body parser (validation.py) and how results become the response.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

from sparsekit.export.heads import QA, SEQUENCE, TOKEN
from sparsekit.serve.validation import Limits, parse_qa_inputs, parse_texts, parse_token_inputs


class PredictRequest(BaseModel):
    """The body of ``POST /predict`` for a sequence classifier (documentation only: validation.py checks bodies)."""

    texts: list[str | tuple[str, str]] = Field(
        description="Single texts, or [text_a, text_b] pairs for sentence-pair tasks; one kind per request.",
        examples=[["a wonderful film", "dull and lifeless"]])


class PredictionOut(BaseModel):
    label: str | int | None = Field(description="Predicted label name (id if unnamed; null for regression).")
    score: float = Field(description="Probability of the label, or the regression value.")
    scores: list[float] = Field(description="Probability of every label, in label order.")


class TokenPredictRequest(BaseModel):
    """The body of ``POST /predict`` for a token classifier (documentation only)."""

    texts: list[str | list[str]] = Field(
        description="Texts, or word lists (offsets then refer to the words joined by single spaces); one kind "
                    "per request.", examples=[["John Smith works for Acme Corporation in Berlin."]])


class EntityOut(BaseModel):
    entity: str = Field(description="Entity type (the label without its B- / I- prefix).")
    start: int = Field(description="Character offset of the entity's first character in the input.")
    end: int = Field(description="Character offset just past the entity's last character.")
    word: str = Field(description="The entity's text, input[start:end].")
    score: float = Field(description="Mean probability of the entity's words' labels.")


class QAItem(BaseModel):
    question: str
    context: str


class QAPredictRequest(BaseModel):
    """The body of ``POST /predict`` for an extractive QA model (documentation only)."""

    inputs: list[QAItem] = Field(description="Questions, each with the context to find its answer in.",
                                 examples=[[{"question": "Where does John work?",
                                             "context": "John Smith works for Acme Corporation in Berlin."}]])


class AnswerOut(BaseModel):
    answer: str = Field(description="The answer span, context[start:end] (empty: no answer, SQuAD v2 models).")
    start: int = Field(description="Character offset of the answer in the context.")
    end: int = Field(description="Character offset just past the answer.")
    score: float = Field(description="The span's score.")


_LATENCY = "Time in the server: reading, queueing, batching and the model."


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]
    latency_ms: float = Field(description=_LATENCY)
    model: str


class TokenPredictResponse(BaseModel):
    predictions: list[list[EntityOut]] = Field(description="One list of entities per input, in order.")
    latency_ms: float = Field(description=_LATENCY)
    model: str


class QAPredictResponse(BaseModel):
    predictions: list[AnswerOut] = Field(description="One answer per input, in order.")
    latency_ms: float = Field(description=_LATENCY)
    model: str


def _prediction(p) -> PredictionOut:
    return PredictionOut(label=p.label, score=p.score, scores=p.scores)


def _entities(entities: list[dict]) -> list[EntityOut]:
    return [EntityOut(**{k: e[k] for k in ("entity", "start", "end", "word", "score")}) for e in entities]


def _answer(a: dict) -> AnswerOut:
    return AnswerOut(**{k: a[k] for k in ("answer", "start", "end", "score")})


def _scores(task_type: str, result) -> list[float]:
    """Every number a result carries, for the non-finite check."""
    if task_type == TOKEN:
        return [float(e["score"]) for e in result]
    if task_type == QA:
        return [float(result["score"])]
    return [result.score, *result.scores]


@dataclass(frozen=True)
class TaskSchema:
    """One task type's request / response contract (see the module docstring)."""

    task_type: str
    request: type[BaseModel]
    response: type[BaseModel]
    parse: Callable[[bytes, Limits], tuple[list, str]]
    to_output: Callable
    summary: str

    def non_finite(self, results: list) -> int:
        """How many results hold a NaN or Inf (a broken model, never the request's fault)."""
        return sum(not all(map(math.isfinite, _scores(self.task_type, r))) for r in results)

    def outputs(self, results: list) -> list:
        """The response's ``predictions`` of a Predictor's results."""
        return [self.to_output(r) for r in results]


SCHEMAS = {
    SEQUENCE: TaskSchema(SEQUENCE, PredictRequest, PredictResponse, parse_texts, _prediction,
                         "Classify texts: {\"texts\": [...]} -> one prediction per text, in order."),
    TOKEN: TaskSchema(TOKEN, TokenPredictRequest, TokenPredictResponse, parse_token_inputs, _entities,
                      "Find entities: {\"texts\": [...]} -> one list of entities per text, in order."),
    QA: TaskSchema(QA, QAPredictRequest, QAPredictResponse, parse_qa_inputs, _answer,
                   "Answer questions: {\"inputs\": [{\"question\", \"context\"}]} -> one answer per item, in order."),
}
