"""Tiny token-classification and QA checkpoints with structured and unstructured zeros, for the heads' tests."""
from __future__ import annotations

import torch

from conftest import TINY, make_tiny_model_dir

NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")


@torch.no_grad()
def prune_randomly(model, density: float = 0.4, seed: int = 0):
    """Zero a random ``1 - density`` of every encoder matrix, plus whole rows (Q·K / V dimensions, FFN neurons)
    and one whole head of layer 0, so exact compaction has rows, heads and neurons to remove."""
    from sparsekit.architectures import architecture_for
    from sparsekit.models import prunable_matrices

    gen = torch.Generator().manual_seed(seed)
    for m in prunable_matrices(model):
        w = model.get_submodule(m.name).weight
        w.mul_(torch.rand(w.shape, generator=gen) < density)
        if m.type in ("query", "key", "value", "ffn_in"):
            w[torch.rand(w.shape[0], generator=gen) < 0.25] = 0
    arch = architecture_for(model.config)
    head_dim = arch.head_dim(model.config)
    layer0 = arch.layer_linears(arch.layer_modules(model.base_model)[0])
    if "value" in layer0:
        layer0["value"].weight[:head_dim] = 0  # head 0 of layer 0: no V rows left, removed whole
    return model.eval()


def make_task_checkpoint(path, task_type: str, model_type: str = "bert", seed: int = 0):
    """A saved tiny ``model_type`` checkpoint with a ``task_type`` head (randomly pruned) and the tiny tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    from sparsekit.export.heads import TOKEN, auto_class

    make_tiny_model_dir(path, model_type)
    kw = {"id2label": dict(enumerate(NER_LABELS)), "label2id": {n: i for i, n in enumerate(NER_LABELS)}} \
        if task_type == TOKEN else {}
    if model_type == "distilbert":
        dims = dict(dim=TINY["hidden_size"], n_layers=TINY["num_hidden_layers"], n_heads=TINY["num_attention_heads"],
                    hidden_dim=TINY["intermediate_size"], max_position_embeddings=TINY["max_position_embeddings"])
    else:
        dims = TINY
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **dims, **kw)
    torch.manual_seed(seed)
    model = prune_randomly(auto_class(task_type).from_config(config), seed=seed)
    model.save_pretrained(path)
    return path
