"""Matrix formats of the exporter: packing, round trips, reference matmul, validation of corrupt artifacts."""
from __future__ import annotations

import json

import pytest
import torch

from sparsekit.formats import (
    FORMAT_VERSION,
    FORMATS,
    INT16_MAX_COLS,
    BSRFormat,
    CSRFormat,
    DenseFormat,
    FormatError,
    LowRankFormat,
    MatrixFormat,
    from_tensors,
    to_format,
)

SHAPES = [(1, 1), (5, 7), (3, 129), (127, 64), (0, 5), (5, 0), (1, 40), (40, 1)]
DENSITIES = [0.0, 0.5, 0.1, 0.03, 1.0]
KINDS = ["dense", "csr", "bsr", "lowrank"]


def make_weight(shape, density, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g, dtype=dtype)
    if density < 1.0:
        keep = torch.rand(*shape, generator=g) < density
        w = w * keep
    return w


def pack(w, kind, **kw):
    if kind == "lowrank":
        kw.setdefault("rank", min(w.shape))
    if kind == "bsr":
        kw.setdefault("block", (4, 4))
    return to_format(w, kind, **kw)


def roundtrip(fmt: MatrixFormat) -> MatrixFormat:
    meta = json.loads(json.dumps(fmt.meta()))  # must be JSON-serialisable
    return from_tensors(meta, {k: v.clone() for k, v in fmt.tensors().items()})


def expected_nnz(fmt, w):
    out, inp = w.shape
    if fmt.kind == "dense":
        return out * inp
    if fmt.kind == "csr":
        return int(w.count_nonzero())
    if fmt.kind == "lowrank":
        return fmt.rank * (out + inp)
    br, bc = fmt.block
    n = 0
    for i in range(0, out, br):
        for j in range(0, inp, bc):
            tile = w[i:i + br, j:j + bc]
            if tile.count_nonzero():
                n += tile.numel()
    return n


