"""Seeded fuzzing of artifact loading: hostile variants of a good artifact, loaded in a sandboxed worker.

``make_cases`` writes mutated copies of a pristine artifact (the named hostile cases of issue 12, then
``n_random`` seeded random mutations: truncation, byte flips, manifest field replacements and deletions,
tensor value / dtype changes, each either left unsigned (an accident) or re-signed like a forger would).
``run_cases`` loads every copy in one worker process (restarted after a failure) that runs under
``RLIMIT_AS`` and a per-case timeout, and classifies each outcome:

- ``artifact_error``: load or verify refused it with one clean ArtifactError;
- ``loaded_equal``: it loaded, verify passed, and it answers the probe texts like the pristine artifact;
- ``verify_mismatch``: it loaded, and verify reported the mismatch (detected);
- ``forged_wrong_model``: a re-signed change of tensor values that verify's samples do not exercise: the
  forger case of the threat model (a wrong model, harmless to the host);
- ``silent_wrong``: anything else that answers differently without being noticed;
- ``hang``, ``crash`` (any other exception, or the worker dying), ``memory`` (MemoryError / failed allocation).

Used by tests/test_artifact_fuzz.py (a fast subset) and benchmarks/fuzz_artifacts.py (the long run).
Run as a script, this module is the worker: case paths on stdin, one JSON result per line on stdout.
"""
from __future__ import annotations

import json
import os
import random
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUTCOMES = ("artifact_error", "loaded_equal", "verify_mismatch", "forged_wrong_model", "silent_wrong", "hang",
            "crash", "memory")
FAILURES = ("silent_wrong", "hang", "crash", "memory")
PROBE = ["the film is great", "a boring story", "not good , not bad", "yes ! the best movie of the year",
         "i hate it", "xyz qqq 0123 ?", ""]
REPO = Path(__file__).resolve().parent.parent


# --- building and re-signing -------------------------------------------------------------------------------

