"""CPU INT8 1x4-block sparse Linear kernels (sparsekit.kernels.cpu_int8, C++ extension sparsekit._C_cpu_int8).

Every ISA path this CPU supports (avx512-vnni / avx-vnni / avx512bw / avx2 / scalar) is checked against the exact
integer reference: the int32 accumulators and the per-token scales must match bit for bit (every path uses the
same full 8-bit activation quantisation: the vpmaddubsw paths are exact through the sign trick, see
csrc/spmm_cpu_int8/spmm_cpu_int8.h), then the fp32 output against the reference's dequantisation (rounding only)
and against the fp32 dense product within the quantisation error bound. Paths the CPU lacks are skipped with the
reason (they are compiled: test_paths_compiled). Packing, validation, the references and the fallback path run
without the extension.
"""
from __future__ import annotations

import platform
import warnings

import pytest
import torch

from sparsekit.formats import KernelInputError
from sparsekit.formats.int8 import WEIGHT_BITS, weight_qmax
from sparsekit.kernels import cpu_int8, reference
from sparsekit.kernels.cpu_int8_layout import MAX_IN_FEATURES, CpuInt8B4Weight, pack_cpu_int8_b4, quantize_rows

needs_ext = pytest.mark.skipif(not cpu_int8.available(),
                               reason=f"INT8 C++ kernels not built: {cpu_int8.unavailable_reason()}")
ISAS = [pytest.param(i, marks=pytest.mark.skipif(i not in cpu_int8.supported_int8_isas(),
                                                 reason=f"this CPU lacks the {i} int8 path"))
        for i in cpu_int8.INT8_ISAS]


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def block_weight(out: int, inp: int, block_density: float, seed: int = 0, empty_rows: bool = False) -> torch.Tensor:
    """A random weight whose non-zeros lie in random 1x4 blocks along the input dimension (some blocks hold
    explicit zeros, to exercise them)."""
    g = torch.Generator().manual_seed(seed)
    nkb = -(-inp // 4)
    mask = (torch.rand(out, nkb, generator=g) < block_density).repeat_interleave(4, dim=1)[:, :inp]
    w = torch.randn(out, inp, generator=g) * mask
    w[torch.rand(out, inp, generator=g) < 0.1] = 0.0  # zeros inside stored blocks
    if empty_rows and out > 2:
        w[1::3] = 0.0
    return w


def check_exact(x: torch.Tensor, packed: CpuInt8B4Weight, isa: str) -> None:
    """int32 accumulators and token scales of path ``isa`` == the integer reference, bit for bit."""
    out, inp = packed.shape
    acc, s = cpu_int8.int8_b4_accumulators(x, packed, isa)
    ref_acc, ref_s = reference.int8_b4_accumulators(x, packed.ptr, packed.col, packed.val, inp, out)
    assert acc.dtype == torch.int32 and acc.shape == (x.shape[0], out)
    assert torch.equal(acc, ref_acc), f"{isa}: int32 accumulators differ at {(acc != ref_acc).nonzero()[:5].tolist()}"
    assert torch.equal(s, ref_s) or (torch.isnan(s) == torch.isnan(ref_s)).all() and torch.equal(
        s[~torch.isnan(s)], ref_s[~torch.isnan(ref_s)])


def check_output(x: torch.Tensor, packed: CpuInt8B4Weight, bias: torch.Tensor | None, y: torch.Tensor) -> None:
    """y == the reference dequantisation up to fp32 rounding (the kernel fuses the last multiply-add)."""
    out, inp = packed.shape
    ref = reference.int8_b4_linear(x, packed.ptr, packed.col, packed.val, packed.scale, packed.wsum, inp, out, bias)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=2e-6, atol=1e-6, equal_nan=True)


def quantisation_bound(x: torch.Tensor, w: torch.Tensor, packed: CpuInt8B4Weight) -> torch.Tensor:
    """|y - (x W^T + b)| <= s/2 * sum|W[o]| + scale/2 * sum|xq s| (+ fp32 slack): each element of x is off by at
    most s[m] / 2, each weight by at most scale[o] / 2."""
    xq, s = reference.quantize_tokens(x)
    xhat = xq.float().abs() * s[:, None]
    bound = 0.5 * s[:, None] * w.abs().sum(1)[None, :] + 0.5 * packed.scale[None, :] * xhat.sum(1)[:, None]
    return bound + 1e-4 * (x.abs() @ w.abs().T) + 1e-5


