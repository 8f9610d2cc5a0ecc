"""An artifact's sample inputs and the outputs the exported model gave for them (``samples.json``), per task type.

``sparsekit verify`` re-runs the samples and compares. The file holds ``texts``, ``logits`` and ``labels``:

- sequence-classification: ``texts`` strings; ``logits`` one row of ``num_labels`` numbers per text; ``labels``
  the predicted label name per text (None for regression);
- token-classification: ``texts`` strings; ``logits`` per text one row of ``num_labels`` numbers per token
  (``[T_i, C]``, the text's real tokens, special ones included, no padding); ``labels`` per text the predicted
  label name of every token;
- question-answering: ``texts`` ``[question, context]`` pairs; ``logits`` per pair one ``[start, end]`` row per
  token (``[T_i, 2]``); ``labels`` per pair ``[argmax start, argmax end]`` (token positions).

The labels catch a relabelled config (token classification) or a moved answer span (QA) even when the
numbers stay within the tolerance.
"""
from __future__ import annotations

import math

import torch

from sparsekit.architectures import max_input_tokens
from sparsekit.data.inputs import build_inputs
from sparsekit.export.errors import ArtifactError
from sparsekit.export.heads import QA, SEQUENCE, TOKEN, check_task_type, head_output, per_token

#: The sample inputs exported when the caller gives none, per task type.
DEFAULT_SAMPLES = {
    SEQUENCE: ("a charming and often affecting journey.", "unflinchingly bleak and desperate",
               "the acting is fine but the story goes nowhere.", "one of the best films of the year!"),
    TOKEN: ("John Smith works for Acme Corporation in Berlin.", "EU rejects German call to boycott British lamb.",
            "Peter Blackburn", "The talks in New York were chaired by Maria Garcia of the United Nations."),
    QA: (("Where does John Smith work?", "John Smith works for Acme Corporation in Berlin since 2019."),
         ("What do sparse models save?", "Pruned encoders keep a fraction of their weights, which saves memory "
                                         "and, with sparse kernels, time."),
         ("Who chaired the talks?", "The talks in New York were chaired by Maria Garcia of the United Nations.")),
}
#: Token budget of a sample (QA: the usual SQuAD window).
SAMPLE_MAX_LENGTH = {SEQUENCE: 128, TOKEN: 128, QA: 384}


def default_samples(task_type: str) -> list:
    """The default sample inputs of ``task_type`` (strings, or ``(question, context)`` pairs for QA)."""
    return list(DEFAULT_SAMPLES[check_task_type(task_type)])


def normalise(samples: list, task_type: str) -> list:
    """Sample inputs as stored: strings (classification), ``[question, context]`` lists (QA; dicts with question /
    context keys and tuples are accepted). ValueError for anything else."""
    out = []
    for i, item in enumerate(samples):
        if task_type == QA:
            if isinstance(item, dict):
                item = (item.get("question"), item.get("context"))
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item)):
                raise ValueError(f"QA sample {i} must be a (question, context) pair of strings, got {item!r}")
            out.append([item[0], item[1]])
        else:
            if not isinstance(item, str):
                raise ValueError(f"sample {i} must be a string, got {type(item).__name__}")
            out.append(item)
    return out


@torch.no_grad()
def sample_outputs(model, tokenizer, texts: list, task_type: str) -> list[torch.Tensor]:
    """The model's float32 output per sample: ``[num_labels]`` (sequence classification), or ``[T_i, C]`` for the
    sample's real tokens (token classification: C = num_labels; QA: C = 2, start and end)."""
    if not texts:
        return []
    limit = max_input_tokens(model.config) or SAMPLE_MAX_LENGTH[task_type]
    batch = build_inputs(tokenizer, [tuple(t) if isinstance(t, list) else t for t in texts],
                         min(SAMPLE_MAX_LENGTH[task_type], limit))
    out = head_output(model(**batch), task_type).cpu()
    if not per_token(task_type):
        return list(out)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    return [row[:n] for row, n in zip(out, lengths)]


def sample_labels(config, outputs: list[torch.Tensor], task_type: str) -> list:
    """What each sample predicts: the label name (None for a regression head), per token for token
    classification, ``[argmax start, argmax end]`` for QA."""
    names = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    if task_type == QA:
        return [[int(o[:, 0].argmax()), int(o[:, 1].argmax())] if len(o) else [0, 0] for o in outputs]
    if task_type == TOKEN:
        return [[names.get(int(i), int(i)) for i in o.argmax(-1)] for o in outputs]
    return [None if o.shape[-1] == 1 else names.get(int(o.argmax()), int(o.argmax())) for o in outputs]


def samples_json(model, tokenizer, texts: list, task_type: str) -> dict:
    """The content of ``samples.json`` for ``texts`` (already normalised) run through ``model``."""
    outputs = sample_outputs(model, tokenizer, texts, task_type)
    return {"texts": texts, "logits": [o.tolist() for o in outputs],
            "labels": sample_labels(model.config, outputs, task_type)}


def _finite_row(row, width: int) -> bool:
    return isinstance(row, list) and len(row) == width and all(type(x) in (int, float) and math.isfinite(x)
                                                               for x in row)


def parse_samples(data, task_type: str, num_labels: int, max_samples: int, where: str
                  ) -> tuple[list, list[torch.Tensor], list]:
    """``(texts, outputs, labels)`` of a parsed ``samples.json``, schema-checked for ``task_type`` (outputs as
    float32 tensors, see sample_outputs). ArtifactError for anything else."""
    texts = data.get("texts") if isinstance(data, dict) else None
    logits = data.get("logits") if isinstance(data, dict) else None
    labels = data.get("labels") if isinstance(data, dict) else None
    width = 2 if task_type == QA else num_labels
    ok = (isinstance(texts, list) and isinstance(logits, list) and isinstance(labels, list)
          and len(texts) == len(logits) == len(labels) <= max_samples)
    if ok and task_type == QA:
        ok = all(isinstance(t, list) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in texts)
    elif ok:
        ok = all(isinstance(t, str) for t in texts)
    if ok and per_token(task_type):
        ok = all(isinstance(rows, list) and all(_finite_row(r, width) for r in rows) for rows in logits)
    elif ok:
        ok = all(_finite_row(r, width) for r in logits)
    if not ok:
        shape = "a list of token rows" if per_token(task_type) else "a row"
        raise ArtifactError(f"{where} must hold equally many texts, labels and logits ({shape} of {width} finite "
                            f"numbers per text, for a {task_type} model); the artifact is corrupt")
    outputs = [torch.tensor(rows, dtype=torch.float32).reshape(-1, width) if per_token(task_type)
               else torch.tensor(rows, dtype=torch.float32) for rows in logits]
    return texts, outputs, labels


def compare(got: list[torch.Tensor], expected: list[torch.Tensor], where: str) -> float:
    """Largest absolute difference between two lists of sample outputs (inf for NaN); ArtifactError when a
    sample's shape differs (the tokenizer or head changed)."""
    err = 0.0
    for i, (a, b) in enumerate(zip(got, expected)):
        if a.shape != b.shape:
            raise ArtifactError(f"{where}: sample {i} gives outputs of shape {tuple(a.shape)}, expected "
                                f"{tuple(b.shape)}")
        if a.numel():
            diff = float((a - b).abs().max())
            err = max(err, diff if diff == diff else math.inf)
    return err
