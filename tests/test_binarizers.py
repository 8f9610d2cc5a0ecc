"""Mask functions: exact TopK counts, STE gradients, SMP-S budgets, global TopK, L0 (spec §6.1)."""
import math

import pytest
import torch

from sparsekit.prune import binarizers
from sparsekit.prune.masked_linear import MaskedLinear


@pytest.mark.parametrize("ratio,numel,expected", [
    (0.03, 768 * 768, 17694), (0.10, 3072 * 768, 235929), (0.29, 100, 29), (0.7, 10, 7),
    (1.0, 5, 5), (0.0, 5, 0), (1.5, 4, 4),
])
def test_kept_count_is_floor(ratio, numel, expected):
    assert binarizers.kept_count(ratio, numel) == expected


@pytest.mark.parametrize("shape", [(768, 768), (7, 5), (1, 1), (3, 129)])
@pytest.mark.parametrize("ratio", [0.03, 0.1, 0.5, 0.9, 1.0])
def test_topk_keeps_exactly_floor_v_n(shape, ratio):
    scores = torch.randn(shape)
    mask = binarizers.topk_binarize(scores, ratio)
    k = math.floor(ratio * scores.numel() + 1e-9 * scores.numel())
    assert int(mask.sum()) == k
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    if 0 < k < scores.numel():  # every kept score >= every pruned score
        assert scores[mask.bool()].min() >= scores[~mask.bool()].max()


def test_topk_exact_with_ties():
    scores = torch.zeros(100, 30)  # all tied, as at initialisation
    assert int(binarizers.topk_binarize(scores, 0.1).sum()) == 300


def test_ste_gradient_identity():
    """dL/dS == dL/dW' * W for every entry (pruned ones included); dL/dW == dL/dW' * M."""
    torch.manual_seed(0)
    layer = MaskedLinear(13, 7, kind="topk")
    with torch.no_grad():
        layer.mask_scores.normal_()
    layer.keep_ratio = 0.3
    x, r = torch.randn(5, 13), torch.randn(5, 7)
    (layer(x) * r).sum().backward()
    mask = binarizers.topk_mask(layer.mask_scores, binarizers.kept_count(0.3, 91))
    w_prime = (layer.weight.detach() * mask).requires_grad_(True)
    (torch.nn.functional.linear(x, w_prime, layer.bias.detach()) * r).sum().backward()
    torch.testing.assert_close(layer.mask_scores.grad, w_prime.grad * layer.weight.detach())
    torch.testing.assert_close(layer.weight.grad, w_prime.grad * mask)
    assert (layer.mask_scores.grad[mask == 0] != 0).any(), "pruned entries must still get score gradient"


def test_threshold_binarizer_and_floor():
    scores = torch.linspace(-3, 3, 100).reshape(10, 10)
    mask = binarizers.threshold_binarize(scores, 0.0)
    assert int(mask.sum()) == 50
    mask = binarizers.threshold_binarize(scores, 10.0, min_kept=7)  # nothing passes -> floor of 7
    assert int(mask.sum()) == 7 and bool(mask.view(-1)[-7:].all())


def test_smp_s_identical_scores_reduce_to_smp_l():
    scores = [torch.full((8, 8), 0.3) for _ in range(6)]
    assert binarizers.smp_s_keep_ratios(scores, 0.1) == pytest.approx([0.1] * 6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_smp_s_budget_sums_to_L_v(temperature):
    torch.manual_seed(1)
    scores = [torch.randn(16, 8) * (i + 1) - i for i in range(5)]
    ratios = binarizers.smp_s_keep_ratios(scores, 0.1, temperature)
    assert sum(ratios) == pytest.approx(5 * 0.1)
    assert ratios[0] > ratios[-1]  # more score mass -> larger budget


def test_global_threshold_keeps_v_of_all():
    torch.manual_seed(2)
    scores = [torch.randn(30, 20), torch.randn(50, 10), torch.randn(7, 3)]
    value = binarizers.global_threshold(scores, 0.25)
    n = sum(s.numel() for s in scores)
    assert sum(int((s > value).sum()) for s in scores) == math.floor(0.25 * n)
    assert binarizers.global_threshold(scores, 1.0) == float("-inf")


def test_magnitude_mask_keeps_largest_abs():
    w = torch.tensor([[0.1, -5.0, 0.2], [3.0, -0.05, 1.0]])
    assert binarizers.magnitude_mask(w, 0.5).tolist() == [[0, 1, 0], [1, 0, 1]]


def test_hard_concrete():
    scores = torch.tensor([-10.0, 0.0, 2.197, 10.0])
    eval_mask = binarizers.hard_concrete_mask(scores, training=False)
    assert eval_mask[0] == 0 and eval_mask[-1] == 1 and 0 < eval_mask[1] < 1
    torch.manual_seed(0)
    train_mask = binarizers.hard_concrete_mask(scores.expand(1000, 4), training=True)
    assert ((train_mask >= 0) & (train_mask <= 1)).all()
    assert train_mask[:, 1].std() > 0.1  # stochastic while training
    shift = binarizers.L0_BETA * math.log(-binarizers.L0_LEFT / binarizers.L0_RIGHT)
    expected = torch.sigmoid(torch.tensor(0.0) - shift)
    torch.testing.assert_close(binarizers.l0_penalty(torch.zeros(3, 3)), expected)
