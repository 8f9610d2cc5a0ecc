"""LPAF: sparsity-aware SVD reconstruction error and rank (exact at full rank), rank allocation under
the budget, an end-to-end run whose artifact stores the factors in the LowRank format, bad inputs."""
import json

import pytest
import torch

from sparsekit.export.artifact import export, load, verify
from sparsekit.export.lowrank import choose_with_rank
from sparsekit.prune import PruneConfig, load_pruned, prune
from sparsekit.prune.lpaf import LPAFExtension, allocate_ranks, relative_error, sparsity_aware_svd

TINY_RUN = dict(task="sst2", train_samples=48, eval_samples=24, batch_size=8, max_length=24, progress=False)
METHODS = ("masked-als", "score-weighted", "svd")


def _sparse(seed=0, shape=(12, 8), density=0.3):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    mask = torch.rand(shape, generator=g) < density
    scores = torch.randn(shape, generator=g)
    return w, mask, scores


@pytest.mark.parametrize("method", METHODS)
def test_full_rank_reproduces_the_pruned_matrix(method):
    w, mask, scores = _sparse()
    u, v = sparsity_aware_svd(w, mask, 8, method, scores)
    assert u.shape == (12, 8) and v.shape == (8, 8)
    assert relative_error(w, mask, u, v) < 1e-6


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rank", [1, 3, 5])
def test_factors_have_the_requested_rank(method, rank):
    w, mask, scores = _sparse(1)
    u, v = sparsity_aware_svd(w, mask, rank, method, scores)
    assert u.shape == (12, rank) and v.shape == (rank, 8)
    assert int(torch.linalg.matrix_rank(u.double() @ v.double())) == rank


def test_plain_svd_error_falls_with_rank_and_masked_als_fits_the_kept_entries_better():
    w, mask, _ = _sparse(2, (20, 16), 0.25)
    errors = [relative_error(w, mask, *sparsity_aware_svd(w, mask, r, "svd")) for r in range(0, 17, 4)]
    assert errors == sorted(errors, reverse=True) and errors[0] == pytest.approx(1.0) and errors[-1] < 1e-6
    ws = w * mask

    def kept_error(u, v):
        return float(torch.linalg.norm(mask * (ws - u @ v)) / torch.linalg.norm(ws))

    assert kept_error(*sparsity_aware_svd(w, mask, 4, "masked-als", iters=20)) < kept_error(
        *sparsity_aware_svd(w, mask, 4, "svd"))


def test_rank_allocation_respects_the_parameter_budget():
    shapes = {"a": (32, 32), "b": (64, 32), "c": (32, 64)}
    spectra = {k: torch.linspace(3, 0.1, min(s)) ** (2 if k == "a" else 1) for k, s in shapes.items()}
    budget = int(0.2 * sum(m * n for m, n in shapes.values()))
    for policy in ("energy", "uniform"):
        ranks = allocate_ranks(shapes, spectra, budget, policy)
        assert sum(r * sum(shapes[k]) for k, r in ranks.items()) <= budget
        assert all(1 <= r <= min(shapes[k]) for k, r in ranks.items())


@pytest.mark.parametrize("call, message", [
    (lambda: sparsity_aware_svd(*_sparse()[:2], 9), "out of range"),
    (lambda: sparsity_aware_svd(*_sparse()[:2], -1), "out of range"),
    (lambda: sparsity_aware_svd(*_sparse()[:2], 2, "qr"), "unknown LPAF init"),
    (lambda: sparsity_aware_svd(*_sparse()[:2], 2, "score-weighted"), "scores"),
    (lambda: allocate_ranks({"a": (4, 4)}, {}, 10, "greedy"), "rank policy"),
    (lambda: LPAFExtension(factorize_at=1.5), "lpaf_factorize_at"),
    (lambda: LPAFExtension(mixed_rank="swap"), "lpaf_mixed_rank"),
    (lambda: choose_with_rank(torch.ones(3, 3), 1.5), "rank"),
])
def test_bad_inputs_are_refused(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


@pytest.mark.parametrize("mixed", ["theseus", "nested-dropout"])
def test_lpaf_run_exports_its_factors_in_the_lowrank_format(tiny_model_dir, tmp_path, mixed):
    result = prune(PruneConfig(**TINY_RUN, model=str(tiny_model_dir), output_dir=str(tmp_path / "run"),
                               method="lpaf", keep=0.3, steps=8, lpaf_mixed_rank=mixed))
    record = json.loads((tmp_path / "run" / "recipe.json").read_text())["extensions"]["lpaf"]
    assert record["factorize_step"] == 4 and len(record["ranks"]) == 12
    assert result.density == pytest.approx(record["parameter_fraction"]) and result.density <= 0.3
    pruned = load_pruned(tmp_path / "run")
    for entry in record["ranks"]:
        weight = pruned.model.get_submodule(entry["name"]).weight.detach()
        assert int(torch.linalg.matrix_rank(weight.double(), rtol=1e-5)) <= entry["rank"]
    exported = export(tmp_path / "run", tmp_path / "artifact")
    assert set(exported.formats.values()) == {"lowrank"}
    assert verify(tmp_path / "artifact")["ok"]
    batch = pruned.tokenizer(["a good film", "the worst story"], padding=True, return_tensors="pt")
    with torch.no_grad():
        diff = (load(tmp_path / "artifact")(**batch).logits - pruned.model(**batch).logits).abs().max()
    assert float(diff) < 1e-4
