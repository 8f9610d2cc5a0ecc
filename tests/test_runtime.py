"""The fused CPU encoder runtime: each fused piece against its unfused reference on every ISA path this CPU has,
the whole compiled model against the masked dense model (padding patterns, length 1, removed heads and FFNs, the
three task heads), bad inputs, and torch.compile over the ops."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sparsekit import kernels
from sparsekit.compiler import compile as sk_compile
from sparsekit.formats.int8 import WEIGHT_BITS, weight_qmax
from sparsekit.kernels import cpu, cpu_int8, reference
from sparsekit.kernels import encoder as encoder_ops
from sparsekit.formats.validate import KernelInputError
from sparsekit.kernels.cpu_layout import pack_cpu_bsr, pack_cpu_csr
from sparsekit.runtime import FusedEncoder, LayerWeights, packing

pytestmark = pytest.mark.skipif(not kernels.available(),
                                reason=f"C++ kernels not built: {kernels.unavailable_reason()}")
ISAS = [pytest.param(i, marks=pytest.mark.skipif(i not in kernels.supported_isas(), reason=f"CPU lacks {i}"))
        for i in ("avx512", "avx2", "scalar")]
ACTS = {0: lambda t: t, 1: F.gelu, 2: lambda t: F.gelu(t, approximate="tanh"), 3: F.relu}


def _ext():
    return cpu._EXT.load()


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _cu(lengths):
    return torch.tensor([0, *torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist()], dtype=torch.int64)


def _sparse(out, inp, density, gen):
    return torch.randn(out, inp, generator=gen) * (torch.rand(out, inp, generator=gen) < density)


# ------------------------------------------------------------------------------------------- fused pieces
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("heads,dq,dv,lengths", [
    (12, 64, 64, [128]), (3, 8, 24, [1, 5, 0, 33, 17]), (2, 1, 1, [3]), (4, 16, 40, [200, 7]), (1, 24, 8, [1]),
    (2, 17, 19, [16, 15, 31])])
@pytest.mark.parametrize("window", [-1, 0, 5, 40])
def test_attention_matches_reference(isa, heads, dq, dv, lengths, window):
    gen = torch.Generator().manual_seed(0)
    cu = _cu(lengths)
    qkv = torch.randn(int(cu[-1]), heads * (2 * dq + dv), generator=gen) * 2
    got = _ext().packed_attention(qkv, cu, heads, dq, dv, 0.2, window, isa)
    # scores up to ~20: fp32 rounding of a score moves a peaked softmax by ~1e-5 relative
    want = reference.packed_attention(qkv, cu, heads, dq, dv, 0.2, window)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)


def test_window_zero_attends_to_itself_only():
    cu = _cu([6, 1])
    qkv = torch.randn(7, 2 * (2 * 4 + 4))
    v = qkv[:, 2 * 2 * 4:]
    torch.testing.assert_close(encoder_ops.packed_attention(qkv, cu, 2, 4, 4, 1.0, window=0), v, rtol=0, atol=1e-6)
    with pytest.raises(KernelInputError, match="window"):
        encoder_ops.packed_attention(qkv, cu, 2, 4, 4, 1.0, window=-2)


def test_attention_op_and_no_heads():
    cu = _cu([3, 2])
    qkv = torch.randn(5, 2 * (2 * 8 + 8))
    torch.testing.assert_close(encoder_ops.packed_attention(qkv, cu, 2, 8, 8, 0.5),
                               reference.packed_attention(qkv, cu, 2, 8, 8, 0.5), rtol=0, atol=2e-5)
    assert encoder_ops.packed_attention(torch.zeros(5, 0), cu, 0, 1, 1, 1.0).shape == (5, 0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 16, 771])
def test_layer_norm_matches_torch(isa, n):
    gen = torch.Generator().manual_seed(1)
    x, r = torch.randn(37, n, generator=gen) * 5 + 3, torch.randn(37, n, generator=gen)
    w, b = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    torch.testing.assert_close(_ext().add_layer_norm(x, r, w, b, 1e-5, isa), F.layer_norm(x + r, (n,), w, b, 1e-5),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(_ext().add_layer_norm(x, None, w, b, 1e-12, isa), F.layer_norm(x, (n,), w, b, 1e-12),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", [0, 1, 2, 3])
def test_dense_epilogue_matches_torch(isa, act):
    y, r = torch.randn(19, 3077) * 4, torch.randn(19, 3077)
    torch.testing.assert_close(_ext().epilogue_rows(y, act, r, isa), ACTS[act](y) + r, rtol=0, atol=1e-5)
    nan = torch.tensor([[float("nan"), float("inf"), -float("inf"), 0.0]])
    assert torch.isnan(_ext().epilogue_rows(nan, act, None, isa)[0, 0])


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_accuracy_against_float64(isa):
    """The erf GELU (vec_math.inc's rational erf) against the exact GELU in float64 on a dense grid: within 1.5e-6
    (measured about 1e-6; torch's own fp32 GELU about 4e-7), saturating to x and 0, NaN kept."""
    x = torch.linspace(-12, 12, 480001)
    got = _ext().epilogue_rows(x[None, :], 1, None, isa)[0].double()
    assert float((got - F.gelu(x.double())).abs().max()) < 1.5e-6
    big = torch.tensor([[6.0, 30.0, 1e30, -6.0, -30.0, -1e30, float("nan")]])
    got = _ext().epilogue_rows(big, 1, None, isa)[0]
    torch.testing.assert_close(got[:6], torch.tensor([6.0, 30.0, 1e30, 0.0, 0.0, 0.0]), rtol=2.5e-7, atol=1e-6)
    assert torch.isnan(got[6])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", [0, 1, 2, 3])
@pytest.mark.parametrize("tokens", [1, 2, 5, 130])
@pytest.mark.parametrize("rows", [1, 4])
def test_sparse_linear_epilogue_matches_unfused(isa, act, tokens, rows, threads):
    """act(x W^T + b) + residual in the kernel's store (SpMM) and after the GEMV, against the unfused ops."""
    gen = torch.Generator().manual_seed(2)
    w = _sparse(300, 517, 0.1, gen)
    w[7] = 0  # an empty row: bias and epilogue only
    b, x, res = torch.randn(300, generator=gen), torch.randn(tokens, 517, generator=gen), torch.randn(tokens, 300)
    packed = pack_cpu_csr(w) if rows == 1 else pack_cpu_bsr(w, block=(4, 1))
    for n_threads in (1, 2):
        torch.set_num_threads(n_threads)
        got = _ext().linear(x, packed.ptr, packed.col, packed.val, 517, 300, rows, packed.chunk, b, isa, act, res)
        torch.testing.assert_close(got, ACTS[act](x @ w.T + b) + res, rtol=0, atol=2e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_sparse_linear_epilogue_nonfinite_inputs(isa):
    """A NaN in x reaches only the outputs whose row holds a weight on it, through the epilogue as well."""
    w = torch.zeros(32, 40)
    w[3, 5] = 2.0
    w[4, 6] = 1.0
    x = torch.randn(6, 40)
    x[2, 5] = float("nan")
    packed = pack_cpu_csr(w)
    res = torch.randn(6, 32)
    got = _ext().linear(x, packed.ptr, packed.col, packed.val, 40, 32, 1, packed.chunk, None, isa, 1, res)
    assert torch.isnan(got[2, 3]) and torch.isfinite(got[2, torch.arange(32) != 3]).all()
    torch.testing.assert_close(got[2, 4], F.gelu(x[2, 6]) + res[2, 4], rtol=0, atol=1e-5)


def _ffn_pair(x, wi, bi, act, wf, bf, res, isa, rows, glu=False):
    """(fused ffn, the unfused Linears) for dense weights packed with `rows` rows per group. With glu, wi stacks the
    FFN-in rows on the gate rows and the unfused GLU is the runtime's own pass (glu_rows)."""
    pack = pack_cpu_csr if rows == 1 else (lambda w: pack_cpu_bsr(w, block=(rows, 1)))
    pi, pf = pack(wi), pack(wf)
    u_n, k, out = wf.shape[1], wi.shape[1], wf.shape[0]
    fused = _ext().ffn(x, pi.ptr, pi.col, pi.val, k, u_n, rows, pi.chunk, bi, act, glu, pf.ptr, pf.col, pf.val, out,
                       rows, pf.chunk, bf, res, isa)
    u = _ext().linear(x, pi.ptr, pi.col, pi.val, k, wi.shape[0], rows, pi.chunk, bi, isa, 0 if glu else act, None)
    if glu:
        u = _ext().glu_rows(u, act, isa)
    unfused = _ext().linear(u, pf.ptr, pf.col, pf.val, u_n, out, rows, pf.chunk, bf, isa, 0, res)
    return fused, unfused


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", [0, 1, 2, 3])
def test_glu_rows_matches_torch(isa, act):
    u = torch.randn(13, 2 * 37) * 3
    torch.testing.assert_close(_ext().glu_rows(u, act, isa), ACTS[act](u[:, :37]) * u[:, 37:], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="even number of columns"):
        _ext().glu_rows(torch.randn(3, 5), act, isa)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", [0, 1, 3])
@pytest.mark.parametrize("tokens", [1, 2, 3, 17, 40, 130])
@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("glu", [False, True])
def test_sparse_ffn_matches_the_unfused_linears_bit_for_bit(isa, act, tokens, rows, glu, threads):
    """The FFN that hands the FFN-in's transposed tile to the FFN-out kernel (and applies a GLU in that layout)
    equals the unfused Linears exactly: odd widths (partial panels), empty rows and columns, a fully pruned FFN-in
    row, 1 and 2 threads, the unfused path of 1-2 tokens and row-split tilings (few tokens for two threads)."""
    gen = torch.Generator().manual_seed(3)
    n = 301
    wi, wf = _sparse(2 * n if glu else n, 131, 0.15, gen), _sparse(131, n, 0.1, gen)
    wi[5] = 0  # a neuron without weights: act(bias) flows on
    wf[:, 7] = 0  # ... and one the FFN-out ignores
    wf[9] = 0  # an output row that is bias + residual only
    bi, bf = torch.randn(wi.shape[0], generator=gen), torch.randn(131, generator=gen)
    x, res = torch.randn(tokens, 131, generator=gen), torch.randn(tokens, 131, generator=gen)
    a = x @ wi.T + bi
    h = ACTS[act](a[:, :n]) * a[:, n:] if glu else ACTS[act](a)
    for n_threads in (1, 2):
        torch.set_num_threads(n_threads)
        fused, unfused = _ffn_pair(x, wi, bi, act, wf, bf, res, isa, rows, glu)
        assert torch.equal(fused, unfused)
        torch.testing.assert_close(fused, h @ wf.T + bf + res, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("glu", [False, True])
def test_sparse_ffn_edge_shapes_and_nonfinite(isa, glu, threads):
    """No FFN neurons; no bias or residual; a NaN / inf in x or one made by the FFN-in or the GLU (the fused path
    declines, the unfused Linears run): every case equals the unfused Linears, NaN positions included."""
    gen = torch.Generator().manual_seed(4)
    torch.set_num_threads(2)
    f = 2 if glu else 1
    x = torch.randn(37, 24, generator=gen)
    empty_i, empty_f = torch.zeros(0, 24), torch.zeros(24, 0)
    fused, unfused = _ffn_pair(x, empty_i, torch.zeros(0), 1, empty_f, torch.ones(24), None, isa, 1, glu)
    assert torch.equal(fused, unfused) and torch.equal(fused, torch.ones(37, 24))
    wi, wf = _sparse(40 * f, 24, 0.3, gen), _sparse(24, 40, 0.3, gen)
    fused, unfused = _ffn_pair(x, wi, None, 3, wf, None, None, isa, 1, glu)
    assert torch.equal(fused, unfused)
    bad = x.clone()
    bad[3, int(wi[0].nonzero()[0])] = float("nan")
    bad[20, 2] = float("inf")
    fused, unfused = _ffn_pair(bad, wi, None, 1, wf, None, None, isa, 1, glu)
    assert torch.equal(fused.isnan(), unfused.isnan()) and torch.equal(fused.nan_to_num(), unfused.nan_to_num())
    assert fused.isnan().any() and torch.isfinite(fused[0]).all()
    huge = torch.zeros(40 * f)
    huge[-1] = float("inf")  # a non-finite FFN-in (GLU: gate) bias: non-finite intermediate from finite x
    fused, unfused = _ffn_pair(x, wi, huge, 0, wf, None, None, isa, 1, glu)
    assert torch.equal(fused.isnan(), unfused.isnan()) and torch.equal(fused.nan_to_num(), unfused.nan_to_num())
    assert not torch.isfinite(fused).all()


def test_sparse_ffn_rejects_mismatched_widths():
    """A GLU FFN-in needs twice the FFN width in rows: an 8-row weight for an 8-wide GLU FFN is refused."""
    w = pack_cpu_csr(torch.randn(8, 4))
    with pytest.raises(ValueError, match="ptr has 9 elements, expected 17"):
        _ext().ffn(torch.randn(5, 4), w.ptr, w.col, w.val, 4, 8, 1, w.chunk, None, 1, True,
                   *(lambda p: (p.ptr, p.col, p.val))(pack_cpu_csr(torch.randn(4, 8))), 4, 1, w.chunk, None, None,
                   kernels.supported_isas()[0])


# -------------------------------------------------------------------------------------------- the layer op
def _layer(gen, hidden, heads, dq, dv, ffn, density, act="gelu"):
    def m(out, inp):
        return _sparse(out, inp, density, gen), torch.randn(out, generator=gen)

    norms = tuple((torch.rand(hidden, generator=gen) + 0.5, torch.randn(hidden, generator=gen), 1e-12)
                  for _ in range(2))
    return LayerWeights({"qkv": m(heads * (2 * dq + dv), hidden), "attn_out": m(hidden, heads * dv),
                         "ffn_in": m(ffn, hidden), "ffn_out": m(hidden, ffn)}, heads, dq if heads else 1,
                        dv if heads else 1, 0.25, act, norms)


LAYERS = [  # (heads, dq, dv, ffn): ordinary, ragged widths, all heads removed, FFN removed
    (4, 8, 8, 64), (3, 5, 9, 37), (0, 8, 8, 48), (2, 8, 16, 0)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("backend", ["dense", "csr-cpu", "bsr-cpu"])
@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_encoder_layers_match_reference(isa, backend, act):
    gen = torch.Generator().manual_seed(3)
    hidden = 32
    layers = [_layer(gen, hidden, *shape, density=0.3, act=act) for shape in LAYERS]
    enc = FusedEncoder(layers, [dict.fromkeys(("qkv", "attn_out", "ffn_in", "ffn_out"), backend)] * len(layers))
    cu = _cu([1, 7, 0, 20])
    x = torch.randn(28, hidden, generator=gen)
    want = reference.encoder_layers(x, cu, enc._tensors, enc._meta, enc._scalars)
    with cpu.force_isa(isa):
        torch.testing.assert_close(enc(x, cu), want, rtol=0, atol=5e-5)


def _pre_norm_layer(gen, hidden, heads, d, ffn, *, first=False, window=-1, rope=-1, glu=True, act="gelu",
                    density=0.3, bias=True):
    """A ModernBERT-style layer: pre-LayerNorm (none before attention when ``first``), GLU FFN (``ffn`` wide)."""
    def m(out, inp):
        b = torch.randn(out, generator=gen) if bias else torch.zeros(out)
        return _sparse(out, inp, density, gen) / max(density * inp, 1) ** 0.5, b  # the stream stays O(1)

    norms = tuple((torch.rand(hidden, generator=gen) + 0.5, torch.randn(hidden, generator=gen), 1e-5)
                  for _ in range(2))
    if first:
        norms = ((torch.empty(0), torch.empty(0), 0.0), norms[1])
    return LayerWeights({"qkv": m(3 * heads * d, hidden), "attn_out": m(hidden, heads * d),
                         "ffn_in": m(2 * ffn if glu else ffn, hidden), "ffn_out": m(hidden, ffn)}, heads, d, d,
                        d ** -0.5, act, norms,
                        norm=encoder_ops.PRE_NORM_NO_FIRST if first else encoder_ops.PRE_NORM, glu=glu,
                        window=window, rope=rope)


def _rope_tables(n, d, positions=None, base=10000.0):
    """cos, sin [n, d] of Hugging Face's default rotary embedding at ``positions`` (default 0 .. n-1)."""
    pos = torch.arange(n).float() if positions is None else positions.float()
    inv = 1.0 / base ** (torch.arange(0, d, 2).float() / d)
    emb = torch.cat([pos[:, None] * inv[None]] * 2, dim=1)
    return emb.cos(), emb.sin()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("backend", ["dense", "csr-cpu", "bsr-cpu"])
def test_pre_norm_layers_match_reference(isa, backend):
    """ModernBERT's layer kinds: no first LayerNorm, rotary Q / K (two tables), GLU FFN, sliding windows,
    a plain (non-GLU) FFN, no biases, an empty GLU; ragged sequence lengths incl. 0 and 1."""
    gen = torch.Generator().manual_seed(11)
    hidden, d = 32, 8
    layers = [_pre_norm_layer(gen, hidden, 4, d, 24, first=True, rope=0),
              _pre_norm_layer(gen, hidden, 4, d, 24, window=2, rope=1),
              _pre_norm_layer(gen, hidden, 4, d, 24, window=0, rope=1, glu=False, act="gelu_new"),
              _pre_norm_layer(gen, hidden, 4, d, 24, rope=0, bias=False),
              _pre_norm_layer(gen, hidden, 4, d, 0, window=5)]
    enc = FusedEncoder(layers, [dict.fromkeys(("qkv", "attn_out", "ffn_in", "ffn_out"), backend)] * len(layers))
    assert enc.rotary_tables == 2
    lengths = [1, 9, 0, 20]
    cu = _cu(lengths)
    positions = torch.cat([torch.arange(n) for n in lengths])
    rope = [*_rope_tables(30, d, positions, 160000.0), *_rope_tables(30, d, positions)]
    x = torch.randn(30, hidden, generator=gen)
    want = reference.encoder_layers(x, cu, enc._tensors, enc._meta, enc._scalars, rope)
    with cpu.force_isa(isa):
        torch.testing.assert_close(enc(x, cu, rope), want, rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize("backend", ["dense", "csr-cpu", "bsr-cpu"])
def test_timed_layers_equal_the_plain_forward(backend):
    """encoder_layers_timed: the same output bit for bit (post- and pre-LayerNorm, GLU, rotary, removed heads and
    FFNs, empty sequences), one non-negative int64 time per stage and layer, the Linear stages non-zero, and the
    stage sum within the call's wall time."""
    import time

    gen = torch.Generator().manual_seed(21)
    post = [_layer(gen, 32, *shape, density=0.3) for shape in LAYERS]
    pre = [_pre_norm_layer(gen, 32, 4, 8, 24, first=True, rope=0), _pre_norm_layer(gen, 32, 4, 8, 24, window=2)]
    for layers, lengths, rope in ((post, [1, 7, 0, 20], ()), (pre, [1, 9, 0, 20], _rope_tables(30, 8))):
        enc = FusedEncoder(layers, [dict.fromkeys(("qkv", "attn_out", "ffn_in", "ffn_out"), backend)] * len(layers))
        cu = _cu(lengths)
        x = torch.randn(sum(lengths), 32, generator=gen)
        want = enc(x, cu, list(rope))
        start = time.perf_counter_ns()
        with enc.timing_stages() as calls:
            got = enc(x, cu, list(rope))
            got_again = enc(x, cu, list(rope))
        wall = time.perf_counter_ns() - start
        assert torch.equal(got, want) and torch.equal(got_again, want)
        assert len(calls) == 2 and enc._stage_log is None
        assert set(calls[0]) == {"checks", "layernorm", "qkv", "attention", "attn_out", "ffn"}
        assert set(encoder_ops.LINEAR_STAGES) <= set(calls[0])
        for stages in calls:
            for name, ns in stages.items():
                assert ns.dtype == torch.int64 and ns.shape == (len(layers),) and bool((ns >= 0).all()), name
            assert all(int(stages[s].sum()) > 0 for s in encoder_ops.LINEAR_STAGES)
        assert sum(int(ns.sum()) for c in calls for ns in c.values()) <= wall
        assert enc(x, cu, list(rope)).equal(want) and len(calls) == 2  # recording stops with the block


def test_timing_stages_errors():
    gen = torch.Generator().manual_seed(22)
    enc = FusedEncoder([_layer(gen, 16, 2, 4, 4, 8, 0.5)], [dict.fromkeys(("qkv", "attn_out", "ffn_in",
                                                                          "ffn_out"), "csr-cpu")])
    with enc.timing_stages():
        with pytest.raises(RuntimeError, match="already active"):
            with enc.timing_stages():
                pass
    with cpu._EXT.simulate_unavailable("the extension sparsekit._C_cpu is not built (test)"):
        with pytest.raises(RuntimeError, match="needs sparsekit's C.. extension: .*not built"):
            encoder_ops.encoder_layers_timed(torch.randn(3, 16), _cu([3]), enc._tensors, enc._meta, enc._scalars)
    with pytest.raises(KernelInputError):
        encoder_ops.encoder_layers_timed(torch.randn(3, 16), _cu([3]), enc._tensors, enc._meta[:-1], enc._scalars)


def _relative_layer(gen, hidden, heads, d, ffn, rows, terms=("c2p", "p2c")):
    """A DeBERTa-style layer: post-LayerNorm with position keys / queries of ``rows`` relative-position buckets."""
    layer = _layer(gen, hidden, heads, d, d, ffn, 0.4)
    pos = [torch.randn(rows, heads * d, generator=gen) if t in terms else None for t in ("c2p", "p2c")]
    layer.relative = tuple(pos)
    layer.scale = (d * (1 + len(terms))) ** -0.5
    return layer


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("backend", ["dense", "csr-cpu"])
def test_relative_position_layers_match_reference(isa, backend):
    """DeBERTa's c2p + p2c terms, each alone, 10 buckets (not a whole number of vectors); a rel_index that is not
    monotonic (the kernel scans the columns a sequence uses); lengths 1, 9, 0, 20."""
    gen = torch.Generator().manual_seed(13)
    layers = [_relative_layer(gen, 32, 4, 8, 40, 10), _relative_layer(gen, 32, 4, 8, 40, 10, ("c2p",)),
              _relative_layer(gen, 32, 4, 8, 40, 10, ("p2c",)), _layer(gen, 32, 4, 8, 8, 40, 0.4)]
    enc = FusedEncoder(layers, [dict.fromkeys(("qkv", "attn_out", "ffn_in", "ffn_out"), backend)] * len(layers))
    assert enc.relative
    cu = _cu([1, 9, 0, 20])
    rel_index = torch.randint(0, 10, (2 * 24 + 1,), generator=gen, dtype=torch.int32)
    x = torch.randn(30, 32, generator=gen)
    want = reference.encoder_layers(x, cu, enc._tensors, enc._meta, enc._scalars, (), rel_index)
    with cpu.force_isa(isa):
        torch.testing.assert_close(enc(x, cu, rel_index=rel_index), want, rtol=1e-5, atol=5e-5)


def test_relative_position_bad_arguments_are_clear_errors():
    gen = torch.Generator().manual_seed(14)
    enc = FusedEncoder([_relative_layer(gen, 16, 2, 4, 8, 6)], [dict.fromkeys(("qkv", "attn_out", "ffn_in",
                                                                              "ffn_out"), "dense")])
    x, cu = torch.randn(5, 16), _cu([2, 3])
    good = torch.zeros(5, dtype=torch.int32)
    with pytest.raises(ValueError, match="give rel_index"):
        enc(x, cu)
    with pytest.raises(TypeError, match="int32"):
        enc(x, cu, rel_index=good.long())
    with pytest.raises(ValueError, match="outside 0 .. 15"):
        enc(x, cu, rel_index=torch.full((5,), 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="odd length"):
        enc(x, cu, rel_index=torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="longest sequence needs 2"):
        enc(x, cu, rel_index=torch.zeros(3, dtype=torch.int32))
    torch.library.opcheck(torch.ops.sparsekit.encoder_layers.default,
                          (x, cu, enc._tensors, enc._meta, enc._scalars, [], good))


def test_pre_norm_reference_is_modernbert_layer():
    """The reference of the pre-LayerNorm layer computes what Hugging Face's ModernBERT layer does."""
    from transformers import ModernBertConfig
    from transformers.models.modernbert.modeling_modernbert import ModernBertEncoderLayer, ModernBertRotaryEmbedding

    from sparsekit.runtime import stacked_layer

    config = ModernBertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=24, num_hidden_layers=3,
                              local_attention=4, global_attn_every_n_layers=3)
    torch.manual_seed(0)
    layer = ModernBertEncoderLayer(config, layer_idx=1).eval()  # sliding window, LayerNorm before attention
    for p in layer.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randn(1, 7, 32)
    rotary = ModernBertRotaryEmbedding(config)
    cos, sin = rotary(x, torch.arange(7)[None], "sliding_attention")
    window = (torch.arange(7)[:, None] - torch.arange(7)[None]).abs() <= config.sliding_window
    mask = torch.zeros(1, 1, 7, 7).masked_fill(~window, float("-inf"))
    with torch.no_grad():
        want = layer(x, attention_mask=mask, position_embeddings=(cos, sin))
    linears = {"query+key+value": layer.attn.Wqkv, "attn_out": layer.attn.Wo, "ffn_in+ffn_gate": layer.mlp.Wi,
               "ffn_out": layer.mlp.Wo}
    lw = stacked_layer(linears, (layer.attn_norm, layer.mlp_norm), 4, 8, 8, 8 ** -0.5, "gelu",
                       norm=encoder_ops.PRE_NORM, window=config.sliding_window, rope=0)
    enc = FusedEncoder([lw], [dict.fromkeys(("qkv", "attn_out", "ffn_in", "ffn_out"), "dense")])
    got_ref = reference.encoder_layers(x[0], _cu([7]), enc._tensors, enc._meta, enc._scalars, [cos[0], sin[0]])
    torch.testing.assert_close(got_ref, want[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(enc(x[0], _cu([7]), [cos[0], sin[0]]), want[0], rtol=0, atol=1e-5)


def test_pre_norm_bad_arguments_are_clear_errors():
    gen = torch.Generator().manual_seed(12)
    enc = FusedEncoder([_pre_norm_layer(gen, 16, 2, 4, 8, rope=0)], [dict.fromkeys(("qkv", "attn_out", "ffn_in",
                                                                                  "ffn_out"), "dense")])
    x, cu = torch.randn(5, 16), _cu([2, 3])
    cos, sin = _rope_tables(5, 4)
    with pytest.raises(ValueError, match="1 rotary tables"):
        enc(x, cu)
    with pytest.raises(ValueError, match="rotary tables must be contiguous CPU tensors \\[5, 4\\]"):
        enc(x, cu, [cos[:4], sin[:4]])
    with pytest.raises(TypeError, match="float32"):
        enc(x, cu, [cos.double(), sin])
    with pytest.raises(KernelInputError, match="pairs"):
        encoder_ops.encoder_layers(x, cu, enc._tensors, enc._meta, enc._scalars, [cos])
    bad = list(enc._meta)
    bad[7] = 3  # a table that was not given
    with pytest.raises(ValueError, match="rotary table 3"):
        encoder_ops.encoder_layers(x, cu, enc._tensors, bad, enc._scalars, [cos, sin])
    bad = list(enc._meta)
    bad[4] = 7  # norm kind
    with pytest.raises(ValueError, match="norm must be 0..2"):
        encoder_ops.encoder_layers(x, cu, enc._tensors, bad, enc._scalars, [cos, sin])
    bad = list(enc._meta)
    bad[6] = -3  # window
    with pytest.raises(ValueError, match="window"):
        encoder_ops.encoder_layers(x, cu, enc._tensors, bad, enc._scalars, [cos, sin])


def test_mixed_backends_and_one_token():
    gen = torch.Generator().manual_seed(4)
    layers = [_layer(gen, 24, 2, 8, 8, 40, 0.2) for _ in range(2)]
    chosen = [{"qkv": "csr-cpu", "attn_out": "dense", "ffn_in": "bsr-cpu", "ffn_out": "csr-cpu"},
              {"qkv": "dense", "attn_out": "bsr-cpu", "ffn_in": "dense", "ffn_out": "dense"}]
    enc = FusedEncoder(layers, chosen)
    for lengths in ([1], [1, 1, 1], [9]):
        cu = _cu(lengths)
        x = torch.randn(int(cu[-1]), 24, generator=gen)
        torch.testing.assert_close(enc(x, cu), reference.encoder_layers(x, cu, enc._tensors, enc._meta,
                                                                        enc._scalars), rtol=0, atol=5e-5)


def test_bad_layer_arguments_are_clear_errors():
    gen = torch.Generator().manual_seed(5)
    enc = FusedEncoder([_layer(gen, 16, 2, 4, 4, 8, 0.5)], [dict.fromkeys(("qkv", "attn_out", "ffn_in",
                                                                            "ffn_out"), "csr-cpu")])
    x, cu = torch.randn(5, 16), _cu([2, 3])
    with pytest.raises(ValueError, match="cu_seqlens\\[-1\\]"):
        enc(x, _cu([2, 2]))
    with pytest.raises(ValueError, match="non-decreasing"):
        enc(x, torch.tensor([0, 4, 3, 5]))
    with pytest.raises(TypeError, match="int64"):
        enc(x, cu.int())
    with pytest.raises(TypeError, match="float32"):
        enc(x.double(), cu)
    with pytest.raises(ValueError, match="per layer"):
        encoder_ops.encoder_layers(x, cu, enc._tensors[:-1], enc._meta, enc._scalars)
    bad_meta = list(enc._meta)
    bad_meta[0] = 3  # heads: the qkv matrix no longer matches
    with pytest.raises(ValueError, match="qkv has shape"):
        encoder_ops.encoder_layers(x, cu, enc._tensors, bad_meta, enc._scalars)
    bad = list(enc._tensors)
    bad[1] = bad[1].clone()
    bad[1][0] = 200  # a column index outside its chunk
    with pytest.raises(ValueError, match="column index out of range"):
        encoder_ops.encoder_layers(x, cu, bad, enc._meta, enc._scalars)
    with pytest.raises(ValueError, match="backend"):
        FusedEncoder([_layer(gen, 16, 2, 4, 4, 8, 0.5)], [{"qkv": "torch-sparse"}])


# ------------------------------------------------------------------------------------- packing, the model
def test_pack_unpack_round_trip():
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 1, 1, 1]])
    p = packing.pack(h, mask)
    assert p.cu_seqlens.tolist() == [0, 3, 6, 11] and p.tokens.shape == (11, 4)
    back = packing.unpack(p.tokens, p)
    torch.testing.assert_close(back[mask.bool()], h[mask.bool()])
    assert (back[~mask.bool()] == 0).all()
    full = packing.pack(h, None)
    assert full.index is None and full.cu_seqlens.tolist() == [0, 5, 10, 15]


@pytest.fixture(scope="module")
def compact_pair(tiny_model_dir, tmp_path_factory):
    """(masked HF classifier, its exported + loaded compact model): heads and neurons removed by compaction."""
    from conftest import random_sparse_classifier
    from sparsekit.export.artifact import export, load
    from sparsekit.models import load_tokenizer
    from task_models import prune_randomly

    model = prune_randomly(random_sparse_classifier(tiny_model_dir, 1.0), density=0.3)
    path = tmp_path_factory.mktemp("fused") / "art"
    export((model, load_tokenizer(tiny_model_dir)), path)
    return model, load(path)


PADDINGS = {
    "all real": torch.ones(3, 9, dtype=torch.long),
    "right padded": torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] + [0] * 8]),
    "holes": torch.tensor([[1, 0, 1, 1, 0, 1, 1, 1, 1], [1] * 9, [1, 1, 0, 0, 0, 0, 0, 0, 1]]),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("padding", list(PADDINGS))
def test_compiled_model_matches_masked_dense(compact_pair, isa, padding):
    hf, compact = compact_pair
    compact = copy.deepcopy(compact)
    report = sk_compile(compact, tokens=16, repeats=2, warmup=1, verbose=False)
    assert report.runtime == "fused"
    assert len(compact.shapes) == 2 and min(len(s.v_widths) for s in compact.shapes) < 4  # a head was removed
    mask = PADDINGS[padding]
    gen = torch.Generator().manual_seed(6)
    ids = torch.randint(5, 40, mask.shape, generator=gen)
    with torch.no_grad(), cpu.force_isa(isa):
        want = hf(input_ids=ids, attention_mask=mask).logits
        got = compact(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", ["dense", "csr-cpu", "bsr-cpu"])
def test_forced_backend_fused(compact_pair, backend):
    hf, compact = compact_pair
    compact = copy.deepcopy(compact)
    report = sk_compile(compact, tokens=8, repeats=2, warmup=1, verbose=False, force=backend)
    assert {c.backend for c in report.layers} == {backend}
    ids = torch.randint(5, 40, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(compact(input_ids=ids).logits, hf(input_ids=ids).logits, rtol=0, atol=1e-4)


def test_stage_profile_of_a_compiled_model(compact_pair):
    """stage_profile: the stages add up to the op, the op and the rest to about the forward, the Linear share in
    [0, 1]; a model not on the fused runtime is refused with what to do."""
    from sparsekit.runtime import stage_profile

    hf, compact = compact_pair
    compact = copy.deepcopy(compact)
    sk_compile(compact, tokens=16, repeats=2, warmup=1, verbose=False)
    inputs = {"input_ids": torch.randint(5, 40, (2, 8)), "attention_mask": PADDINGS["right padded"][:2, :8]}
    prof = stage_profile(compact, inputs, calls=5, warmup=1)
    assert prof.calls == 5 and set(prof.stages_ms) >= set(encoder_ops.LINEAR_STAGES)
    assert 0 < prof.linears_ms <= prof.op_ms <= prof.forward_ms
    assert 0 <= prof.outside_linears_share < 1 and prof.outside_ms > 0
    assert abs(sum(prof.stages_ms.values()) - prof.op_ms) <= 0.5 * prof.op_ms  # medians of parts vs of the sum
    assert prof.as_dict()["calls"] == 5
    with pytest.raises(ValueError, match="sparsekit.compile"):
        stage_profile(hf, inputs, calls=1, warmup=0)


@pytest.mark.parametrize("task_type", ["token-classification", "question-answering"])
def test_compiled_task_heads_match(task_type, tmp_path):
    """Per-token heads: equal at every real position (padding positions are never computed)."""
    from sparsekit.export.artifact import export, load
    from sparsekit.export.heads import auto_class, head_output
    from task_models import make_task_checkpoint

    ckpt = make_task_checkpoint(tmp_path / "ckpt", task_type)
    export(ckpt, tmp_path / "art")
    hf, model = auto_class(task_type).from_pretrained(str(ckpt)).eval(), load(tmp_path / "art")
    sk_compile(model, tokens=16, repeats=2, warmup=1, verbose=False)
    mask = PADDINGS["right padded"]
    ids = torch.randint(5, 40, mask.shape)
    with torch.no_grad():
        got = head_output(model(input_ids=ids, attention_mask=mask), task_type)
        want = head_output(hf(input_ids=ids, attention_mask=mask), task_type)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], rtol=0, atol=1e-4)


def test_torch_compile_over_the_fused_model(compact_pair):
    hf, compact = compact_pair
    compact = copy.deepcopy(compact)
    sk_compile(compact, tokens=8, repeats=2, warmup=1, verbose=False)
    ids = torch.randint(5, 40, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4])
    compiled = torch.compile(compact)
    with torch.no_grad():
        got = compiled(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(got, hf(input_ids=ids, attention_mask=mask).logits, rtol=0, atol=1e-4)


NO_REL = torch.empty(0, dtype=torch.int32)  # rel_index of layers without relative-position terms


def test_opcheck_fused_ops():
    gen = torch.Generator().manual_seed(7)
    enc = FusedEncoder([_layer(gen, 16, 2, 4, 4, 8, 0.5)], [dict.fromkeys(("qkv", "attn_out", "ffn_in",
                                                                            "ffn_out"), "csr-cpu")])
    cu = _cu([2, 3])
    torch.library.opcheck(torch.ops.sparsekit.encoder_layers.default,
                          (torch.randn(5, 16), cu, enc._tensors, enc._meta, enc._scalars, [], NO_REL))
    torch.library.opcheck(torch.ops.sparsekit.packed_attention.default, (torch.randn(5, 24), cu, 2, 4, 4, 0.5, -1))
    pre = FusedEncoder([_pre_norm_layer(gen, 16, 2, 4, 8, first=True, window=1, rope=0)],
                       [dict.fromkeys(("qkv", "attn_out", "ffn_in", "ffn_out"), "csr-cpu")])
    torch.library.opcheck(torch.ops.sparsekit.encoder_layers.default,
                          (torch.randn(5, 16), cu, pre._tensors, pre._meta, pre._scalars, list(_rope_tables(5, 4)),
                           NO_REL))
    torch.library.opcheck(torch.ops.sparsekit.packed_attention.default, (torch.randn(5, 24), cu, 2, 4, 4, 0.5, 1))


# -------------------------------------------------------------------------------------------------- plans
def test_compile_plan_saved_and_reused(tiny_model_dir, tmp_path):
    import json

    from conftest import random_sparse_classifier
    from sparsekit.export.artifact import export, load
    from sparsekit.machine import isa_limits
    from sparsekit.models import load_tokenizer
    from sparsekit.runtime.plan import PLAN_FILE, save_plan

    path = tmp_path / "art"
    export((random_sparse_classifier(tiny_model_dir, 0.2), load_tokenizer(tiny_model_dir)), path)
    model = load(path)
    assert model.compile_plan is None
    report = sk_compile(model, tokens=8, repeats=2, warmup=1, verbose=False)
    save_plan(report, path)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_plan(report, path)
    ids = torch.randint(5, 40, (2, 6))
    with torch.no_grad():
        want = model(input_ids=ids).logits

    again = load(path)
    assert again.compile_plan is not None
    reused = sk_compile(again, tokens=8, verbose=False)
    assert all(c.timings_ms == {} and c.why.startswith("saved plan") for c in reused.layers)
    assert [c.backend for c in reused.layers] == [c.backend for c in report.layers]
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, want, rtol=0, atol=1e-5)
    assert all(c.timings_ms for c in sk_compile(load(path), tokens=8, repeats=2, verbose=False,
                                                retime=True).layers)

    plan = json.loads((path / PLAN_FILE).read_text())
    limits = isa_limits()
    assert plan["machine"]["isa_limits"] == limits
    if not limits:  # a plan saved before the limits were recorded ran without any: still reused
        del plan["machine"]["isa_limits"]
        (path / PLAN_FILE).write_text(json.dumps(plan))
        assert all(not c.timings_ms for c in sk_compile(load(path), tokens=8, verbose=False).layers)
    plan["machine"]["isa_limits"] = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}  # measured with the dense BLAS held back
    (path / PLAN_FILE).write_text(json.dumps(plan))
    with pytest.warns(RuntimeWarning, match="isa_limits.*re-measuring"):
        sk_compile(load(path), tokens=8, repeats=2, verbose=False)
    plan["machine"]["isa_limits"] = limits
    plan["machine"]["cpu"] = "Some Other CPU"
    (path / PLAN_FILE).write_text(json.dumps(plan))
    with pytest.warns(RuntimeWarning, match="re-measuring"):
        other = sk_compile(load(path), tokens=8, repeats=2, verbose=False)
    assert all(c.timings_ms for c in other.layers)

    (path / PLAN_FILE).write_text('{"format_version": 1, "machine": {}, "tokens": 8, "matrices": {"x": {}}}')
    with pytest.warns(RuntimeWarning, match="not a usable compile plan"):
        assert load(path).compile_plan is None


# --------------------------------------------------------------------------------------------------- int8
def _block_masked(w: torch.Tensor, density: float, gen) -> torch.Tensor:
    """``w`` with random 1x4 blocks (along the input) kept at ``density``."""
    keep = torch.rand(w.shape[0], -(-w.shape[1] // 4), generator=gen) < density
    return w * keep.repeat_interleave(4, dim=1)[:, :w.shape[1]]


def _check_every_int8_path(enc, x, cu, atol):
    """The fused encoder ``enc`` on ``x`` equals the pure-torch reference on every int8 path of this CPU."""
    from sparsekit.kernels import cpu_int8

    want = reference.encoder_layers(x, cu, enc._tensors, enc._meta, enc._scalars)
    for isa in cpu_int8.supported_int8_isas():
        with cpu_int8.force_int8_isa(isa):
            torch.testing.assert_close(enc(x, cu), want, rtol=0, atol=atol)


def test_int8_matrix_in_the_fused_layer_matches_reference():
    """An int8 qkv (its input is the layer input, identical on both sides, so the int32 sums are exact) inside a
    layer whose other matrices are fp32: kernel == reference up to float rounding, on every int8 path here."""
    gen = torch.Generator().manual_seed(8)
    lw = _layer(gen, 32, 2, 8, 8, 48, 1.0)
    lw.matrices["qkv"] = (_block_masked(lw.matrices["qkv"][0], 0.3, gen), lw.matrices["qkv"][1])
    enc = FusedEncoder([lw], [{"qkv": "int8-b4-cpu", "attn_out": "dense", "ffn_in": "csr-cpu", "ffn_out": "dense"}])
    _check_every_int8_path(enc, torch.randn(15, 32, generator=gen), _cu([5, 1, 9]), atol=5e-5)


def test_corrupted_int8_tensors_in_the_fused_layer_are_clear_errors():
    """The op checks each int8 matrix (on torch's threads, layers in parallel) before any kernel runs: dtypes, sizes,
    indices, and that the stored row sums (the offset kernels' compensation) still total the values."""
    gen = torch.Generator().manual_seed(10)
    layers = [_layer(gen, 32, 2, 8, 8, 48, 1.0) for _ in range(3)]
    for lw in layers:
        lw.matrices = {name: (_block_masked(w, 0.4, gen), b) for name, (w, b) in lw.matrices.items()}
    enc = FusedEncoder(layers, [dict.fromkeys(("qkv", "attn_out", "ffn_in", "ffn_out"), "int8-b4-cpu")] * 3)
    x, cu = torch.randn(7, 32, generator=gen), _cu([3, 4])
    enc(x, cu)
    per_layer, per_matrix = encoder_ops.LAYER_TENSORS, encoder_ops.MATRIX_TENSORS
    ffn_in = 2 * per_layer + 2 * per_matrix  # layer 2's ffn_in: ptr, col, val, bias, scale, wsum
    for slot, change, error, message in (
            (5, lambda t: t + 1, ValueError, "wsum does not match val"),
            (2, lambda t: t.index_put_((torch.tensor(0),), t[0] + (1 if int(t[0]) < 127 else -1)), ValueError,
             "wsum does not match val"),  # one value changed after packing
            (5, lambda t: t.long(), TypeError, "wsum"),
            (5, lambda t: t[:-1], ValueError, "do not match"),
            (1, lambda t: t.clone().fill_(-1), ValueError, "out of range")):
        bad = list(enc._tensors)
        bad[ffn_in + slot] = change(bad[ffn_in + slot].clone())
        with pytest.raises(error, match=message):
            encoder_ops.encoder_layers(x, cu, bad, enc._meta, enc._scalars)
    bad = list(enc._tensors)
    for layer in range(3):  # every layer bad: one of their errors, whichever thread raised first
        bad[layer * per_layer + 5] = bad[layer * per_layer + 5] + 1
    with pytest.raises(ValueError, match="wsum does not match val"):
        encoder_ops.encoder_layers(x, cu, bad, enc._meta, enc._scalars)


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_int8_epilogues_in_the_fused_layer_match_reference(act):
    """Every matrix int8, so the activation (FFN-in) and the residual adds (O, FFN-out) run on each block the int8
    kernel finishes: tokens over several chunks and tiles, widths with partial panels. A misplaced block or residual
    is off by O(1); the quantised inputs of the later matrices differ from the reference's by float rounding only."""
    gen = torch.Generator().manual_seed(9)
    lw = _layer(gen, 40, 3, 8, 8, 72, 1.0, act=act)
    lw.matrices = {name: (_block_masked(w, 0.4, gen), b) for name, (w, b) in lw.matrices.items()}
    enc = FusedEncoder([lw], [dict.fromkeys(("qkv", "attn_out", "ffn_in", "ffn_out"), "int8-b4-cpu")])
    _check_every_int8_path(enc, torch.randn(600, 40, generator=gen), _cu([300, 1, 299]), atol=1e-4)


def test_compile_int8_precision(tiny_model_dir, tmp_path):
    """precision="int8" on a 1x4-block model: int8 matrices where forced, logits within the int8 quantisation
    error of fp32, the precision recorded in the report and the plan (an fp32 compile does not reuse it)."""
    from conftest import random_sparse_classifier
    from sparsekit.export.artifact import export, load
    from sparsekit.models import load_tokenizer, prunable_matrices
    from sparsekit.runtime.plan import save_plan

    gen = torch.Generator().manual_seed(9)
    model = random_sparse_classifier(tiny_model_dir, 1.0)
    with torch.no_grad():
        for m in prunable_matrices(model):
            w = model.get_submodule(m.name).weight
            w.copy_(_block_masked(w, 0.25, gen))
    path = tmp_path / "art"
    export((model, load_tokenizer(tiny_model_dir)), path)
    art = load(path)
    ids = torch.randint(5, 40, (3, 9), generator=gen)
    with torch.no_grad():
        want = model(input_ids=ids).logits
    report = sk_compile(art, tokens=16, repeats=2, warmup=1, verbose=False, precision="int8", force="int8-b4-cpu")
    assert report.precision == "int8" and "int8-b4-cpu" in {c.backend for c in report.layers}
    assert report.int8_weight_bits == cpu_int8.preferred_weight_bits()  # the default: the faster width here
    with torch.no_grad():
        got = art(input_ids=ids).logits
    assert float((got - want).abs().max()) < 0.05 * float(want.abs().max()) + 0.02  # int8 error, not a mismatch
    for bits in WEIGHT_BITS:  # the width the fused runtime quantises the float matrices to
        other = load(path)
        chosen = sk_compile(other, tokens=16, repeats=2, warmup=1, verbose=False, precision="int8",
                            force="int8-b4-cpu", int8_weight_bits=bits)
        ints = [t for t in other.runtime._tensors if t.dtype == torch.int8]
        assert chosen.int8_weight_bits == bits and max(int(t.abs().max()) for t in ints) == weight_qmax(bits)
    with pytest.raises(ValueError, match="weight_bits"):
        sk_compile(load(path), precision="int8", int8_weight_bits=6, verbose=False)
    with pytest.raises(ValueError, match="int8_weight_bits applies to precision='int8'"):
        sk_compile(load(path), precision="fp32", int8_weight_bits=7, verbose=False)
    save_plan(report, path)
    with pytest.warns(RuntimeWarning, match="precision"):
        fp32 = sk_compile(load(path), tokens=16, repeats=2, warmup=1, verbose=False)
    assert "int8-b4-cpu" not in {c.backend for c in fp32.layers}
    with pytest.raises(ValueError, match="precision"):
        sk_compile(load(path), precision="fp16", verbose=False)


def test_left_padding_warns_for_a_first_token_classifier(compact_pair):
    hf, compact = compact_pair
    compact = copy.deepcopy(compact)
    sk_compile(compact, tokens=8, repeats=2, warmup=1, verbose=False)
    ids = torch.randint(5, 40, (2, 5))
    with pytest.warns(RuntimeWarning, match="left-padded"), torch.no_grad():
        compact(input_ids=ids, attention_mask=torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
