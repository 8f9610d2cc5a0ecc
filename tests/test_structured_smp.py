"""Structure-aware SMP: at SMP-S's budget its masks leave more removable structure (rows / columns /
heads that exact compaction removes), the statistics agree with compact.py, and the output compacts exactly."""
import json

import pytest
import torch

from sparsekit.export.compact import compact
from sparsekit.prune import PruneConfig, load_pruned, prune
from sparsekit.prune.structured import StructuredSMPExtension, effective_scores, structure_stats

TINY_RUN = dict(task="sst2", train_samples=48, eval_samples=24, batch_size=8, max_length=24, progress=False)


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("struct")
    out = {}
    for method in ("smp-s", "smp-struct"):
        result = prune(PruneConfig(**TINY_RUN, model=str(tiny_model_dir), output_dir=str(root / method),
                                   method=method, keep=0.1, steps=10))
        out[method] = (result, root / method)
    return out


def test_more_removable_structure_than_smp_s_at_the_same_budget(runs):
    plain, struct = runs["smp-s"][0], runs["smp-struct"][0]
    assert 0.09 <= plain.density <= 0.1 + 1e-9 and 0.09 <= struct.density <= 0.1 + 1e-9
    stats = {m: json.loads((d / "report.json").read_text())["structure"]["total"] for m, (_, d) in runs.items()}
    assert stats["smp-struct"]["compacted_fraction"] < 0.5 * stats["smp-s"]["compacted_fraction"]
    for kind in ("ffn", "vo", "qk"):
        assert stats["smp-struct"]["removable_fraction"][kind] > stats["smp-s"]["removable_fraction"][kind]


def test_statistics_agree_with_compaction_and_compaction_is_exact(runs):
    _, path = runs["smp-struct"]
    pruned = load_pruned(path)
    compacted, report = compact(pruned.model)
    before, after = report.params()
    stats = structure_stats(pruned.model, pruned.masks)["total"]
    assert (stats["params_before"], stats["params_after"]) == (before, after)
    assert sum(len(layer["heads_removed"]) for layer in report.layers) == stats["heads_removable"]
    batch = pruned.tokenizer(["a good film", "not funny and boring"], padding=True, return_tensors="pt")
    with torch.no_grad():
        diff = (compacted(**batch).logits - pruned.model(**batch).logits).abs().max()
    assert float(diff) < 1e-5


def test_zero_coupling_is_plain_scores_and_coupling_moves_whole_groups():
    g = torch.Generator().manual_seed(0)
    shapes = {"query": (8, 4), "key": (8, 4), "value": (8, 4), "attn_out": (4, 8), "ffn_in": (6, 4), "ffn_out": (4, 6)}
    layer = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    plain = effective_scores(layer, heads=2, beta=0.0, beta_head=0.0)
    assert all(torch.equal(plain[k], layer[k]) for k in layer)
    coupled = effective_scores(layer, heads=2, beta=3.0, beta_head=0.0)
    shift_in = (coupled["ffn_in"] - layer["ffn_in"])[:, 0]
    shift_out = (coupled["ffn_out"] - layer["ffn_out"])[0, :]
    # FFN-in row i and FFN-out column i move by the same group term, scaled by each matrix's score std.
    assert torch.allclose(shift_in / layer["ffn_in"].std(), shift_out / layer["ffn_out"].std(), atol=1e-5)


def test_bad_structured_settings_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="struct_coupling"):
        StructuredSMPExtension(coupling=-1.0)
    with pytest.raises(ValueError, match="own masking"):
        prune(PruneConfig(**TINY_RUN, model=str(tiny_model_dir), output_dir=str(tmp_path / "run"),
                          method="smp-struct", masking="global", steps=2))
