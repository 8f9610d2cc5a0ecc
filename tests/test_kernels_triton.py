"""Triton BSR and CSR kernels (sparsekit.kernels.triton_bsr / triton_csr) and their GPU layouts under the Triton
interpreter, on CPU.

The interpreter needs ``TRITON_INTERPRET=1`` before ``triton`` is first imported (Triton builds its own library
functions at import). So when this process did not start that way, every case here is skipped and
``test_cases_under_interpreter`` runs this file again in a subprocess with the variable set: nothing leaks into
other test modules, and ``TRITON_INTERPRET=1 pytest tests/test_kernels_triton.py`` runs the cases directly.
Compared with float64 dense references on odd shapes, token counts 1 / 3 / 17, empty rows, empty and fully dense
matrices, N-D inputs; bad inputs must give clear errors; opcheck validates the op registrations. The compiled
(GPU) runs of the same checks are in test_kernels_cuda.py.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

from sparsekit.formats import BSRFormat, CSRFormat  # noqa: E402
from sparsekit.kernels import reference, triton_runtime  # noqa: E402
from sparsekit.kernels.gpu_bsr_layout import GpuBSRWeight, pack_gpu_bsr  # noqa: E402
from sparsekit.kernels.gpu_csr_layout import GpuCSRWeight, pack_gpu_csr  # noqa: E402
from sparsekit.kernels.triton_bsr import triton_bsr_linear  # noqa: E402
from sparsekit.kernels.triton_csr import triton_csr_linear  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
#: Whether this process imported triton under the interpreter (else the cases run in a subprocess).
READY = triton_runtime.interpreter_ready()
DRIVER = "test_cases_under_interpreter"


@pytest.fixture(autouse=True)
def interpret(request, monkeypatch):
    if not READY and request.node.name != DRIVER:
        pytest.skip(f"runs in a subprocess with TRITON_INTERPRET=1 ({DRIVER})")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def test_cases_under_interpreter():
    if READY:
        pytest.skip("this process runs the cases itself")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__], env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
                         text=True, timeout=600)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0 and " passed" in summary, run.stdout[-6000:] + run.stderr[-3000:]


def block_sparse(out: int, inp: int, block: tuple[int, int], keep: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    br, bc = block
    tiles = torch.rand(-(-out // br), -(-inp // bc), generator=g) < keep
    mask = tiles.repeat_interleave(br, 0).repeat_interleave(bc, 1)[:out, :inp]
    return torch.randn(out, inp, generator=g) * mask


def unstructured(out: int, inp: int, density: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) * (torch.rand(out, inp, generator=g) < density)
    if out > 3:
        w[1::4] = 0.0  # empty rows
    return w


def assert_close_to_ref(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Kernel vs float64 reference: at most 2x the error of the same product done naively in x's dtype
    (flash-attention's bar), plus a small absolute floor for near-zero references."""
    ref = x.double() @ w.double().T + (0 if bias is None else bias.double())
    assert y.dtype == x.dtype and y.shape == ref.shape
    naive = (x @ w.to(x.dtype).T).double() + (0 if bias is None else bias.to(x.dtype).double())
    err = (y.double() - ref).abs().max().item()
    naive_err = (naive - ref).abs().max().item()
    floor = 1e-5 if x.dtype == torch.float32 else 1e-2
    assert err <= 2 * naive_err + floor * max(1.0, ref.abs().max().item()), (err, naive_err)


# =============================================================================================
# BSR
# =============================================================================================
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out,inp,block", [(48, 80, (16, 16)), (40, 96, (32, 16)), (70, 33, (16, 64))])
def test_bsr_matches_dense(dtype, out, inp, block):
    w = block_sparse(out, inp, block, keep=0.5).to(dtype)
    packed = pack_gpu_bsr(w, block=block)
    assert packed.dtype == dtype and packed.block == block
    torch.testing.assert_close(packed.to_dense(), w.float())
    for m in (1, 3, 17):
        x = torch.randn(m, inp).to(dtype)
        bias = torch.randn(out) if m != 3 else None
        assert_close_to_ref(triton_bsr_linear(x, packed, bias), x, w.float(), bias)


