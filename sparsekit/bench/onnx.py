"""ONNX Runtime as an optional baseline: the dense model exported once to ONNX, run by onnxruntime on the CPU.

onnxruntime is not a dependency of sparsekit. When it cannot be imported the variant is recorded as
``unavailable`` with the reason; when the export or a session fails, as ``failed`` with the error.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from sparsekit.bench.variants import Inputs, Variant, describe_error
from sparsekit.data.inputs import random_inputs
from sparsekit.export.heads import head_output, per_token, task_type_of

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def unavailable_reason() -> str | None:
    """Why ONNX Runtime cannot be used here, or None if it imports."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime is not installed (optional: pip install onnxruntime onnx; {describe_error(exc)})"
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        return f"onnx is not installed; torch.onnx.export needs it (pip install onnx; {describe_error(exc)})"
    return None


class _LogitsOnly(nn.Module):
    """``(input_ids, attention_mask, token_type_ids) -> outputs`` (export/heads.head_output: logits, or QA's start
    and end logits stacked): the plain-tensor signature ONNX export needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.task_type = task_type_of(model)

    def forward(self, input_ids, attention_mask, token_type_ids):
        return head_output(self.model(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids), self.task_type)


class OrtModel:
    """The dense model in ONNX (exported once into a temporary directory, dynamic batch and sequence axes) and
    one session per thread count. ``close()`` removes the file."""

    def __init__(self, model: nn.Module, vocab_size: int) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="sparsekit-bench-onnx-")
        self.path = Path(self._tmp.name) / "model.onnx"
        example = random_inputs(1, 8, vocab_size)
        per_token_axes = {0: "batch", 1: "seq"} if per_token(task_type_of(model)) else {0: "batch"}
        axes = {name: {0: "batch", 1: "seq"} for name in INPUT_NAMES} | {"logits": per_token_axes}
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(_LogitsOnly(model).eval(), tuple(example[n] for n in INPUT_NAMES),
                                  str(self.path), input_names=list(INPUT_NAMES), output_names=["logits"],
                                  dynamic_axes=axes, opset_version=17, dynamo=False)
        except BaseException:
            self.close()
            raise
        self.export_s = time.perf_counter() - start
        self._sessions: dict[int, object] = {}

    def close(self) -> None:
        """Drop the sessions and remove the exported file."""
        self._sessions = {}
        self._tmp.cleanup()

    def session(self, threads: int):
        """An ``InferenceSession`` with ``intra_op_num_threads = threads`` (cached)."""
        import onnxruntime as ort

        if threads not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # No busy-waiting between runs: a spinning ORT pool would steal the cores torch's variants are
            # timed on next (measured: 100x slower torch runs at 2 threads on 2 cores).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[threads] = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        return self._sessions[threads]

    def variant(self, threads: int) -> Variant:
        """The Variant running this model with ``threads`` intra-op threads."""
        import onnxruntime as ort

        try:
            sess = self.session(threads)
        except Exception as exc:  # a session that cannot be created is a result, not a crash
            return Variant("onnxruntime", "failed", reason=describe_error(exc))

        def run(inputs: Inputs) -> torch.Tensor:
            feeds = {name: inputs[name].numpy() for name in INPUT_NAMES}
            return torch.from_numpy(sess.run(["logits"], feeds)[0])

        return Variant("onnxruntime", run=run, info={"onnxruntime": ort.__version__, "opset": 17,
                                                     "threads": threads, "export_s": self.export_s})


def build(model: nn.Module, vocab_size: int) -> tuple[OrtModel | None, Variant | None]:
    """Export ``model`` for ONNX Runtime: ``(OrtModel, None)``, or ``(None, Variant)`` saying why it cannot run.
    Call the OrtModel's ``close()`` when done."""
    reason = unavailable_reason()
    if reason is not None:
        return None, Variant("onnxruntime", "unavailable", reason=reason)
    try:
        return OrtModel(model, vocab_size), None
    except Exception as exc:  # exporter limitations differ between torch versions: record them
        return None, Variant("onnxruntime", "failed", reason=f"ONNX export failed: {describe_error(exc)}")
