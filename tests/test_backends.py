"""sparsekit.backends without timing: ``choose`` on given timings, and the reasons the Backend base class derives
from declared capabilities."""
import pytest
import torch

from sparsekit.backends import Backend, CpuCsrBackend, LayerSpec, PackedLinear, TorchSparseBackend, choose
from sparsekit.backends.registry import default_backends

CPU = torch.device("cpu")


def test_choose_fastest_above_threshold():
    assert choose({"dense": 2.0, "csr-cpu": 1.0, "bsr-cpu": 1.5}, {}, 1.03) == ("csr-cpu", 2.0,
                                                                              "fastest of 3 measured")


def test_choose_below_threshold_keeps_dense():
    best, speedup, why = choose({"dense": 1.0, "csr-cpu": 0.99}, {}, 1.03)
    assert (best, speedup) == ("dense", 1.0)
    assert why == "csr-cpu only 1.01x, below the 1.03x threshold"


def test_choose_dense_fallback():
    assert choose({"dense": 1.0, "csr-cpu": 1.5}, {}, 1.03) == ("dense", 1.0, "no sparse backend was faster")
    assert choose({"dense": 1.0}, {"csr-cpu": ["density 0.90 > 0.5: dense BLAS is faster there"]}, 1.03) == (
        "dense", 1.0, "no sparse backend can run it")
    with pytest.raises(ValueError, match="dense"):
        choose({"csr-cpu": 1.0}, {}, 1.03)


def test_choose_forced_wins_even_when_slower():
    assert choose({"dense": 1.0, "bsr-cpu": 2.0}, {}, 1.03, force="bsr-cpu") == ("bsr-cpu", 0.5, "forced (bsr-cpu)")


def test_choose_forced_but_cannot_run_stays_dense():
    rejected = {"bsr-cpu": ["CPU only (layer is on cuda)", "build failed: boom"]}
    assert choose({"dense": 1.0}, rejected, 1.03, force="bsr-cpu") == (
        "dense", 1.0, "bsr-cpu cannot run it: CPU only (layer is on cuda); build failed: boom")


class _Declared(Backend):
    name = "declared"
    devices = ("cpu",)
    dtypes = (torch.float32,)
    max_density = 0.4
    max_density_why = "dense wins"

    def __init__(self, missing=None, extra=()):
        self.missing, self.extra = missing, list(extra)

    def requirement(self):
        return self.missing

    def extra_reasons(self, spec):
        return self.extra


def test_generic_reasons_from_declared_capabilities():
    ok = LayerSpec(8, 8, 0.1, CPU, torch.float32)
    assert _Declared().not_supported_reasons(ok) == []
    bad = LayerSpec(8, 8, 0.9, torch.device("meta"), torch.float64)
    assert _Declared("extension not built", ["odd shape"]).not_supported_reasons(bad) == [
        "CPU only (layer is on meta)", "extension not built", "dtype torch.float64 not supported (torch.float32)",
        "density 0.90 > 0.4: dense wins", "odd shape"]


def test_undeclared_capabilities_accept_everything():
    class Anything(Backend):
        name = "anything"

    assert Anything().not_supported_reasons(LayerSpec(1, 1, 1.0, torch.device("meta"), torch.float64)) == []


def test_cuda_only_backend_without_cuda_device():
    class OnGpu(Backend):
        name = "on-gpu"
        devices = ("cuda",)
        min_capability = (8, 0)

    reasons = OnGpu().not_supported_reasons(LayerSpec(8, 8, 0.1, CPU, torch.float32))
    if torch.cuda.is_available():
        assert reasons == ["GPU only (layer is on cpu; move the model with .cuda())"]
    else:
        assert len(reasons) == 1 and reasons[0].startswith("no CUDA device (")


def test_shipped_backends_declare_their_cut_offs():
    fp32_dense = LayerSpec(64, 64, 0.9, CPU, torch.float32)
    assert "density 0.90 > 0.5: never faster than dense there" in TorchSparseBackend().not_supported_reasons(
        fp32_dense)
    assert "density 0.90 > 0.5: dense BLAS is faster there" in CpuCsrBackend().not_supported_reasons(fp32_dense)
    assert default_backends()[0].name == "dense"
    assert default_backends()[0].not_supported_reasons(LayerSpec(3, 5, 1.0, CPU, torch.float64)) == []


def test_packed_linear_keeps_a_dense_weight_as_a_buffer():
    weight, bias = torch.randn(3, 5), torch.randn(3)
    module = PackedLinear(weight, bias, torch.nn.functional.linear, torch.float32)
    assert (module.out_features, module.in_features) == (3, 5)
    assert set(dict(module.named_buffers())) == {"packed", "bias"}
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(module(x), x @ weight.T + bias)
