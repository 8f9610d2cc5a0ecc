"""GPU backends: CUDA source compile check (nvcc), the backends' reasons on CPU, and the full GPU correctness
suite (compiled Triton BSR / CSR, the CUDA CSR kernel, 2:4, ``sparsekit.compile`` choosing a GPU backend),
which skips with the reason where no CUDA device is present.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sparsekit.backends import (
    CudaCsrBackend,
    LayerSpec,
    Semi24Backend,
    TritonBsrBackend,
    TritonCsrBackend,
    default_backends,
    is_2_4_sparse,
)
from sparsekit.kernels import cuda as cuda_kernels

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "spmm_cuda"


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return None


HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")
needs_ext = pytest.mark.skipif(not cuda_kernels.available(), reason=f"{cuda_kernels.unavailable_reason()}")
needs_sm80 = pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() < (8, 0),
                                reason="needs compute capability >= 8.0")


# =============================================================================================
# Without a GPU
# =============================================================================================
@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (PATH, CUDA_HOME, /usr/local/cuda)")
def test_cuda_kernel_compiles_with_nvcc(tmp_path):
    """The kernel source (no torch dependency) compiles for Hopper without warnings or register spills to the
    local-memory stack beyond a few bytes."""
    run = subprocess.run([_nvcc(), "-std=c++17", "-arch=sm_90", "-Xptxas", "-v", "-c", str(CUDA_DIR / "spmm_cuda.cu"),
                          "-o", str(tmp_path / "spmm_cuda.o")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "warning" not in run.stderr.lower(), run.stderr[-4000:]
    assert (tmp_path / "spmm_cuda.o").stat().st_size > 0


def test_binding_and_sources_are_separate():
    """Torch-dependent code only in the binding; the .cu / .h compile standalone (checked above)."""
    for name in ("spmm_cuda.cu", "spmm_cuda.h"):
        includes = [line for line in (CUDA_DIR / name).read_text().splitlines() if line.startswith("#include")]
        assert not any(lib in line for line in includes for lib in ("torch", "ATen", "c10", "pybind11")), includes
    assert "PYBIND11_MODULE" in (CUDA_DIR / "spmm_cuda_binding.cpp").read_text()


@pytest.mark.skipif(HAS_CUDA, reason="checks the reasons given where there is no CUDA device")
def test_reasons_without_cuda_device():
    spec = LayerSpec(3072, 768, 0.05, torch.device("cpu"), torch.bfloat16)
    for backend in [b for b in default_backends() if b.devices == ("cuda",)]:
        reasons = backend.not_supported_reasons(spec)
        assert any("no CUDA device" in r for r in reasons), (backend.name, reasons)


def test_reasons_dtype_shape_density():
    dense_fp32 = LayerSpec(48, 80, 0.9, torch.device("cpu"), torch.float32)
    semi = " ".join(Semi24Backend().not_supported_reasons(dense_fp32))
    assert "dtype torch.float32" in semi and "not a multiple of 32x64" in semi and "cannot be 2:4" in semi
    assert any("density 0.90 > 0.5" in r for r in TritonBsrBackend(32).not_supported_reasons(dense_fp32))
    assert any("density 0.90 > 0.3" in r for r in TritonCsrBackend().not_supported_reasons(dense_fp32))
    fp64 = LayerSpec(64, 64, 0.1, torch.device("cpu"), torch.float64)
    assert any("dtype torch.float64" in r for r in CudaCsrBackend().not_supported_reasons(fp64))
    if not cuda_kernels.available():
        assert any("CUDA kernel not built" in r for r in CudaCsrBackend().not_supported_reasons(fp64))
    with pytest.raises(ValueError, match="block must be one of"):
        TritonBsrBackend(8)


def test_cuda_extension_lazy_and_op_refuses_cpu():
    if torch.version.cuda is None:
        assert not cuda_kernels.available()
        assert "CPU-only" in cuda_kernels.unavailable_reason()
        assert cuda_kernels.AVAILABLE is False and cuda_kernels.UNAVAILABLE_REASON
    from sparsekit.kernels.gpu_csr_layout import pack_gpu_csr

    w = torch.randn(8, 16) * (torch.rand(8, 16) < 0.3)
    with pytest.raises(ValueError, match="runs on CUDA tensors only"):
        cuda_kernels.cuda_csr_linear(torch.randn(2, 16), pack_gpu_csr(w))


def test_default_backends_include_gpu_and_compile_still_runs_on_cpu(tiny_model_dir):
    from conftest import random_sparse_classifier

    from sparsekit.compiler import compile as sk_compile

    names = [b.name for b in default_backends()]
    assert names[0] == "dense"
    assert {"bsr-triton-32", "csr-triton", "csr-cuda", "semi24-torch"} <= set(names)
    model = random_sparse_classifier(tiny_model_dir, 0.1)
    report = sk_compile(model, tokens=4, repeats=2, warmup=1, verbose=False)
    if not HAS_CUDA:
        for c in report.layers:
            assert "bsr-triton-32" in c.rejected and "no CUDA device" in " ".join(c.rejected["bsr-triton-32"])


def test_is_2_4_sparse():
    w = torch.tensor([[1.0, 0, 2, 0, 0, 0, 3, 4]])
    assert is_2_4_sparse(w)
    assert not is_2_4_sparse(torch.tensor([[1.0, 1, 1, 0]]))


def test_measure_synchronises_only_with_cuda():
    from sparsekit.timing import measure

    out = measure(lambda: torch.ones(4).sum(), warmup=1, repeats=3)
    assert out["runs"] == 3 and out["median"] > 0


# =============================================================================================
# On a GPU
# =============================================================================================
GPU_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def _block_sparse(out, inp, block, keep, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    br, bc = block
    tiles = torch.rand(-(-out // br), -(-inp // bc), generator=g, device="cuda") < keep
    mask = tiles.repeat_interleave(br, 0).repeat_interleave(bc, 1)[:out, :inp]
    return (torch.randn(out, inp, generator=g, device="cuda") * mask).to(dtype)


def _check(y, x, w, bias):
    """Flash-attention's bar: at most 2x the error of the naive same-precision product (+ a small floor)."""
    ref = x.double() @ w.double().T + (0 if bias is None else bias.double())
    naive = (x @ w.to(x.dtype).T).double() + (0 if bias is None else bias.to(x.dtype).double())
    assert y.dtype == x.dtype and y.shape == ref.shape and bool(torch.isfinite(y).all())
    err, naive_err = (y.double() - ref).abs().max().item(), (naive - ref).abs().max().item()
    floor = (3e-4 if x.dtype == torch.float32 else 1e-2) * max(1.0, ref.abs().max().item())  # tf32 may be on
    assert err <= 2 * naive_err + floor, (err, naive_err)


