"""CPU sparse Linear kernels (sparsekit.kernels, C++ extension sparsekit._C_cpu) against dense references.

Every ISA path this CPU supports is tested (avx512 / avx2 / scalar, via SPARSEKIT_ISA), with 1 and 2 threads,
odd token counts, odd shapes, empty rows / matrices, bias or not, N-D inputs, bad inputs, opcheck and
torch.compile. Kernel tests skip (with the reason) when the extension is not built; packing, validation,
the references and the fallback path run regardless.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from sparsekit import kernels
from sparsekit.formats import BSRFormat, CSRFormat, FormatError
from sparsekit.kernels import cpu, reference

needs_ext = pytest.mark.skipif(not kernels.available(), reason=f"C++ kernels not built: {kernels.unavailable_reason()}")
ISAS = [pytest.param(i, marks=pytest.mark.skipif(i not in kernels.supported_isas(), reason=f"CPU lacks {i}"))
        for i in ("avx512", "avx2", "scalar")]


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def sparse_weight(out: int, inp: int, density: float, seed: int = 0, empty_rows: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) * (torch.rand(out, inp, generator=g) < density)
    if empty_rows and out > 2:
        w[1::3] = 0.0  # every third row empty
    return w


def dense_ref(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = x.double() @ w.double().T
    if bias is not None:
        y = y + bias.double()
    return y.float()


def assert_matches(y: torch.Tensor, ref: torch.Tensor, k: int) -> None:
    tol = 1e-5 * math.sqrt(max(k, 1))
    assert y.dtype == torch.float32 and y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=tol, atol=tol)


# =============================================================================================
# Kernels vs the dense reference
# =============================================================================================
CASES = [  # (out, in, density, empty_rows)
    (1, 1, 1.0, False),
    (5, 7, 0.5, False),
    (5, 7, 1.0, False),        # fully dense
    (5, 7, 0.0, False),        # all-zero matrix
    (0, 7, 0.5, False),        # 0-row matrix
    (37, 300, 0.1, True),      # empty rows, several column chunks, partial panels
    (70, 33, 0.3, False),
    (1100, 64, 0.3, True),     # several blocks of rows per thread (Y^T scratch bound)
]


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("out,inp,density,empty_rows", CASES)
def test_csr_matches_dense(isa, out, inp, density, empty_rows, monkeypatch):
    monkeypatch.setenv(kernels.ISA_ENV, isa)
    w = sparse_weight(out, inp, density, empty_rows=empty_rows)
    packed = kernels.pack_cpu_csr(w)
    assert kernels.isa() == isa
    for m in (1, 3, 127, 129):
        x = torch.randn(m, inp)
        bias = torch.randn(out) if m % 2 else None
        assert_matches(kernels.csr_linear(x, packed, bias), dense_ref(x, w, bias), inp)


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("chunk", [1, 7, 64, 256])
def test_csr_chunks(isa, chunk, monkeypatch):
    monkeypatch.setenv(kernels.ISA_ENV, isa)
    w = sparse_weight(45, 261, 0.2, seed=chunk)
    packed = kernels.pack_cpu_csr(w, chunk=chunk)
    assert packed.chunk == chunk
    for m in (2, 17, 200):
        x = torch.randn(m, 261)
        bias = torch.randn(45)
        assert_matches(kernels.csr_linear(x, packed, bias), dense_ref(x, w, bias), 261)


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
def test_csr_bert_ffn_shape(isa, monkeypatch):
    monkeypatch.setenv(kernels.ISA_ENV, isa)
    w = sparse_weight(768, 3072, 0.1, seed=1)
    packed = kernels.pack_cpu_csr(w)
    x = torch.randn(129, 3072)
    bias = torch.randn(768)
    assert_matches(kernels.csr_linear(x, packed, bias), dense_ref(x, w, bias), 3072)
    assert_matches(kernels.csr_linear(x[:1], packed, bias), dense_ref(x[:1], w, bias), 3072)


BLOCKS = [(1, 1), (1, 4), (4, 1), (2, 3), (3, 2), (8, 1), (16, 1), (4, 4), (6, 5), (32, 32)]


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("block", BLOCKS)
def test_bsr_matches_dense(isa, block, monkeypatch):
    monkeypatch.setenv(kernels.ISA_ENV, isa)
    br, bc = block
    out, inp = 53, 71  # not multiples of any block: edge padding everywhere
    g = torch.Generator().manual_seed(br * 100 + bc)
    keep = torch.rand(-(-out // br), -(-inp // bc), generator=g) < 0.3
    mask = keep.repeat_interleave(br, 0).repeat_interleave(bc, 1)[:out, :inp]
    w = torch.randn(out, inp, generator=g) * mask
    fmt = BSRFormat.pack(w, block=block)
    packed = kernels.pack_cpu_bsr(fmt)
    assert packed.group_rows == (4 if br % 4 == 0 else 2 if br % 2 == 0 else 1)
    for m in (1, 3, 127, 129):
        x = torch.randn(m, inp)
        bias = torch.randn(out) if m % 2 else None
        assert_matches(kernels.bsr_linear(x, packed, bias), dense_ref(x, w, bias), inp)


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
def test_bsr_edge_matrices(isa, monkeypatch):
    monkeypatch.setenv(kernels.ISA_ENV, isa)
    for out, inp, density in [(0, 5, 1.0), (9, 6, 0.0), (9, 6, 1.0), (1, 1, 1.0)]:
        w = sparse_weight(out, inp, density)
        packed = kernels.pack_cpu_bsr(w, block=(4, 1))
        for m in (1, 3, 129):
            x = torch.randn(m, inp)
            bias = torch.randn(out)
            assert_matches(kernels.bsr_linear(x, packed, bias), dense_ref(x, w, bias), inp)


@needs_ext
def test_nd_input_and_layouts():
    w = sparse_weight(24, 40, 0.3)
    bias = torch.randn(24)
    x = torch.randn(2, 5, 40)
    y = kernels.csr_linear(x, kernels.pack_cpu_csr(w), bias)
    assert y.shape == (2, 5, 24)
    assert_matches(y, dense_ref(x.reshape(-1, 40), w, bias).reshape(2, 5, 24), 40)
    yb = kernels.bsr_linear(x, kernels.pack_cpu_bsr(w, block=(4, 2)), bias)
    assert_matches(yb, y, 40)
    xt = torch.randn(40, 33).T  # non-contiguous [33, 40]
    assert_matches(kernels.csr_linear(xt, kernels.pack_cpu_csr(w), bias), dense_ref(xt, w, bias), 40)
    xs = torch.randn(33, 80)[:, ::2]  # strided columns
    assert_matches(kernels.csr_linear(xs, kernels.pack_cpu_csr(w), None), dense_ref(xs, w, None), 40)
    empty = kernels.csr_linear(torch.randn(0, 40), kernels.pack_cpu_csr(w), bias)
    assert empty.shape == (0, 24)
    assert kernels.csr_linear(torch.randn(3, 4, 0, 40), kernels.pack_cpu_csr(w)).shape == (3, 4, 0, 24)


@needs_ext
def test_zero_in_features():
    w = torch.zeros(6, 0)
    bias = torch.randn(6)
    y = kernels.csr_linear(torch.randn(4, 0), kernels.pack_cpu_csr(w), bias)
    torch.testing.assert_close(y, bias.expand(4, 6))


@needs_ext
def test_bf16_weights():
    w = sparse_weight(30, 50, 0.3)
    fmt = CSRFormat.pack(w, value_dtype=torch.bfloat16)
    x = torch.randn(20, 50)
    w_bf16 = w.to(torch.bfloat16).float()
    assert_matches(kernels.csr_linear(x, kernels.pack_cpu_csr(fmt)), dense_ref(x, w_bf16, None), 50)
    bfmt = BSRFormat.pack(w, block=(2, 2), value_dtype=torch.bfloat16)
    assert_matches(kernels.bsr_linear(x, kernels.pack_cpu_bsr(bfmt)), dense_ref(x, w_bf16, None), 50)


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
def test_thread_counts_agree(isa, threads, monkeypatch):
    monkeypatch.setenv(kernels.ISA_ENV, isa)
    w = sparse_weight(300, 200, 0.2)
    packed, bpacked = kernels.pack_cpu_csr(w), kernels.pack_cpu_bsr(w, block=(4, 1))
    bias = torch.randn(300)
    for m in (1, 2, 64, 129):
        x = torch.randn(m, 200)
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append((kernels.csr_linear(x, packed, bias), kernels.bsr_linear(x, bpacked, bias)))
        # rows are partitioned between threads, never split: the sums are computed in the same order
        assert torch.equal(results[0][0], results[1][0])
        assert torch.equal(results[0][1], results[1][1])
        assert_matches(results[0][0], dense_ref(x, w, bias), 200)


# =============================================================================================
# Packing, validation, bad inputs
# =============================================================================================
def test_pack_layout_and_reference():
    w = sparse_weight(37, 300, 0.1, empty_rows=True)
    for packed in (kernels.pack_cpu_csr(w), kernels.pack_cpu_csr(w, chunk=7), kernels.pack_cpu_bsr(w, block=(4, 3)),
                   kernels.pack_cpu_bsr(w, block=(2, 1))):
        assert torch.equal(packed.to_dense(), w)
        assert packed.ptr.dtype == torch.int32 and packed.col.dtype == torch.uint8
        assert packed.val.dtype == torch.float32
        x = torch.randn(5, 300)
        b = torch.randn(37)
        args = (x, packed.ptr, packed.col, packed.val, 300, 37)
        ref = (reference.csr_linear(*args, packed.chunk, b) if packed.kind == "csr"
               else reference.bsr_linear(*args, packed.group_rows, packed.chunk, b))
        assert_matches(ref, dense_ref(x, w, b), 300)
    packed = kernels.pack_cpu_csr(w)
    assert packed.nnz == int(w.count_nonzero()) and packed.nbytes == 4 * packed.ptr.numel() + 5 * packed.nent
    assert kernels.choose_chunk(0.5) == 64 and kernels.choose_chunk(0.2) == 128 and kernels.choose_chunk(0.1) == 256


def test_pack_rejects_bad_input():
    w = sparse_weight(8, 10, 0.5)
    with pytest.raises(TypeError, match="CSRFormat or a dense"):
        kernels.pack_cpu_csr("not a weight")
    with pytest.raises(TypeError, match="BSRFormat or a dense"):
        kernels.pack_cpu_bsr(CSRFormat.pack(w))
    with pytest.raises(ValueError, match="chunk must be in"):
        kernels.pack_cpu_csr(w, chunk=300)
    with pytest.raises(TypeError, match="chunk must be an int"):
        kernels.pack_cpu_csr(w, chunk=2.0)
    # a CSRFormat corrupted after construction: re-validated at pack time
    fmt = CSRFormat.pack(w)
    object.__setattr__(fmt, "col_idx", fmt.col_idx.to(torch.int64))
    with pytest.raises(FormatError, match="col_idx has dtype int64"):
        kernels.pack_cpu_csr(fmt)
    fmt = CSRFormat.pack(w)
    bad = fmt.col_idx.clone()
    bad[0] = 10
    object.__setattr__(fmt, "col_idx", bad)
    with pytest.raises(ValueError, match="out of range"):
        kernels.pack_cpu_csr(fmt)
    # packed tensors built by hand are validated too
    good = kernels.pack_cpu_csr(w, chunk=4)
    with pytest.raises(TypeError, match="ptr must be torch.int32"):
        kernels.CpuCSRWeight(shape=(8, 10), chunk=4, ptr=good.ptr.long(), col=good.col, val=good.val)
    col = good.col.clone()
    col[-1] = 3  # the last chunk holds columns 8..9 only
    with pytest.raises(ValueError, match="column index out of range"):
        kernels.CpuCSRWeight(shape=(8, 10), chunk=4, ptr=good.ptr, col=col, val=good.val)
    ptr = good.ptr.clone()
    ptr[1], ptr[2] = ptr[2], ptr[1] - 1
    with pytest.raises(ValueError, match="non-decreasing|start at 0"):
        kernels.CpuCSRWeight(shape=(8, 10), chunk=4, ptr=ptr, col=good.col, val=good.val)
    with pytest.raises(ValueError, match="elements, expected"):
        kernels.CpuCSRWeight(shape=(8, 10), chunk=4, ptr=good.ptr, col=good.col, val=good.val[:-1])


@needs_ext
def test_bad_call_arguments(monkeypatch):
    w = sparse_weight(8, 10, 0.5)
    packed = kernels.pack_cpu_csr(w)
    x = torch.randn(3, 10)
    with pytest.raises(TypeError, match="x must be float32, got torch.float64"):
        kernels.csr_linear(x.double(), packed)
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 10\]"):
        kernels.csr_linear(torch.randn(3, 11), packed)
    with pytest.raises(ValueError, match=r"bias must have shape \[8\]"):
        kernels.csr_linear(x, packed, torch.randn(9))
    with pytest.raises(TypeError, match="bias must be float32"):
        kernels.csr_linear(x, packed, torch.randn(8, dtype=torch.float64))
    with pytest.raises(TypeError, match="CpuCSRWeight"):
        kernels.csr_linear(x, kernels.pack_cpu_bsr(w))
    with pytest.raises(TypeError, match="CpuBSRWeight"):
        kernels.bsr_linear(x, packed)
    with pytest.raises(ValueError, match="CPU only"):
        kernels.csr_linear(x.to("meta"), packed)
    with pytest.raises(TypeError, match="x must be float32"):  # through the dispatcher as well
        torch.ops.sparsekit.csr_linear(x.double(), packed.ptr, packed.col, packed.val, 10, 8, packed.chunk)
    with pytest.raises(ValueError, match="do not match"):
        torch.ops.sparsekit.csr_linear(x, packed.ptr, packed.col, packed.val, 10, 9, packed.chunk)
    monkeypatch.setenv(kernels.ISA_ENV, "sse9")
    with pytest.raises(ValueError, match="not an ISA path"):
        kernels.csr_linear(x, packed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@needs_ext
def test_cuda_input_rejected():
    packed = kernels.pack_cpu_csr(sparse_weight(8, 10, 0.5))
    with pytest.raises(ValueError, match="CPU only"):
        kernels.csr_linear(torch.randn(3, 10, device="cuda"), packed)


@needs_ext
def test_isa_selection():
    assert kernels.isa() in kernels.supported_isas()
    assert kernels.supported_isas()[-1] == "scalar"
    with kernels.force_isa("scalar"):
        assert kernels.isa() == "scalar"
    with pytest.raises(ValueError, match="unknown ISA"):
        with kernels.force_isa("mmx"):
            pass


# =============================================================================================
# torch.library integration
# =============================================================================================
@needs_ext
def test_opcheck():
    w = sparse_weight(20, 35, 0.3)
    p, pb = kernels.pack_cpu_csr(w), kernels.pack_cpu_bsr(w, block=(4, 1))
    for x, bias in [(torch.randn(5, 35), torch.randn(20)), (torch.randn(2, 3, 35), None), (torch.randn(1, 35), None)]:
        torch.library.opcheck(torch.ops.sparsekit.csr_linear.default,
                              (x, p.ptr, p.col, p.val, 35, 20, p.chunk, bias))
        torch.library.opcheck(torch.ops.sparsekit.bsr_linear.default,
                              (x, pb.ptr, pb.col, pb.val, 35, 20, pb.group_rows, pb.chunk, bias))


@needs_ext
def test_torch_compile_fullgraph():
    w = sparse_weight(16, 24, 0.3)
    p, pb, bias = kernels.pack_cpu_csr(w), kernels.pack_cpu_bsr(w, block=(4, 2)), torch.randn(16)

    def f(x):
        return torch.relu(kernels.csr_linear(x, p, bias)) + kernels.bsr_linear(x, pb)

    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for m in (3, 7):
        x = torch.randn(m, 24)
        torch.testing.assert_close(compiled(x), f(x))


@needs_ext
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inductor's own use of torch.jit
def test_torch_compile_inductor():
    w = sparse_weight(16, 24, 0.3)
    p, bias = kernels.pack_cpu_csr(w), torch.randn(16)

    def f(x):
        return torch.relu(kernels.csr_linear(x, p, bias)) * 2

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    x = torch.randn(5, 24)
    torch.testing.assert_close(compiled(x), f(x))


@needs_ext
def test_vmap_over_x():
    w = sparse_weight(6, 5, 0.6)
    p, pb, bias = kernels.pack_cpu_csr(w), kernels.pack_cpu_bsr(w, block=(2, 1)), torch.randn(6)
    xs = torch.randn(3, 4, 5)
    assert_matches(torch.vmap(lambda x: kernels.csr_linear(x, p, bias))(xs), dense_ref(xs, w, bias), 5)
    ys = torch.vmap(lambda x: kernels.bsr_linear(x, pb, bias), in_dims=1)(xs)
    assert_matches(ys, dense_ref(xs.movedim(1, 0), w, bias), 5)
    with pytest.raises(NotImplementedError, match="vmap over x only"):
        torch.vmap(lambda b: kernels.csr_linear(xs[0], p, b))(torch.randn(2, 6))


# =============================================================================================
# Without the extension
# =============================================================================================
def test_fallback_without_extension(monkeypatch):
    monkeypatch.setattr(cpu._EXT, "warned_fallback", False)
    with cpu._EXT.simulate_unavailable("simulated: not built"):
        assert cpu.AVAILABLE is False and cpu.UNAVAILABLE_REASON == "simulated: not built"
        assert not kernels.available() and kernels.isa() == "reference" and kernels.supported_isas() == ()
        w = sparse_weight(12, 20, 0.4)
        x, bias = torch.randn(4, 20), torch.randn(12)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = kernels.csr_linear(x, kernels.pack_cpu_csr(w), bias)
            yb = kernels.bsr_linear(x, kernels.pack_cpu_bsr(w, block=(2, 2)), bias)
        assert len([c for c in caught if "simulated: not built" in str(c.message)]) == 1
        assert_matches(y, dense_ref(x, w, bias), 20)
        assert_matches(yb, dense_ref(x, w, bias), 20)


@needs_ext
def test_kernels_really_run_on_several_threads(threads):
    """A build without the OpenMP flag compiles ATen's parallel_for to a serial loop: every test above would
    still pass, only slower. This catches it."""
    torch.set_num_threads(2)
    assert kernels.parallel_threads(8) == 2
    torch.set_num_threads(1)
    assert kernels.parallel_threads(8) == 1
