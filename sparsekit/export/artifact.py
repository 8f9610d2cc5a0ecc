"""One-directory artifacts: export a pruned model compact, load it in one call, verify it.

Layout of an artifact directory:

- ``manifest.json``: artifact format and version, the model config, per-layer head / FFN widths and
  the format (and its meta) of every matrix, the pruning recipe, ``data`` (what the model was trained on:
  source, text columns, label names, metrics; ``sparsekit.data.source.describe``), the compaction summary,
  library versions, the tokenizer's files and length, sha256 checksums of every other file,
  ``task_type`` (export/heads.py), ``labels`` (the head's label names) and ``metric`` (the run's headline
  metric, or null), ``precision`` (``fp32``, or ``int8``: every encoder matrix stored ``int8-b4``; absent in
  artifacts from before it: fp32), and ``manifest_sha256``, the checksum of the manifest's own canonical content;
- ``model.safetensors``: every tensor (embeddings, LayerNorms, biases, pooler, head (``classifier.*``, or
  ``qa_outputs.*`` for QA), and each
  matrix's format tensors named ``layers.{i}.{matrix}.{tensor}``);
- ``samples.json``: sample inputs with the outputs the exported model gave for them (export/samples.py);
- ``report.json``: the compaction report and per-matrix formats / bytes;
- the tokenizer files.

Loading treats the directory as untrusted data (see manifest.py and safeio.py): it checks the version,
the manifest's schema and its own checksum, every file's checksum, every tensor's shape and dtype in the
weights header against the manifest before anything is allocated, every format's indices, that every
stored float is finite, and that the tokenizer loads from the artifact's own files. Anything inconsistent
is refused with an ArtifactError (a ValueError) that says what is wrong.
"""
from __future__ import annotations

import hashlib
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
from sparsekit.data.source import recorded_description
from sparsekit.export.compact import CompactionReport, compact
from sparsekit.export.errors import ArtifactError
from sparsekit.export.lowrank import choose_with_rank, recorded_ranks
from sparsekit.export.manifest import (DIGEST_KEY, canonical_digest, check_digest, check_header, check_manifest,
                                       check_tensors, check_values, matrix_shapes)
from sparsekit.export import samples as sample_io
from sparsekit.export.heads import SEQUENCE, auto_class, task_type_of, task_type_of_config
from sparsekit.export.modeling import HEAD_MODULES, CompactModel, LayerShape
from sparsekit.export.safeio import file_digest, parse_json, read_bytes, read_json, safetensors_header
from sparsekit.files import file_sha256
from sparsekit.formats import FORMATS, MatrixFormat, from_tensors, to_format
from sparsekit.formats.int8 import weight_qmax
from sparsekit.models import quiet_transformers
from sparsekit.versions import library_versions

ARTIFACT_FORMAT = "sparsekit-artifact"
ARTIFACT_VERSION = 1
MANIFEST, WEIGHTS, SAMPLES, REPORT = "manifest.json", "model.safetensors", "samples.json", "report.json"
#: Byte caps per file: far above any BERT-family artifact, far below what could exhaust a host.
MAX_MANIFEST_BYTES, MAX_SAMPLES_BYTES, MAX_TOKENIZER_BYTES = 16 << 20, 16 << 20, 256 << 20
MAX_FILE_BYTES = 64 << 30
MAX_SAMPLES = 10_000


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


def _formats_of_precision(formats: str, precision: str) -> str:
    """The format kind of every matrix for ``precision``: int8 stores every matrix as ``int8-b4``, which only int8
    stores. ValueError for an unknown precision or a format that contradicts it."""
    from sparsekit.compiler import PRECISIONS
    from sparsekit.formats import Int8BlockFormat

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    int8 = Int8BlockFormat.kind
    if precision == "int8":
        if formats not in ("auto", int8):
            raise ValueError(f"precision int8 stores every matrix as {int8}; format {formats!r} does not apply "
                             f"(leave the format at auto)")
        return int8
    if formats == int8:
        raise ValueError(f"format {int8} stores int8 weights: export with precision='int8' (--precision int8)")
    return formats


