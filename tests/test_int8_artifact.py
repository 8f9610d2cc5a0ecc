"""The INT8 artifact: the ``int8-b4`` storage format, ``export(precision="int8")``, and compiling what it stores.

The format holds int8 ints in 1x4 blocks with a float32 scale per row; the kernels' packed layout is built from it
without re-quantising, so every test here compares ints bit for bit (``torch.equal``), and float outputs against a
reference computed from the stored ints.
"""
from __future__ import annotations

import json

import pytest
import torch
from artifact_forge import rewrite_manifest, rewrite_tensors

from sparsekit.formats import FormatError, Int8BlockFormat, from_tensors, to_format
from sparsekit.formats.int8 import WEIGHT_BITS, quantize_rows, weight_qmax
from sparsekit.kernels import reference
from sparsekit.kernels.cpu_int8_layout import pack_cpu_int8_b4


def _block_masked(w: torch.Tensor, density: float, gen) -> torch.Tensor:
    """``w`` with random 1x4 blocks (along the input) kept at ``density``."""
    keep = torch.rand(w.shape[0], -(-w.shape[1] // 4), generator=gen) < density
    return w * keep.repeat_interleave(4, dim=1)[:, :w.shape[1]]


def _weight(out: int = 10, inp: int = 22, density: float = 0.4, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = _block_masked(torch.randn(out, inp, generator=gen), density, gen)
    w[3] = 0  # an empty row: scale 0, no blocks
    return w


# =============================================================================================
# The format
# =============================================================================================
def test_format_round_trip_and_conventions():
    w = _weight()
    fmt = to_format(w, "int8-b4")
    assert isinstance(fmt, Int8BlockFormat) and fmt.kind == "int8-b4" and fmt.shape == (10, 22)
    q, scale = quantize_rows(w)
    assert torch.equal(fmt.to_int8(), q) and torch.equal(fmt.scale, scale)
    assert torch.equal(fmt.to_dense(), scale[:, None] * q.to(torch.float32))
    assert fmt.value_dtype == torch.int8 and fmt.index_dtype == torch.int16
    assert fmt.scale[3] == 0 and fmt.row_ptr[3] == fmt.row_ptr[4]
    # nnz: the in-bounds positions of the stored blocks (the last block column covers 2 columns of 22)
    last = fmt.block_col_idx.to(torch.int64) == 5
    assert fmt.nnz == 4 * fmt.nblocks - 2 * int(last.sum())
    assert fmt.density == fmt.nnz / (10 * 22)
    assert fmt.count_nonzero() == int(q.count_nonzero())
    assert fmt.nbytes == 4 * 11 + 2 * fmt.nblocks + 4 * fmt.nblocks + 4 * 10
    meta = fmt.meta()
    assert meta == {"format_version": 1, "kind": "int8-b4", "shape": [10, 22], "value_dtype": "int8",
                    "index_dtype": "int16", "nblocks": fmt.nblocks}
    back = from_tensors(json.loads(json.dumps(meta)), {k: v.clone() for k, v in fmt.tensors().items()})
    assert isinstance(back, Int8BlockFormat)
    for name, t in fmt.tensors().items():
        assert torch.equal(back.tensors()[name], t) and back.tensors()[name].dtype == t.dtype
    assert "Int8BlockFormat" in repr(fmt) and "nblocks" in repr(fmt)


def test_format_safetensors_round_trip_and_matmul_reference():
    from safetensors.torch import load, save

    fmt = to_format(_weight(7, 13, seed=1), "int8-b4")
    back = from_tensors(fmt.meta(), load(save(fmt.tensors())))
    assert torch.equal(back.to_int8(), fmt.to_int8()) and torch.equal(back.scale, fmt.scale)
    x = torch.randn(3, 13)
    torch.testing.assert_close(fmt.matmul_reference(x), x @ fmt.to_dense().T)


def test_stores_blocks_of_nonzero_weights_and_from_quantized_keeps_every_int():
    w = torch.zeros(2, 8)
    w[0, 0], w[0, 5] = 1.0, 1e-4  # the second block's weight rounds to 0 but the block is stored (as pack_cpu)
    fmt = to_format(w, "int8-b4")
    assert fmt.nblocks == 2 and fmt.values[1].count_nonzero() == 0
    q = fmt.to_int8()
    again = Int8BlockFormat.from_quantized(q, fmt.scale)
    assert again.nblocks == 1 and torch.equal(again.to_int8(), q) and torch.equal(again.scale, fmt.scale)
    with pytest.raises(FormatError, match="-128"):
        Int8BlockFormat.from_quantized(torch.full((1, 4), -128, dtype=torch.int8), torch.ones(1))


def test_bfloat16_rounding_and_wide_inputs():
    w = _weight(4, 9, seed=2)
    fmt = to_format(w, "int8-b4", value_dtype=torch.bfloat16)
    q, scale = quantize_rows(w.to(torch.bfloat16).float())
    assert torch.equal(fmt.to_int8(), q) and torch.equal(fmt.scale, scale)
    wide = to_format(torch.zeros(1, 4 * 32769), "int8-b4")  # more than 32768 block columns: int32 indices
    assert wide.index_dtype == torch.int32 and wide.nblocks == 0
    assert from_tensors(wide.meta(), wide.tensors()).index_dtype == torch.int32


@pytest.mark.parametrize("shape", [(10, 22), (5, 16), (1, 3), (0, 8), (6, 0)])
def test_pack_cpu_int8_b4_of_the_format_is_bit_identical(shape):
    w = _weight(*shape, seed=3) if shape[0] > 3 else _block_masked(torch.randn(*shape), 0.5, None)
    fmt = to_format(w, "int8-b4")
    from_fmt, from_dense = pack_cpu_int8_b4(fmt), pack_cpu_int8_b4(w)
    for name in ("ptr", "col", "val", "scale"):
        a, b = getattr(from_fmt, name), getattr(from_dense, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert torch.equal(from_fmt.to_int8(), fmt.to_int8())
    assert torch.equal(from_fmt.val, fmt.values.reshape(-1)) and torch.equal(from_fmt.scale, fmt.scale)
    # a format whose ints are not what quantising its dequantised weight would give is packed as stored
    odd = Int8BlockFormat.from_quantized(torch.full((2, 4), 3, dtype=torch.int8), torch.tensor([0.5, 2.0]))
    assert torch.equal(pack_cpu_int8_b4(odd).val, torch.full((8,), 3, dtype=torch.int8))


def _hostile_cases():
    """(name, edit(meta, tensors), message) for a valid 3x10 matrix: each edit makes one thing wrong."""
    def setitem(key, value):
        return lambda m, t: t.__setitem__(key, value)

    def poke(key, index, value):
        def edit(m, t):
            t[key] = t[key].clone()
            t[key][index] = value
        return edit

    return [
        ("ptr start", poke("row_ptr", 0, 1), r"row_ptr\[0\] is 1"),
        ("ptr decreasing", poke("row_ptr", 1, 5), "not monotone"),
        ("ptr end", poke("row_ptr", 3, 5), r"row_ptr\[-1\] is 5, expected 4"),
        ("ptr dtype", lambda m, t: t.__setitem__("row_ptr", t["row_ptr"].to(torch.int64)), "row_ptr has dtype int64"),
        ("ptr length", setitem("row_ptr", torch.tensor([0, 4], dtype=torch.int32)), "row_ptr has length 2"),
        ("column range", poke("block_col_idx", 3, 3), r"block column index out of range.*\[0, 2\]"),
        ("negative column", poke("block_col_idx", 0, -1), "block column index out of range"),
        ("duplicate column", poke("block_col_idx", 1, 0), "duplicate"),
        ("unsorted column", lambda m, t: t.__setitem__("block_col_idx", torch.tensor([1, 0, 0, 2], dtype=torch.int16)),
         "unsorted"),
        ("column dtype", lambda m, t: t.__setitem__("block_col_idx", t["block_col_idx"].to(torch.int32)),
         "block_col_idx has dtype int32, expected int16"),
        ("-128", poke("values", (2, 1), -128), r"-128; int8 values must lie in \[-127, 127\]"),
        ("values dtype", lambda m, t: t.__setitem__("values", t["values"].to(torch.int16)), "values has dtype int16"),
        ("values shape", lambda m, t: t.__setitem__("values", t["values"][:, :3].contiguous()),
         r"expected \[nblocks, 4\]"),
        ("values 1-D", lambda m, t: t.__setitem__("values", t["values"].reshape(-1)), "values must be 2-D"),
        ("values count", lambda m, t: t.__setitem__("values", t["values"][:3].contiguous()),
         "block_col_idx has length 4, expected 3"),
        ("scale nan", poke("scale", 1, float("nan")), "non-finite"),
        ("scale inf", poke("scale", 0, float("inf")), "non-finite"),
        ("scale negative", poke("scale", 2, -1.0), "negative"),
        ("scale length", lambda m, t: t.__setitem__("scale", t["scale"][:2].contiguous()), "scale has length 2"),
        ("scale dtype", lambda m, t: t.__setitem__("scale", t["scale"].double()), "scale has dtype float64"),
        ("padding", poke("values", (3, 3), 5), "padding right of column 10"),
        ("not a tensor", setitem("scale", [1.0, 2.0, 3.0]), "scale must be a torch.Tensor"),
        ("missing tensor", lambda m, t: t.pop("scale"), r"missing tensor\(s\) \['scale'\]"),
        ("extra tensor", setitem("row_order", torch.zeros(3, dtype=torch.int32)), "unexpected tensor"),
        ("value dtype", lambda m, t: m.__setitem__("value_dtype", "float32"), "meta value_dtype 'float32'"),
        ("index dtype", lambda m, t: m.__setitem__("index_dtype", "int32"), "meta index_dtype is 'int32'"),
        ("nblocks", lambda m, t: m.__setitem__("nblocks", 7), "meta nblocks 7"),
        ("no nblocks", lambda m, t: m.pop("nblocks"), "meta nblocks None"),
        ("narrower", lambda m, t: m.__setitem__("shape", [3, 8]), r"block column index out of range.*\[0, 1\]"),
        ("padding of a narrower", lambda m, t: m.__setitem__("shape", [3, 9]), "padding right of column 9"),
        ("more rows", lambda m, t: m.__setitem__("shape", [4, 10]), "row_ptr has length 4, expected 5"),
        ("bad shape", lambda m, t: m.__setitem__("shape", [3, -1]), "out of range"),
    ]


@pytest.mark.parametrize("name,edit,message", _hostile_cases(), ids=[c[0] for c in _hostile_cases()])
def test_hostile_tensors_are_refused_with_a_format_error(name, edit, message):
    q = torch.tensor([[1, 2, 0, 0, 0, 0, 0, 0, 3, 4], [0, 0, 0, 0, 5, 0, 0, 0, 0, 0],
                      [0, 0, 0, 0, 0, 0, 0, 0, -127, 127]], dtype=torch.int8)
    fmt = Int8BlockFormat.from_quantized(q, torch.tensor([0.1, 0.2, 0.3]))
    assert fmt.block_col_idx.tolist() == [0, 2, 1, 2]
    meta, tensors = fmt.meta(), dict(fmt.tensors())
    edit(meta, tensors)
    with pytest.raises(FormatError, match=message):
        from_tensors(meta, tensors, name="layer 0 ffn_in")


# =============================================================================================
# The artifact
# =============================================================================================
def _block_sparse_classifier(model_dir, density: float = 0.3, seed: int = 11):
    from conftest import random_sparse_classifier

    from sparsekit.models import prunable_matrices

    gen = torch.Generator().manual_seed(seed)
    model = random_sparse_classifier(model_dir, 1.0)
    with torch.no_grad():
        for m in prunable_matrices(model):
            w = model.get_submodule(m.name).weight
            w.copy_(_block_masked(w, density, gen))
    return model


@pytest.fixture(scope="module")
def int8_export(tiny_model_dir, tmp_path_factory):
    """(fp32 model, its int8 artifact path) of the tiny classifier with 1x4 blocks at 30%."""
    from sparsekit.export.artifact import export
    from sparsekit.models import load_tokenizer

    model = _block_sparse_classifier(tiny_model_dir)
    path = tmp_path_factory.mktemp("int8") / "art"
    export((model, load_tokenizer(tiny_model_dir)), path, precision="int8")
    return model, path


class _Int8Reference(torch.nn.Module):
    """The int8 kernel's reference (activations quantised per token) on a format's stored ints."""

    def __init__(self, fmt: Int8BlockFormat, bias: torch.Tensor) -> None:
        super().__init__()
        self.packed, self.bias = pack_cpu_int8_b4(fmt), bias

    def forward(self, x):
        p = self.packed
        return reference.int8_b4_linear(x.reshape(-1, p.shape[1]), p.ptr, p.col, p.val, p.scale, p.wsum,
                                        p.shape[1], p.shape[0], self.bias).reshape(*x.shape[:-1], p.shape[0])


def test_int8_export_loads_verifies_and_stores_quantised_weights(int8_export, tmp_path):
    from sparsekit.export.artifact import FormatLinear, load, verify
    from sparsekit.export.compact import compact

    model, path = int8_export
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["export"]["formats"] == "int8-b4"
    bits = manifest["export"]["int8_weight_bits"]
    assert bits == 8  # the default: not the exporting machine's faster width
    assert all(m["kind"] == "int8-b4" and m["value_dtype"] == "int8"
               for layer in manifest["layers"] for m in layer["matrices"].values())
    result = verify(path)
    assert result["ok"] and result["max_abs_error"] == 0.0  # the samples are the dequantised model's outputs
    art = load(path)
    compacted, _ = compact(model)
    for layer, ref in zip(art.layers, compacted.layers):
        for name, linear in layer.linears().items():
            assert isinstance(linear, FormatLinear) and isinstance(linear.fmt, Int8BlockFormat)
            q, scale = quantize_rows(ref.linears()[name].weight.detach(), bits)
            assert torch.equal(linear.fmt.to_int8(), q) and torch.equal(linear.fmt.scale, scale)
    ids = torch.randint(5, 40, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model(input_ids=ids).logits, art(input_ids=ids).logits
    assert 0 < float((got - want).abs().max()) < 0.05 * float(want.abs().max()) + 0.02  # lossy: int8 weights


def test_compile_of_an_int8_artifact_runs_the_stored_ints(int8_export):
    from sparsekit.compiler import compile as sk_compile
    from sparsekit.export.artifact import FormatLinear, load

    model, path = int8_export
    art = load(path)
    stored = {(i, n): (m.fmt, m.bias) for i, layer in enumerate(art.layers) for n, m in layer.linears().items()}
    report = sk_compile(art, tokens=16, repeats=2, warmup=1, verbose=False)  # default: the artifact's precision
    assert report.precision == "int8" and {c.backend for c in report.layers} <= {"int8-b4-cpu", "dense"}
    from sparsekit.runtime import RUNTIME_BACKENDS  # the others are rejected as not the fused runtime's

    assert all(set(c.rejected) & set(RUNTIME_BACKENDS) <= {"csr-cpu", "bsr-cpu"} for c in report.layers)
    report = sk_compile(art, tokens=16, repeats=2, warmup=1, verbose=False, force="int8-b4-cpu", retime=True)
    assert {c.backend for c in report.layers} == {"int8-b4-cpu"}

    # the fused runtime's int8 matrices hold exactly the stored ints (zero rows / columns padded in; the head
    # padding of Q, K, V and attn_out: test_pad_layout_keeps_every_stored_int)
    from sparsekit.runtime.encoder import layer_weights

    for i, layer in enumerate(art.layers):
        lw = layer_weights(layer, art.config.hidden_act)
        assert set(lw.int8) == {"qkv", "attn_out", "ffn_in", "ffn_out"}
        att = layer.attention
        qkv = [getattr(att, n).fmt for n in ("query", "key", "value")]
        assert torch.equal(lw.int8["qkv"].to_int8(), torch.cat([f.to_int8() for f in qkv]))
        assert torch.equal(lw.int8["qkv"].scale, torch.cat([f.scale for f in qkv]))
        for name in ("ffn_in", "ffn_out"):
            q, scale = lw.int8[name].to_int8(), lw.int8[name].scale
            orig = stored[(i, name)][0]
            out, inp = orig.shape
            assert torch.equal(q[:out, :inp], orig.to_int8()) and torch.equal(scale[:out], orig.scale)
            assert not q[out:].any() and not q[:, inp:].any() and not scale[out:].any()
            assert torch.equal(lw.matrices[name][0], lw.int8[name].to_dense())

    # logits: within the int8 error of the fp32 model, and equal to the int8 reference on the stored ints
    ref = load(path)
    for layer in ref.layers:
        for name, linear in layer.linears().items():
            assert isinstance(linear, FormatLinear)
            layer.set_linear(name, _Int8Reference(linear.fmt, linear.bias))
    ids = torch.randint(5, 40, (2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want_ref, want_fp32 = art(input_ids=ids).logits, ref(input_ids=ids).logits, model(input_ids=ids).logits
    torch.testing.assert_close(got, want_ref, rtol=0, atol=1e-5)
    assert float((got - want_fp32).abs().max()) < 0.05 * float(want_fp32.abs().max()) + 0.02


def test_fp32_compile_of_an_int8_artifact_runs_the_dequantised_weights(int8_export):
    from sparsekit.compiler import compile as sk_compile
    from sparsekit.export.artifact import load

    _, path = int8_export
    art, plain = load(path), load(path)
    report = sk_compile(art, tokens=16, repeats=2, warmup=1, verbose=False, precision="fp32", force="csr-cpu")
    assert report.precision == "fp32" and "int8-b4-cpu" not in {c.backend for c in report.layers}
    ids = torch.randint(5, 40, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(art(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=0, atol=1e-5)


def test_modules_runtime_packs_the_stored_ints(int8_export):
    from sparsekit.backends.runner import PackedLinear
    from sparsekit.compiler import _linears
    from sparsekit.compiler import compile as sk_compile
    from sparsekit.export.artifact import load

    _, path = int8_export
    art = load(path)
    art.pad_layout()  # what compile does first (a second call changes nothing)
    stored = {name: module.fmt for name, module in _linears(art)}
    report = sk_compile(art, tokens=16, repeats=2, warmup=1, verbose=False, fused=False, force="int8-b4-cpu")
    assert report.runtime == "modules" and report.precision == "int8"
    assert {c.backend for c in report.layers} == {"int8-b4-cpu"} and set(stored) == {c.name for c in report.layers}
    for choice in report.layers:
        module, want = art.get_submodule(choice.name), pack_cpu_int8_b4(stored[choice.name])
        assert isinstance(module, PackedLinear)
        for name in ("ptr", "col", "val", "scale"):
            assert torch.equal(getattr(module.packed, name), getattr(want, name))


def test_pad_layout_keeps_every_stored_int(tiny_model_dir, tmp_path):
    """Ragged heads and an FFN width off the multiple: padding inserts zero rows / columns of ints, never
    re-quantises."""
    from sparsekit.export.artifact import FormatLinear, export, load
    from sparsekit.export.modeling import _pad_index
    from sparsekit.models import load_tokenizer

    model = _block_sparse_classifier(tiny_model_dir, density=0.15, seed=5)
    export((model, load_tokenizer(tiny_model_dir)), tmp_path / "art", precision="int8")
    art = load(tmp_path / "art")
    before = [{n: m.fmt for n, m in layer.linears().items()} for layer in art.layers]
    shapes = list(art.shapes)
    assert any(len(set(s.qk_widths)) > 1 or s.ffn % 16 for s in shapes)  # something to pad
    ids = torch.randint(5, 40, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = art(input_ids=ids).logits
        art.pad_layout()
        torch.testing.assert_close(art(input_ids=ids).logits, want, rtol=0, atol=1e-5)
    for layer, old, shape in zip(art.layers, before, shapes):
        new = {n: m.fmt for n, m in layer.linears().items()}
        assert all(isinstance(m, FormatLinear) for m in layer.linears().values())
        att = layer.attention
        for name in ("query", "key", "value"):
            widths = shape.v_widths if name == "value" else shape.qk_widths
            index = _pad_index(widths, att.v_pad if name == "value" else att.qk_pad)
            real = index < sum(widths)
            q, scale = new[name].to_int8(), new[name].scale
            assert torch.equal(q[real], old[name].to_int8()[index[real]])
            assert torch.equal(scale[real], old[name].scale[index[real]])
            assert not q[~real].any() and not scale[~real].any()
        index = _pad_index(shape.v_widths, att.v_pad)
        real = index < sum(shape.v_widths)
        assert torch.equal(new["attn_out"].to_int8()[:, real], old["attn_out"].to_int8()[:, index[real]])
        assert torch.equal(new["attn_out"].scale, old["attn_out"].scale)
        width = shape.ffn
        assert torch.equal(new["ffn_in"].to_int8()[:width], old["ffn_in"].to_int8())
        assert torch.equal(new["ffn_out"].to_int8()[:, :width], old["ffn_out"].to_int8())
        assert not new["ffn_in"].to_int8()[width:].any() and not new["ffn_out"].to_int8()[:, width:].any()


# =============================================================================================
# The manifest's precision
# =============================================================================================
def test_manifest_precision_field(int8_export, artifact, tmp_path):
    import shutil

    from sparsekit.export.errors import ArtifactError
    from sparsekit.export.artifact import load, manifest_precision

    assert manifest_precision(load(artifact).manifest) == "fp32"
    old = tmp_path / "old"
    shutil.copytree(artifact, old)
    rewrite_manifest(old, lambda m: m.pop("precision", None))  # written before the field existed
    assert "precision" not in load(old).manifest and manifest_precision(load(old).manifest) == "fp32"
    rewrite_manifest(old, lambda m: m.__setitem__("precision", "fp16"))
    with pytest.raises(ArtifactError, match="precision must be one of fp32, int8, got 'fp16'"):
        load(old)
    rewrite_manifest(old, lambda m: m.__setitem__("precision", "int8"))
    with pytest.raises(ArtifactError, match="'csr' in a int8 artifact"):
        load(old)
    _, path = int8_export
    forged = tmp_path / "forged"
    shutil.copytree(path, forged)
    rewrite_manifest(forged, lambda m: m.__setitem__("precision", "fp32"))
    with pytest.raises(ArtifactError, match="'int8-b4' in a fp32 artifact"):
        load(forged)


def test_hostile_int8_tensors_in_an_artifact_are_refused(int8_export, tmp_path):
    import shutil

    from sparsekit.export.errors import ArtifactError
    from sparsekit.export.artifact import load

    _, path = int8_export
    for key, index, value, message in (("values", (0, 0), -128, "-128"), ("scale", 0, -1.0, "negative"),
                                       ("row_ptr", 1, 10_000, "row_ptr")):
        forged = tmp_path / f"forged-{key}"
        shutil.copytree(path, forged)

        def edit(tensors, key=key, index=index, value=value):
            t = tensors[f"layers.0.ffn_in.{key}"].clone()
            t[index] = value
            tensors[f"layers.0.ffn_in.{key}"] = t

        rewrite_tensors(forged, edit)
        with pytest.raises(ArtifactError, match=message):
            load(forged)


def test_export_precision_arguments(tiny_model_dir, tmp_path):
    from sparsekit.export.artifact import export, load
    from sparsekit.models import load_tokenizer

    pair = (_block_sparse_classifier(tiny_model_dir), load_tokenizer(tiny_model_dir))
    with pytest.raises(ValueError, match="precision must be one of fp32, int8"):
        export(pair, tmp_path / "a", precision="fp16")
    with pytest.raises(ValueError, match="format 'csr' does not apply"):
        export(pair, tmp_path / "b", precision="int8", formats="csr")
    with pytest.raises(ValueError, match="--precision int8"):
        export(pair, tmp_path / "c", formats="int8-b4")
    assert not any((tmp_path / n).exists() for n in "abc")
    export(pair, tmp_path / "d", precision="int8", formats="int8-b4")
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["precision"] == "int8"
    with pytest.raises(ValueError, match="int8_weight_bits applies to precision='int8'"):
        export(pair, tmp_path / "e", int8_weight_bits=7)
    with pytest.raises(ValueError, match="weight_bits must be one of"):
        export(pair, tmp_path / "f", precision="int8", int8_weight_bits=6)
    for bits in WEIGHT_BITS:
        export(pair, tmp_path / f"bits{bits}", precision="int8", int8_weight_bits=bits)
        manifest = json.loads((tmp_path / f"bits{bits}" / "manifest.json").read_text())
        assert manifest["export"]["int8_weight_bits"] == bits
        fmts = [lin.fmt for layer in load(tmp_path / f"bits{bits}").layers for lin in layer.linears().values()]
        assert max(int(f.values.abs().max()) for f in fmts) == weight_qmax(bits)
        assert {f.weight_bits for f in fmts} == {bits}


def test_weight_bits_quantise_to_127_or_63():
    w = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    w[2] = 0.0
    for bits in WEIGHT_BITS:
        q, scale = quantize_rows(w, bits)
        qmax = weight_qmax(bits)
        assert int(q.abs().max()) == qmax and not q[2].any() and float(scale[2]) == 0.0
        torch.testing.assert_close(scale, w.abs().amax(1) / qmax)
        assert Int8BlockFormat.pack(w, weight_bits=bits).weight_bits == bits
        assert to_format(w, "int8-b4", weight_bits=bits).weight_bits == bits
    assert weight_qmax(8) == 127 and weight_qmax(7) == 63
    with pytest.raises(ValueError, match="weight_bits must be one of"):
        quantize_rows(w, 6)
    with pytest.raises(ValueError, match="weight_bits= only applies"):
        to_format(w, "csr", weight_bits=7)


def test_module_layout_artifacts_refuse_int8(tiny_model_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from sparsekit.export.artifact import export
    from sparsekit.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    config = AutoConfig.for_model("distilbert", vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=1,
                                  n_heads=4, max_position_embeddings=64)
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(ValueError, match="precision 'int8' is supported for compacted"):
        export((model, tokenizer), tmp_path / "art", precision="int8")


def test_cli_export_precision_int8(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from sparsekit.cli import app

    model = _block_sparse_classifier(tiny_model_dir)
    model.save_pretrained(tmp_path / "ckpt")
    from sparsekit.models import load_tokenizer

    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "ckpt")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "art"),
                                      "--precision", "int8"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "art" / "manifest.json").read_text())["precision"] == "int8"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "bad"),
                                      "--precision", "int4"])
    assert result.exit_code != 0 and "precision must be one of" in result.output