def build_pristine(workdir: Path) -> Path:
    """A small exported artifact (the tiny test BERT, CSR matrices) at ``workdir / 'pristine'``."""
    import torch
    from conftest import make_tiny_model_dir, random_sparse_classifier
    from sparsekit.export.artifact import export
    from sparsekit.models import load_tokenizer

    model_dir = make_tiny_model_dir(workdir / "tiny-bert")
    model = random_sparse_classifier(model_dir, 0.3)
    with torch.no_grad():  # weights large enough that every lie shows in the logits; ragged head widths
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(25)
        attention = model.bert.encoder.layer[0].attention.self
        attention.query.weight[:3] = attention.key.weight[:3] = 0  # head 0 keeps 5 Q·K dims
        attention.value.weight[8:10] = 0  # head 1 keeps 6 V dims
    export((model, load_tokenizer(model_dir)), workdir / "pristine", formats="csr",
           samples=["the film is great", "a boring story"])
    return workdir / "pristine"


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path: Path, manifest: dict, sign: bool) -> None:
    from artifact_forge import sign_manifest

    if sign:
        sign_manifest(path, manifest)
    else:
        (path / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(edit, sign: bool = True):
    def mutate(path: Path, rng: random.Random) -> None:
        manifest = _manifest(path)
        edit(manifest)
        _write_manifest(path, manifest, sign)
    return mutate


def _list_file(name: str, make=None, digest: str | None = None):
    """Create ``name`` with ``make(path)`` (or not at all) and list it in the checksums, re-signed."""
    def mutate(path: Path, rng: random.Random) -> None:
        if make is not None:
            make(path / name)
        manifest = _manifest(path)
        manifest["checksums"][name] = digest or "0" * 64
        _write_manifest(path, manifest, True)
    return mutate


def _replace_file(name: str, make, sign: bool = True):
    def mutate(path: Path, rng: random.Random) -> None:
        (path / name).rename(path / "_weights")  # the old content stays readable to ``make`` as _weights
        make(path / name)
        (path / "_weights").unlink()
        if sign:
            from artifact_forge import resign

            resign(path, [name] if (path / name).is_file() and not (path / name).is_symlink() else [])
    return mutate


def _edit_tensors(edit):
    def mutate(path: Path, rng: random.Random) -> None:
        from artifact_forge import rewrite_tensors

        rewrite_tensors(path, edit)
    return mutate


def _set_header(edit):
    """Rewrite the safetensors header JSON of the weights file (data unchanged), re-signed."""
    def mutate(path: Path, rng: random.Random) -> None:
        from artifact_forge import resign

        data = (path / "model.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        raw = edit(header)
        raw = raw if isinstance(raw, bytes) else json.dumps(header).encode()
        (path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
        resign(path, ["model.safetensors"])
    return mutate


def _set(obj_path: str, value):
    """A manifest edit setting the dotted ``obj_path`` (list indices as numbers) to ``value``."""
    keys = [int(k) if k.isdigit() else k for k in obj_path.split(".")]

    def edit(manifest):
        target = manifest
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return edit


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def named_cases() -> list[tuple[str, object]]:
    """The deterministic hostile cases: path tricks, size bombs, malformed and lying manifests, bad tensors."""
    nan = float("nan")
    cases = [
        # path tricks and files that never end
        ("checksum /dev/zero", _list_file("/dev/zero")),
        ("checksum ../../etc/passwd", _list_file("../../etc/passwd")),
        ("checksum ..", _list_file("..")),
        ("checksum sub/dir", _list_file("sub/x")),
        ("checksum NUL in name", _list_file("a\0b")),
        ("symlink to /etc/passwd", _list_file("passwd", lambda p: os.symlink("/etc/passwd", p))),
        ("symlink to /dev/zero", _list_file("zero", lambda p: os.symlink("/dev/zero", p))),
        ("fifo listed", _list_file("fifo", lambda p: os.mkfifo(p))),
        ("directory listed", _list_file("dir", lambda p: p.mkdir())),
        ("weights -> /dev/zero", _replace_file("model.safetensors", lambda p: os.symlink("/dev/zero", p))),
        ("tokenizer.json fifo", _replace_file("tokenizer.json", lambda p: os.mkfifo(p))),
        ("manifest fifo", _replace_file("manifest.json", lambda p: os.mkfifo(p), sign=False)),
        ("tokenizer files ../x", _edit_manifest(_set("tokenizer.files", ["../tokenizer.json"]))),
        # size bombs
        ("ffn 1e7", _edit_manifest(_set("layers.0.ffn", 10 ** 7))),
        ("vocab_size 1e7", _edit_manifest(_set("config.vocab_size", 10 ** 7))),
        ("vocab_size 1e15", _edit_manifest(_set("config.vocab_size", 10 ** 15))),
        ("max_position 1e9", _edit_manifest(_set("config.max_position_embeddings", 10 ** 9))),
        ("intermediate 1e12", _edit_manifest(_set("config.intermediate_size", 10 ** 12))),
        ("num layers 1e6", _edit_manifest(_set("config.num_hidden_layers", 10 ** 6))),
        ("qk_widths 1e6 heads", _edit_manifest(_set("layers.0.qk_widths", [1] * 10 ** 6))),
        ("header shape 1e9", _set_header(lambda h: h["classifier.bias"].__setitem__("shape", [10 ** 9]))),
        ("header length 2^63", _replace_file("model.safetensors", lambda p: p.write_bytes(
            struct.pack("<Q", 1 << 63) + p.with_name("_weights").read_bytes()[8:]))),
        ("header deep json", _set_header(lambda h: b"{\"a\":" + _deep(100_000) + b"}")),
        ("manifest deep json", lambda p, r: (p / "manifest.json").write_bytes(_deep(100_000))),
        ("manifest 20 MB", lambda p, r: (p / "manifest.json").write_bytes(b" " * (20 << 20) + b"{}")),
        ("manifest not utf-8", lambda p, r: (p / "manifest.json").write_bytes(b"\xff\xfe{}")),
        ("manifest huge int", lambda p, r: (p / "manifest.json").write_text('{"format": ' + "9" * 5000 + "}")),
        # malformed fields
        ("manifest is a list", lambda p, r: (p / "manifest.json").write_text("[]")),
        ("version true", _edit_manifest(_set("version", True))),
        ("version 1.0", _edit_manifest(_set("version", 1.0))),
        ("heads -12", _edit_manifest(_set("config.num_attention_heads", -12))),
        ("heads 0", _edit_manifest(_set("config.num_attention_heads", 0))),
        ("heads 5", _edit_manifest(_set("config.num_attention_heads", 5))),
        ("width '8'", _edit_manifest(_set("layers.0.qk_widths.0", "8"))),
        ("width 7.9", _edit_manifest(_set("layers.0.v_widths.0", 7.9))),
        ("width true", _edit_manifest(_set("layers.0.v_widths.0", True))),
        ("ffn null", _edit_manifest(_set("layers.1.ffn", None))),
        ("layers {}", _edit_manifest(_set("layers", {}))),
        ("matrices missing", _edit_manifest(lambda m: m["layers"][0]["matrices"].pop("key"))),
        ("format kind 5", _edit_manifest(_set("layers.0.matrices.query.kind", 5))),
        ("format nnz -1", _edit_manifest(_set("layers.0.matrices.query.nnz", -1))),
        ("hidden_act bogus", _edit_manifest(_set("config.hidden_act", "bogus"))),
        ("layer_norm_eps NaN", _edit_manifest(_set("config.layer_norm_eps", nan))),
        ("layer_norm_eps -1", _edit_manifest(_set("config.layer_norm_eps", -1))),
        ("model_type gpt2", _edit_manifest(_set("config.model_type", "gpt2"))),
        ("auto_map", _edit_manifest(_set("config.auto_map", {"AutoModel": "evil.Model"}))),
        ("id2label 3 labels", _edit_manifest(_set("config.id2label", {"0": "a", "1": "b", "2": "c"}))),
        ("recipe list", _edit_manifest(_set("recipe", []))),
        ("recipe max_length 1e9", _edit_manifest(_set("recipe", {"config": {"max_length": 10 ** 9}}))),
        ("compaction string", _edit_manifest(_set("compaction.fraction_after", "1"))),
        ("checksums deleted", _edit_manifest(lambda m: m.pop("checksums"))),
        ("digest deleted", _edit_manifest(lambda m: m.pop("manifest_sha256"), sign=False)),
        ("unsigned edit", _edit_manifest(_set("config.hidden_act", "relu"), sign=False)),
        ("tokenizer length 5", _edit_manifest(_set("tokenizer.length", 5))),
        # lying but re-signed: load, and verify must notice
        ("lie: hidden_act relu", _edit_manifest(_set("config.hidden_act", "relu"))),
        ("lie: layer_norm_eps 0.5", _edit_manifest(_set("config.layer_norm_eps", 0.5))),
        ("lie: heads 2", _edit_manifest(_set("config.num_attention_heads", 2))),
        ("lie: id2label swapped", _edit_manifest(lambda m: m["config"].update(
            id2label={"0": "LABEL_1", "1": "LABEL_0"}, label2id={"LABEL_1": 0, "LABEL_0": 1}))),
        ("lie: widths permuted", _edit_manifest(lambda m: m["layers"][0].update(
            qk_widths=m["layers"][0]["qk_widths"][::-1], v_widths=m["layers"][0]["v_widths"][::-1]))),
        # tensors (re-signed)
        ("tensor NaN LayerNorm", _edit_tensors(lambda t: t["embeddings.LayerNorm.weight"].__setitem__(0, nan))),
        ("tensor inf bias", _edit_tensors(lambda t: t["layers.1.ffn_in.bias"].__setitem__(0, float("inf")))),
        ("tensor NaN values", _edit_tensors(lambda t: t["layers.0.key.values"].__setitem__(0, nan))),
        ("tensor int bias", _edit_tensors(lambda t: t.__setitem__("classifier.bias", t["classifier.bias"].int()))),
        ("tensor f16 embeddings", _edit_tensors(lambda t: t.__setitem__(
            "embeddings.word_embeddings.weight", t["embeddings.word_embeddings.weight"].half()))),
        ("tensor dropped", _edit_tensors(lambda t: t.pop("layers.1.attn_norm.bias"))),
        ("tensor bias shorter", _edit_tensors(lambda t: t.__setitem__("layers.0.query.bias",
                                                                       t["layers.0.query.bias"][:-1]))),
        ("col_idx out of range", _edit_tensors(lambda t: t["layers.0.query.col_idx"].__setitem__(0, 10_000))),
        ("row_ptr decreasing", _edit_tensors(lambda t: t["layers.0.value.row_ptr"].__setitem__(1, -5))),
        # tokenizer and samples
        ("tokenizer.json deleted", lambda p, r: (p / "tokenizer.json").unlink()),
        ("tokenizer.json {} signed", _replace_file("tokenizer.json", lambda p: p.write_text("{}"))),
        ("tokenizer.json garbage signed", _replace_file("tokenizer.json", lambda p: p.write_bytes(os.urandom(999)))),
        ("tokenizer_config auto_map signed", _replace_file("tokenizer_config.json", lambda p: p.write_text(
            json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tok", None]}, "tokenizer_class": "EvilTokenizer"})))),
        ("samples garbage signed", _replace_file("samples.json", lambda p: p.write_text('{"texts": 5}'))),
        ("samples NaN logits signed", _replace_file("samples.json", lambda p: p.write_text(
            '{"texts": ["a"], "logits": [[NaN, 0]], "labels": ["LABEL_0"]}'))),
        ("report.json deleted", lambda p, r: (p / "report.json").unlink()),
    ]
    return cases


_HOSTILE = [None, True, False, -1, 0, 1, 2, 7.9, 10 ** 7, 10 ** 15, -(10 ** 9), float("nan"), float("inf"), "31",
            "", "x" * 1000, [], {}, [1, 2, 3], {"a": 1}]


def _leaves(value, prefix=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*prefix, i))
    yield prefix


def _random_manifest(rng: random.Random, sign: bool, delete: bool):
    def mutate(path: Path, _rng: random.Random) -> None:
        manifest = _manifest(path)
        paths = [p for p in _leaves(manifest) if p and p[0] != "manifest_sha256"]
        target = rng.choice(paths)
        parent = manifest
        for k in target[:-1]:
            parent = parent[k]
        if delete and isinstance(parent, dict):
            parent.pop(target[-1])
        else:  # a value that differs from the old one in JSON (writing the same value would be no mutation)
            old = json.dumps(parent[target[-1]])
            parent[target[-1]] = rng.choice([v for v in _HOSTILE if json.dumps(v) != old])
        _write_manifest(path, manifest, sign)
    return mutate


def _random_bytes(rng: random.Random, truncate: bool, sign: bool):
    def mutate(path: Path, _rng: random.Random) -> None:
        names = sorted(n for n in os.listdir(path) if (path / n).is_file())
        name = rng.choice(names)
        data = bytearray((path / name).read_bytes())
        if truncate:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
        (path / name).write_bytes(bytes(data))
        if sign and name != "manifest.json":
            from artifact_forge import resign

            resign(path, [name])
    return mutate


def _random_tensor(rng: random.Random):
    def mutate(path: Path, _rng: random.Random) -> None:
        import torch

        def edit(tensors):
            name = rng.choice(sorted(tensors))
            t = tensors[name]
            choice = rng.randrange(4)
            if choice == 0 and t.numel():
                values = [float("nan"), float("inf"), 1e30, 0.5] if t.is_floating_point() else \
                    [-1, torch.iinfo(t.dtype).max, torch.iinfo(t.dtype).min, 1]
                t.view(-1)[rng.randrange(t.numel())] = rng.choice(values + [0, -1])
            elif choice == 1:
                tensors[name] = t.to(rng.choice([torch.float16, torch.float64, torch.int32, torch.int64,
                                                 torch.int16, torch.bool]))
            elif choice == 2:
                tensors[name] = t.reshape(-1)[: max(0, t.numel() - 1)]
            else:
                tensors.pop(name)
        from artifact_forge import rewrite_tensors

        rewrite_tensors(path, edit)
    return mutate


def random_case(rng: random.Random) -> tuple[str, object, bool]:
    """(description, mutation, re-signed) of one seeded random mutation."""
    kind = rng.choice(["truncate", "flip", "manifest", "manifest-delete", "tensor"])
    sign = rng.random() < 0.5
    if kind in ("truncate", "flip"):
        return f"{kind} {'signed' if sign else 'unsigned'}", _random_bytes(rng, kind == "truncate", sign), sign
    if kind == "tensor":
        return "tensor signed", _random_tensor(rng), True
    sign = rng.random() < 0.8
    return (f"{kind} {'signed' if sign else 'unsigned'}", _random_manifest(rng, sign, kind == "manifest-delete"),
            sign)


def make_cases(pristine: Path, workdir: Path, seed: int, n_random: int, named: bool = True) -> list[dict]:
    """Write mutated copies of ``pristine`` under ``workdir``; returns ``[{"id", "case", "path", "signed"}]``."""
    rng = random.Random(seed)
    plan = [(name, fn, "unsigned" not in name) for name, fn in named_cases()] if named else []
    plan += [random_case(rng) for _ in range(n_random)]
    cases = []
    for i, (name, mutate, signed) in enumerate(plan):
        target = workdir / f"case{i:04d}"
        shutil.copytree(pristine, target, symlinks=True)
        mutate(target, rng)
        cases.append({"id": i, "case": name, "path": str(target), "signed": signed})
    return cases


# --- running ------------------------------------------------------------------------------------------------

class _Worker:
    """The worker process: sparsekit from this checkout, address space capped, fed one case at a time."""

    def __init__(self, pristine: Path, memory_bytes: int) -> None:
        def limits():
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: chatty libraries can never block the worker
        self.proc = subprocess.Popen([sys.executable, __file__, str(pristine)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env, preexec_fn=limits,
                                     text=True, bufsize=1)
        if (self.readline(300) or "").strip() != "ready":  # sent once the pristine baseline is computed
            raise RuntimeError(f"the fuzz worker did not start: {self.stop()}")

    def readline(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else None

    def stop(self) -> str:
        """Kill the worker; the tail of its stderr."""
        self.proc.kill()
        self.proc.wait()
        self.stderr.seek(0)
        tail = self.stderr.read()[-2000:].decode(errors="replace")
        self.stderr.close()
        return tail


def run_cases(pristine: Path, cases: list[dict], timeout_s: float = 60, memory_bytes: int = 3 << 30) -> list[dict]:
    """Each case's outcome (see the module docstring) with its detail; the worker is replaced after a failure."""
    results, worker = [], None
    for case in cases:
        worker = worker or _Worker(pristine, memory_bytes)
        started = time.perf_counter()
        worker.proc.stdin.write(case["path"] + "\n")
        worker.proc.stdin.flush()
        line = worker.readline(timeout_s)
        if line:
            result = json.loads(line)
        else:
            stderr = worker.stop()
            code = worker.proc.returncode
            worker = None
            if line is None:
                result = {"outcome": "hang", "detail": f"no answer in {timeout_s:.0f} s"}
            else:
                memory = "MemoryError" in stderr or "allocate" in stderr
                result = {"outcome": "memory" if memory else "crash",
                          "detail": f"worker died (exit {code}): {stderr[-300:]}"}
        if result["outcome"] == "silent_wrong" and case["signed"] and result.get("values_only"):
            result["outcome"] = "forged_wrong_model"
        results.append({**case, **result, "seconds": round(time.perf_counter() - started, 3)})
    if worker is not None:
        worker.proc.stdin.close()
        worker.stop()
    return results


def _classify(exc: BaseException) -> dict:
    from sparsekit.export.errors import ArtifactError

    if isinstance(exc, ArtifactError):
        return {"outcome": "artifact_error", "detail": str(exc)[:300]}
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "allocate" in str(exc)):
        return {"outcome": "memory", "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return {"outcome": "crash", "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}


def _answers(model) -> tuple[list, list]:
    from sparsekit.export.predict import Predictor

    predictions = Predictor(model).predict(PROBE)
    return [p.label for p in predictions], [p.scores for p in predictions]


def _same_values(path: Path, pristine: Path) -> bool:
    """True when only tensor values differ from the pristine artifact (the manifest and other files equal)."""
    files = {n for n in os.listdir(path)} | {n for n in os.listdir(pristine)}
    return all(n == "model.safetensors" or ((path / n).is_file() and (pristine / n).is_file()
                                             and (path / n).read_bytes() == (pristine / n).read_bytes())
               for n in files if n != "manifest.json") and \
        {k: v for k, v in json.loads((path / "manifest.json").read_text()).items() if k not in
         ("checksums", "manifest_sha256")} == \
        {k: v for k, v in json.loads((pristine / "manifest.json").read_text()).items() if k not in
         ("checksums", "manifest_sha256")}


def _one(path: Path, pristine: Path, baseline) -> dict:
    from sparsekit.export.artifact import load, verify

    try:
        model = load(path)
        answers = _answers(model)
        check = verify(path)
    except BaseException as exc:  # noqa: B036  the worker reports every outcome, SystemExit included
        return _classify(exc)
    if not check["ok"]:
        return {"outcome": "verify_mismatch", "detail": f"max |Δlogit| {check['max_abs_error']:.3g}, "
                                                        f"{check['label_mismatches']} label(s)"}
    import torch

    equal = answers[0] == baseline[0] and torch.allclose(torch.tensor(answers[1]), torch.tensor(baseline[1]),
                                                        atol=1e-5)
    if equal:
        return {"outcome": "loaded_equal", "detail": ""}
    try:
        values_only = _same_values(path, pristine)
    except (OSError, ValueError):
        values_only = False
    return {"outcome": "silent_wrong", "detail": "answers differ from the pristine artifact", "values_only":
            values_only}


def worker_main(pristine: str) -> None:
    """Read case paths from stdin, print one JSON result per line (see run_cases)."""
    import torch

    from sparsekit.export.artifact import load

    results = os.fdopen(os.dup(1), "w")  # the protocol's own channel; whatever libraries print goes to stderr
    os.dup2(2, 1)
    torch.set_num_threads(1)
    baseline = _answers(load(pristine))
    print("ready", file=results, flush=True)
    for line in sys.stdin:
        print(json.dumps(_one(Path(line.strip()), Path(pristine), baseline)), file=results, flush=True)


if __name__ == "__main__":
    worker_main(sys.argv[1])