def _load_source(source):
    """(model, tokenizer, recipe) from a pruning output dir, a HF checkpoint dir, a PrunedModel, or a pair."""
    from sparsekit.prune.output import PrunedModel
    from sparsekit.sources import CHECKPOINT, RUN, directory_kind, open_source

    if isinstance(source, PrunedModel):
        return source.model, source.tokenizer, source.recipe
    if isinstance(source, tuple) and len(source) == 2:
        return source[0], source[1], None
    kind = directory_kind(source)
    if kind not in (RUN, CHECKPOINT):
        raise FileNotFoundError(f"{source} is neither a sparsekit pruning output nor a Hugging Face checkpoint "
                                f"directory")
    if kind == CHECKPOINT:  # keep the checkpoint's own head (token classification, QA, ...)
        from transformers import AutoConfig

        from sparsekit.models import check_supported, load_tokenizer

        config = AutoConfig.from_pretrained(str(source))
        check_supported(config)
        with quiet_transformers():
            model = auto_class(task_type_of_config(config)).from_pretrained(str(source), config=config)
        return model, load_tokenizer(source), None
    opened = open_source(source)
    return opened.model, opened.tokenizer, opened.recipe


def task_fields(model, recipe: dict | None) -> dict:
    """The manifest's ``task_type``, ``labels`` (the head's label names in id order; empty for QA and
    regression) and ``metric`` (the run's headline metric name, or None) of an exported ``model``."""
    from sparsekit.export.heads import QA

    task_type = task_type_of(model)
    config = model.config
    regression = getattr(config, "problem_type", None) == "regression" or config.num_labels == 1
    labels = [] if task_type == QA or (task_type == SEQUENCE and regression) else \
        [str(config.id2label[i]) for i in range(config.num_labels)]
    data = recorded_description(recipe) or {}
    metric = data.get("metric")
    return {"task_type": task_type, "labels": labels, "metric": metric if isinstance(metric, str) else None}


