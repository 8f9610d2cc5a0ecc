"""Shared fixtures: a tiny random BERT checkpoint with its own small WordPiece tokenizer.

Tests never need network access; the real GLUE files come from ../shared/data/glue.
"""
from __future__ import annotations

import os
import string

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128)


def _write_vocab(path) -> None:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase) + \
        [f"##{c}" for c in string.ascii_lowercase] + list(string.digits) + list(".,'!?-:;\"()`")
    words += ["the", "a", "and", "of", "to", "is", "it", "that", "film", "movie", "good", "bad", "great",
              "not", "no", "yes", "funny", "boring", "best", "worst", "love", "hate", "story", "'s"]
    path.write_text("\n".join(words) + "\n")


def make_tiny_model_dir(path, model_type: str = "bert"):
    """Save a random tiny ``model_type`` encoder and a WordPiece tokenizer into ``path``."""
    from transformers import AutoConfig, AutoModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    _write_vocab(path / "vocab.txt")
    import transformers

    vocab_arg = "vocab" if int(transformers.__version__.split(".")[0]) >= 5 else "vocab_file"
    tokenizer = BertTokenizerFast(**{vocab_arg: str(path / "vocab.txt")}, do_lower_case=True)
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **TINY)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-bert"))


def random_sparse_classifier(model_dir, density: float, seed: int = 0, num_labels: int = 2):
    """The tiny classifier of ``model_dir`` with every prunable matrix randomly masked to ``density`` (eval mode)."""
    from sparsekit.models import load_classifier, prunable_matrices

    torch.manual_seed(seed)
    model = load_classifier(model_dir, num_labels).eval()
    with torch.no_grad():
        for m in prunable_matrices(model):
            w = model.get_submodule(m.name).weight
            w.mul_(torch.rand_like(w) < density)
    return model


@pytest.fixture(scope="module")
def artifact(tiny_model_dir, tmp_path_factory):
    """A CSR artifact of the tiny classifier at 30% density (the server tests' model; test modules that need
    another artifact define their own ``artifact``)."""
    from sparsekit import export_model
    from sparsekit.models import load_tokenizer

    path = tmp_path_factory.mktemp("artifact") / "art"
    export_model((random_sparse_classifier(tiny_model_dir, 0.3), load_tokenizer(tiny_model_dir)), path, formats="csr")
    return path
