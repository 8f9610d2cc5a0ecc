"""The artifact manifest: its content digest and a strict schema check, before anything is built from it.

A manifest is data written by ``sparsekit export``; here it is checked field by field: exact types (a bool
is not an int, a float or a string is not a width), ranges, and consistency between the config, the
layers' widths, the tokenizer record and the checksums. ``check_tensors`` then cross-checks the sizes
against the safetensors header, so every allocation the loader makes is bounded by tensors that exist.

``manifest_sha256`` is the sha256 of the canonical JSON of the manifest without that field; with the
per-file ``checksums`` it makes every byte the loader reads covered by the integrity check.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from sparsekit.architectures import MATRIX_TYPES
from sparsekit.export.errors import ArtifactError
from sparsekit.export.safeio import check_name

DIGEST_KEY = "manifest_sha256"
FIELDS = ("format", "version", "created", "config", "head_uses_pooler", "layers", "recipe", "compaction", "lossy",
          "export", "versions", "tokenizer", "checksums", DIGEST_KEY)
#: Fields an artifact may lack: ``data`` (what the model was trained on) came after the fields above.
#: ``task_type``, ``labels`` and ``metric`` (TASK_FIELDS) came later still: an artifact has all three or none
#: (none: a sequence classifier, the only task type before them). ``precision`` (fp32 or int8: how the encoder
#: matrices are stored) came last; without it an artifact is fp32.
TASK_FIELDS = ("task_type", "labels", "metric")
OPTIONAL_FIELDS = ("data", *TASK_FIELDS, "precision")
DATA_FIELDS = ("kind", "task", "name", "text_columns", "label_column", "label_format", "label_names",
               "is_regression", "metrics", "metric", "files", "dataset")
#: The ``layout`` of a structure-preserving artifact (export/module_artifact.py), and its fields: ``layout``,
#: ``architecture``, ``modules`` and ``skipped_rules`` in place of the compact layout's ``head_uses_pooler`` and
#: ``layers``.
MODULE_LAYOUT = "modules"
MODULE_FIELDS = ("format", "version", "created", "layout", "architecture", "config", "modules", "skipped_rules",
                 "recipe", "compaction", "lossy", "export", "versions", "tokenizer", "checksums", DIGEST_KEY)
MODULE_ENTRY_FIELDS = {"name", "layer", "matrix", "format"}
MAX_DIM = 1 << 20  # widths, hidden size, positions: far above any BERT-family encoder
MAX_VOCAB = 1 << 24
MAX_LAYERS = 256
MAX_LABELS = 1 << 16
MAX_FFN_RATIO = 64  # intermediate_size <= 64 x hidden_size (BERT: 4x); bounds a dense rebuild (bench)
ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert")  # position ids start after pad_token_id
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no whitespace), its own digest field left out."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class _Check:
    """Field checks that raise ArtifactError naming the manifest and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, message: str) -> None:
        raise ArtifactError(f"{self.where}: {message}; the artifact is corrupt or was edited (re-export it)")

    def int(self, value: Any, field: str, lo: int, hi: int) -> int:
        if type(value) is not int or not lo <= value <= hi:
            self.fail(f"{field} must be an integer in [{lo}, {hi}], got {value!r}")
        return value

    def number(self, value: Any, field: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
        ok = type(value) in (int, float) and math.isfinite(value) and (lo < value if lo_open else lo <= value)
        if not ok or value >= hi:
            self.fail(f"{field} must be a finite number in {'(' if lo_open else '['}{lo}, {hi}), got {value!r}")
        return float(value)

    def type(self, value: Any, field: str, *types: type) -> Any:
        if type(value) not in types:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            self.fail(f"{field} must be {names}, got {type(value).__name__}")
        return value


def check_header(manifest: Any, where: str, artifact_format: str, version: int) -> None:
    """Format name and version first, so a foreign or newer file gets that message, not a schema error."""
    if not isinstance(manifest, dict) or manifest.get("format") != artifact_format:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"{where} is not a sparsekit artifact (manifest format {found!r})")
    if type(manifest.get("version")) is not int or manifest["version"] != version:
        raise ArtifactError(f"{where} has artifact version {manifest.get('version')!r}; this sparsekit reads "
                            f"version {version}. Re-export it with this version")