def export(source, path: str | Path, *, formats: str = "auto", min_row_weights: int = 0,
           value_dtype: torch.dtype = torch.float32, block: tuple[int, int] = (32, 32), rank: int | None = None,
           tol: float | None = None, samples: list | None = None, overwrite: bool = False,
           task: str | None = None, data_dir: str | None = None, eval_samples: int | None = None,
           precision: str = "fp32", int8_weight_bits: int | None = None) -> ExportResult:
    """Compact ``source`` and write an artifact directory at ``path``.

    source: a pruning output directory, a Hugging Face checkpoint directory with zeros, a PrunedModel,
        or a ``(model, tokenizer)`` pair.
    formats: "auto" (per matrix, the smaller of dense and CSR; for an LPAF run also its low-rank factors at the
        recorded rank when smaller and exact, see export/lowrank.py), or one of "dense", "csr", "bsr", "lowrank"
        for every matrix (``block`` for BSR; ``rank`` / ``tol`` for low-rank, which is lossy).
    min_row_weights: > 0 enables the lossy mode (rows with fewer kept weights are dropped). With ``task``,
        the dev metrics of the exact and the lossy model are measured and reported.
    precision: "fp32" (default) or "int8": every encoder matrix stored as ``int8-b4``
        (:class:`~sparsekit.formats.Int8BlockFormat`: int8 weights with a float32 scale per output row, in 1x4
        blocks along the input). Lossy: the weights are rounded to int8 (the manifest records ``"precision":
        "int8"``, and the recorded samples are the outputs of that dequantised model, so ``verify`` stays exact);
        ``sparsekit.compile`` then runs those ints on the int8 kernel, which quantises the activations per token at
        run time. ``formats`` must be "auto" (or "int8-b4"). Compacted (BERT-family) models only.
    int8_weight_bits: at int8 precision, 8 (ints in ``[-127, 127]``, the default: an artifact does not depend on
        the machine that exported it) or 7 (``[-63, 63]``: half the weight resolution, faster on CPUs without VNNI,
        whose kernels then skip the sign trick; :func:`sparsekit.kernels.cpu_int8.preferred_weight_bits` says
        which is faster here). The manifest records it (``export.int8_weight_bits``).
    samples: the inputs ``verify`` re-runs: texts, or ``(question, context)`` pairs for a QA model [default:
        export/samples.py's for the model's task type].
    overwrite: replace an existing ``path``; without it an existing artifact is never touched.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if formats != "auto" and formats not in FORMATS:
        raise ValueError(f"unknown format {formats!r}; choose auto or one of {', '.join(FORMATS)}")
    formats = _formats_of_precision(formats, precision)
    if precision == "int8":
        int8_weight_bits = 8 if int8_weight_bits is None else int8_weight_bits
        weight_qmax(int8_weight_bits)  # ValueError for another width
    elif int8_weight_bits is not None:
        raise ValueError("int8_weight_bits applies to precision='int8' (--precision int8)")
    model, tokenizer, recipe = _load_source(source)
    model = model.float().eval()
    if task is not None and task_type_of(model) != SEQUENCE:
        raise ValueError(f"--task measures a GLUE task's dev metrics for sequence classifiers; this is a "
                         f"{task_type_of(model)} model: export it without --task and run `sparsekit evaluate` on "
                         f"the artifact")
    if not architecture_for(model.config).compacts:  # keeps its structure: export/module_artifact.py
        from sparsekit.export.module_artifact import export_modules

        if precision != "fp32":
            raise ValueError(f"precision {precision!r} is supported for compacted (BERT-family) artifacts; a "
                             f"{architecture_for(model.config).name} model keeps its module tree and is exported in "
                             f"fp32 (compile it with precision='int8' to run int8 kernels)")
        pack_kw = {"value_dtype": value_dtype, **({"block": block} if formats == "bsr" else {}),
                   **({"rank": rank, "tol": tol} if formats == "lowrank" else {})}
        return export_modules(model, tokenizer, recipe, path, formats=formats, min_row_weights=min_row_weights,
                              pack_kw=pack_kw, samples=samples, task=task, data_dir=data_dir,
                              eval_samples=eval_samples)
    from sparsekit.prune.blocks import recorded_block

    pruned_in = recorded_block(recipe)  # a 1xC block run keeps FFN neurons in aligned groups of C (exact)
    ffn_align = pruned_in.cols if pruned_in.rows == 1 else 1
    compacted, report = compact(model, min_row_weights=min_row_weights, ffn_align=ffn_align)
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
    if precision == "int8":
        pack_kw["weight_bits"] = int8_weight_bits
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
    fields = task_fields(model, recipe)
    texts = sample_io.normalise(list(samples or sample_io.default_samples(fields["task_type"])), fields["task_type"])
    orig_dense_bytes = sum(m.before[0] * m.before[1] for m in report.matrices) * 4

    summary = report.to_json()["summary"]
    formats_report = [{"matrix": k, "format": v} for k, v in chosen.items()]
    report_json = {"compaction": report.to_json(), "formats": formats_report, "evaluation": evaluation,
                   "bytes": {"encoder_matrices_dense_fp32_before": orig_dense_bytes,
                             "encoder_matrices_compact_dense_fp32": bytes_dense,
                             "encoder_matrices_exported": bytes_exported}}
    manifest = {
        "format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": compacted.config.to_dict(), "head_uses_pooler": compacted.head_uses_pooler,
        "layers": layer_meta, "recipe": recipe, "data": recorded_description(recipe), "compaction": summary,
        "lossy": {"min_row_weights": min_row_weights, "rows_zeroed": report.lossy_rows_zeroed,
                  "weights_dropped": report.lossy_weights_dropped},
        "export": {"formats": formats, "value_dtype": str(value_dtype).replace("torch.", ""),
                   **({"int8_weight_bits": int8_weight_bits} if precision == "int8" else {})}, **fields,
        "precision": precision,
    }
    write_artifact(path, tensors, sample_io.samples_json(compacted, tokenizer, texts, fields["task_type"]), tokenizer,
                   report_json, manifest)
    return ExportResult(path, report, orig_dense_bytes, bytes_exported, chosen, evaluation)


def write_artifact(path: Path, tensors: dict[str, torch.Tensor], samples: dict, tokenizer, report: dict,
                   manifest: dict) -> None:
    """Write an artifact directory atomically: the files into a temporary sibling, then one rename.

    ``manifest``: every field but ``versions``, ``tokenizer``, ``checksums`` and the manifest's own digest,
    which are added here (checksums of every file written). An existing ``path`` is replaced only once the
    new artifact is complete (the caller decided ``overwrite``).
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))  # same filesystem: atomic rename
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700; give the artifact normal directory permissions
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / SAMPLES).write_text(json.dumps(samples, indent=2) + "\n")
        before = set(os.listdir(tmp))
        tokenizer.save_pretrained(tmp)
        tokenizer_files = sorted(n for n in set(os.listdir(tmp)) - before if (tmp / n).is_file())
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n")
        manifest = {**manifest, "versions": library_versions(),
                    "tokenizer": {"files": tokenizer_files, "length": len(tokenizer)},
                    "checksums": {n: file_sha256(tmp / n) for n in sorted(os.listdir(tmp)) if (tmp / n).is_file()}}
        manifest = json.loads(json.dumps(manifest, default=str))  # the content a reader will see
        manifest[DIGEST_KEY] = canonical_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if path.exists():  # overwrite=True: replace only after the new artifact is complete
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _state_tensors(compacted: CompactModel) -> dict[str, torch.Tensor]:
    """All tensors of the compacted model; format tensors as ``layers.{i}.{matrix}.{name}``."""
    tensors = {}
    for prefix, module in (("embeddings", compacted.embeddings), ("pooler", compacted.pooler),
                           (compacted.head_name, compacted.head)):
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
    """The schema-checked manifest of the artifact at ``path``, after every listed file matched its checksum."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; pass an artifact written by `sparsekit export`")
    manifest = read_json(path, MANIFEST, MAX_MANIFEST_BYTES)
    check_header(manifest, str(path), ARTIFACT_FORMAT, ARTIFACT_VERSION)
    check_digest(manifest, str(path / MANIFEST))
    check_manifest(manifest, str(path / MANIFEST), (WEIGHTS, SAMPLES, REPORT))
    for name, expected in manifest["checksums"].items():
        if file_digest(path, name, MAX_FILE_BYTES) != expected:
            raise ArtifactError(f"{path / name} does not match its checksum in the manifest: the file was "
                                f"modified or truncated; re-export the artifact")
    return manifest


def _read_verified(path: Path, name: str, manifest: dict, max_bytes: int) -> bytes:
    """The bytes of a listed file, checked against its checksum (the bytes used are the bytes checked)."""
    data = read_bytes(path, name, max_bytes)
    if hashlib.sha256(data).hexdigest() != manifest["checksums"][name]:
        raise ArtifactError(f"{path / name} does not match its checksum in the manifest: the file was modified "
                            f"or truncated; re-export the artifact")
    return data


def _hf_config(manifest: dict, path: Path, **overrides):
    """The transformers config of the manifest (schema-checked) with ``overrides``; ArtifactError if refused."""
    from transformers import AutoConfig

    try:
        from huggingface_hub.errors import StrictDataclassError  # transformers 5 type-checks config fields
    except ImportError:  # older huggingface_hub: no such checks
        StrictDataclassError = TypeError
    cfg = {**manifest["config"], **overrides}
    try:
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    except (TypeError, ValueError, KeyError, AttributeError, StrictDataclassError) as exc:
        raise ArtifactError(f"{path / MANIFEST}: transformers refuses the config ({exc}); re-export the "
                            f"artifact") from None


def manifest_task_type(manifest: dict) -> str:
    """The task type a (schema-checked) manifest records; sequence-classification for artifacts from before
    task types were recorded."""
    return manifest.get("task_type", SEQUENCE)


def manifest_precision(manifest: dict) -> str:
    """The precision a (schema-checked) manifest records: ``int8`` (every encoder matrix ``int8-b4``) or ``fp32``
    (also for artifacts from before precisions were recorded)."""
    return manifest.get("precision", "fp32")


def _base_modules(skeleton, head_uses_pooler: bool, task_type: str) -> dict[str, nn.Module]:
    """The non-encoder modules of a Hugging Face head model by tensor-name prefix (embeddings, pooler, head)."""
    base = skeleton.base_model
    head = HEAD_MODULES[task_type]
    return {"embeddings": base.embeddings, "pooler": base.pooler if head_uses_pooler else None,
            head: getattr(skeleton, head)}


def _load_tokenizer(path: Path, manifest: dict):
    """The tokenizer from exactly the artifact's checksummed tokenizer files (copied aside, so nothing else is
    read), checked to have the recorded length; ArtifactError if it cannot be loaded."""
    from transformers import AutoTokenizer

    files = manifest["tokenizer"]["files"]
    with tempfile.TemporaryDirectory(prefix="sparsekit-tokenizer-") as tmp:
        for name in files:
            (Path(tmp) / name).write_bytes(_read_verified(path, name, manifest, MAX_TOKENIZER_BYTES))
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(tmp, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # tokenizers raises its own Exception types for corrupt files
            raise ArtifactError(f"{path}: the tokenizer cannot be loaded from {', '.join(files)} "
                                f"({type(exc).__name__}: {exc}); re-export the artifact") from None
    tokenizer.name_or_path = str(path)
    if len(tokenizer) != manifest["tokenizer"]["length"]:
        raise ArtifactError(f"{path}: the tokenizer has {len(tokenizer)} tokens, the manifest records "
                            f"{manifest['tokenizer']['length']}; the tokenizer files are not the exported ones")
    return tokenizer


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load an artifact in one call: the compacted model (or, for a structure-preserving artifact, the Hugging Face
    model with FormatLinear matrices; eval mode) with ``.tokenizer`` and ``.manifest``.

    Raises FileNotFoundError for a missing directory and ArtifactError (a ValueError) for anything
    corrupt, truncated, tampered or from another artifact version. Nothing is allocated before the
    sizes in the manifest are checked against the tensors in the weights file's header.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = _read_manifest(path)
    header = safetensors_header(path, WEIGHTS, MAX_FILE_BYTES)
    from sparsekit.export.module_artifact import is_module_layout, load_modules
    from sparsekit.runtime.plan import read_plan

    if is_module_layout(manifest):  # the structure was kept (export/module_artifact.py)
        model = load_modules(path, manifest, header)
        model.tokenizer = _load_tokenizer(path, manifest)
        model.manifest = manifest
        model.compile_plan = read_plan(path)  # the saved sparsekit.compile plan (fused families), reused on this CPU
        return model.to(device).eval().requires_grad_(False)
    task_type = manifest_task_type(manifest)
    head_class = auto_class(task_type)
    skeleton_config = _hf_config(manifest, path, num_hidden_layers=0)
    with torch.device("meta"), quiet_transformers():  # shapes only: nothing is allocated
        meta = head_class.from_config(skeleton_config)
    base = {f"{prefix}.{k}": tuple(v.shape) for prefix, module in
            _base_modules(meta, manifest["head_uses_pooler"], task_type).items() if module is not None
            for k, v in module.state_dict().items()}
    check_tensors(manifest, header, base, str(path / WEIGHTS))
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path / WEIGHTS} cannot be read ({exc}); the artifact is corrupt") from exc
    hidden = manifest["config"]["hidden_size"]
    plain = [*base, *(f"layers.{i}.{n}.bias" for i in range(len(manifest["layers"])) for n in MATRIX_TYPES),
             *(f"layers.{i}.{norm}.{p}" for i in range(len(manifest["layers"])) for norm in ("attn_norm", "ffn_norm")
               for p in ("weight", "bias"))]
    check_values(tensors, plain, str(path / WEIGHTS))
    config = _hf_config(manifest, path)
    shapes = [LayerShape.from_dict(layer) for layer in manifest["layers"]]
    # The skeleton provides the embeddings, pooler and head classes; no encoder layers are built.
    with quiet_transformers():
        skeleton = head_class.from_config(skeleton_config)
    modules = _base_modules(skeleton, manifest["head_uses_pooler"], task_type)
    model = CompactModel(config, shapes, modules["embeddings"], modules[HEAD_MODULES[task_type]],
                         task_type=task_type, pooler=modules["pooler"], head_uses_pooler=manifest["head_uses_pooler"])
    for i, (layer, shape, meta_layer) in enumerate(zip(model.layers, shapes, manifest["layers"])):
        expected = matrix_shapes(hidden, sum(shape.qk_widths), sum(shape.v_widths), shape.ffn)
        for name in MATRIX_TYPES:
            prefix = f"layers.{i}.{name}."
            own = {k[len(prefix):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(prefix)]}
            bias = own.pop("bias")
            try:
                fmt = from_tensors(meta_layer["matrices"][name], own, name=f"layer {i} {name}")
            except (ValueError, TypeError) as exc:  # FormatError: the format's own validation
                raise ArtifactError(f"{path}: {exc}") from None
            if tuple(fmt.shape) != expected[name]:
                raise ArtifactError(f"{path}: layer {i} {name} has shape {tuple(fmt.shape)}; the manifest's widths "
                                    f"require {expected[name]}")
            layer.set_linear(name, FormatLinear(fmt, bias))
    rest = {"embeddings": model.embeddings, "pooler": model.pooler, model.head_name: model.head}
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
    model.tokenizer = _load_tokenizer(path, manifest)
    model.manifest = manifest
    model.compile_plan = read_plan(path)  # the saved sparsekit.compile plan, reused on the same CPU
    return model.to(device).eval().requires_grad_(False)


def _read_samples(path: Path, manifest: dict) -> tuple[list, list[torch.Tensor], list]:
    """The recorded sample inputs, their float32 outputs and labels, schema-checked (see export/samples.py)."""
    data = parse_json(_read_verified(path, SAMPLES, manifest, MAX_SAMPLES_BYTES), str(path / SAMPLES))
    return sample_io.parse_samples(data, manifest_task_type(manifest), len(manifest["config"]["id2label"]),
                                   MAX_SAMPLES, str(path / SAMPLES))


def verify(path: str | Path, atol: float = 1e-4) -> dict:
    """Re-run the artifact's samples; returns ``{"max_abs_error", "label_mismatches", "samples", "ok", "atol",
    "task_type"}``.

    Every task type is covered: sequence classification compares logits per text, token classification the
    logits of every token, QA the start / end logits of every token (export/samples.py). ok: every number within
    ``atol`` of the recorded one and every prediction the recorded one (a label name, per token for token
    classification, the argmax start / end for QA), so a relabelled config or a moved span is noticed too.
    """
    model = load(path)
    task_type = manifest_task_type(model.manifest)
    texts, expected, names = _read_samples(Path(path), model.manifest)
    got = sample_io.sample_outputs(model, model.tokenizer, texts, task_type)
    err = sample_io.compare(got, expected, str(path))
    labels = sample_io.sample_labels(model.config, got, task_type)
    mismatches = sum(a != b for a, b in zip(labels, names))
    return {"max_abs_error": err, "label_mismatches": mismatches, "samples": len(texts),
            "ok": err <= atol and mismatches == 0, "atol": atol, "task_type": task_type}