@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("out,inp", [(3072, 768), (768, 3072), (40, 96), (1000, 777)])
@pytest.mark.parametrize("block", [(16, 16), (32, 32), (64, 64), (32, 64)])
def test_gpu_triton_bsr(dtype, out, inp, block):
    from sparsekit.kernels.gpu_bsr_layout import pack_gpu_bsr
    from sparsekit.kernels.triton_bsr import triton_bsr_linear

    if dtype == torch.bfloat16 and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("bfloat16 needs compute capability >= 8.0")
    w = _block_sparse(out, inp, block, 0.2, dtype)
    w[: block[0]] = 0  # an empty block row
    packed = pack_gpu_bsr(w, block=block)
    for m in (1, 17, 128, 1000, 4096):
        x = torch.randn(m, inp, device="cuda", dtype=dtype)
        bias = torch.randn(out, device="cuda") if m % 2 == 0 else None
        _check(triton_bsr_linear(x, packed, bias), x, w.float(), bias)


@needs_cuda
@pytest.mark.parametrize("kernel", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("out,inp,density", [(768, 768, 0.05), (3072, 768, 0.1), (768, 3072, 0.3), (37, 33, 1.0),
                                             (5, 40000, 0.01)])
def test_gpu_csr(kernel, dtype, out, inp, density):
    from sparsekit.kernels.gpu_csr_layout import pack_gpu_csr
    from sparsekit.kernels.triton_csr import triton_csr_linear

    if kernel == "cuda" and not cuda_kernels.available():
        pytest.skip(cuda_kernels.unavailable_reason())
    fn = triton_csr_linear if kernel == "triton" else cuda_kernels.cuda_csr_linear
    g = torch.Generator(device="cuda").manual_seed(0)
    w = (torch.randn(out, inp, device="cuda", generator=g)
         * (torch.rand(out, inp, device="cuda", generator=g) < density)).to(dtype)
    w[1::5] = 0  # empty rows
    packed = pack_gpu_csr(w)
    for m in (1, 2, 3, 4, 5, 8, 16, 17, 64):
        x = torch.randn(m, inp, device="cuda", dtype=dtype)
        bias = torch.randn(out, device="cuda") if m % 2 else None
        _check(fn(x, packed, bias), x, w.float(), bias)
    empty = pack_gpu_csr(torch.zeros(out, inp, device="cuda", dtype=dtype))
    torch.testing.assert_close(fn(torch.randn(3, inp, device="cuda", dtype=dtype), empty),
                               torch.zeros(3, out, device="cuda", dtype=dtype))


@needs_cuda
@needs_ext
def test_gpu_cuda_csr_opcheck():
    from sparsekit.kernels.gpu_csr_layout import pack_gpu_csr

    w = (torch.randn(64, 96, device="cuda") * (torch.rand(64, 96, device="cuda") < 0.2)).half()
    p = pack_gpu_csr(w)
    args = (torch.randn(3, 96, device="cuda", dtype=torch.half), p.row_ptr, p.col_idx, p.values, p.row_order, 96, 64,
            torch.randn(64, device="cuda"))
    torch.library.opcheck(torch.ops.sparsekit.cuda_csr_linear.default, args)


@needs_cuda
def test_gpu_triton_ops_opcheck_and_compile():
    from sparsekit.kernels.gpu_bsr_layout import pack_gpu_bsr
    from sparsekit.kernels.triton_bsr import triton_bsr_linear

    w = _block_sparse(256, 512, (32, 32), 0.3, torch.bfloat16)
    p = pack_gpu_bsr(w, block=(32, 32))
    x, bias = torch.randn(64, 512, device="cuda", dtype=torch.bfloat16), torch.randn(256, device="cuda")
    torch.library.opcheck(torch.ops.sparsekit.triton_bsr_linear.default,
                          (x, p.row_ptr, p.col_idx, p.blocks_t, p.row_order, 512, 256, bias))
    compiled = torch.compile(lambda x: triton_bsr_linear(x, p, bias), fullgraph=True)
    torch.testing.assert_close(compiled(x), triton_bsr_linear(x, p, bias))


@needs_sm80
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_semi24(dtype):
    out, inp = 768, 3072
    w = torch.randn(out, inp, device="cuda", dtype=dtype)
    keep = torch.rand(out, inp // 4, 4, device="cuda").argsort(dim=2) < 2  # 2 of every 4
    w = w * keep.reshape(out, inp).to(dtype)
    assert is_2_4_sparse(w)
    spec = LayerSpec.of(w)
    assert Semi24Backend().not_supported_reasons(spec) == []
    module = Semi24Backend().build(w, torch.randn(out, device="cuda", dtype=dtype))
    x = torch.randn(2, 64, inp, device="cuda", dtype=dtype)
    _check(module(x).reshape(-1, out), x.reshape(-1, inp), w.float(), module.bias)
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        Semi24Backend().build(torch.randn(out, inp, device="cuda", dtype=dtype), None)


@needs_sm80
def test_gpu_compile_picks_bsr_on_block_sparse_ffn():
    """At 95% block sparsity (64x64 blocks), FFN shape, 4096 tokens, bf16: BSR must beat cuBLAS (§6.2 G-1)."""
    from torch import nn

    from sparsekit.compiler import compile as sk_compile

    class Layer(nn.Module):  # one encoder-named Linear, so compile() finds it
        def __init__(self):
            super().__init__()
            self.intermediate = nn.Module()
            self.intermediate.dense = nn.Linear(768, 3072)

    model = nn.Module()
    model.encoder = nn.Module()
    model.encoder.layer = nn.ModuleList([Layer()])
    lin = model.encoder.layer[0].intermediate.dense
    with torch.no_grad():
        lin.weight.copy_(_block_sparse(3072, 768, (64, 64), 0.05, torch.float32))
    model = model.cuda().to(torch.bfloat16)
    x = torch.randn(4096, 768, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ref = lin(x)
    report = sk_compile(model, tokens=4096, repeats=30, verbose=False)
    (choice,) = report.layers
    assert choice.backend.startswith("bsr-triton"), choice
    with torch.no_grad():
        y = model.encoder.layer[0].intermediate.dense(x)
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=2e-2)


@needs_cuda
def test_gpu_compile_tiny_model_matches(tiny_model_dir):
    from conftest import random_sparse_classifier

    from sparsekit.compiler import compile as sk_compile
    from sparsekit.models import load_tokenizer

    model = random_sparse_classifier(tiny_model_dir, 0.1).cuda().half()
    tok = load_tokenizer(tiny_model_dir)
    batch = {k: v.cuda() for k, v in tok(["the film is great", "a boring story"], padding=True,
                                          return_tensors="pt").items()}
    with torch.no_grad():
        ref = model(**batch).logits.float()
    report = sk_compile(model, tokens=16, repeats=5, verbose=False)
    assert all(any(n.startswith(("bsr-triton", "csr-")) for n in c.timings_ms) for c in report.layers)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits.float(), ref, rtol=2e-2, atol=2e-2)