# =============================================================================================
# Every path vs the integer reference
# =============================================================================================
CASES = [  # (out, in, block density, empty rows)
    (1, 1, 1.0, False),
    (1, 4, 1.0, False),        # out = 1
    (5, 7, 0.5, False),        # in not a multiple of 4
    (5, 7, 1.0, False),
    (17, 33, 0.3, True),       # empty rows
    (40, 130, 0.2, False),
    (33, 66, 0.0, False),      # all-zero weight: no blocks
    (96, 768, 0.1, True),
    (64, 3072, 0.1, False),
]
TOKENS = [1, 2, 17, 130]


@needs_ext
@pytest.mark.parametrize("weight_bits", WEIGHT_BITS)  # 7: the narrow-weight kernels of avx2 / avx512bw
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("out,inp,density,empty_rows", CASES)
def test_accumulators_exact(isa, out, inp, density, empty_rows, weight_bits):
    w = block_weight(out, inp, density, seed=out + inp, empty_rows=empty_rows)
    packed = pack_cpu_int8_b4(w, weight_bits)
    assert packed.nblocks == 0 or int(packed.val.abs().max()) <= weight_qmax(weight_bits)
    for m in TOKENS:
        x = torch.randn(m, inp, generator=torch.Generator().manual_seed(m))
        check_exact(x, packed, isa)


