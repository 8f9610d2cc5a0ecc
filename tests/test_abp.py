"""Adapting-by-Pruning: frozen weights stay bit-identical, the run stops at the target sparsity, the
surrogate gradient and the drift are what the spec says (methods-abp-cap-lpaf.md §1.8)."""
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from sparsekit.models import load_classifier, prunable_matrices
from sparsekit.prune import PruneConfig, load_pruned, prune
from sparsekit.prune.abp import AbPExtension, init_logits, negative_fraction
from sparsekit.prune.binarizers import abp_mask

TINY_RUN = dict(task="sst2", train_samples=48, eval_samples=24, batch_size=8, max_length=24, progress=False)


def test_abp_keeps_every_non_score_weight_bit_identical_and_stops_at_target(tiny_model_dir, tmp_path):
    result = prune(PruneConfig(**TINY_RUN, model=str(tiny_model_dir), output_dir=str(tmp_path / "run"),
                               method="abp", keep=0.3, steps=40))
    record = json.loads((tmp_path / "run" / "recipe.json").read_text())["extensions"]["abp"]
    assert record["reached_target"] and record["stopped_at_step"] == result.steps < 40
    assert result.density == pytest.approx(0.3, abs=2e-3)
    original = load_classifier(tiny_model_dir, 2).state_dict()
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    masks = load_pruned(tmp_path / "run").masks
    prunable = {f"{m.name}.weight": m.name for m in prunable_matrices(load_classifier(tiny_model_dir, 2))}
    for key, tensor in original.items():
        if key.startswith("classifier."):
            assert not torch.equal(saved[key], tensor), key  # only theta and the head train
        elif key in prunable:
            assert torch.equal(saved[key], tensor * masks[prunable[key]]), key
        else:
            assert torch.equal(saved[key], tensor), key
    report = json.loads((tmp_path / "run" / "report.json").read_text())["abp"]
    assert report["kept"] == sum(int(m.sum()) for m in masks.values())


def test_abp_mask_forward_is_binary_and_backward_uses_the_small_temperature():
    theta = torch.tensor([-0.5, -1e-3, 2e-4, 0.01, 1.0], requires_grad=True)
    mask = abp_mask(theta, training=True, t_forward=1e5, t_backward=2.0)
    assert torch.equal(mask.detach(), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))  # |theta| > 1e-4: binary
    grad = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])
    mask.backward(grad)
    s = torch.sigmoid(2.0 * theta.detach())
    assert torch.allclose(theta.grad, grad * 2.0 * s * (1 - s))
    assert torch.equal(abp_mask(theta.detach(), training=False), (theta.detach() > 0).float())


def test_every_mask_starts_at_one_and_the_drift_is_a_constant_subtraction():
    scores = [torch.zeros(64, 32), torch.zeros(16, 8)]
    init_logits(scores, 0.01, 0.001, seed=0)
    assert all(bool((s > 0).all()) for s in scores) and negative_fraction(scores) == 0.0
    pruner = SimpleNamespace(masking="abp", score_parameters=lambda: scores, modules={})
    ext = AbPExtension(gamma=1e-3, schedule="constant", t_forward=1e5, t_backward=1.0)
    ctx = SimpleNamespace(pruner=pruner, config=SimpleNamespace(keep=0.01, seed=0), total=100, scheduler=None)
    ext.ever_pruned = [torch.zeros(s.shape, dtype=torch.bool) for s in scores]
    before = [s.clone() for s in scores]
    assert ext.after_step(ctx, 1) is False
    assert all(torch.allclose(b - s, torch.full_like(s, 1e-3)) for b, s in zip(before, scores))


@pytest.mark.parametrize("kwargs, message", [
    (dict(gamma=-1.0, schedule="constant"), "abp_gamma"),
    (dict(gamma=None, schedule="cosine"), "abp_gamma_schedule"),
])
def test_bad_abp_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AbPExtension(t_forward=1e5, t_backward=1.0, **kwargs)


def test_abp_refuses_another_masking(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="own masking"):
        prune(PruneConfig(**TINY_RUN, model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), method="abp",
                          masking="local", steps=2))
    assert not (tmp_path / "run").exists()
