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

Loading rebuilds the model from its config (``from_config``: nothing is downloaded), puts a FormatLinear at
every prunable module and loads the other tensors strictly; ``sparsekit.compile`` then runs on it unchanged.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from sparsekit.architectures import ARCHITECTURES, Architecture, architecture_for, encoder_linears
from sparsekit.errors import ModelError
from sparsekit.export.compact import CompactionReport, MatrixChange, _drop_sparse_rows
from sparsekit.files import file_sha256
from sparsekit.formats import from_tensors
from sparsekit.models import quiet_transformers, set_submodule
from sparsekit.versions import library_versions

#: The manifest's ``layout`` of a structure-preserving artifact (a compact one has no ``layout``).
LAYOUT = "modules"


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
                   pack_kw: dict, samples: list[str] | None, task: str | None, data_dir: str | None,
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
    texts = list(samples or art.DEFAULT_SAMPLES)
    expected = art._logits(exported.eval(), tokenizer, texts)
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
        "skipped_rules": skipped, "recipe": recipe, "compaction": report.to_json()["summary"],
        "lossy": {"min_row_weights": min_row_weights, "rows_zeroed": lossy_rows, "weights_dropped": lossy_weights},
        "export": {"formats": formats, "value_dtype": str(pack_kw["value_dtype"]).replace("torch.", "")},
        "versions": library_versions(),
    }
    _write(path, tensors, {"texts": texts, "logits": expected.tolist()}, tokenizer, report_json, manifest)
    return art.ExportResult(path, report, bytes_dense, bytes_exported, chosen, evaluation)


def _write(path: Path, tensors: dict, samples: dict, tokenizer, report: dict, manifest: dict) -> None:
    """Write the artifact's files into a temporary sibling directory, then rename it to ``path`` (atomic)."""
    from safetensors.torch import save_file

    from sparsekit.export.artifact import MANIFEST, REPORT, SAMPLES, WEIGHTS

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / SAMPLES).write_text(json.dumps(samples, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n")
        manifest["checksums"] = {WEIGHTS: file_sha256(tmp / WEIGHTS), SAMPLES: file_sha256(tmp / SAMPLES)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_modules(path: Path, manifest: dict, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The Hugging Face model of a structure-preserving artifact, with a FormatLinear at every prunable module.

    ``tensors``: the artifact's ``model.safetensors`` (consumed). ArtifactError for anything inconsistent.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from sparsekit.export.artifact import ArtifactError, FormatLinear

    cfg = dict(manifest["config"])
    try:
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        arch = architecture_for(config)
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: the manifest's config cannot be used: {exc}") from exc
    if manifest.get("architecture") != arch.name:
        raise ArtifactError(f"{path}: manifest architecture {manifest.get('architecture')!r} does not match the "
                            f"config's model type ({arch.name})")
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_config(config)
    expected = {name: (layer, mtype, module) for name, layer, mtype, module in _prunable(model)}
    listed = {m.get("name"): m for m in manifest.get("modules", [])}
    if set(listed) != set(expected):
        raise ArtifactError(f"{path}: the manifest lists the modules {sorted(listed)[:4]}..., the config's model has "
                            f"{sorted(expected)[:4]}...; the artifact was modified")
    for name, (layer, mtype, linear) in expected.items():
        entry = listed[name]
        if (entry.get("layer"), entry.get("matrix")) != (layer, mtype):
            raise ArtifactError(f"{path}: {name} is listed as layer {entry.get('layer')} {entry.get('matrix')}, "
                                f"expected layer {layer} {mtype}")
        prefix = name + "."
        own = {k[len(prefix):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(prefix)]}
        bias = own.pop("bias", None)
        fmt = from_tensors(entry["format"], own, name=name)
        want_bias = None if linear.bias is None else tuple(linear.bias.shape)
        if tuple(fmt.shape) != tuple(linear.weight.shape) or (None if bias is None else tuple(bias.shape)) != want_bias:
            raise ArtifactError(f"{path}: {name} has shape {tuple(fmt.shape)} (bias "
                                f"{None if bias is None else tuple(bias.shape)}); the config requires "
                                f"{tuple(linear.weight.shape)} (bias {want_bias})")
        set_submodule(model, name, FormatLinear(fmt, bias))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k.rpartition(".")[0] not in expected]
    if missing or unexpected:
        raise ArtifactError(f"{path}: tensors do not match the model (missing {missing[:5]}, unexpected "
                            f"{unexpected[:5]}); the artifact was modified")
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
