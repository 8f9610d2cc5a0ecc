"""In-process predictions from a loaded artifact (or any sequence classifier): texts in, labels out."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsekit.architectures import max_input_tokens
from sparsekit.data.inputs import build_inputs


@dataclass
class Prediction:
    """One text's prediction: ``label`` (name or id; None for regression), ``score`` (probability of the
    label, or the regression value), ``scores`` (all class probabilities)."""

    text: str
    label: str | int | None
    score: float
    scores: list[float]


class Predictor:
    """Wraps a model + tokenizer. ``predict(texts)`` -> list of Prediction, batched.

    ``texts`` are single sentences, or ``(sentence_a, sentence_b)`` pairs for pair tasks.
    """

    def __init__(self, model, tokenizer=None, max_length: int = 128, batch_size: int = 64) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer or getattr(model, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("Predictor needs a tokenizer (artifacts loaded with sparsekit.load carry one)")
        config = model.config
        limit = max_input_tokens(config)  # a longer input would index past the position embeddings
        self.max_length, self.batch_size = min(max_length, limit) if limit else max_length, batch_size
        self.regression = config.num_labels == 1
        self.id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}

    @classmethod
    def from_artifact(cls, path, **kw) -> "Predictor":
        from sparsekit.export.artifact import load

        return cls(load(path), **kw)

    @torch.no_grad()
    def predict(self, texts: list) -> list[Prediction]:
        if isinstance(texts, str):
            raise TypeError("predict() takes a list of texts; wrap a single text in a list")
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
