"""`sparsekit info`: the doctor report (table and JSON), consistent with the kernels module, and new backends
or a CUDA extension module showing up without changes to info.py."""
import importlib.machinery
import json
import sys
import types

import torch
from typer.testing import CliRunner

from sparsekit import info
from sparsekit.backends import Backend, registry
from sparsekit.cli import app
from sparsekit.kernels import cpu

runner = CliRunner()


def test_info_table():
    result = runner.invoke(app, ["info"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in ("C++ CPU kernels", "Fused CPU runtime", "CUDA extension", "Triton", "C++ compiler", "ONNX Runtime",
                 "Backends of sparsekit.compile", "Machine and versions", "hypervisor steal"):
        assert text in result.output, text
    for backend in registry.default_backends():
        assert backend.name in result.output
    assert "no instruction-set limit set" in result.output or "limited by" in result.output


def test_info_names_an_instruction_set_limit(monkeypatch):
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.setenv("COLUMNS", "250")  # rich's table width: the row on one line
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "limited by MKL_ENABLE_INSTRUCTIONS=AVX2" in result.output
    data = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert data["machine"]["isa_limits"] == {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_info_json_matches_the_kernels_module():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"machine", "versions", "threads", "cpu_kernels", "cuda", "triton", "compilers", "onnxruntime",
            "backends"} <= set(data)
    assert data["versions"]["torch"] == torch.__version__
    assert data["threads"]["torch_threads"] == torch.get_num_threads()
    steal = data["threads"]["steal_since_boot"]
    assert steal is None or 0 <= steal <= 1
    k = data["cpu_kernels"]
    assert k["built"] == cpu.available()
    if k["built"]:
        assert k["isa"] == cpu.isa() and k["isa"] in k["supported_isas"] and k["parallel_threads"] >= 1
        assert isinstance(k["openmp_parallel"], bool) or data["threads"]["cores"] == 1
    else:
        assert k["reason"] == cpu.unavailable_reason()
    assert data["cuda"]["available"] == torch.cuda.is_available()
    fused = data["fused_runtime"]
    assert fused["usable"] == cpu.available()
    assert {"bert", "deberta", "modernbert"} == set(fused["layouts"]) and "deberta-v2" in fused["layouts"]["deberta"]
    names = [b["name"] for b in data["backends"]]
    assert names == [b.name for b in registry.default_backends()]
    dense = data["backends"][0]
    assert dense["name"] == "dense" and all(check["usable"] for check in dense["layers"].values())
    torch_sparse = next(b for b in data["backends"] if b["name"] == "torch-sparse")
    assert torch_sparse["layers"]["cpu float32, 3072x768 at 10% density"] == {"usable": True, "reasons": []}
    if not torch.cuda.is_available():
        assert len(dense["layers"]) == 1 and data["triton"]["reason"] is not None or not data["triton"]["importable"]


def test_kernels_forced_isa_is_reported(monkeypatch):
    if not cpu.available():
        return
    isa = cpu.supported_isas()[-1]  # scalar: every CPU has it
    monkeypatch.setenv(cpu.ISA_ENV, isa)
    k = info.cpu_kernels_info()
    assert k["isa"] == isa and k["forced_isa"] == isa


class _FutureBackend(Backend):
    name = "future-gpu"
    description = "a backend added after info.py was written"

    def extra_reasons(self, spec):
        return [] if spec.device.type == "cuda" else [f"CUDA only (layer is on {spec.device.type})"]


def test_new_backends_and_a_cuda_extension_show_up(monkeypatch):
    default = registry.default_backends
    monkeypatch.setattr(registry, "default_backends", lambda: default() + [_FutureBackend()])
    ext = types.ModuleType("sparsekit.kernels.cuda")
    ext.__spec__ = importlib.machinery.ModuleSpec("sparsekit.kernels.cuda", None)
    ext.available = lambda: False
    ext.unavailable_reason = lambda: "no CUDA device (test)"
    monkeypatch.setitem(sys.modules, "sparsekit.kernels.cuda", ext)
    data = info.collect()
    future = next(b for b in data["backends"] if b["name"] == "future-gpu")
    cpu_check = future["layers"]["cpu float32, 3072x768 at 10% density"]
    assert cpu_check == {"usable": False, "reasons": ["CUDA only (layer is on cpu)"]}
    assert data["cuda"]["extension"] == {"module": "sparsekit.kernels.cuda", "present": True, "available": False,
                                         "reason": "no CUDA device (test)"}
    rendered = "".join(str(row) for row in info._component_rows(data))
    assert "no CUDA device (test)" in rendered


def test_int8_kernels_are_reported(monkeypatch):
    from sparsekit.kernels import cpu_int8

    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    k = json.loads(result.stdout)["int8_kernels"]
    assert k["built"] == cpu_int8.available()
    if not k["built"]:
        assert k["reason"] == cpu_int8.unavailable_reason()
        return
    assert k["isa"] == cpu_int8.int8_isa() == k["supported_isas"][0]
    assert "scalar" in k["supported_isas"] and set(k["supported_isas"]) <= set(k["compiled_isas"])
    assert k["preferred_weight_bits"] == (7 if k["isa"] in ("avx2", "avx512bw") else 8)
    monkeypatch.setenv(cpu_int8.INT8_ISA_ENV, "scalar")
    assert info.int8_kernels_info()["isa"] == "scalar" and info.int8_kernels_info()["forced_isa"] == "scalar"
    assert info.int8_kernels_info()["preferred_weight_bits"] == 8
    text = runner.invoke(app, ["info"])
    assert "C++ INT8 CPU kernels" in text.output and "forced by SPARSEKIT_INT8_ISA" in text.output