@needs_ext
@pytest.mark.parametrize("weight_bits", WEIGHT_BITS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("out,inp,density,empty_rows", CASES)
def test_output_matches_reference_and_dense(isa, out, inp, density, empty_rows, weight_bits, monkeypatch):
    monkeypatch.setenv(cpu_int8.INT8_ISA_ENV, isa)
    w = block_weight(out, inp, density, seed=out * inp, empty_rows=empty_rows)
    packed = pack_cpu_int8_b4(w, weight_bits)
    for m, bias in ((1, torch.randn(out)), (17, None), (130, torch.randn(out))):
        x = torch.randn(m, inp, generator=torch.Generator().manual_seed(m))
        y = cpu_int8.int8_b4_linear(x, packed, bias)
        check_output(x, packed, bias, y)
        dense = x @ w.T + (bias if bias is not None else 0)
        assert ((y - dense).abs() <= quantisation_bound(x, w, packed)).all()


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
def test_saturation_full_scale(isa):
    """All weights and inputs at +-127 (full scale): the largest int16 pair sums of vpmaddubsw (2 * 127 * 127) and
    the largest offset products of vpdpbusd (255 * 127), every sign combination, long rows."""
    inp = 3072
    g = torch.Generator().manual_seed(0)
    sign_w = torch.where(torch.rand(6, inp, generator=g) < 0.5, -1.0, 1.0)
    w = torch.cat([torch.ones(1, inp), -torch.ones(1, inp), sign_w])  # every q = +-127
    packed = pack_cpu_int8_b4(w)
    assert int(packed.val.abs().min()) == 127 and int(packed.val.abs().max()) == 127
    sign_x = torch.where(torch.rand(4, inp, generator=g) < 0.5, -1.0, 1.0)
    x = torch.cat([torch.ones(1, inp), -torch.ones(1, inp), sign_x, 3.5 * torch.ones(1, inp)])  # every xq = +-127
    check_exact(x, packed, isa)
    acc, _ = cpu_int8.int8_b4_accumulators(x, packed, isa)
    assert int(acc[0, 0]) == inp * 127 * 127 and int(acc[1, 0]) == -inp * 127 * 127


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
def test_saturation_full_scale_narrow_weights(isa):
    """7-bit weights all at +-63 against inputs all at +-127: on avx2 / avx512bw the narrow kernels multiply
    u = xq + 128 in {1, 255} by q straight, so every int16 pair sum reaches 2 * 255 * 63 = 32130 (just under the
    vpmaddubsw saturation at 32767); a single weight of 64 sends the call to the sign-trick kernels instead."""
    inp = 3072
    g = torch.Generator().manual_seed(1)
    sign_w = torch.where(torch.rand(6, inp, generator=g) < 0.5, -1.0, 1.0)
    w = torch.cat([torch.ones(1, inp), -torch.ones(1, inp), sign_w])
    packed = pack_cpu_int8_b4(w, weight_bits=7)
    assert int(packed.val.abs().min()) == 63 and int(packed.val.abs().max()) == 63
    sign_x = torch.where(torch.rand(4, inp, generator=g) < 0.5, -1.0, 1.0)
    x = torch.cat([torch.ones(1, inp), -torch.ones(1, inp), sign_x, 3.5 * torch.ones(1, inp)])
    check_exact(x, packed, isa)
    acc, _ = cpu_int8.int8_b4_accumulators(x, packed, isa)
    assert int(acc[0, 0]) == inp * 127 * 63 and int(acc[1, 0]) == -inp * 127 * 63
    val = packed.val.clone()
    val[5] = 64  # one value past the narrow range: still exact (other kernels)
    wider = CpuInt8B4Weight(shape=packed.shape, ptr=packed.ptr, col=packed.col, val=val, scale=packed.scale,
                            wsum=reference.int8_b4_row_sums(packed.ptr, val))
    check_exact(x, wider, isa)


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
def test_zero_and_nonfinite_tokens(isa, monkeypatch):
    monkeypatch.setenv(cpu_int8.INT8_ISA_ENV, isa)
    w = block_weight(24, 50, 0.5)
    packed, bias = pack_cpu_int8_b4(w), torch.randn(24)
    x = torch.randn(5, 50)
    x[1] = 0.0                       # all-zero token: outputs = bias
    x[2, 7] = float("nan")           # NaN / inf: all outputs NaN
    x[3, 0] = float("inf")
    x[4] = 1e-39                      # 127 / max overflows: treated as zero
    check_exact(x, packed, isa)
    y = cpu_int8.int8_b4_linear(x, packed, bias)
    assert torch.equal(y[1], bias) and torch.equal(y[4], bias)
    assert torch.isnan(y[2]).all() and torch.isnan(y[3]).all()
    assert torch.isfinite(y[0]).all()
    zeros = torch.zeros(130, 50)
    torch.testing.assert_close(cpu_int8.int8_b4_linear(zeros, packed, bias), bias.expand(130, 24))


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
def test_thread_counts_agree(isa, threads, monkeypatch):
    monkeypatch.setenv(cpu_int8.INT8_ISA_ENV, isa)
    w = block_weight(200, 300, 0.2, empty_rows=True)
    packed, bias = pack_cpu_int8_b4(w), torch.randn(200)
    for m in (1, 2, 17, 64, 130, 256):  # with 64-token tiles: one thread, row splits (64, 130), a token split (256)
        x = torch.randn(m, 300)
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            check_exact(x, packed, isa)
            results.append(cpu_int8.int8_b4_linear(x, packed, bias))
        assert torch.equal(results[0], results[1])


@needs_ext
def test_strided_and_nd_inputs():
    w = block_weight(12, 20, 0.5)
    packed, bias = pack_cpu_int8_b4(w), torch.randn(12)
    x = torch.randn(3, 4, 20)
    y = cpu_int8.int8_b4_linear(x, packed, bias)
    assert y.shape == (3, 4, 12)
    torch.testing.assert_close(y.reshape(12, 12), cpu_int8.int8_b4_linear(x.reshape(12, 20), packed, bias))
    xt = torch.randn(20, 7).T  # non-contiguous
    torch.testing.assert_close(cpu_int8.int8_b4_linear(xt, packed, bias),
                               cpu_int8.int8_b4_linear(xt.contiguous(), packed, bias))
    wide = torch.randn(7, 40)[:, 5:25]  # row stride > in_features
    torch.testing.assert_close(cpu_int8.int8_b4_linear(wide, packed),
                               cpu_int8.int8_b4_linear(wide.contiguous(), packed))
    assert cpu_int8.int8_b4_linear(torch.randn(0, 20), packed).shape == (0, 12)


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
def test_empty_shapes(isa, monkeypatch):
    monkeypatch.setenv(cpu_int8.INT8_ISA_ENV, isa)
    bias = torch.randn(5)
    no_inputs = pack_cpu_int8_b4(torch.zeros(5, 0))
    assert torch.equal(cpu_int8.int8_b4_linear(torch.randn(3, 0), no_inputs, bias), bias.expand(3, 5))
    check_exact(torch.randn(3, 0), no_inputs, isa)
    assert cpu_int8.int8_b4_linear(torch.randn(2, 3, 0), no_inputs).shape == (2, 3, 5)
    assert cpu_int8.int8_b4_linear(torch.randn(0), no_inputs).shape == (5,)
    no_outputs = pack_cpu_int8_b4(torch.zeros(0, 7))
    assert cpu_int8.int8_b4_linear(torch.randn(3, 7), no_outputs).shape == (3, 0)
    acc, s = cpu_int8.int8_b4_accumulators(torch.randn(3, 7), no_outputs, isa)
    assert acc.shape == (3, 0) and s.shape == (3,) and bool((s > 0).all())


@needs_ext
def test_paths_compiled():
    """Every path is compiled in an x86 GCC / Clang build, even where this CPU cannot run it."""
    compiled = cpu_int8.compiled_int8_isas()
    supported = cpu_int8.supported_int8_isas()
    assert "scalar" in compiled and "scalar" in supported and set(supported) <= set(compiled)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert {"avx512-vnni", "avx512bw", "avx2"} <= set(compiled)
    assert cpu_int8.int8_isa() == supported[0]


# =============================================================================================
# Packing and validation
# =============================================================================================
def test_pack_quantises_per_row_and_keeps_any_nonzero_block():
    w = torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, -2.0],
                      [0.0] * 10,
                      [3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    p = pack_cpu_int8_b4(w)
    assert p.shape == (3, 10) and p.nkb == 3
    assert p.ptr.tolist() == [0, 2, 2, 3] and p.col.tolist() == [0, 2, 0]
    assert p.val.tolist() == [0, 0, 0, 32, 64, -127, 0, 0, 127, 0, 0, 0]  # explicit zeros inside blocks
    torch.testing.assert_close(p.scale, torch.tensor([2.0 / 127, 0.0, 3.0 / 127]))
    q, scale = quantize_rows(w)
    assert torch.equal(p.to_int8(), q) and torch.equal(p.scale, scale)
    assert (p.to_dense() - w).abs().max() <= scale.max() / 2
    assert p.nblocks == 3 and p.nnz == 4 and p.block_density == pytest.approx(3 / 9)
    assert "nblocks=3" in repr(p)


def test_pack_never_minus_128_and_round_half_even():
    w = torch.tensor([[-1.0, 1.0, 0.5 / 127, 1.5 / 127, 2.5 / 127, -0.5 / 127]])
    q, _ = quantize_rows(w)
    assert q.tolist() == [[-127, 127, 0, 2, 2, 0]]


def test_pack_rejects_bad_weights():
    with pytest.raises(TypeError):
        pack_cpu_int8_b4(torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(TypeError):
        pack_cpu_int8_b4([[1.0]])
    with pytest.raises(KernelInputError, match="non-finite"):
        pack_cpu_int8_b4(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(KernelInputError, match="in_features"):
        pack_cpu_int8_b4(torch.zeros(1, MAX_IN_FEATURES + 1))


def _corrupt(p: CpuInt8B4Weight, **changes) -> dict:
    fields = {"shape": p.shape, **p.tensors()}
    fields.update(changes)
    return fields


def test_layout_validation():
    p = pack_cpu_int8_b4(block_weight(6, 10, 0.6, seed=3))
    assert p.nblocks >= 3
    bad_ptr = p.ptr.clone()
    bad_ptr[2] = bad_ptr[3] + 1
    bad_col = p.col.clone()
    bad_col[0] = 3  # nkb = 3
    neg_col = p.col.clone()
    neg_col[0] = -1
    bad_val = p.val.clone()
    bad_val[0] = -128
    cases = [
        (_corrupt(p, ptr=bad_ptr), "monotone"),
        (_corrupt(p, col=bad_col), "out of range"),
        (_corrupt(p, col=neg_col), "out of range"),
        (_corrupt(p, val=bad_val), "-128"),
        (_corrupt(p, scale=-p.scale - 1), ">= 0"),
        (_corrupt(p, scale=p.scale.clone().fill_(float("inf"))), "non-finite"),
        (_corrupt(p, val=p.val[:-4]), "elements"),
        (_corrupt(p, wsum=p.wsum + 1), "row's sum"),
        (_corrupt(p, wsum=p.wsum[:-1]), "elements"),
    ]
    for fields, msg in cases:
        with pytest.raises(KernelInputError, match=msg):
            CpuInt8B4Weight(**fields)
    with pytest.raises(TypeError):
        CpuInt8B4Weight(**_corrupt(p, col=p.col.to(torch.int32)))
    pad = pack_cpu_int8_b4(torch.ones(2, 6))  # the last block column covers columns 4, 5 and 2 padding columns
    val = pad.val.clone()
    val[-1] = 5
    with pytest.raises(KernelInputError, match="padding"):
        CpuInt8B4Weight(**_corrupt(pad, val=val))


# =============================================================================================
# Bad arguments to the op: ValueError / TypeError, never a crash (the C++ checks run too)
# =============================================================================================
@needs_ext
def test_bad_call_arguments():
    packed = pack_cpu_int8_b4(block_weight(8, 12, 0.5))
    op = torch.ops.sparsekit.int8_b4_linear
    args = (packed.ptr, packed.col, packed.val, packed.scale, packed.wsum, 12, 8)
    with pytest.raises(TypeError, match="float32"):
        cpu_int8.int8_b4_linear(torch.randn(3, 12, dtype=torch.float64), packed)
    with pytest.raises(ValueError, match="shape"):
        cpu_int8.int8_b4_linear(torch.randn(3, 11), packed)
    with pytest.raises(ValueError, match="bias"):
        cpu_int8.int8_b4_linear(torch.randn(3, 12), packed, torch.randn(7))
    with pytest.raises(TypeError, match="CpuInt8B4Weight"):
        cpu_int8.int8_b4_linear(torch.randn(3, 12), packed.val)
    with pytest.raises(TypeError, match="int16"):
        op(torch.randn(3, 12), packed.ptr, packed.col.int(), packed.val, packed.scale, packed.wsum, 12, 8)
    with pytest.raises(TypeError, match="wsum"):
        op(torch.randn(3, 12), *args[:4], packed.wsum.long(), 12, 8)
    with pytest.raises(ValueError, match="do not match"):
        op(torch.randn(3, 12), *args[:5], 12, 9)
    with pytest.raises(ValueError, match="wsum does not match val"):  # a value changed after packing
        val = packed.val.clone()
        val[0] += 1 if int(val[0]) < 127 else -1
        op(torch.randn(3, 12), packed.ptr, packed.col, val, packed.scale, packed.wsum, 12, 8)


@needs_ext
@pytest.mark.parametrize("isa", ISAS)
def test_corrupted_indices_raise_in_cpp(isa):
    """The C++ binding re-checks every index on every call, also when the Python checks are bypassed."""
    ext = cpu_int8._EXT.module
    packed = pack_cpu_int8_b4(block_weight(8, 12, 0.6, seed=1))
    x = torch.randn(5, 12)
    assert packed.nblocks >= 2

    def call(ptr=packed.ptr, col=packed.col, val=packed.val, scale=packed.scale, wsum=packed.wsum, inp=12, out=8,
             xx=x):
        return ext.linear(xx, ptr, col, val, scale, wsum, inp, out, None, isa)

    call()
    ptr = packed.ptr.clone()
    ptr[3] = ptr[4] + 1
    with pytest.raises(ValueError, match="non-decreasing"):
        call(ptr=ptr)
    ptr = packed.ptr.clone()
    ptr[0] = 1
    with pytest.raises(ValueError, match=r"ptr\[0\]"):
        call(ptr=ptr)
    ptr = packed.ptr.clone()
    ptr[-1] = 10**6
    with pytest.raises(ValueError, match=r"ptr\[-1\]"):
        call(ptr=ptr)
    for bad in (3, -1, 32767, -32768):
        col = packed.col.clone()
        col[1] = bad
        with pytest.raises(ValueError, match="block column index out of range"):
            call(col=col)
    val = packed.val.clone()
    val[5] = -128
    with pytest.raises(ValueError, match="-128"):
        call(val=val)
    with pytest.raises(ValueError, match="elements"):
        call(val=packed.val[:-1])
    with pytest.raises(ValueError, match="elements"):
        call(scale=packed.scale[:-1])
    with pytest.raises(ValueError, match="elements"):
        call(wsum=packed.wsum[:-1])
    with pytest.raises(TypeError, match="int32"):
        call(wsum=packed.wsum.to(torch.int64))
    val = packed.val.clone()
    val[2] = 1 if int(val[2]) != 1 else 2
    with pytest.raises(ValueError, match="wsum does not match val"):
        call(val=val)
    wsum = packed.wsum.clone()
    wsum[0] -= 1
    with pytest.raises(ValueError, match="wsum does not match val"):
        call(wsum=wsum)
    with pytest.raises(TypeError, match="int16"):
        call(col=packed.col.to(torch.int32))
    with pytest.raises(TypeError, match="float32"):
        call(xx=x.double())
    with pytest.raises(ValueError, match="shape"):
        call(xx=torch.randn(5, 13))
    with pytest.raises(ValueError, match="in_features"):
        call(inp=MAX_IN_FEATURES + 4, xx=torch.randn(1, MAX_IN_FEATURES + 4))
    with pytest.raises(ValueError, match="unknown int8 ISA"):
        ext.linear(x, packed.ptr, packed.col, packed.val, packed.scale, packed.wsum, 12, 8, None, "sse9")
    with pytest.raises(ValueError, match="non-decreasing"):
        ext.accumulators(x, torch.tensor([0, 2, 1, 2, 2, 2, 2, 2, 2], dtype=torch.int32), packed.col[:2],
                         packed.val[:8], packed.scale, packed.wsum, 12, 8, isa)


@needs_ext
def test_isa_selection(monkeypatch):
    supported = cpu_int8.supported_int8_isas()
    monkeypatch.setenv(cpu_int8.INT8_ISA_ENV, "sse9")
    with pytest.raises(ValueError, match="not an int8 ISA path"):
        cpu_int8.int8_isa()
    monkeypatch.delenv(cpu_int8.INT8_ISA_ENV)
    with cpu_int8.force_int8_isa("scalar"):
        assert cpu_int8.int8_isa() == "scalar"
    assert cpu_int8.int8_isa() == supported[0]
    missing = [i for i in cpu_int8.INT8_ISAS if i not in supported]
    if missing:  # forcing a path this CPU lacks falls back to the next supported one, with a warning
        with cpu_int8.force_int8_isa(missing[0]), pytest.warns(RuntimeWarning, match="does not support"):
            assert cpu_int8.int8_isa() in supported
    with pytest.raises(ValueError, match="unknown int8 ISA"):
        with cpu_int8.force_int8_isa("mmx"):
            pass


# =============================================================================================
# torch.library integration, references, fallback
# =============================================================================================
@needs_ext
def test_opcheck():
    packed = pack_cpu_int8_b4(block_weight(20, 35, 0.3))
    for x, bias in [(torch.randn(5, 35), torch.randn(20)), (torch.randn(2, 3, 35), None), (torch.randn(1, 35), None)]:
        torch.library.opcheck(torch.ops.sparsekit.int8_b4_linear.default,
                              (x, packed.ptr, packed.col, packed.val, packed.scale, packed.wsum, 35, 20, bias))


@needs_ext
def test_torch_compile_fullgraph():
    packed, bias = pack_cpu_int8_b4(block_weight(16, 24, 0.3)), torch.randn(16)

    def f(x):
        return torch.relu(cpu_int8.int8_b4_linear(x, packed, bias))

    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 24)
    torch.testing.assert_close(compiled(x), f(x))


@needs_ext
def test_quantisation_divides_exactly():
    """xq = round(x * inv) with inv = 127 / max|x| a true fp32 division, in the kernel and the reference alike:
    tokens [a, x] where reciprocal(a) * 127 (what torch computes for `127 / a`) would round x * inv the other way."""
    a = torch.rand(20000, generator=torch.Generator().manual_seed(3)) * 10 + 0.1
    true_inv, recip_inv = torch.full_like(a, 127.0) / a, a.reciprocal() * 127
    tokens = []
    for i in (true_inv != recip_inv).nonzero()[:64, 0].tolist():
        base = (torch.arange(127, dtype=torch.float32) + 0.5) / true_inv[i]
        cands = torch.cat([base, torch.nextafter(base, base + 1), torch.nextafter(base, base - 1)])
        cands = cands[cands.abs() < a[i]]
        flips = cands[torch.round(cands * true_inv[i]) != torch.round(cands * recip_inv[i])]
        tokens += [torch.stack([a[i], x, -x, torch.tensor(0.0)]) for x in flips[:2]]
    assert len(tokens) >= 20
    x = torch.stack(tokens)
    packed = pack_cpu_int8_b4(torch.eye(4))
    for isa in cpu_int8.supported_int8_isas():
        acc, s = cpu_int8.int8_b4_accumulators(x, packed, isa)
        xq, ref_s = reference.quantize_tokens(x)
        assert torch.equal(acc, xq.to(torch.int32) * 127) and torch.equal(s, ref_s), isa


def test_reference_quantize_tokens():
    x = torch.tensor([[1.0, -0.5, 0.25, 0.5 / 127], [0.0, 0.0, 0.0, 0.0], [1.0, float("nan"), 0.0, 0.0]])
    xq, s = reference.quantize_tokens(x)
    assert xq[0].tolist() == [127, -64, 32, 0] and s[0] == 1.0 / 127  # 63.5 -> 64 (half to even), 31.75 -> 32
    assert xq[1].tolist() == [0, 0, 0, 0] and s[1] == 0.0
    assert xq[2].tolist() == [0, 0, 0, 0] and torch.isnan(s[2])


def test_fallback_without_extension(monkeypatch):
    monkeypatch.setattr(cpu_int8._EXT, "warned_fallback", False)
    with cpu_int8._EXT.simulate_unavailable("simulated: not built"):
        assert cpu_int8.AVAILABLE is False and cpu_int8.UNAVAILABLE_REASON == "simulated: not built"
        assert cpu_int8.int8_isa() == "reference" and cpu_int8.supported_int8_isas() == ()
        w = block_weight(12, 20, 0.4)
        packed, x, bias = pack_cpu_int8_b4(w), torch.randn(4, 20), torch.randn(12)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = cpu_int8.int8_b4_linear(x, packed, bias)
            cpu_int8.int8_b4_linear(x, packed, bias)
        assert len([c for c in caught if "simulated: not built" in str(c.message)]) == 1
        check_output(x, packed, bias, y)
        with pytest.raises(RuntimeError, match="simulated"):
            cpu_int8.int8_b4_accumulators(x, packed)


# =============================================================================================
# The backend (not a default one: int8 changes numerics)
# =============================================================================================
def test_int8_backend_reasons_and_build():
    from sparsekit.backends import CpuInt8B4Backend, LayerSpec

    backend = CpuInt8B4Backend()
    assert backend.name == "int8-b4-cpu"
    cpu_spec = LayerSpec(8, 16, 0.1, torch.device("cpu"), torch.float32)
    unbuilt = [f"INT8 C++ kernels not built: {cpu_int8.unavailable_reason()}"]
    assert backend.not_supported_reasons(cpu_spec) == ([] if cpu_int8.available() else unbuilt)
    assert any("density" in r for r in backend.not_supported_reasons(LayerSpec(8, 16, 0.9, cpu_spec.device,
                                                                                torch.float32)))
    assert any("in_features" in r for r in backend.not_supported_reasons(
        LayerSpec(8, MAX_IN_FEATURES + 1, 0.1, cpu_spec.device, torch.float32)))
    assert any("bfloat16" in r for r in backend.not_supported_reasons(LayerSpec(8, 16, 0.1, cpu_spec.device,
                                                                                 torch.bfloat16)))
    spread = torch.zeros(16, 16)
    spread[:, ::4] = 1.0  # 25% of the weights, but one in every 1x4 block
    with pytest.raises(ValueError, match="block density"):
        backend.build(spread, None)
    if not cpu_int8.available():
        return
    w = block_weight(24, 40, 0.2)
    module = backend.build(w, torch.randn(24))
    x = torch.randn(6, 40)
    check_output(x, module.packed, module.bias, module(x))
    assert ((module(x) - (x @ w.T + module.bias)).abs() <= quantisation_bound(x, w, module.packed)).all()
