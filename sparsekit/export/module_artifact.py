"""Structure-preserving artifacts (manifest ``layout: "modules"``), for families that are not compacted.

Exact compaction (compact.py) rebuilds a model as sparsekit's compacted BERT layer; a family whose
Architecture does not apply every compaction rule (DistilBERT, DeBERTa-v2, ModernBERT: see
``architectures.py`` for why, per rule) is exported with its structure kept instead:

- ``model.safetensors``: every tensor of the Hugging Face model as it is (``state_dict`` names), except the
  weight of each prunable module (fused ones, such as ModernBERT's ``Wqkv`` / GLU ``Wi``, whole), which is
  stored in its chosen MatrixFormat as ``{module name}.{format tensor}`` next to ``{module name}.bias``;
- ``manifest.json``: as for a compact artifact, with ``layout: "modules"``, ``architecture`` (its name), the
  Hugging Face ``config``, ``modules`` (per prunable module: ``name``, ``layer``, ``matrix`` type, ``format``
  meta) and ``skipped_rules`` (rule -> why it is not applied), instead of ``layers`` / ``head_uses_pooler``;
- ``samples.json``, ``report.json`` (shapes unchanged, the skipped rules as notes) and the tokenizer files.

Loading rebuilds the model from its config with the head of the manifest's ``task_type`` (``*ForSequence
Classification``, ``*ForTokenClassification`` or ``*ForQuestionAnswering``; ``from_config``: nothing is
downloaded), puts a FormatLinear at
every prunable module and loads the other tensors strictly; ``sparsekit.compile`` then runs on it unchanged.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn

from sparsekit.architectures import ARCHITECTURES, Architecture, architecture_for, encoder_linears
from sparsekit.data.source import recorded_description
from sparsekit.errors import ModelError
from sparsekit.export import samples as sample_io
from sparsekit.export.compact import CompactionReport, MatrixChange, _drop_sparse_rows
from sparsekit.export.heads import auto_class
from sparsekit.export.manifest import MODULE_LAYOUT
from sparsekit.formats import from_tensors
from sparsekit.models import quiet_transformers, set_submodule

#: The manifest's ``layout`` of a structure-preserving artifact (a compact one has no ``layout``).
LAYOUT = MODULE_LAYOUT
#: safetensors' header names of the dtypes a model's state may hold.
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.bool: "BOOL"}


def is_module_layout(manifest: dict) -> bool:
    """Whether a manifest describes a structure-preserving artifact."""
    return manifest.get("layout") == LAYOUT


def _prunable(model: nn.Module) -> list[tuple[str, int, str, nn.Module]]:
    """``(name, layer, matrix type, module)`` of every prunable module of a Hugging Face model."""
    return encoder_linears(model, ARCHITECTURES)


def _report(arch: Architecture, config, changes: list[MatrixChange], lossy: tuple[int, int, int]) -> CompactionReport:
    """The export report of a structure-preserving export: shapes unchanged, the skipped rules as notes."""
    layers = sorted({c.layer for c in changes})
    heads = arch.heads(config)
    info = [{"layer": i, "heads_kept": heads, "heads_removed": [], "structure": "kept"} for i in layers]
    notes = [f"exact-compaction rule {rule!r} skipped for {arch.name}: {why}"
             for rule, why in arch.skipped_rules().items()]
    return CompactionReport(changes, info, notes, *lossy)


@torch.no_grad()
def export_modules(model: nn.Module, tokenizer, recipe: dict | None, path: Path, *, formats: str, min_row_weights: int,
                   pack_kw: dict, samples: list | None, task: str | None, data_dir: str | None,
                   eval_samples: int | None):
    """Write a structure-preserving artifact of ``model`` (float32, eval) at ``path`` (which must not exist, or
    be replaceable: the caller checked ``overwrite``). Arguments as artifact.export; returns its ExportResult."""
    from sparsekit.export import artifact as art

    arch = architecture_for(model.config)
    exported = copy.deepcopy(model)
    ranks = art.recorded_ranks(recipe) if formats == "auto" else {}
    changes, modules, chosen = [], [], {}
    bytes_dense = bytes_exported = lossy_rows = lossy_weights = 0
    tensors = {}
    for name, layer, mtype, linear in _prunable(exported):
        if not isinstance(linear, nn.Linear):
            raise ModelError(f"{name} is a {type(linear).__name__}, not an nn.Linear: export a finished pruning run "
                             f"or a checkpoint")
        weight = linear.weight.detach().float()
        nnz_before = int((weight != 0).sum())
        if min_row_weights > 0:
            weight, rows, dropped = _drop_sparse_rows(weight, min_row_weights)
            lossy_rows, lossy_weights = lossy_rows + rows, lossy_weights + dropped
        if (layer, mtype) in ranks:
            fmt = art.choose_with_rank(weight, ranks[(layer, mtype)], pack_kw["value_dtype"])
        else:
            fmt = art._choose_format(weight, formats, **pack_kw)
        bias = None if linear.bias is None else linear.bias.detach()
        set_submodule(exported, name, art.FormatLinear(fmt, bias))
        shape = tuple(weight.shape)
        changes.append(MatrixChange(layer, mtype, shape, shape, nnz_before, int((weight != 0).sum())))
        modules.append({"name": name, "layer": layer, "matrix": mtype, "format": fmt.meta()})
        chosen[name] = fmt.kind
        bytes_dense += weight.numel() * 4
        bytes_exported += fmt.nbytes
        tensors.update({f"{name}.{k}": v for k, v in fmt.tensors().items()})
    for key, value in exported.state_dict().items():  # a FormatLinear's state is its bias (its format is above)
        tensors[key] = value.detach().cpu().clone()  # clone: safetensors refuses tensors that share memory
    report = _report(arch, model.config, changes, (min_row_weights, lossy_rows, lossy_weights))
    evaluation = None
    if task is not None:
        evaluation = art._evaluate_exact_vs_lossy(model, exported.eval(), tokenizer, task, data_dir, eval_samples,
                                                  min_row_weights)
    fields = art.task_fields(model, recipe)
    texts = sample_io.normalise(list(samples or sample_io.default_samples(fields["task_type"])), fields["task_type"])
    skipped = arch.skipped_rules()
    formats_report = [{"matrix": f"layers.{m['layer']}.{m['matrix']}", "module": m["name"],
                       "format": m["format"]["kind"]} for m in modules]
    report_json = {"compaction": report.to_json(), "formats": formats_report,
                   "skipped_rules": skipped, "evaluation": evaluation,
                   "bytes": {"encoder_matrices_dense_fp32_before": bytes_dense,
                             "encoder_matrices_compact_dense_fp32": bytes_dense,
                             "encoder_matrices_exported": bytes_exported}}
    manifest = {
        "format": art.ARTIFACT_FORMAT, "version": art.ARTIFACT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "layout": LAYOUT, "architecture": arch.name, "config": model.config.to_dict(), "modules": modules,
        "skipped_rules": skipped, "recipe": recipe, "data": recorded_description(recipe),
        "compaction": report.to_json()["summary"],
        "lossy": {"min_row_weights": min_row_weights, "rows_zeroed": lossy_rows, "weights_dropped": lossy_weights},
        "export": {"formats": formats, "value_dtype": str(pack_kw["value_dtype"]).replace("torch.", "")}, **fields,
    }
    samples_json = sample_io.samples_json(exported.eval(), tokenizer, texts, fields["task_type"])
    art.write_artifact(path, tensors, samples_json, tokenizer, report_json, manifest)
    return art.ExportResult(path, report, bytes_dense, bytes_exported, chosen, evaluation)


def load_modules(path: Path, manifest: dict, header: dict[str, tuple[str, tuple[int, ...]]]) -> nn.Module:
    """The Hugging Face model of a structure-preserving artifact, with a FormatLinear at every prunable module.

    ``manifest``: schema-checked (export/manifest.py); ``header``: the weights file's tensor dtypes and shapes
    (safeio.safetensors_header). Every plain tensor (all but the formats') is checked against the shapes of the
    model the config describes, built on the meta device, before anything is allocated. ArtifactError for
    anything inconsistent.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sparsekit.export.artifact import WEIGHTS, ArtifactError, FormatLinear, _hf_config, manifest_task_type
    from sparsekit.export.manifest import check_values

    config = _hf_config(manifest, path)
    head_class = auto_class(manifest_task_type(manifest))
    with torch.device("meta"), quiet_transformers():  # shapes only: nothing is allocated
        meta = head_class.from_config(config)
    prunable = {name: (layer, mtype, tuple(module.weight.shape))
                for name, layer, mtype, module in _prunable(meta)}
    listed = {m["name"]: m for m in manifest["modules"]}
    if set(listed) != set(prunable):
        raise ArtifactError(f"{path}: the manifest lists the modules {sorted(set(listed) - set(prunable))[:3]} "
                            f"(and lacks {sorted(set(prunable) - set(listed))[:3]}) that the config's model does "
                            f"not have; the artifact was modified")
    plain = {k: (_SAFETENSORS_DTYPES.get(v.dtype, str(v.dtype)), tuple(v.shape)) for k, v in meta.state_dict().items()
             if k.rpartition(".")[0] not in prunable or k.endswith(".bias")}
    for name, (layer, mtype, shape) in prunable.items():
        entry = listed[name]
        if (entry["layer"], entry["matrix"], tuple(entry["format"].get("shape", ()))) != (layer, mtype, shape):
            raise ArtifactError(f"{path}: {name} is listed as layer {entry['layer']} {entry['matrix']} of shape "
                                f"{entry['format'].get('shape')}; the config's model has layer {layer} {mtype} "
                                f"of shape {list(shape)}")
    for name, (dtype, shape) in plain.items():
        if name not in header:
            raise ArtifactError(f"{path / WEIGHTS} has no tensor {name!r}; the artifact is incomplete")
        if header[name] != (dtype, shape):
            raise ArtifactError(f"{path / WEIGHTS}: tensor {name!r} is {header[name][0]} {list(header[name][1])}; "
                                f"the config requires {dtype} {list(shape)}")
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path / WEIGHTS} cannot be read ({exc}); the artifact is corrupt") from exc
    check_values(tensors, [k for k, (dtype, _) in plain.items() if dtype == "F32"], str(path / WEIGHTS))
    with quiet_transformers():
        model = head_class.from_config(config)
    for name in prunable:
        prefix = name + "."  # the bias stays in ``tensors``: load_state_dict below sets it again
        own = {k[len(prefix):]: tensors.pop(k) for k in [k for k in tensors
                                                         if k.startswith(prefix) and k != prefix + "bias"]}
        bias = tensors.get(prefix + "bias")
        try:
            fmt = from_tensors(listed[name]["format"], own, name=name)
        except (ValueError, TypeError) as exc:  # FormatError: the format's own validation
            raise ArtifactError(f"{path}: {exc}") from None
        set_submodule(model, name, FormatLinear(fmt, bias))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: tensors do not match the model: {exc}") from None
    return model


@torch.no_grad()
def dense_from_modules(model: nn.Module) -> nn.Module:
    """A copy of a loaded structure-preserving artifact with every FormatLinear back as a dense ``nn.Linear``
    (the masked dense model it was exported from; eval, float32, CPU)."""
    from sparsekit.export.artifact import FormatLinear

    dense = copy.deepcopy(model).cpu().float()
    for name, module in list(dense.named_modules()):
        if isinstance(module, FormatLinear):
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            linear.weight.copy_(module.fmt.to_dense().float())
            if module.bias is not None:
                linear.bias.copy_(module.bias)
            set_submodule(dense, name, linear)
    return dense.eval().requires_grad_(False)