def expected_nbytes(fmt, w):
    out, inp = w.shape
    vb = 4 if fmt.value_dtype == torch.float32 else 2
    if fmt.kind == "dense":
        return out * inp * vb
    if fmt.kind == "csr":
        ib = 2 if inp <= INT16_MAX_COLS else 4
        return 4 * (out + 1) + (ib + vb) * fmt.nnz + 4 * out
    if fmt.kind == "bsr":
        br, bc = fmt.block
        nbr = -(-out // br)
        return 4 * (nbr + 1) + 4 * fmt.nblocks + vb * fmt.nblocks * br * bc
    return vb * fmt.rank * (out + inp)


# ---------------------------------------------------------------------------------------------
# Round trips over shapes x densities x kinds
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", DENSITIES)
def test_roundtrip_shapes_densities(kind, shape, density):
    w = make_weight(shape, density, seed=hash((shape, density)) % 1000)
    fmt = pack(w, kind)
    assert fmt.kind == kind
    assert fmt.shape == shape
    dense = fmt.to_dense()
    assert dense.dtype == torch.float32 and tuple(dense.shape) == shape
    if kind == "lowrank":
        torch.testing.assert_close(dense, w, rtol=0, atol=1e-5)
        assert fmt.relative_error < 1e-5
    else:
        assert torch.equal(dense, w)
    # nnz / density / nbytes
    assert fmt.nnz == expected_nnz(fmt, w)
    numel = shape[0] * shape[1]
    assert fmt.density == (fmt.nnz / numel if numel else 0.0)
    assert fmt.nbytes == sum(t.numel() * t.element_size() for t in fmt.tensors().values())
    assert fmt.nbytes == expected_nbytes(fmt, w)
    assert fmt.count_nonzero() == int(w.count_nonzero()) or kind == "lowrank"
    # reference matmul
    x = torch.randn(3, 2, shape[1])
    y = fmt.matmul_reference(x)
    assert y.dtype == torch.float32 and tuple(y.shape) == (3, 2, shape[0])
    torch.testing.assert_close(y, x @ w.T, rtol=1e-5, atol=1e-4)
    # serialisation round trip
    back = roundtrip(fmt)
    assert type(back) is type(fmt) and back.shape == fmt.shape and back.meta() == fmt.meta()
    assert torch.equal(back.to_dense(), dense)
    for name, t in fmt.tensors().items():
        assert torch.equal(back.tensors()[name], t) and back.tensors()[name].dtype == t.dtype


@pytest.mark.parametrize("kind", ["dense", "csr", "bsr"])
def test_bert_ffn_shape_90pct(kind):
    w = make_weight((768, 3072), 0.1, seed=1)
    fmt = to_format(w, kind)  # default block (32, 32)
    assert torch.equal(fmt.to_dense(), w)
    assert fmt.nnz == expected_nnz(fmt, w)
    assert fmt.nbytes == expected_nbytes(fmt, w)
    x = torch.randn(4, 3072)
    torch.testing.assert_close(fmt.matmul_reference(x), x @ w.T, rtol=1e-4, atol=1e-4)
    back = roundtrip(fmt)
    assert torch.equal(back.to_dense(), w)
    if kind == "csr":
        assert fmt.col_idx.dtype == torch.int16
        assert abs(fmt.density - 0.1) < 0.01


@pytest.fixture
def one_thread():
    # LAPACK SVD with 2 OpenMP threads crawls when the box is shared with a benchmark; 1 thread is fast.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_lowrank_bert_shape_90pct(one_thread):
    w = make_weight((768, 3072), 0.1, seed=1)
    fmt = to_format(w, "lowrank", rank=64)
    assert fmt.rank == 64 and fmt.nnz == 64 * (768 + 3072) and fmt.nbytes == 4 * fmt.nnz
    assert fmt.u.shape == (768, 64) and fmt.v.shape == (64, 3072)
    err = float(torch.linalg.norm(w.double() - fmt.to_dense().double()) / torch.linalg.norm(w.double()))
    assert err == pytest.approx(fmt.relative_error, rel=1e-4)
    assert 0 < fmt.relative_error < 1
    x = torch.randn(2, 3072)
    torch.testing.assert_close(fmt.matmul_reference(x), x @ fmt.to_dense().T, rtol=1e-4, atol=1e-4)
    assert torch.equal(roundtrip(fmt).to_dense(), fmt.to_dense())


def test_lowrank_tol_finds_true_rank(one_thread):
    g = torch.Generator().manual_seed(3)
    # rank-12 matrix plus small noise
    w = torch.randn(96, 12, generator=g) @ torch.randn(12, 200, generator=g) + 1e-4 * torch.randn(96, 200, generator=g)
    fmt = to_format(w, "lowrank", tol=0.01)
    assert fmt.rank == 12 and fmt.relative_error < 1e-3  # smallest rank reaching 1% error


# ---------------------------------------------------------------------------------------------
# Low rank specifics
# ---------------------------------------------------------------------------------------------
def test_lowrank_truncation_and_tolerance():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 30, generator=g)
    s = torch.linalg.svdvals(w.double())
    for r in [0, 1, 5, 19, 20]:
        fmt = to_format(w, "lowrank", rank=r)
        assert fmt.rank == r and fmt.u.shape == (20, r) and fmt.v.shape == (r, 30)
        expect = float(s[r:].square().sum().sqrt() / s.square().sum().sqrt())
        assert fmt.relative_error == pytest.approx(expect, rel=1e-4, abs=1e-6)
        actual = float(torch.linalg.norm(w - fmt.to_dense()) / torch.linalg.norm(w))
        assert actual == pytest.approx(fmt.relative_error, rel=1e-4, abs=1e-6)
        assert fmt.meta()["relative_error"] == fmt.relative_error
    for tol in [0.0, 0.1, 0.5, 0.9, 1.0]:
        fmt = to_format(w, "lowrank", tol=tol)
        assert fmt.relative_error <= tol + 1e-6
        if fmt.rank > 0:  # the next smaller rank would not reach tol
            smaller = float(s[fmt.rank - 1:].square().sum().sqrt() / s.square().sum().sqrt())
            assert smaller > tol
    assert to_format(w, "lowrank", tol=1.0).rank == 0
    assert to_format(w, "lowrank", tol=0.0).rank == 20
    # balanced split: u and v carry sqrt(s) each
    fmt = to_format(w, "lowrank", rank=5)
    torch.testing.assert_close(torch.linalg.norm(fmt.u, dim=0).double(), s[:5].sqrt(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.linalg.norm(fmt.v, dim=1).double(), s[:5].sqrt(), rtol=1e-4, atol=1e-5)


def test_lowrank_zero_matrix_and_empty():
    fmt = to_format(torch.zeros(4, 6), "lowrank", tol=0.1)
    assert fmt.rank == 0 and fmt.relative_error == 0.0 and fmt.nnz == 0 and fmt.nbytes == 0
    assert torch.equal(fmt.to_dense(), torch.zeros(4, 6))
    assert torch.equal(fmt.matmul_reference(torch.randn(3, 6)), torch.zeros(3, 4))
    fmt = to_format(torch.zeros(0, 6), "lowrank", rank=0)
    assert fmt.shape == (0, 6) and roundtrip(fmt).shape == (0, 6)


def test_lowrank_bad_args():
    w = torch.randn(4, 6)
    with pytest.raises(ValueError, match="exactly one"):
        to_format(w, "lowrank")
    with pytest.raises(ValueError, match="exactly one"):
        to_format(w, "lowrank", rank=2, tol=0.1)
    with pytest.raises(ValueError, match="exceeds"):
        to_format(w, "lowrank", rank=5)
    with pytest.raises(ValueError, match="rank"):
        to_format(w, "lowrank", rank=-1)
    with pytest.raises(ValueError, match="tol"):
        to_format(w, "lowrank", tol=-0.1)
    with pytest.raises(ValueError, match="only apply"):
        to_format(w, "csr", rank=2)


# ---------------------------------------------------------------------------------------------
# bf16 values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_values(kind):
    w = make_weight((37, 70), 0.1, seed=5)
    fmt = pack(w, kind, value_dtype=torch.bfloat16)
    assert fmt.value_dtype == torch.bfloat16
    assert fmt.meta()["value_dtype"] == "bfloat16"
    for name, t in fmt.tensors().items():
        if t.is_floating_point():
            assert t.dtype == torch.bfloat16, name
    dense = fmt.to_dense()
    assert dense.dtype == torch.float32
    if kind == "lowrank":
        torch.testing.assert_close(dense, w, rtol=2e-2, atol=2e-2)
        err = float(torch.linalg.norm(w - dense) / torch.linalg.norm(w))
        assert err == pytest.approx(fmt.relative_error, rel=1e-3)
    else:
        assert torch.equal(dense, w.to(torch.bfloat16).float())  # exact bf16 rounding of W
    torch.testing.assert_close(dense, w, rtol=1 / 128, atol=1e-2)
    back = roundtrip(fmt)
    assert torch.equal(back.to_dense(), dense)
    assert fmt.nbytes == expected_nbytes(fmt, w)


def test_bf16_tiny_values_that_round_to_zero_are_not_stored():
    w = torch.tensor([[1.0, 1e-45, 0.0, 2.0]])
    fmt = to_format(w, "csr", value_dtype=torch.bfloat16)
    assert fmt.nnz == 2 and fmt.col_idx.tolist() == [0, 3]


# ---------------------------------------------------------------------------------------------
# CSR specifics
# ---------------------------------------------------------------------------------------------
def test_csr_layout_and_row_order():
    w = torch.tensor([
        [0.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 2.0, 0.0],
        [0.0, 3.0, 0.0, 0.0],
        [4.0, 5.0, 6.0, 7.0],
        [0.0, 0.0, 0.0, 0.0],
    ])
    fmt = to_format(w, "csr")
    assert fmt.row_ptr.dtype == torch.int32 and fmt.row_ptr.tolist() == [0, 0, 2, 3, 7, 7]
    assert fmt.col_idx.dtype == torch.int16 and fmt.col_idx.tolist() == [0, 2, 1, 0, 1, 2, 3]
    assert fmt.values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert fmt.row_order.dtype == torch.int32 and fmt.row_order.tolist() == [3, 1, 2, 0, 4]
    assert fmt.row_lengths().tolist() == [0, 2, 1, 4, 0]
    assert fmt.meta() == {"format_version": FORMAT_VERSION, "kind": "csr", "shape": [5, 4],
                          "value_dtype": "float32", "index_dtype": "int16", "nnz": 7, "has_row_order": True}
    assert fmt.nbytes == 4 * 6 + 2 * 7 + 4 * 7 + 4 * 5


def test_csr_all_zero_rows_and_matrix():
    fmt = to_format(torch.zeros(6, 9), "csr")
    assert fmt.nnz == 0 and fmt.density == 0.0
    assert fmt.row_ptr.tolist() == [0] * 7 and fmt.row_order.tolist() == list(range(6))
    assert torch.equal(fmt.matmul_reference(torch.randn(2, 9)), torch.zeros(2, 6))
    assert roundtrip(fmt).nnz == 0


@pytest.mark.parametrize("inp,dtype", [(1, torch.int16), (32767, torch.int16), (32768, torch.int16),
                                       (32769, torch.int32), (40000, torch.int32)])
def test_csr_index_dtype_choice(inp, dtype):
    w = torch.zeros(3, inp)
    w[0, inp - 1] = 1.0
    w[1, 0] = 2.0
    w[2, inp // 2] = 3.0
    fmt = to_format(w, "csr")
    assert fmt.col_idx.dtype == dtype
    assert fmt.meta()["index_dtype"] == str(dtype).removeprefix("torch.")
    assert int(fmt.col_idx.to(torch.int64).max()) == inp - 1
    assert torch.equal(fmt.to_dense(), w)
    back = roundtrip(fmt)
    assert back.col_idx.dtype == dtype and torch.equal(back.to_dense(), w)
    x = torch.randn(2, inp)
    torch.testing.assert_close(fmt.matmul_reference(x), x @ w.T)


def test_csr_wide_matrix_40000_cols_random():
    w = make_weight((4, 40000), 0.05, seed=2)
    fmt = to_format(w, "csr")
    assert fmt.col_idx.dtype == torch.int32
    assert fmt.nbytes == 4 * 5 + 8 * fmt.nnz + 4 * 4
    assert torch.equal(roundtrip(fmt).to_dense(), w)


def test_csr_without_row_order_is_accepted():
    fmt = to_format(make_weight((5, 7), 0.5), "csr")
    bare = CSRFormat(shape=fmt.shape, row_ptr=fmt.row_ptr, col_idx=fmt.col_idx, values=fmt.values)
    assert bare.meta()["has_row_order"] is False and "row_order" not in bare.tensors()
    back = roundtrip(bare)
    assert back.row_order is None and torch.equal(back.to_dense(), fmt.to_dense())


# ---------------------------------------------------------------------------------------------
# BSR specifics
# ---------------------------------------------------------------------------------------------
def test_bsr_layout_odd_shape_padding():
    w = torch.zeros(5, 7)
    w[0, 0] = 1.0   # block (0, 0)
    w[4, 6] = 2.0   # block (1, 1): edge block, padded
    w[1, 5] = 3.0   # block (0, 1)
    fmt = to_format(w, "bsr", block=(4, 4))
    assert fmt.block == (4, 4) and fmt.grid == (2, 2)
    assert fmt.block_row_ptr.dtype == torch.int32 and fmt.block_row_ptr.tolist() == [0, 2, 3]
    assert fmt.block_col_idx.dtype == torch.int32 and fmt.block_col_idx.tolist() == [0, 1, 1]
    assert fmt.blocks.shape == (3, 4, 4)
    assert fmt.blocks[0, 0, 0] == 1.0 and fmt.blocks[1, 1, 1] == 3.0 and fmt.blocks[2, 0, 2] == 2.0
    assert int(fmt.blocks.count_nonzero()) == 3
    # in-bounds positions: 16 + 4*3 + 1*3
    assert fmt.nnz == 16 + 12 + 3
    assert fmt.meta() == {"format_version": FORMAT_VERSION, "kind": "bsr", "shape": [5, 7],
                          "value_dtype": "float32", "block": [4, 4], "nblocks": 3}
    assert torch.equal(fmt.to_dense(), w)


def test_bsr_non_square_blocks_and_empty_block_rows():
    w = torch.zeros(10, 12)
    w[9, 11] = 1.0
    w[0, 3] = -1.0
    fmt = to_format(w, "bsr", block=(2, 8))
    assert fmt.grid == (5, 2)
    assert fmt.block_row_ptr.tolist() == [0, 1, 1, 1, 1, 2]
    assert fmt.block_col_idx.tolist() == [0, 1]
    assert torch.equal(roundtrip(fmt).to_dense(), w)


@pytest.mark.parametrize("block", [(0, 4), (4,), "44", (4.0, 4), (-1, 2)])
def test_bsr_bad_block(block):
    with pytest.raises(ValueError, match="block"):
        to_format(torch.ones(4, 4), "bsr", block=block)


# ---------------------------------------------------------------------------------------------
# Bad inputs to packing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_pack_rejects_bad_weights(kind):
    kw = {"rank": 1} if kind == "lowrank" else {}
    with pytest.raises(ValueError, match="2-D"):
        to_format(torch.ones(5), kind, **kw)
    with pytest.raises(ValueError, match="2-D"):
        to_format(torch.ones(2, 2, 2), kind, **kw)
    with pytest.raises(ValueError, match="floating-point"):
        to_format(torch.ones(3, 3, dtype=torch.int32), kind, **kw)
    with pytest.raises(ValueError, match="floating-point"):
        to_format(torch.ones(3, 3, dtype=torch.bool), kind, **kw)
    bad = torch.ones(3, 3)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        to_format(bad, kind, **kw)
    bad[1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        to_format(bad, kind, **kw)
    with pytest.raises(ValueError, match="value_dtype"):
        to_format(torch.ones(3, 3), kind, value_dtype=torch.float16, **kw)
    if kind != "lowrank":  # the factors of this matrix are representable
        with pytest.raises(ValueError, match="overflows"):
            to_format(torch.full((3, 3), 3.4e38), kind, value_dtype=torch.bfloat16, **kw)


def test_pack_unknown_kind_and_non_tensor():
    with pytest.raises(ValueError, match="unknown format kind 'coo'"):
        to_format(torch.ones(2, 2), "coo")
    with pytest.raises(TypeError):
        to_format([[1.0]], "dense")


def test_pack_accepts_other_float_dtypes_and_noncontiguous():
    w = make_weight((6, 10), 0.5, dtype=torch.float64)
    for kind in ["dense", "csr", "bsr"]:
        fmt = pack(w.T, kind)  # non-contiguous, float64
        assert fmt.value_dtype == torch.float32
        assert torch.equal(fmt.to_dense(), w.T.float())
        assert all(t.is_contiguous() for t in fmt.tensors().values())


def test_matmul_reference_checks_x():
    fmt = to_format(torch.ones(3, 4), "csr")
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        fmt.matmul_reference(torch.ones(2, 5))
    y = fmt.matmul_reference(torch.ones(4, dtype=torch.bfloat16))  # 1-D x, any float dtype
    assert y.dtype == torch.float32 and y.tolist() == [4.0, 4.0, 4.0]


def test_formats_registry_and_repr():
    assert set(FORMATS) == {"dense", "csr", "bsr", "lowrank", "int8-b4"}
    assert FORMATS["csr"] is CSRFormat and FORMATS["bsr"] is BSRFormat
    assert FORMATS["dense"] is DenseFormat and FORMATS["lowrank"] is LowRankFormat
    fmt = to_format(make_weight((768, 768), 0.1), "csr")
    r = repr(fmt)
    assert "CSRFormat" in r and "768" in r and len(r) < 300


def test_safetensors_roundtrip():
    from safetensors.torch import load, save

    w = make_weight((33, 70), 0.2, seed=9)
    for kind in KINDS:
        fmt = pack(w, kind, value_dtype=torch.bfloat16)
        blob = save(fmt.tensors(), metadata={"meta": json.dumps(fmt.meta())})
        back = from_tensors(json.loads(json.dumps(fmt.meta())), load(blob))
        assert torch.equal(back.to_dense(), fmt.to_dense())


# ---------------------------------------------------------------------------------------------
# Corrupt artifacts -> ValueError naming the problem
# ---------------------------------------------------------------------------------------------
def _csr():
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0, 3.0],
                      [0.0, 4.0, 0.0, 0.0, 0.0],
                      [5.0, 6.0, 0.0, 7.0, 0.0]])
    fmt = to_format(w, "csr")
    return fmt.meta(), dict(fmt.tensors())


