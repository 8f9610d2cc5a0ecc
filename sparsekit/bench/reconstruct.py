"""The dense reference of an artifact: the original-size Hugging Face model with the artifact's weights.

An artifact holds a *compacted* model (removed heads, Q·K / V dimensions and FFN neurons are gone, their
biases folded). The fair dense baseline for it is what a user had before exporting: the original-size model
whose pruned weights are zeros. ``dense_from_artifact`` rebuilds exactly that from the artifact alone (the
pruning run directory may be gone or on another machine): every compacted matrix is written back into an
original-size matrix, head by head, and the removed rows / columns are zero with zero bias.

The rebuilt model computes the same function as the artifact: zero Q·K dimensions add nothing to attention
scores, zero V dimensions give zero context in zero O columns, zero FFN neurons feed zero FFN-out columns,
and folded biases stay folded. It differs from the run's masked model only by a permutation of dimensions
inside each head and of FFN neurons, which changes neither the outputs nor the cost of dense matmuls (dense
latency depends on shapes, not on values). ``max_abs_diff`` of the logits is measured and recorded.
Weights that compaction dropped because they cannot affect the output (the Q row of an empty K row, the O
columns of removed V dimensions, the FFN-out columns of folded neurons) stay zero, so the rebuilt model's
density (the artifact's stored weights over the original sizes) can be a little below the run's.
"""
from __future__ import annotations

import torch
from torch import nn

from sparsekit.architectures import architecture_for
from sparsekit.models import ModelError, quiet_transformers


def _dense_weight(module: nn.Module) -> torch.Tensor:
    """``[out, in]`` float32 weight of a compacted Linear (nn.Linear or the exporter's FormatLinear)."""
    fmt = getattr(module, "fmt", None)
    weight = fmt.to_dense() if fmt is not None else module.weight.detach()
    return weight.float().cpu()


def _head_rows(widths: tuple[int, ...], head_dim: int) -> torch.Tensor:
    """Original row index of each compacted row: remaining head h's j-th dimension -> h * head_dim + j."""
    return torch.tensor([h * head_dim + j for h, w in enumerate(widths) for j in range(w)], dtype=torch.long)


def _write(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | None = None,
           cols: torch.Tensor | None = None) -> None:
    """Zero ``linear`` and place ``weight`` at ``rows`` (or ``cols``); the bias goes to the same rows."""
    linear.weight.zero_()
    linear.bias.zero_()
    if rows is not None:
        linear.weight[rows] = weight
        linear.bias[rows] = bias.float()
    else:
        linear.weight[:, cols] = weight
        linear.bias.copy_(bias.float())


@torch.no_grad()
def dense_from_artifact(model: nn.Module) -> nn.Module:
    """The original-size Hugging Face model with the artifact's head (eval, float32, CPU) equivalent to a loaded
    artifact.

    model: a ``CompactModel`` from ``sparsekit.load`` (its ``config`` has the original sizes; its ``shapes`` the
    kept widths per layer; its ``task_type`` the head: a ``*ForSequenceClassification``,
    ``*ForTokenClassification`` or ``*ForQuestionAnswering`` is rebuilt), or a structure-preserving artifact (its
    formats are densified). Raises ModelError for a model of another layout.
    """
    from sparsekit.export.heads import auto_class
    from sparsekit.export.module_artifact import dense_from_modules, is_module_layout

    if is_module_layout(getattr(model, "manifest", None) or {}):  # the structure was kept: densify the formats
        return dense_from_modules(model)
    config = model.config
    with quiet_transformers():
        dense = auto_class(model.task_type).from_config(config).float().eval()
    base = dense.base_model
    arch = architecture_for(config)
    head_dim = arch.head_dim(config)
    try:
        base.embeddings.load_state_dict(model.embeddings.state_dict())
        if model.pooler is not None:
            base.pooler.load_state_dict(model.pooler.state_dict())
        getattr(dense, model.head_name).load_state_dict(model.head.state_dict())
        hf_layers = arch.layer_modules(base)
    except (AttributeError, RuntimeError) as exc:
        raise ModelError(f"cannot rebuild a dense {config.model_type} model from this artifact: {exc}") from exc
    for compact_layer, hf, shape in zip(model.layers, hf_layers, model.shapes):
        lin = {name: (_dense_weight(m), m.bias.detach().cpu()) for name, m in compact_layer.linears().items()}
        qk = _head_rows(shape.qk_widths, head_dim)
        v = _head_rows(shape.v_widths, head_dim)
        ffn = torch.arange(shape.ffn)
        target = arch.layer_linears(hf)
        _write(target["query"], *lin["query"], rows=qk)
        _write(target["key"], *lin["key"], rows=qk)
        _write(target["value"], *lin["value"], rows=v)
        _write(target["attn_out"], *lin["attn_out"], cols=v)
        _write(target["ffn_in"], *lin["ffn_in"], rows=ffn)
        _write(target["ffn_out"], *lin["ffn_out"], cols=ffn)
        attn_norm, ffn_norm = arch.layer_norms(hf)
        attn_norm.load_state_dict(compact_layer.attn_norm.state_dict())
        ffn_norm.load_state_dict(compact_layer.ffn_norm.state_dict())
    return dense.requires_grad_(False)