@pytest.mark.parametrize("case", ["empty-rows", "empty-matrix", "dense", "no-rows", "no-tokens", "nd-input"])
def test_bsr_edge_cases(case):
    out, inp, block = 48, 80, (16, 16)
    w = block_sparse(out, inp, block, keep=0.6)
    if case == "empty-rows":
        w[16:32] = 0.0
    elif case == "empty-matrix":
        w.zero_()
    elif case == "dense":
        w = torch.randn(out, inp)
    elif case == "no-rows":
        w = torch.zeros(0, inp)
    packed = pack_gpu_bsr(w, block=block)
    if case == "empty-matrix":
        assert packed.nblocks == 0
    if case == "dense":
        assert packed.block_density == 1.0
    bias = torch.randn(w.shape[0])
    shape = {"no-tokens": (0, inp), "nd-input": (2, 5, inp)}.get(case, (7, inp))
    x = torch.randn(*shape)
    y = triton_bsr_linear(x, packed, bias)
    assert y.shape == (*shape[:-1], w.shape[0])
    if y.numel():
        ref = x.reshape(-1, inp).double() @ w.double().T + bias.double()
        torch.testing.assert_close(y.reshape(-1, w.shape[0]).double(), ref, rtol=1e-5, atol=1e-5)


def test_bsr_from_bsr_format_and_reference():
    w = block_sparse(64, 96, (32, 32), keep=0.5)
    fmt = BSRFormat.pack(w, block=(32, 32))
    packed = pack_gpu_bsr(fmt)
    assert packed.nblocks == fmt.nblocks
    x, bias = torch.randn(5, 96), torch.randn(64)
    ref = reference.triton_bsr_linear(x, packed.row_ptr, packed.col_idx, packed.blocks_t, packed.row_order, 96,
                                      64, bias)
    torch.testing.assert_close(ref, x @ w.T + bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(triton_bsr_linear(x, packed, bias), ref, rtol=1e-5, atol=1e-5)
    bf16 = pack_gpu_bsr(fmt, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.blocks_t.shape == (fmt.nblocks, 32, 32)
    # Block rows come longest first.
    lengths = (packed.row_ptr[1:] - packed.row_ptr[:-1])[packed.row_order.long()]
    assert bool((lengths[1:] <= lengths[:-1]).all())


def test_bsr_bad_inputs(monkeypatch):
    w = block_sparse(48, 80, (16, 16), keep=0.5)
    packed = pack_gpu_bsr(w, block=(16, 16))
    with pytest.raises(ValueError, match="block must be two of"):
        pack_gpu_bsr(w, block=(8, 8))
    with pytest.raises(ValueError, match="is not two of"):
        pack_gpu_bsr(BSRFormat.pack(w, block=(4, 4)))
    with pytest.raises(ValueError, match="2-D floating-point"):
        pack_gpu_bsr(torch.ones(5, dtype=torch.float32))
    with pytest.raises(TypeError, match="dtype must be one of"):
        pack_gpu_bsr(w, dtype=torch.float64)
    with pytest.raises(TypeError, match="expects a dense weight tensor or a BSRFormat"):
        pack_gpu_bsr([[1.0]])
    with pytest.raises(ValueError, match="NaN or inf"):
        pack_gpu_bsr(torch.full((16, 16), float("nan")))
    with pytest.raises(TypeError, match="x is torch.bfloat16 but the packed weight is torch.float32"):
        triton_bsr_linear(torch.randn(3, 80, dtype=torch.bfloat16), packed)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 80\]"):
        triton_bsr_linear(torch.randn(3, 81), packed)
    with pytest.raises(ValueError, match=r"bias must have shape \[48\]"):
        triton_bsr_linear(torch.randn(3, 80), packed, torch.randn(47))
    with pytest.raises(TypeError, match="GpuBSRWeight"):
        triton_bsr_linear(torch.randn(3, 80), w)
    bad = packed.col_idx.clone()
    bad[0] = 99
    with pytest.raises(ValueError, match="col_idx spans"):
        GpuBSRWeight(shape=packed.shape, block=packed.block, row_ptr=packed.row_ptr, col_idx=bad,
                     blocks_t=packed.blocks_t, row_order=packed.row_order)
    with pytest.raises(ValueError, match="not a permutation"):
        GpuBSRWeight(shape=packed.shape, block=packed.block, row_ptr=packed.row_ptr,
                     col_idx=packed.col_idx, blocks_t=packed.blocks_t,
                     row_order=torch.zeros_like(packed.row_order))
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        triton_bsr_linear(torch.randn(3, 80), packed)


# =============================================================================================
# CSR
# =============================================================================================
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out,inp,density", [(48, 80, 0.2), (40, 96, 0.05), (37, 33, 1.0)])
def test_csr_matches_dense(dtype, out, inp, density):
    w = unstructured(out, inp, density).to(dtype)
    packed = pack_gpu_csr(w)
    assert packed.dtype == dtype and packed.col_idx.dtype == torch.int16
    for m in (1, 3, 17):
        x = torch.randn(m, inp).to(dtype)
        bias = torch.randn(out) if m != 3 else None
        assert_close_to_ref(triton_csr_linear(x, packed, bias), x, w.float(), bias)


@pytest.mark.parametrize("case", ["empty-matrix", "no-rows", "no-tokens", "nd-input", "int32-index", "csr-format"])
def test_csr_edge_cases(case):
    out, inp = 24, 40
    w = unstructured(out, inp, 0.2)
    if case == "empty-matrix":
        w.zero_()
    elif case == "no-rows":
        w = torch.zeros(0, inp)
    elif case == "int32-index":
        inp = 40000  # beyond int16 column indices
        w = torch.zeros(out, inp)
        w[torch.arange(out), torch.randint(0, inp, (out,))] = torch.randn(out)
        w[:, -1] = 1.0
    packed = pack_gpu_csr(CSRFormat.pack(w) if case == "csr-format" else w)
    assert packed.col_idx.dtype == (torch.int32 if case == "int32-index" else torch.int16)
    bias = torch.randn(w.shape[0])
    shape = {"no-tokens": (0, inp), "nd-input": (2, 3, inp)}.get(case, (5, inp))
    x = torch.randn(*shape)
    y = triton_csr_linear(x, packed, bias)
    assert y.shape == (*shape[:-1], w.shape[0])
    if y.numel():
        ref = x.reshape(-1, inp).double() @ w.double().T + bias.double()
        torch.testing.assert_close(y.reshape(-1, w.shape[0]).double(), ref, rtol=1e-5, atol=1e-5)
        ref_fn = reference.triton_csr_linear(x, packed.row_ptr, packed.col_idx, packed.values, packed.row_order,
                                             inp, w.shape[0], bias)
        torch.testing.assert_close(ref_fn.double(), ref.reshape(ref_fn.shape), rtol=1e-5, atol=1e-5)


def test_csr_bad_inputs(monkeypatch):
    w = unstructured(24, 40, 0.2)
    packed = pack_gpu_csr(w)
    with pytest.raises(TypeError, match="x is torch.float16 but the packed weight is torch.float32"):
        triton_csr_linear(torch.randn(2, 40, dtype=torch.float16), packed)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 40\]"):
        triton_csr_linear(torch.randn(2, 41), packed)
    with pytest.raises(TypeError, match="bias must be torch.float32 or float32"):
        triton_csr_linear(torch.randn(2, 40), packed, torch.randn(24, dtype=torch.float64))
    with pytest.raises(TypeError, match="GpuCSRWeight"):
        triton_csr_linear(torch.randn(2, 40), w)
    with pytest.raises(TypeError, match="must be torch.int16"):
        GpuCSRWeight(shape=packed.shape, row_ptr=packed.row_ptr, col_idx=packed.col_idx.int(),
                     values=packed.values, row_order=packed.row_order)
    bad = packed.row_ptr.clone()
    bad[-1] += 1
    with pytest.raises(ValueError, match="row_ptr must start at 0"):
        GpuCSRWeight(shape=packed.shape, row_ptr=bad, col_idx=packed.col_idx, values=packed.values,
                     row_order=packed.row_order)
    with pytest.raises(TypeError, match="dtype must be one of"):
        pack_gpu_csr(w, dtype=torch.int8)
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        triton_csr_linear(torch.randn(2, 40), packed)