def _bsr():
    w = make_weight((9, 11), 0.3, seed=4)
    fmt = to_format(w, "bsr", block=(4, 4))
    assert fmt.nblocks >= 3
    return fmt.meta(), dict(fmt.tensors())


def _lowrank():
    fmt = to_format(make_weight((6, 8), 1.0), "lowrank", rank=3)
    return fmt.meta(), dict(fmt.tensors())


def _dense():
    fmt = to_format(make_weight((6, 8), 1.0), "dense")
    return fmt.meta(), dict(fmt.tensors())


def _set(t, i, v):
    t = t.clone()
    t[i] = v
    return t


CORRUPTIONS = {
    # name: (builder, mutate(meta, tensors), message regex)
    "row_ptr not monotone": (_csr, lambda m, t: t.update(row_ptr=torch.tensor([0, 3, 2, 7], dtype=torch.int32)),
                             "not monotone"),
    "row_ptr end != nnz": (_csr, lambda m, t: t.update(row_ptr=_set(t["row_ptr"], -1, 6)), r"row_ptr\[-1\]"),
    "row_ptr start != 0": (_csr, lambda m, t: t.update(row_ptr=_set(t["row_ptr"], 0, 1)), r"row_ptr\[0\]"),
    "row_ptr wrong length": (_csr, lambda m, t: t.update(row_ptr=t["row_ptr"][:-1].contiguous()), "row_ptr has length"),
    "row_ptr wrong dtype": (_csr, lambda m, t: t.update(row_ptr=t["row_ptr"].long()), "row_ptr has dtype int64"),
    "col out of range": (_csr, lambda m, t: t.update(col_idx=_set(t["col_idx"], 1, 5)), "column index out of range"),
    "col negative": (_csr, lambda m, t: t.update(col_idx=_set(t["col_idx"], 0, -1)), "column index out of range"),
    "col unsorted": (_csr, lambda m, t: t.update(col_idx=_set(t["col_idx"], 0, 4)), "row 0 .*unsorted"),
    "col duplicate": (_csr, lambda m, t: t.update(col_idx=_set(t["col_idx"], 6, 1)), "row 2 .*duplicate"),
    "col wrong dtype": (_csr, lambda m, t: t.update(col_idx=t["col_idx"].int()),
                        "col_idx has dtype int32, expected int16"),
    "col wrong length": (_csr, lambda m, t: t.update(col_idx=t["col_idx"][:-1].contiguous()), "col_idx has length"),
    "values wrong dtype": (_csr, lambda m, t: t.update(values=t["values"].double()), "values has dtype float64"),
    "values nan": (_csr, lambda m, t: t.update(values=_set(t["values"], 2, float("nan"))), "non-finite"),
    "values inf": (_csr, lambda m, t: t.update(values=_set(t["values"], 2, float("inf"))), "non-finite"),
    "values 2-D": (_csr, lambda m, t: t.update(values=t["values"][None]), "values must be 1-D"),
    "meta dtype mismatch": (_csr, lambda m, t: m.update(value_dtype="bfloat16"), "value_dtype"),
    "meta index dtype": (_csr, lambda m, t: m.update(index_dtype="int32"), "index_dtype"),
    "meta nnz": (_csr, lambda m, t: m.update(nnz=3), "nnz"),
    "meta shape too wide for int16": (_csr, lambda m, t: m.update(shape=[3, 40000]), "index_dtype"),
    "meta shape rows": (_csr, lambda m, t: m.update(shape=[4, 5]), "row_ptr has length"),
    "meta shape bad": (_csr, lambda m, t: m.update(shape=[3]), "shape"),
    "meta shape negative": (_csr, lambda m, t: m.update(shape=[3, -5]), "shape"),
    "missing tensor": (_csr, lambda m, t: t.pop("values"), r"missing tensor.*values"),
    "extra tensor": (_csr, lambda m, t: t.update(evil=torch.zeros(1)), r"unexpected tensor.*evil"),
    "not a tensor": (_csr, lambda m, t: t.update(values=[1.0] * 7), "values must be a torch.Tensor"),
    "row_order not permutation": (_csr, lambda m, t: t.update(row_order=torch.tensor([2, 2, 1], dtype=torch.int32)),
                                  "not a permutation"),
    "row_order out of range": (_csr, lambda m, t: t.update(row_order=torch.tensor([2, 0, 3], dtype=torch.int32)),
                               "row_order entries"),
    "row_order not by length": (_csr, lambda m, t: t.update(row_order=torch.tensor([1, 0, 2], dtype=torch.int32)),
                                "non-increasing"),
    "row_order missing": (_csr, lambda m, t: t.pop("row_order"), "has_row_order"),
    "unknown version": (_csr, lambda m, t: m.update(format_version=2), "format_version 2"),
    "missing version": (_csr, lambda m, t: m.pop("format_version"), "format_version"),
    "unknown kind": (_csr, lambda m, t: m.update(kind="coo"), "unknown format kind 'coo'"),
    "bsr block col out of range": (_bsr, lambda m, t: t.update(block_col_idx=_set(t["block_col_idx"], 0, 3)),
                                   "block index out of range"),
    "bsr block col negative": (_bsr, lambda m, t: t.update(block_col_idx=_set(t["block_col_idx"], 0, -1)),
                               "block index out of range"),
    "bsr ptr not monotone": (_bsr, lambda m, t: t.update(block_row_ptr=_set(t["block_row_ptr"], 1, 99)),
                             "not monotone"),
    "bsr ptr end": (_bsr, lambda m, t: t.update(
        block_row_ptr=_set(t["block_row_ptr"], -1, int(t["block_row_ptr"][-1]) + 1)),
                    r"block_row_ptr\[-1\]"),
    "bsr blocks wrong shape": (_bsr, lambda m, t: t.update(blocks=t["blocks"][:, :, :2].contiguous()),
                               r"expected \[nblocks, 4, 4\]"),
    "bsr blocks wrong dtype": (_bsr, lambda m, t: t.update(blocks=t["blocks"].half()), "blocks has dtype float16"),
    "bsr padding nonzero": (_bsr, lambda m, t: t.update(blocks=_set(t["blocks"], (-1, 3, 3), 1.0)), "padding"),
    "bsr meta block": (_bsr, lambda m, t: m.update(block=[4, 0]), "block"),
    "bsr meta block mismatch": (_bsr, lambda m, t: m.update(block=[2, 2]),
                                r"blocks has shape .*expected \[nblocks, 2, 2\]"),
    "bsr blocks nan": (_bsr, lambda m, t: t.update(blocks=_set(t["blocks"], (0, 0, 0), float("nan"))), "non-finite"),
    "lowrank rank mismatch": (_lowrank, lambda m, t: m.update(rank=2), "u has shape"),
    "lowrank v wrong shape": (_lowrank, lambda m, t: t.update(v=t["v"][:, :5].contiguous()), "v has shape"),
    "lowrank dtype mix": (_lowrank, lambda m, t: t.update(v=t["v"].bfloat16()), "share a dtype"),
    "lowrank bad error": (_lowrank, lambda m, t: m.update(relative_error=-1.0), "relative_error"),
    "lowrank missing rank": (_lowrank, lambda m, t: m.pop("rank"), "rank"),
    "dense wrong shape": (_dense, lambda m, t: m.update(shape=[8, 6]), "weight has shape"),
    "dense wrong dtype": (_dense, lambda m, t: t.update(weight=t["weight"].int()), "weight has dtype int32"),
    "dense inf": (_dense, lambda m, t: t.update(weight=_set(t["weight"], (0, 0), float("-inf"))), "non-finite"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_from_tensors_rejects_corrupt(case):
    build, mutate, pattern = CORRUPTIONS[case]
    meta, tensors = build()
    assert from_tensors(meta, tensors) is not None  # the unmodified artifact loads
    mutate(meta, tensors)
    with pytest.raises(ValueError, match=pattern) as exc:
        from_tensors(meta, tensors, name="encoder.layer.0.attention.self.query")
    assert "corrupt" in str(exc.value)
    assert "encoder.layer.0.attention.self.query" in str(exc.value)
    assert isinstance(exc.value, FormatError)


def test_from_tensors_bad_containers():
    with pytest.raises(ValueError, match="meta must be a dict"):
        from_tensors(["csr"], {})
    meta, _ = _csr()
    with pytest.raises(ValueError, match="tensors must be a dict"):
        from_tensors(meta, [1, 2])


def test_class_from_tensors_checks_kind():
    meta, tensors = _csr()
    assert isinstance(CSRFormat.from_tensors(meta, tensors), CSRFormat)
    with pytest.raises(ValueError, match="expected a 'bsr'"):
        BSRFormat.from_tensors(meta, tensors)


def test_direct_construction_validates():
    with pytest.raises(FormatError, match="invalid CSRFormat: column index out of range"):
        CSRFormat(shape=(1, 2), row_ptr=torch.tensor([0, 1], dtype=torch.int32),
                  col_idx=torch.tensor([2], dtype=torch.int16), values=torch.tensor([1.0]))
    with pytest.raises(FormatError, match="invalid DenseFormat"):
        DenseFormat(torch.ones(3))


def test_explicit_zeros_and_zero_blocks_are_accepted_on_load():
    fmt = CSRFormat(shape=(1, 3), row_ptr=torch.tensor([0, 2], dtype=torch.int32),
                    col_idx=torch.tensor([0, 2], dtype=torch.int16), values=torch.tensor([0.0, 1.0]))
    assert fmt.nnz == 2 and fmt.count_nonzero() == 1
    assert torch.equal(roundtrip(fmt).to_dense(), torch.tensor([[0.0, 0.0, 1.0]]))