def check_digest(manifest: dict, where: str) -> None:
    """The manifest's own content against its ``manifest_sha256``."""
    digest = manifest.get(DIGEST_KEY)
    if digest is None or "checksums" not in manifest:
        raise ArtifactError(f"{where} has no {'checksums' if 'checksums' not in manifest else DIGEST_KEY}: its "
                            f"integrity cannot be checked (stripped, or written by an older sparsekit); re-export "
                            f"the artifact")
    if not isinstance(digest, str) or digest != canonical_digest(manifest):
        raise ArtifactError(f"{where} does not match its own checksum ({DIGEST_KEY}): the manifest was edited or "
                            f"damaged; re-export the artifact")


def check_manifest(manifest: dict, where: str, required_files: tuple[str, ...]) -> None:
    """Schema-check every field of a manifest whose header and digest were checked (see module docstring)."""
    from sparsekit.models import SUPPORTED_MODEL_TYPES

    c = _Check(where)
    if "layout" in manifest:
        if manifest["layout"] != MODULE_LAYOUT:
            c.fail(f"layout must be {MODULE_LAYOUT!r} (or absent: compact), got {manifest['layout']!r}")
        return _check_module_manifest(c, manifest, required_files)
    extra, missing = set(manifest) - set(FIELDS) - set(OPTIONAL_FIELDS), [f for f in FIELDS if f not in manifest]
    if extra or missing:
        c.fail(f"unexpected fields {sorted(extra)}" if extra else f"missing fields {missing}")
    cfg = c.type(manifest["config"], "config", dict)
    if cfg.get("model_type") not in SUPPORTED_MODEL_TYPES:
        c.fail(f"config.model_type must be one of {', '.join(SUPPORTED_MODEL_TYPES)}, got {cfg.get('model_type')!r}")
    hidden = c.int(cfg.get("hidden_size"), "config.hidden_size", 1, MAX_DIM)
    heads = c.int(cfg.get("num_attention_heads"), "config.num_attention_heads", 1, hidden)
    if hidden % heads:
        c.fail(f"config.hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    head_dim = hidden // heads
    n_layers = c.int(cfg.get("num_hidden_layers"), "config.num_hidden_layers", 0, MAX_LAYERS)
    ffn_max = c.int(cfg.get("intermediate_size"), "config.intermediate_size", 0, MAX_FFN_RATIO * hidden)
    vocab = c.int(cfg.get("vocab_size"), "config.vocab_size", 1, MAX_VOCAB)
    positions = c.int(cfg.get("max_position_embeddings"), "config.max_position_embeddings", 1, MAX_DIM)
    c.int(cfg.get("type_vocab_size"), "config.type_vocab_size", 1, MAX_LABELS)
    from transformers.activations import ACT2FN

    if not isinstance(cfg.get("hidden_act"), str) or cfg["hidden_act"] not in ACT2FN:
        c.fail(f"config.hidden_act must name an activation ({', '.join(sorted(ACT2FN))}), "
               f"got {cfg.get('hidden_act')!r}")
    c.number(cfg.get("layer_norm_eps"), "config.layer_norm_eps", 0, 1, lo_open=True)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        c.number(cfg.get(key), f"config.{key}", 0, 1)
    if "initializer_range" in cfg:  # the skeleton's (discarded) random init still draws with it
        c.number(cfg["initializer_range"], "config.initializer_range", 0, 1)
    if cfg.get("classifier_dropout") is not None:
        c.number(cfg["classifier_dropout"], "config.classifier_dropout", 0, 1)
    pad = cfg.get("pad_token_id")
    if pad is not None:
        limit = min(vocab, positions) if cfg["model_type"] in ROBERTA_FAMILY else vocab
        c.int(pad, "config.pad_token_id", 0, limit - 1)
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        c.fail(f"config.position_embedding_type {cfg['position_embedding_type']!r} is not supported (absolute only)")
    _check_classifier_config(c, cfg)

    task_type = _check_task(c, manifest)
    precision = _check_precision(c, manifest, ("fp32", "int8"))
    from sparsekit.formats import Int8BlockFormat

    int8_kind = Int8BlockFormat.kind
    pooled = cfg["model_type"] == "bert" and task_type == "sequence-classification"
    if c.type(manifest["head_uses_pooler"], "head_uses_pooler", bool) != pooled:
        c.fail(f"head_uses_pooler must be {pooled} for model_type {cfg['model_type']!r} and task type {task_type}")
    layers = c.type(manifest["layers"], "layers", list)
    if len(layers) != n_layers:
        c.fail(f"lists {len(layers)} layers, the config {n_layers}")
    for i, layer in enumerate(layers):
        c.type(layer, f"layers[{i}]", dict)
        if set(layer) != {"qk_widths", "v_widths", "ffn", "matrices"}:
            c.fail(f"layers[{i}] must have exactly qk_widths, v_widths, ffn, matrices")
        qk = c.type(layer["qk_widths"], f"layers[{i}].qk_widths", list)
        v = c.type(layer["v_widths"], f"layers[{i}].v_widths", list)
        if len(qk) != len(v) or len(v) > heads:
            c.fail(f"layers[{i}] lists {len(qk)} Q·K and {len(v)} V head widths; both must be equal and <= {heads}")
        for j, w in enumerate(qk):
            c.int(w, f"layers[{i}].qk_widths[{j}]", 0, head_dim)
        for j, w in enumerate(v):
            c.int(w, f"layers[{i}].v_widths[{j}]", 1, head_dim)
        ffn = c.int(layer["ffn"], f"layers[{i}].ffn", 0, ffn_max)
        matrices = c.type(layer["matrices"], f"layers[{i}].matrices", dict)
        if set(matrices) != set(MATRIX_TYPES):
            c.fail(f"layers[{i}].matrices must have exactly {', '.join(MATRIX_TYPES)}")
        expected = matrix_shapes(hidden, sum(qk), sum(v), ffn)
        for name in MATRIX_TYPES:
            meta = _check_format_meta(c, matrices[name], f"layers[{i}].matrices.{name}")
            if (meta.get("kind") == int8_kind) != (precision == "int8"):
                c.fail(f"layers[{i}].matrices.{name} is {meta.get('kind')!r} in a {precision} artifact (an int8 "
                       f"artifact stores every matrix as {int8_kind}, and only an int8 artifact does)")
            if meta.get("shape") != list(expected[name]):
                c.fail(f"layers[{i}].matrices.{name}.shape is {meta.get('shape')!r}; the widths require "
                       f"{list(expected[name])}")
    _check_common(c, manifest, required_files, vocab, positions)


def _check_classifier_config(c: _Check, cfg: dict) -> None:
    """The config fields every layout shares: an encoder classifier, float32, no code, consistent labels."""
    for key in ("is_decoder", "add_cross_attention"):
        if cfg.get(key, False) is not False:
            c.fail(f"config.{key} must be false for an encoder classifier")
    for key in ("dtype", "torch_dtype"):
        if cfg.get(key) not in (None, "float32"):
            c.fail(f"config.{key} must be float32 (the artifact's tensors), got {cfg[key]!r}")
    for key in ("auto_map", "quantization_config"):
        if key in cfg:
            c.fail(f"config.{key} is not allowed in an artifact (an artifact is data, never code)")
    id2label = c.type(cfg.get("id2label"), "config.id2label", dict)
    n_labels = len(id2label)
    if not 1 <= n_labels <= MAX_LABELS or set(id2label) != {str(i) for i in range(n_labels)} \
            or not all(isinstance(v, str) for v in id2label.values()):
        c.fail("config.id2label must map '0'..'n-1' to label names")
    if "label2id" in cfg and cfg["label2id"] != {v: int(k) for k, v in id2label.items()}:
        c.fail("config.label2id is not the inverse of config.id2label")
    if "num_labels" in cfg and cfg["num_labels"] != n_labels:
        c.fail(f"config.num_labels {cfg['num_labels']!r} disagrees with id2label ({n_labels} labels)")
    if cfg.get("problem_type") not in PROBLEM_TYPES or (cfg.get("problem_type") == "regression" and n_labels != 1):
        c.fail(f"config.problem_type {cfg.get('problem_type')!r} does not fit {n_labels} labels")


def _check_task(c: _Check, manifest: dict) -> str:
    """The task fields (TASK_FIELDS): all or none; a known task type, one label name per head output (none for
    QA and regression heads), a metric name or null. Returns the task type (absent: sequence-classification).
    The names themselves are the record of the export; the config's id2label is what predictions use.
    """
    from sparsekit.export.heads import QA, SEQUENCE, TASK_TYPES, TOKEN

    present = [f for f in TASK_FIELDS if f in manifest]
    if not present:
        return SEQUENCE
    if len(present) != len(TASK_FIELDS):
        c.fail(f"has {', '.join(present)} but not {', '.join(f for f in TASK_FIELDS if f not in present)}; "
               f"an artifact records task_type, labels and metric together")
    task_type = manifest["task_type"]
    if task_type not in TASK_TYPES:
        c.fail(f"task_type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
    labels = c.type(manifest["labels"], "labels", list)
    n_labels = len(manifest["config"]["id2label"])  # checked by _check_classifier_config
    sizes = (0,) if task_type == QA else (n_labels,) if task_type == TOKEN else (0, n_labels)
    if len(labels) not in sizes or not all(isinstance(n, str) for n in labels):
        c.fail(f"labels must list the head's {' or '.join(map(str, sizes))} label names (strings) for a "
               f"{task_type} model, got {labels!r}")
    if task_type == QA and n_labels != 2:
        c.fail(f"a question-answering head has 2 outputs (start, end); config.id2label lists {n_labels}")
    c.type(manifest["metric"], "metric", str, type(None))
    return task_type


def _check_precision(c: _Check, manifest: dict, allowed: tuple[str, ...]) -> str:
    """The artifact's ``precision`` (absent: fp32), one of ``allowed`` (those its layout can store)."""
    from sparsekit.compiler import PRECISIONS

    precision = manifest.get("precision", "fp32")
    if precision not in PRECISIONS:
        c.fail(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision not in allowed:
        c.fail(f"precision {precision} is not supported for this artifact layout (it stores {', '.join(allowed)})")
    return precision


def _check_format_meta(c: _Check, meta: Any, field: str) -> dict:
    """A matrix format's meta: a dict of JSON scalars and integer lists (the formats check the meaning)."""
    c.type(meta, field, dict)
    for key, value in meta.items():
        if key in ("kind", "value_dtype", "index_dtype", "method"):
            c.type(value, f"{field}.{key}", str)
        elif isinstance(value, list):
            for x in value:
                c.int(x, f"{field}.{key}", 0, 1 << 31)
        else:
            c.type(value, f"{field}.{key}", int, float, bool, type(None))
    return meta


def _check_module_manifest(c: _Check, manifest: dict, required_files: tuple[str, ...]) -> None:
    """Schema-check a structure-preserving manifest (layout ``modules``, see export/module_artifact.py).

    The config must be one transformers accepts for a supported family that is not compacted, with bounded
    sizes; ``modules`` lists each prunable module once (name, layer, matrix type, format meta); the shapes are
    checked against the model the config describes when loading (on the meta device, before allocating).
    """
    from sparsekit.architectures import COMPACTION_RULES, architecture_for
    from sparsekit.errors import ModelError

    extra = set(manifest) - set(MODULE_FIELDS) - set(OPTIONAL_FIELDS)
    missing = [f for f in MODULE_FIELDS if f not in manifest]
    if extra or missing:
        c.fail(f"unexpected fields {sorted(extra)}" if extra else f"missing fields {missing}")
    cfg = c.type(manifest["config"], "config", dict)
    config = _module_config(c, cfg)
    try:
        arch = architecture_for(config)
    except ModelError as exc:
        c.fail(f"config: {exc}")
    if arch.compacts or manifest["architecture"] != arch.name:
        c.fail(f"architecture must be {arch.name!r} (a family that is not compacted) for model_type "
               f"{cfg.get('model_type')!r}, got {manifest['architecture']!r}")
    hidden = c.int(getattr(config, "hidden_size", None), "config hidden size", 1, MAX_DIM)
    c.int(getattr(config, "num_attention_heads", None), "config attention heads", 1, hidden)
    n_layers = c.int(getattr(config, "num_hidden_layers", None), "config layers", 0, MAX_LAYERS)
    ffn = getattr(config, "intermediate_size", getattr(config, "hidden_dim", None))
    c.int(ffn, "config FFN width", 0, MAX_FFN_RATIO * hidden)
    vocab = c.int(getattr(config, "vocab_size", None), "config.vocab_size", 1, MAX_VOCAB)
    positions = c.int(getattr(config, "max_position_embeddings", None), "config.max_position_embeddings", 1, MAX_DIM)
    _check_classifier_config(c, cfg)
    _check_task(c, manifest)
    _check_precision(c, manifest, ("fp32",))
    modules = c.type(manifest["modules"], "modules", list)
    names = set()
    for i, entry in enumerate(modules):
        c.type(entry, f"modules[{i}]", dict)
        if set(entry) != MODULE_ENTRY_FIELDS:
            c.fail(f"modules[{i}] must have exactly {', '.join(sorted(MODULE_ENTRY_FIELDS))}")
        name = c.type(entry["name"], f"modules[{i}].name", str)
        if name in names or arch.match(name) != (entry["layer"], entry["matrix"]):
            c.fail(f"modules[{i}]: {name!r} is listed twice or is not the {arch.name} module of layer "
                   f"{entry['layer']!r} {entry['matrix']!r}")
        names.add(name)
        c.int(entry["layer"], f"modules[{i}].layer", 0, max(0, n_layers - 1))
        _check_format_meta(c, entry["format"], f"modules[{i}].format")
    skipped = c.type(manifest["skipped_rules"], "skipped_rules", dict)
    if set(skipped) != set(arch.skipped_rules()) or not all(isinstance(v, str) for v in skipped.values()):
        c.fail(f"skipped_rules must give a reason for each of {', '.join(sorted(arch.skipped_rules()))} "
               f"(the rules of {', '.join(COMPACTION_RULES)} not applied to {arch.name})")
    _check_common(c, manifest, required_files, vocab, positions)


def _module_config(c: _Check, cfg: dict):
    """The transformers config of a structure-preserving manifest; refused when transformers refuses it."""
    from transformers import AutoConfig

    from sparsekit.models import SUPPORTED_MODEL_TYPES

    if cfg.get("model_type") not in SUPPORTED_MODEL_TYPES:
        c.fail(f"config.model_type must be one of {', '.join(SUPPORTED_MODEL_TYPES)}, got {cfg.get('model_type')!r}")
    try:
        from huggingface_hub.errors import StrictDataclassError  # transformers 5 type-checks config fields
    except ImportError:  # older huggingface_hub: no such checks
        StrictDataclassError = TypeError
    fields = {k: v for k, v in cfg.items() if k != "model_type"}
    try:
        return AutoConfig.for_model(cfg["model_type"], **fields)
    except (TypeError, ValueError, KeyError, AttributeError, StrictDataclassError) as exc:
        c.fail(f"transformers refuses the config ({exc})")


def _check_common(c: _Check, manifest: dict, required_files: tuple[str, ...], vocab: int, positions: int) -> None:
    """The fields every layout shares: recipe, compaction summary, dates, checksums and the tokenizer record."""
    recipe = c.type(manifest["recipe"], "recipe", dict, type(None))
    if recipe is not None:
        run_config = c.type(recipe.get("config", {}), "recipe.config", dict)
        if "max_length" in run_config:
            c.int(run_config["max_length"], "recipe.config.max_length", 1, positions)
        data = c.type(recipe.get("data", {}), "recipe.data", dict)
        c.type(data.get("task"), "recipe.data.task", str, type(None))
    data = c.type(manifest.get("data"), "data", dict, type(None))
    if data is not None:  # after _check_classifier_config: id2label is checked
        _check_data(c, data, len(manifest["config"]["id2label"]), manifest.get("task_type", "sequence-classification"))
    for key in ("compaction", "lossy", "export", "versions"):
        c.type(manifest[key], key, dict)
    for key, value in manifest["compaction"].items():
        c.number(value, f"compaction.{key}", 0, math.inf)
    c.type(manifest["created"], "created", str)

    checksums = c.type(manifest["checksums"], "checksums", dict)
    for name, digest in checksums.items():
        check_name(name, "checksums entry")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            c.fail(f"checksums[{name!r}] is not a sha256 hex digest")
    tokenizer = c.type(manifest["tokenizer"], "tokenizer", dict)
    if set(tokenizer) != {"files", "length"}:
        c.fail("tokenizer must have exactly files, length")
    files = c.type(tokenizer["files"], "tokenizer.files", list)
    if not files or len(set(map(str, files))) != len(files):
        c.fail("tokenizer.files must list the tokenizer's files, each once")
    c.int(tokenizer["length"], "tokenizer.length", 1, vocab)
    for name in [*required_files, *files]:
        if not isinstance(name, str) or name not in checksums:
            c.fail(f"checksums has no entry for {name!r}; every file the loader reads must be covered")


def matrix_shapes(hidden: int, qk: int, v: int, ffn: int) -> dict[str, tuple[int, int]]:
    """``[out, in]`` of each of a layer's six matrices, given the summed Q·K and V widths and the FFN width."""
    return {"query": (qk, hidden), "key": (qk, hidden), "value": (v, hidden), "attn_out": (hidden, v),
            "ffn_in": (ffn, hidden), "ffn_out": (hidden, ffn)}


def check_tensors(manifest: dict, header: dict[str, tuple[str, tuple[int, ...]]],
                  base: dict[str, tuple[int, ...]], where: str) -> None:
    """Cross-check the weights file's header (see safeio.safetensors_header) against the manifest.

    ``base``: the expected shape of every non-encoder tensor (embeddings, pooler, classifier), by name.
    Every non-format tensor must be float32 of its expected shape and each bias as wide as the manifest's
    widths, so the model built from the manifest allocates nothing the file does not hold.
    """
    expected = dict(base)
    hidden = manifest["config"]["hidden_size"]
    for i, layer in enumerate(manifest["layers"]):
        shapes = matrix_shapes(hidden, sum(layer["qk_widths"]), sum(layer["v_widths"]), layer["ffn"])
        for name in MATRIX_TYPES:
            expected[f"layers.{i}.{name}.bias"] = (shapes[name][0],)
        for norm in ("attn_norm", "ffn_norm"):
            expected[f"layers.{i}.{norm}.weight"] = expected[f"layers.{i}.{norm}.bias"] = (hidden,)
    for name, shape in expected.items():
        if name not in header:
            raise ArtifactError(f"{where} has no tensor {name!r}; the artifact is incomplete")
        dtype, stored = header[name]
        if dtype != "F32" or stored != tuple(shape):
            raise ArtifactError(f"{where}: tensor {name!r} is {dtype} {list(stored)}; the manifest requires F32 "
                                f"{list(shape)}")


def check_values(tensors: dict, names, where: str) -> None:
    """Every tensor in ``names`` is float32 and finite (embeddings, LayerNorms, biases, pooler, head)."""
    import torch

    for name in names:
        t = tensors[name]
        if t.dtype != torch.float32:
            raise ArtifactError(f"{where}: tensor {name!r} is {t.dtype}, expected float32")
        if not bool(torch.isfinite(t).all()):
            raise ArtifactError(f"{where}: tensor {name!r} has {int((~torch.isfinite(t)).sum())} NaN/inf value(s)")


#: The ``data`` keys every task type records (sparsekit/tasks/: token classification and QA add their own).
TASK_DATA_FIELDS = ("kind", "task_type", "task", "name", "label_names", "metrics", "metric", "files", "dataset")


def _check_data(c: _Check, data: dict, n_labels: int, task_type: str) -> None:
    """The manifest's ``data`` (what the run trained on): its task type is the manifest's; for a sequence
    classifier exactly sparsekit.data.source.describe's fields (``task_type`` optional: older artifacts lack
    it); for the other task types the shared TASK_DATA_FIELDS, typed, plus the type's own keys. Label names
    must fit the head."""
    from sparsekit.data.metrics import METRICS

    if data.get("task_type", "sequence-classification") != task_type:
        c.fail(f"data.task_type {data.get('task_type')!r} is not the artifact's task_type {task_type!r}")
    if task_type != "sequence-classification":
        return _check_task_data(c, data, n_labels, task_type)
    if set(data) - {"task_type"} != set(DATA_FIELDS):
        c.fail(f"data must have exactly {', '.join(DATA_FIELDS)} (and task_type)")
    if data["kind"] not in ("glue", "files", "dataset"):
        c.fail(f"data.kind must be glue, files or dataset, got {data['kind']!r}")
    c.type(data["task"], "data.task", str, type(None))
    c.type(data["name"], "data.name", str)
    texts = c.type(data["text_columns"], "data.text_columns", list)
    if not 1 <= len(texts) <= 2 or not all(isinstance(t, str) for t in texts):
        c.fail("data.text_columns must list one or two column names")
    c.type(data["label_column"], "data.label_column", str)
    if data["label_format"] not in ("index", "name", "score"):
        c.fail(f"data.label_format must be index, name or score, got {data['label_format']!r}")
    regression = c.type(data["is_regression"], "data.is_regression", bool)
    names = c.type(data["label_names"], "data.label_names", list, type(None))
    if (names is None) != regression or (names is not None and (
            len(names) != n_labels or not all(isinstance(n, str) for n in names))):
        c.fail(f"data.label_names must be null for regression, else {n_labels} names (the head's labels)")
    metrics = c.type(data["metrics"], "data.metrics", list)
    if not metrics or any(m not in METRICS for m in metrics) or data["metric"] not in metrics:
        c.fail(f"data.metrics must name metrics of {', '.join(METRICS)}, data.metric one of them")
    c.type(data["files"], "data.files", dict, type(None))
    c.type(data["dataset"], "data.dataset", dict, type(None))


def _check_task_data(c: _Check, data: dict, n_labels: int, task_type: str) -> None:
    """``data`` of a token-classification or QA artifact (see _check_data)."""
    missing = [f for f in TASK_DATA_FIELDS if f not in data]
    if missing:
        c.fail(f"data lacks {', '.join(missing)}")
    if data["kind"] not in ("builtin", "files", "dataset"):
        c.fail(f"data.kind must be builtin, files or dataset, got {data['kind']!r}")
    c.type(data["task"], "data.task", str, type(None))
    c.type(data["name"], "data.name", str)
    names = c.type(data["label_names"], "data.label_names", list, type(None))
    if task_type == "question-answering" and names is not None:
        c.fail("data.label_names must be null for a question-answering model")
    if task_type == "token-classification" and (names is None or len(names) != n_labels
                                                or not all(isinstance(n, str) for n in names)):
        c.fail(f"data.label_names must list the head's {n_labels} tag names")
    metrics = c.type(data["metrics"], "data.metrics", list)
    if not metrics or not all(isinstance(m, str) for m in metrics) or data["metric"] not in metrics:
        c.fail("data.metrics must list metric names, data.metric one of them")
    c.type(data["files"], "data.files", dict, type(None))
    c.type(data["dataset"], "data.dataset", dict, type(None))