# =============================================================================================
# Op registration
# =============================================================================================
def test_opcheck_and_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    w = block_sparse(32, 48, (16, 16), keep=0.5)
    b = pack_gpu_bsr(w, block=(16, 16))
    c = pack_gpu_csr(w)
    x, bias = torch.randn(3, 48), torch.randn(32)
    bsr_args = (x, b.row_ptr, b.col_idx, b.blocks_t, b.row_order, 48, 32, bias)
    csr_args = (x, c.row_ptr, c.col_idx, c.values, c.row_order, 48, 32, bias)
    tests = ("test_schema", "test_faketensor")
    torch.library.opcheck(torch.ops.sparsekit.triton_bsr_linear.default, bsr_args, test_utils=tests)
    torch.library.opcheck(torch.ops.sparsekit.triton_csr_linear.default, csr_args, test_utils=tests)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fx = torch.empty(2, 7, 48)
        assert torch.ops.sparsekit.triton_bsr_linear(fx, *bsr_args[1:]).shape == (2, 7, 32)
        with pytest.raises(ValueError, match="in_features"):
            torch.ops.sparsekit.triton_csr_linear(torch.empty(2, 47), *csr_args[1:])


def test_interpreter_mode_does_not_leak(monkeypatch):
    w = block_sparse(16, 16, (16, 16), keep=1.0)
    triton_bsr_linear(torch.randn(1, 16), pack_gpu_bsr(w, block=(16, 16)))
    assert os.environ["TRITON_INTERPRET"] == "1"
    monkeypatch.delenv("TRITON_INTERPRET")
    with triton_runtime._interpret_env(True):
        assert triton_runtime.interpreting()
    assert "TRITON_INTERPRET" not in os.environ
