"""Model inputs: a padded batch from texts, or random token ids of a given shape (for timing)."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def build_inputs(tokenizer, texts: Sequence, max_length: int = 128) -> dict[str, torch.Tensor]:
    """Tokenize ``texts`` into one batch, padded to the longest and truncated to ``max_length`` tokens.

    texts: single strings, or ``(text_a, text_b)`` pairs for sentence-pair tasks (one kind per batch).
    Returns the tokenizer's tensors: ``input_ids`` / ``attention_mask`` (and ``token_type_ids`` when the
    tokenizer makes them), int64 ``[len(texts), longest]``. TypeError / ValueError for other items or a mix.
    """
    texts = list(texts)
    if any(not isinstance(t, (str, tuple, list)) for t in texts):
        raise TypeError("each text must be a string or a (text_a, text_b) pair")
    pairs = [t for t in texts if not isinstance(t, str)]
    if pairs and len(pairs) != len(texts):
        raise ValueError("mix of single texts and pairs in one request")
    args = ([a for a, _ in texts], [b for _, b in texts]) if pairs else (texts,)
    return tokenizer(*args, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def random_inputs(batch: int, seq: int, vocab_size: int, seed: int = 0,
                  max_id: int | None = None) -> dict[str, torch.Tensor]:
    """Random token ids ``[batch, seq]`` as a tokenizer would give them, with no padding (every position attends).

    Ids are drawn uniformly (a generator seeded with ``seed``) from ``[min(1000, vocab_size // 2), high)``,
    past the special tokens of a BERT vocabulary, with ``high = min(vocab_size, max_id)`` (``vocab_size``
    without ``max_id``). Returns int64 ``input_ids``, ``attention_mask`` (ones) and ``token_type_ids`` (zeros).
    """
    gen = torch.Generator().manual_seed(seed)
    low = min(1000, vocab_size // 2)
    high = vocab_size if max_id is None else min(vocab_size, max_id)
    return {"input_ids": torch.randint(low, high, (batch, seq), generator=gen),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long),
            "token_type_ids": torch.zeros(batch, seq, dtype=torch.long)}
