"""One-directory artifacts: export a pruned model compact, load it in one call, verify it.

Layout of an artifact directory:

- ``manifest.json``: artifact format and version, the model config, per-layer head / FFN widths and
  the format (and its meta) of every matrix, the pruning recipe, the compaction summary, library
  versions, and sha256 checksums of the two data files;
- ``model.safetensors``: every tensor (embeddings, LayerNorms, biases, pooler, head, and each
  matrix's format tensors named ``layers.{i}.{matrix}.{tensor}``);
- ``samples.json``: sample texts with the logits the exported model gave for them;
- ``report.json``: the compaction report and per-matrix formats / bytes;
- the tokenizer files.

Loading checks the version, the checksums, every format's indices and every shape against the
manifest, and refuses anything inconsistent with a ValueError that says what is wrong.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.architectures import MATRIX_TYPES, architecture_for
from sparsekit.data.inputs import build_inputs
from sparsekit.errors import SparsekitError
from sparsekit.export.compact import CompactionReport, compact
from sparsekit.export.lowrank import choose_with_rank, recorded_ranks
from sparsekit.export.modeling import CompactForSequenceClassification, LayerShape
from sparsekit.files import file_sha256
from sparsekit.formats import FORMATS, MatrixFormat, from_tensors, to_format
from sparsekit.models import quiet_transformers
from sparsekit.versions import library_versions

ARTIFACT_FORMAT = "sparsekit-artifact"
ARTIFACT_VERSION = 1
MANIFEST, WEIGHTS, SAMPLES, REPORT = "manifest.json", "model.safetensors", "samples.json", "report.json"
DEFAULT_SAMPLES = ("a charming and often affecting journey.", "unflinchingly bleak and desperate",
                   "the acting is fine but the story goes nowhere.", "one of the best films of the year!")


class ArtifactError(SparsekitError, ValueError):
    """An artifact that cannot be loaded: missing, corrupt, tampered, or from another format version."""


class FormatLinear(nn.Module):
    """``y = x Wᵀ + b`` with W held in a MatrixFormat (the reference path: W is densified once, lazily).

    ``fmt``: the stored matrix ``[out, in]``; ``bias``: float32 ``[out]`` or None. Sparse kernels replace this
    module's computation later (``sparsekit.compile``); its ``fmt`` is what they consume.
    """

    def __init__(self, fmt: MatrixFormat, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.fmt = fmt
        self.out_features, self.in_features = fmt.shape
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._dense: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dense is None:
            self._dense = self.fmt.to_dense().to(x.device)
        return F.linear(x, self._dense, self.bias)

    def extra_repr(self) -> str:
        return f"{self.fmt!r}"


@dataclass
class ExportResult:
    """What export() wrote: the path, the compaction report, bytes before / after, the lossy evaluation."""

    path: Path
    report: CompactionReport
    bytes_dense: int
    bytes_exported: int
    formats: dict[str, str]
    evaluation: dict | None


def _choose_format(weight: torch.Tensor, formats: str, **kw) -> MatrixFormat:
    """Pack ``weight``: a fixed kind, or "auto" = the fewer bytes of dense and CSR."""
    if formats != "auto":
        return to_format(weight, formats, **kw)
    value_dtype = kw.get("value_dtype", torch.float32)
    dense = to_format(weight, "dense", value_dtype=value_dtype)
    csr = to_format(weight, "csr", value_dtype=value_dtype)
    return csr if csr.nbytes < dense.nbytes else dense


def _load_source(source):
    """(model, tokenizer, recipe) from a pruning output dir, a HF checkpoint dir, a PrunedModel, or a pair."""
    from sparsekit.prune.output import PrunedModel
    from sparsekit.sources import CHECKPOINT, RUN, directory_kind, open_source

    if isinstance(source, PrunedModel):
        return source.model, source.tokenizer, source.recipe
    if isinstance(source, tuple) and len(source) == 2:
        return source[0], source[1], None
    if directory_kind(source) not in (RUN, CHECKPOINT):
        raise FileNotFoundError(f"{source} is neither a sparsekit pruning output nor a Hugging Face checkpoint "
                                f"directory")
    opened = open_source(source)
    return opened.model, opened.tokenizer, opened.recipe


@torch.no_grad()
def _logits(model, tokenizer, texts, max_length: int = 128) -> torch.Tensor:
    return model(**build_inputs(tokenizer, texts, max_length)).logits.float()


def export(source, path: str | Path, *, formats: str = "auto", min_row_weights: int = 0,
           value_dtype: torch.dtype = torch.float32, block: tuple[int, int] = (32, 32), rank: int | None = None,
           tol: float | None = None, samples: list[str] | None = None, overwrite: bool = False,
           task: str | None = None, data_dir: str | None = None, eval_samples: int | None = None) -> ExportResult:
    """Compact ``source`` and write an artifact directory at ``path``.

    source: a pruning output directory, a Hugging Face checkpoint directory with zeros, a PrunedModel,
        or a ``(model, tokenizer)`` pair.
    formats: "auto" (per matrix, the smaller of dense and CSR; for an LPAF run also its low-rank factors at the
        recorded rank when smaller and exact, see export/lowrank.py), or one of "dense", "csr", "bsr", "lowrank"
        for every matrix (``block`` for BSR; ``rank`` / ``tol`` for low-rank, which is lossy).
    min_row_weights: > 0 enables the lossy mode (rows with fewer kept weights are dropped). With ``task``,
        the dev metrics of the exact and the lossy model are measured and reported.
    overwrite: replace an existing ``path``; without it an existing artifact is never touched.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if formats != "auto" and formats not in FORMATS:
        raise ValueError(f"unknown format {formats!r}; choose auto or one of {', '.join(FORMATS)}")
    model, tokenizer, recipe = _load_source(source)
    model = model.float().eval()
    if not architecture_for(model.config).compacts:  # keeps its structure: export/module_artifact.py
        from sparsekit.export.module_artifact import export_modules

        pack_kw = {"value_dtype": value_dtype, **({"block": block} if formats == "bsr" else {}),
                   **({"rank": rank, "tol": tol} if formats == "lowrank" else {})}
        return export_modules(model, tokenizer, recipe, path, formats=formats, min_row_weights=min_row_weights,
                              pack_kw=pack_kw, samples=samples, task=task, data_dir=data_dir,
                              eval_samples=eval_samples)
    compacted, report = compact(model, min_row_weights=min_row_weights)
    evaluation = None
    if task is not None:
        evaluation = _evaluate_exact_vs_lossy(model, compacted, tokenizer, task, data_dir, eval_samples,
                                              min_row_weights)

    chosen, layer_meta, bytes_dense, bytes_exported = {}, [], 0, 0
    pack_kw = {"value_dtype": value_dtype}
    if formats == "bsr":
        pack_kw["block"] = block
    if formats == "lowrank":
        pack_kw.update(rank=rank, tol=tol)
    ranks = recorded_ranks(recipe) if formats == "auto" else {}  # LPAF runs: LowRank where smaller
    for i, (layer, shape) in enumerate(zip(compacted.layers, compacted.shapes)):
        metas = {}
        for name, linear in layer.linears().items():
            if (i, name) in ranks:
                fmt = choose_with_rank(linear.weight.detach(), ranks[(i, name)], pack_kw["value_dtype"])
            else:
                fmt = _choose_format(linear.weight.detach(), formats, **pack_kw)
            layer.set_linear(name, FormatLinear(fmt, linear.bias))
            metas[name] = fmt.meta()
            chosen[f"layers.{i}.{name}"] = fmt.kind
            bytes_dense += linear.weight.numel() * 4
            bytes_exported += fmt.nbytes
        layer_meta.append({**shape.to_dict(), "matrices": metas})

    tensors = _state_tensors(compacted)
    texts = list(samples or DEFAULT_SAMPLES)
    expected = _logits(compacted, tokenizer, texts)
    orig_dense_bytes = sum(m.before[0] * m.before[1] for m in report.matrices) * 4

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))  # same filesystem: atomic rename
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700; give the artifact normal directory permissions
    try:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / SAMPLES).write_text(json.dumps({"texts": texts, "logits": expected.tolist()}, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        summary = report.to_json()["summary"]
        formats_report = [{"matrix": k, "format": v} for k, v in chosen.items()]
        (tmp / REPORT).write_text(json.dumps({
            "compaction": report.to_json(), "formats": formats_report, "evaluation": evaluation,
            "bytes": {"encoder_matrices_dense_fp32_before": orig_dense_bytes,
                      "encoder_matrices_compact_dense_fp32": bytes_dense,
                      "encoder_matrices_exported": bytes_exported}}, indent=2) + "\n")
        manifest = {
            "format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": compacted.config.to_dict(), "head_uses_pooler": compacted.head_uses_pooler,
            "layers": layer_meta, "recipe": recipe, "compaction": summary,
            "lossy": {"min_row_weights": min_row_weights, "rows_zeroed": report.lossy_rows_zeroed,
                      "weights_dropped": report.lossy_weights_dropped},
            "export": {"formats": formats, "value_dtype": str(value_dtype).replace("torch.", "")},
            "versions": library_versions(),
            "checksums": {WEIGHTS: file_sha256(tmp / WEIGHTS), SAMPLES: file_sha256(tmp / SAMPLES)},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if path.exists():  # overwrite=True: replace only after the new artifact is complete
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(path, report, orig_dense_bytes, bytes_exported, chosen, evaluation)


def _state_tensors(compacted: CompactForSequenceClassification) -> dict[str, torch.Tensor]:
    """All tensors of the compacted model; format tensors as ``layers.{i}.{matrix}.{name}``."""
    tensors = {}
    for prefix, module in (("embeddings", compacted.embeddings), ("pooler", compacted.pooler),
                           ("classifier", compacted.classifier)):
        if module is not None:
            for k, v in module.state_dict().items():
                tensors[f"{prefix}.{k}"] = v.detach().cpu()
    for i, layer in enumerate(compacted.layers):
        for norm in ("attn_norm", "ffn_norm"):
            for k, v in getattr(layer, norm).state_dict().items():
                tensors[f"layers.{i}.{norm}.{k}"] = v.detach().cpu()
        for name, linear in layer.linears().items():
            tensors[f"layers.{i}.{name}.bias"] = linear.bias.detach().cpu()
            for k, v in linear.fmt.tensors().items():
                tensors[f"layers.{i}.{name}.{k}"] = v
    return tensors


def _evaluate_exact_vs_lossy(model, compacted_lossy, tokenizer, task, data_dir, eval_samples, k) -> dict:
    from sparsekit.data import EncodedDataset, get_task, load_split
    from sparsekit.evaluate import evaluate

    spec = get_task(task)
    dataset = EncodedDataset(load_split(spec, "dev", data_dir, limit=eval_samples), tokenizer, 128, spec.is_regression)
    masked = evaluate(model, dataset, tokenizer, spec)
    result = {"task": spec.name, "dev_examples": len(dataset), "masked_dense": masked}
    if k > 0:
        result["lossy"] = evaluate(compacted_lossy, dataset, tokenizer, spec)
        result["change"] = {m: result["lossy"][m] - masked[m] for m in spec.metrics}
    return result


def _read_manifest(path: Path) -> dict:
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; pass an artifact written by `sparsekit export`")
    for name in (MANIFEST, WEIGHTS, SAMPLES):
        if not (path / name).is_file():
            raise ArtifactError(f"{path} has no {name}: not a complete sparsekit artifact (export it again)")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path / MANIFEST} is not valid JSON: the artifact is corrupt") from exc
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path} is not a sparsekit artifact (manifest format {manifest.get('format')!r})")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(f"{path} has artifact version {manifest.get('version')!r}; this sparsekit reads "
                            f"version {ARTIFACT_VERSION}. Re-export it with this version")
    for name, expected in manifest.get("checksums", {}).items():
        if file_sha256(path / name) != expected:
            raise ArtifactError(f"{path / name} does not match its checksum in the manifest: the file was "
                                f"modified or truncated; re-export the artifact")
    return manifest


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load an artifact in one call: the compacted model (or, for a structure-preserving artifact, the Hugging Face
    model with FormatLinear matrices; eval mode) with ``.tokenizer`` and ``.manifest``.

    Raises FileNotFoundError for a missing directory and ArtifactError (a ValueError) for anything
    corrupt, truncated, tampered or from another artifact version.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    manifest = _read_manifest(path)
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path / WEIGHTS} cannot be read ({exc}); the artifact is corrupt") from exc
    from sparsekit.export.module_artifact import is_module_layout, load_modules

    if is_module_layout(manifest):  # a structure-preserving artifact (export/module_artifact.py)
        model = load_modules(path, manifest, tensors)
        model.tokenizer = AutoTokenizer.from_pretrained(str(path))
        model.manifest = manifest
        return model.to(device).eval().requires_grad_(False)
    cfg = dict(manifest["config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    shapes = [LayerShape.from_dict(layer) for layer in manifest["layers"]]
    if len(shapes) != config.num_hidden_layers:
        raise ArtifactError(f"{path}: manifest lists {len(shapes)} layers, the config {config.num_hidden_layers}")
    # The skeleton provides the embeddings, pooler and head classes; no encoder layers are built.
    with quiet_transformers():
        skeleton = AutoModelForSequenceClassification.from_config(
            AutoConfig.for_model(config.model_type, **{**cfg, "num_hidden_layers": 0}))
    base = skeleton.base_model
    model = CompactForSequenceClassification(config, shapes, base.embeddings,
                                             base.pooler if manifest["head_uses_pooler"] else None,
                                             skeleton.classifier, manifest["head_uses_pooler"])
    hidden = config.hidden_size
    for i, (layer, shape, meta) in enumerate(zip(model.layers, shapes, manifest["layers"])):
        expected = {"query": (sum(shape.qk_widths), hidden), "key": (sum(shape.qk_widths), hidden),
                    "value": (sum(shape.v_widths), hidden), "attn_out": (hidden, sum(shape.v_widths)),
                    "ffn_in": (shape.ffn, hidden), "ffn_out": (hidden, shape.ffn)}
        for name in MATRIX_TYPES:
            prefix = f"layers.{i}.{name}."
            fmt_meta = meta["matrices"].get(name)
            if fmt_meta is None:
                raise ArtifactError(f"{path}: manifest has no format for layer {i} {name}")
            own = {k[len(prefix):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(prefix)]}
            bias = own.pop("bias", None)
            fmt = from_tensors(fmt_meta, own, name=f"layer {i} {name}")
            if tuple(fmt.shape) != expected[name] or bias is None or tuple(bias.shape) != (expected[name][0],):
                raise ArtifactError(f"{path}: layer {i} {name} has shape {tuple(fmt.shape)} (bias "
                                    f"{None if bias is None else tuple(bias.shape)}); the manifest's widths "
                                    f"require {expected[name]}")
            layer.set_linear(name, FormatLinear(fmt, bias))
    rest = {"embeddings": model.embeddings, "pooler": model.pooler, "classifier": model.classifier}
    rest.update({f"layers.{i}.{n}": getattr(layer, n) for i, layer in enumerate(model.layers)
                 for n in ("attn_norm", "ffn_norm")})
    for prefix, module in rest.items():
        if module is None:
            continue
        own = {k[len(prefix) + 1:]: tensors.pop(k) for k in [k for k in tensors if k.startswith(prefix + ".")]}
        try:
            module.load_state_dict(own, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(f"{path}: tensors of {prefix} do not match the model: {exc}") from exc
    if tensors:
        raise ArtifactError(f"{path}: unexpected tensors {sorted(tensors)[:5]}; the artifact was modified")
    model.tokenizer = AutoTokenizer.from_pretrained(str(path))
    model.manifest = manifest
    return model.to(device).eval().requires_grad_(False)


def verify(path: str | Path, atol: float = 1e-4) -> dict:
    """Re-run the artifact's samples; returns ``{"max_abs_error", "samples", "ok", "atol"}``."""
    model = load(path)
    data = json.loads((Path(path) / SAMPLES).read_text())
    expected = torch.tensor(data["logits"], dtype=torch.float32)
    got = _logits(model, model.tokenizer, data["texts"])
    if got.shape != expected.shape:
        raise ArtifactError(f"{path}: samples give logits of shape {tuple(got.shape)}, "
                            f"expected {tuple(expected.shape)}")
    err = float((got - expected).abs().max()) if got.numel() else 0.0
    return {"max_abs_error": err, "samples": len(data["texts"]), "ok": err <= atol, "atol": atol}
