"""CAP: loss values on hand-made batches (closed forms of the spec §2.7 and an independent loop),
module parsing, and the banks in a real run (example ids from the loader, bounded snapshot bank)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from sparsekit.prune import PruneConfig, prune
from sparsekit.prune.cap import CAPExtension, contrastive_terms, parse_modules
from sparsekit.prune.train import CollateWithIds, IndexedDataset

TINY_RUN = dict(task="sst2", train_samples=48, eval_samples=24, batch_size=8, max_length=24, progress=False)


def test_identical_positive_and_orthogonal_negatives_give_the_closed_form():
    # The spec's example: N = 4160 candidates (the anchor's own copy, its positive, N - 2 negatives), tau = 0.1.
    n, tau = 4160, 0.1
    z = torch.tensor([[1.0, 0.0]])
    candidates = torch.cat([z, torch.tensor([[0.0, 1.0]]).expand(n - 2, 2)])  # positive, then orthogonal ones
    cand_ids = torch.arange(n - 1)
    inst, _ = contrastive_terms(z, torch.tensor([0]), None, candidates, cand_ids, None, tau)
    expected = math.log(1 + (n - 2) * math.exp(-1 / tau))
    assert expected == pytest.approx(0.17, abs=0.01)
    assert float(inst) == pytest.approx(expected, rel=1e-5)


def test_all_zero_vectors_give_log_n_minus_one():
    b, k_extra, h = 3, 5, 4
    z = F.normalize(torch.zeros(b, h), dim=-1)
    candidates = torch.zeros(b + k_extra, h)
    cand_ids = torch.cat([torch.arange(b), torch.arange(10, 10 + k_extra)])
    inst, _ = contrastive_terms(z, torch.arange(b), None, candidates, cand_ids, None, 0.1)
    assert float(inst) == pytest.approx(math.log(2 * b + k_extra - 1), rel=1e-6)


def _reference(z, ids, labels, cand, cand_ids, cand_labels, tau, normalizer):
    """Straightforward loops over anchors and candidates (independent of the vectorised code)."""
    all_c = [v for v in z.detach()] + [v for v in cand]
    all_ids = ids.tolist() + cand_ids.tolist()
    all_labels = labels.tolist() + cand_labels.tolist()
    out = []
    for same in (lambda i, c: all_ids[c] == ids[i], lambda i, c: all_labels[c] == labels[i]):
        num, pairs, anchors = 0.0, 0, 0
        for i in range(len(z)):
            others = [c for c in range(len(all_c)) if c != i]
            scores = {c: float(z[i] @ all_c[c]) / tau for c in others}
            lse = math.log(sum(math.exp(s) for s in scores.values()))
            pos = [c for c in others if same(i, c)]
            if pos:
                num += sum(scores[c] - lse for c in pos) / len(pos)
                pairs += len(pos)
                anchors += 1
        out.append(-num / pairs if normalizer == "code" else -num / anchors)
    return out


@pytest.mark.parametrize("normalizer", ["code", "mean"])
def test_random_batch_matches_an_independent_loop(normalizer):
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(4, 6, generator=g), dim=-1)
    ids, labels = torch.tensor([3, 7, 1, 9]), torch.tensor([0, 1, 1, 0])
    # K = 2 bank vectors of each batch example, then 3 extra examples (one duplicates id 7) with K = 2.
    cand = F.normalize(torch.randn(14, 6, generator=g), dim=-1)
    cand_ids = torch.tensor([3, 3, 7, 7, 1, 1, 9, 9, 5, 5, 7, 7, 2, 2])
    label_of = {3: 0, 7: 1, 1: 1, 9: 0, 5: 1, 2: 0}
    cand_labels = torch.tensor([label_of[int(i)] for i in cand_ids])
    inst, lab = contrastive_terms(z, ids, labels, cand, cand_ids, cand_labels, 0.1, normalizer)
    ref_inst, ref_lab = _reference(z, ids, labels, cand, cand_ids, cand_labels, 0.1, normalizer)
    assert float(inst) == pytest.approx(ref_inst, rel=1e-5)
    assert float(lab) == pytest.approx(ref_lab, rel=1e-5)


def test_gradient_reaches_the_anchors_only():
    z = F.normalize(torch.randn(3, 4), dim=-1).requires_grad_(True)
    cand = F.normalize(torch.randn(6, 4), dim=-1).requires_grad_(True)
    inst, _ = contrastive_terms(z, torch.arange(3), None, cand.detach(), torch.tensor([0, 1, 2, 5, 6, 7]), None, 0.1)
    inst.backward()
    assert z.grad is not None and cand.grad is None


def test_module_parsing_and_bad_settings():
    assert parse_modules("prc, SnC,fic") == ("prc", "snc", "fic")
    assert parse_modules(None) == ()
    with pytest.raises(ValueError, match="unknown CAP module"):
        parse_modules("prc,teacher")
    with pytest.raises(ValueError, match="twice"):
        parse_modules("prc,prc")
    with pytest.raises(ValueError, match="teacher"):
        PruneConfig(cap="fic").validate()
    with pytest.raises(ValueError, match="cap_temperature"):
        CAPExtension(("prc",), temperature=0.0)
    with pytest.raises(ValueError, match="cap_max_snapshots"):
        CAPExtension(("snc",), max_snapshots=0)


def test_loader_carries_example_ids(tiny_model_dir):
    from sparsekit.data import EncodedDataset, Example, make_collate
    from sparsekit.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    ds = EncodedDataset([Example(f"film {i}", None, i % 2) for i in range(5)], tok, 16, False)
    batch = CollateWithIds(make_collate(tok, False))([IndexedDataset(ds)[i] for i in (4, 1, 2)])
    assert batch["example_ids"].tolist() == [4, 1, 2]
    assert batch["labels"].tolist() == [0, 1, 0]


def test_cap_runs_with_every_bank_and_bounds_the_snapshot_bank(tiny_model_dir, tmp_path):
    result = prune(PruneConfig(**TINY_RUN, model=str(tiny_model_dir), output_dir=str(tmp_path / "run"),
                               method="smp-s", keep=0.2, steps=8, cap="prc,snc,fic", teacher=str(tiny_model_dir),
                               kd_alpha=0.9, cap_snapshot_every=2, cap_max_snapshots=2))
    assert result.density <= 0.2 + 1e-9
    record = json.loads((tmp_path / "run" / "recipe.json").read_text())["extensions"]["cap"]
    assert record["snapshot_steps"] == [4, 6]  # taken at 2, 4, 6; the oldest was dropped
    assert set(record["last_terms"]) == {f"{b}_{t}" for b in ("prc", "snc", "fic") for t in ("instance", "label")}
    assert all(math.isfinite(v) for v in record["last_terms"].values())
