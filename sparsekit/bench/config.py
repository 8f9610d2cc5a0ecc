"""What a benchmark run measures: ``BenchConfig`` (the model, the sweeps, the timing budget) and its checks."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

#: Every variant a model-level benchmark can time, in the order they are measured and shown.
#: ``dense`` (PyTorch eager on the original-size masked model) is the reference of every speedup.
VARIANTS = ("dense", "torch-compile", "torch-sparse", "onnxruntime", "artifact-eager", "sparsekit", "sparsekit-int8")

VARIANT_DESCRIPTIONS = {
    "dense": "PyTorch eager, original-size model, masked weights as dense zeros (the reference)",
    "torch-compile": "torch.compile (inductor) of the dense model (opt-in: --torch-compile)",
    "torch-sparse": "torch.sparse CSR matmul forced on every encoder Linear of the masked model",
    "onnxruntime": "ONNX Runtime on the dense model (optional: used when onnxruntime is importable)",
    "artifact-eager": "the artifact as sparsekit.load returns it: compacted shapes, dense F.linear, not compiled",
    "sparsekit": "sparsekit.compile: fastest measured backend per encoder Linear (for an artifact: on the "
                 "compacted model)",
    "sparsekit-int8": "sparsekit.compile(precision='int8'): the int8 1x4-block kernel joins the candidates "
                      "(opt-in: --int8; int8 numerics, so max_abs_diff is the quantisation error)",
}


def _positive_ints(name: str, values) -> list[int]:
    values = list(values)
    if not values:
        raise ValueError(f"{name} needs at least one value")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise ValueError(f"{name} values must be positive integers, got {bad}")
    return sorted(set(values))


@dataclass
class BenchConfig:
    """A benchmark run. The CLI ``sparsekit bench`` builds exactly this.

    model: an artifact directory, a pruning run directory, a Hugging Face checkpoint directory, ``minilm``
        or ``random:<shape>`` (``bert-base``, ``minilm-shape``, ``tiny``).
    sparsity: fractions of encoder weights removed by random unstructured masks (one model per value);
        required for random / checkpoint models, refused for runs and artifacts (they carry their own masks).
    batch, seq, threads: the sweeps; every combination is one config (tokens = batch x seq).
        ``threads`` defaults to the current ``torch.get_num_threads()``.
    warmup, repeats, min_seconds: per measurement, untimed calls, then at least ``repeats`` timed calls
        and at least ``min_seconds`` of them (so fast cases get many runs).
    rounds: every variant is measured ``rounds`` times, interleaved with the others; the round with the
        lowest median is reported (the least disturbed by other load on the machine).
    compile_repeats: timed calls per backend and layer inside ``sparsekit.compile``.
    torch_compile: also time ``torch.compile`` of the dense model (slow to compile on CPU, so opt-in).
    int8: also time ``sparsekit.compile(precision="int8")`` (int8 numerics, so opt-in).
    layers: layer-level mode: per-layer times of every backend (sparsekit.compile's measurements) instead
        of whole-model latency.
    task_type: the head of a random or checkpoint model (export/heads.py; None: a checkpoint's own head,
        sequence classification for random models); artifacts and runs have their own. The inputs are shaped
        like the task (QA: question + context windows, bench/inputs.py).
    """

    model: str
    output_dir: str | Path
    sparsity: list[float] | None = None
    batch: list[int] = field(default_factory=lambda: [1, 8])
    seq: list[int] = field(default_factory=lambda: [128])
    threads: list[int] | None = None
    warmup: int = 3
    repeats: int = 20
    min_seconds: float = 1.0
    rounds: int = 2
    compile_repeats: int = 15
    torch_compile: bool = False
    int8: bool = False
    layers: bool = False
    seed: int = 0
    overwrite: bool = False
    task_type: str | None = None

    def validated(self) -> "BenchConfig":
        """A copy with sorted, de-duplicated sweeps and defaults filled in; ValueError says what is wrong."""
        if not str(self.model).strip():
            raise ValueError("MODEL is empty; pass an artifact dir, a run dir, a checkpoint dir or random:<shape>")
        sparsity = None
        if self.sparsity is not None:
            sparsity = sorted(set(float(s) for s in self.sparsity))
            if not sparsity:
                raise ValueError("--sparsity needs at least one value")
            bad = [s for s in sparsity if not 0.0 <= s < 1.0]
            if bad:
                raise ValueError(f"--sparsity values are fractions of weights removed, in [0, 1), got {bad}")
        threads = _positive_ints("--threads", self.threads if self.threads is not None else [torch.get_num_threads()])
        for name, value, low in (("--warmup", self.warmup, 0), ("--repeats", self.repeats, 1),
                                 ("--rounds", self.rounds, 1), ("--compile-repeats", self.compile_repeats, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not self.min_seconds >= 0:
            raise ValueError(f"--min-seconds must be >= 0, got {self.min_seconds!r}")
        if self.task_type is not None:
            from sparsekit.export.heads import check_task_type

            check_task_type(self.task_type)
        return BenchConfig(**{**asdict(self), "sparsity": sparsity, "batch": _positive_ints("--batch", self.batch),
                              "seq": _positive_ints("--seq", self.seq), "threads": threads,
                              "output_dir": Path(self.output_dir)})

    def to_json(self) -> dict:
        """The settings as JSON-ready values (the ``settings`` block of a result file)."""
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data
