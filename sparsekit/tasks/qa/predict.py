"""Answer questions about contexts with a question-answering model (any context length: long ones are windowed)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from sparsekit.data.source import DataError
from sparsekit.tasks.qa.data import QAExample
from sparsekit.tasks.qa.postprocess import best_answers
from sparsekit.tasks.qa.windows import QADataset, make_qa_collate


def _examples_of(items: Sequence[dict]) -> list[QAExample]:
    """Items ``{"question", "context"}`` as answerless QAExamples with ids "0", "1", ...; DataError naming the
    item for a missing, non-text or empty question / context."""
    examples = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"item {i}: expected an object with \"question\" and \"context\", got "
                            f"{type(item).__name__}")
        for key in ("question", "context"):
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"item {i}: \"{key}\" must be a non-empty text; got {value!r}")
        examples.append(QAExample(str(i), "", item["question"], item["context"], ()))
    return examples


def _device_of(model) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@torch.no_grad()
def window_logits(model, dataset: QADataset, tokenizer, batch_size: int = 16
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The start and end logits of every window of ``dataset``: two lists of float32 CPU tensors ``[T_w]``
    (each window's own length, padding dropped), in window order.

    ``model``: called as ``model(input_ids=, attention_mask=, token_type_ids=)`` with int64 ``[B, T]`` tensors;
    its output has ``.start_logits`` / ``.end_logits`` (or those keys) ``[B, T]`` (a Hugging Face
    ``*ForQuestionAnswering``, or any callable that answers the same way); an nn.Module runs in eval mode on
    its parameters' device (its training mode restored afterwards), ``batch_size`` windows at a time.
    """
    collate = make_qa_collate(tokenizer)
    device = _device_of(model)
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    starts: list[torch.Tensor] = []
    ends: list[torch.Tensor] = []
    try:
        for first in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(first, min(first + batch_size, len(dataset)))]
            batch = collate(items)
            inputs = {k: v.to(device) for k, v in batch.items() if k not in ("start_positions", "end_positions")}
            output = model(**inputs)
            start, end = (output["start_logits"], output["end_logits"]) if isinstance(output, dict) else \
                (output.start_logits, output.end_logits)
            for row, item in enumerate(items):
                length = len(item["input_ids"])
                starts.append(start[row, :length].float().cpu())
                ends.append(end[row, :length].float().cpu())
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
    return starts, ends


def predict_answers(model, tokenizer, examples: Sequence[QAExample], max_length: int = 384, stride: int = 128,
                    n_best: int = 20, max_answer_length: int = 30, null_threshold: float | None = None,
                    batch_size: int = 16, max_question_tokens: int = 64) -> dict[str, dict]:
    """The best answer of each example, ``{id: {"answer", "start", "end", "score"}}`` (best_answers' layout;
    ``squad_metrics`` takes it as is). Contexts longer than a window are split into windows (``max_length``,
    ``stride``) and answered across all of them, never cut; questions longer than ``max_question_tokens`` are
    cut (see QADataset). ``null_threshold``: None answers every question (SQuAD v1.1); a number allows "no
    answer" (SQuAD v2.0: ``""``, start = end = 0) when the null score beats the best span by more than it. See
    ``window_logits`` for ``model`` and postprocess.best_answers for the score.
    """
    if not examples:
        return {}
    dataset = QADataset(examples, tokenizer, max_length=max_length, stride=stride,
                        max_question_tokens=max_question_tokens)
    starts, ends = window_logits(model, dataset, tokenizer, batch_size)
    return best_answers(examples, dataset, starts, ends, n_best=n_best, max_answer_length=max_answer_length,
                        null_threshold=0.0 if null_threshold is None else null_threshold,
                        version_2=null_threshold is not None)


def answer_questions(model, tokenizer, items: Sequence[dict], max_length: int = 384, stride: int = 128,
                     n_best: int = 20, max_answer_length: int = 30, null_threshold: float | None = None,
                     batch_size: int = 16, max_question_tokens: int = 64) -> list[dict]:
    """The answer to each ``{"question", "context"}`` item: ``{"answer", "start", "end", "score"}`` with
    ``context[start:end] == answer`` (character offsets, end exclusive), in item order. DataError naming the
    item for a missing or empty question / context. The options are ``predict_answers``'.
    """
    examples = _examples_of(items)
    answers = predict_answers(model, tokenizer, examples, max_length=max_length, stride=stride, n_best=n_best,
                              max_answer_length=max_answer_length, null_threshold=null_threshold,
                              batch_size=batch_size, max_question_tokens=max_question_tokens)
    return [answers[e.id] for e in examples]
