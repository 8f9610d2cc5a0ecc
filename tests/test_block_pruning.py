"""Block pruning (``--block``, issue 16): block parsing, pooling and expansion on odd shapes; masks made of whole
blocks for every method that takes them, with the requested fraction of weights; one score per block whose STE
gradient is the block sum of the elementwise one; SMP-S budgets over block scores; magnitude blocks against a
hand-computed case; refusals; resume; and prune -> export -> load on the tiny model."""
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sparsekit.cli import app
from sparsekit.export.artifact import export, load
from sparsekit.models import load_classifier, prunable_matrices
from sparsekit.prune import PruneConfig, load_pruned, prune
from sparsekit.prune import binarizers
from sparsekit.prune.blocks import UNSTRUCTURED, Block, parse_block
from sparsekit.prune.checkpoints import complete_checkpoints
from sparsekit.prune.masked_linear import MaskedLinear, initial_scores
from sparsekit.prune.pruner import Pruner

TINY_RUN = dict(task="sst2", train_samples=48, eval_samples=24, batch_size=8, max_length=24, progress=False)
SHAPES = [(7, 10), (8, 16), (5, 13), (3, 2)]  # in = 10, 13, 2: not multiples of 4 (partial edge blocks)
BLOCKS = [Block(1, 4), Block(4, 1), Block(1, 8), Block(2, 2)]


def _config(model_dir, out, **kw):
    return PruneConfig(**{**TINY_RUN, "model": str(model_dir), "output_dir": str(out), **kw})


def _structured(mask: torch.Tensor, block: Block) -> bool:
    """Every block of ``mask`` (bool ``[out, in]``) all kept or all pruned, checked without blocks.py."""
    out, inp = mask.shape
    for r in range(0, out, block.rows):
        for c in range(0, inp, block.cols):
            cell = mask[r:r + block.rows, c:c + block.cols]
            if bool(cell.any()) != bool(cell.all()):
                return False
    return True


# -- parsing, pooling, expansion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("1x4", Block(1, 4)), (" 1X4 ", Block(1, 4)), ("4x1", Block(4, 1)),
                                            ("1x8", Block(1, 8)), ("1x1", UNSTRUCTURED)])
def test_block_strings(text, expected):
    assert parse_block(text) == expected
    assert str(parse_block(text)) == str(expected)


@pytest.mark.parametrize("text", ["0x4", "1x0", "1x", "4", "ax4", "-1x4", "1x4x2", "", "1.5x4"])
def test_bad_block_strings_are_refused(text):
    with pytest.raises(ValueError, match=r"block \(--block\) must be ROWSxCOLS with positive integers, e\.g\. 1x4"):
        parse_block(text)
    with pytest.raises(ValueError, match=r"--block"):
        PruneConfig(block=text).validate()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", BLOCKS)
def test_grid_sizes_pool_and_expand(shape, block):
    out, inp = shape
    sizes = block.sizes(shape)
    assert tuple(sizes.shape) == block.grid(shape) == (-(-out // block.rows), -(-inp // block.cols))
    assert int(sizes.sum()) == out * inp  # a partial edge block holds only its real weights
    x = torch.randn(shape, dtype=torch.float64)
    pooled = block.pool(x)
    for i in range(sizes.shape[0]):
        for j in range(sizes.shape[1]):
            cell = x[i * block.rows:(i + 1) * block.rows, j * block.cols:(j + 1) * block.cols]
            assert cell.numel() == int(sizes[i, j])
            torch.testing.assert_close(pooled[i, j], cell.mean())
    grid = torch.randn(block.grid(shape), dtype=torch.float64, requires_grad=True)
    full = block.expand(grid, shape)
    assert tuple(full.shape) == shape and _structured(full == full.new_zeros(()), block)
    torch.testing.assert_close(block.pool(full), grid)
    upstream = torch.randn(shape, dtype=torch.float64)
    (full * upstream).sum().backward()
    torch.testing.assert_close(grid.grad, block.pool(upstream) * sizes)  # block sum of the elementwise gradient


def test_unstructured_is_the_identity():
    x = torch.randn(5, 7)
    assert UNSTRUCTURED.pool(x) is x and UNSTRUCTURED.expand(x, x.shape) is x


# -- masks of whole blocks, the requested fraction of weights ----------------------------------------------------

@pytest.mark.parametrize("kind", ["topk", "magnitude"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("keep", [0.03, 0.1, 0.3, 0.5, 1.0])
def test_topk_masks_are_whole_blocks_with_the_requested_weights(kind, shape, block, keep):
    torch.manual_seed(0)
    layer = MaskedLinear(shape[1], shape[0], kind=kind, block=block)
    if layer.mask_scores is not None:
        assert tuple(layer.mask_scores.shape) == block.grid(shape)  # one score per block
        with torch.no_grad():
            layer.mask_scores.normal_()
    layer.keep_ratio = keep
    mask = layer.mask() > 0
    assert mask.shape == shape and _structured(mask, block)
    budget = binarizers.kept_count(keep, mask.numel())
    # Never more than asked; fewer by less than one block (whole blocks fill the budget in score order).
    assert budget - block.area < int(mask.sum()) <= budget
    if shape[0] % block.rows == 0 and shape[1] % block.cols == 0:
        assert int(mask.sum()) == budget // block.area * block.area


def test_the_budget_rule_with_partial_blocks():
    # 1x6 with 1x4 blocks: a full block (4 weights) and a partial one (2). Budget 3: only the partial one fits,
    # even where the full block scores higher; budget 2: the partial one; budget 1: nothing.
    sizes = Block(1, 4).sizes((1, 6))
    assert sizes.tolist() == [[4, 2]]
    scores = torch.tensor([[5.0, 1.0]])
    assert binarizers.sized_topk_mask(scores, sizes, 6).tolist() == [[1.0, 1.0]]
    assert binarizers.sized_topk_mask(scores, sizes, 5).tolist() == [[1.0, 0.0]]
    assert binarizers.sized_topk_mask(scores, sizes, 3).tolist() == [[0.0, 0.0]]  # a prefix in score order
    assert binarizers.sized_topk_mask(torch.tensor([[1.0, 5.0]]), sizes, 3).tolist() == [[0.0, 1.0]]
    assert binarizers.sized_topk_mask(scores, sizes, 0).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("block", [Block(1, 4), Block(4, 1)])
def test_threshold_masks_are_whole_blocks(block):
    torch.manual_seed(0)
    layer = MaskedLinear(10, 7, kind="threshold", block=block)
    with torch.no_grad():
        layer.mask_scores.normal_()
    layer.threshold = 0.3
    mask = layer.mask() > 0
    assert _structured(mask, block)
    assert torch.equal(mask, block.expand(layer.mask_scores.detach() > 0.3, mask.shape))
    layer.threshold, layer.min_kept = 100.0, 3  # nothing passes: the floor keeps the 3 best blocks
    assert int((layer.mask() > 0).sum()) == int(block.sizes((7, 10)).flatten()[
        layer.mask_scores.detach().flatten().topk(3).indices].sum())


@pytest.mark.parametrize("masking", ["local", "smp-s", "global", "sigmoid", "magnitude"])
def test_every_block_masking_of_the_pruner(tiny_model_dir, masking):
    torch.manual_seed(1)
    model = load_classifier(tiny_model_dir, 2).eval()
    block = Block(1, 4)
    pruner = Pruner(model, masking, block=block)
    for s in pruner.score_parameters():
        torch.nn.init.normal_(s)
    for m in pruner.modules.values():
        if m.mask_scores is not None:
            assert tuple(m.mask_scores.shape) == (m.out_features, m.in_features // 4)  # a quarter of the scores
    if masking == "sigmoid":
        pruner.steer_threshold(0.2, final=True)
    else:
        pruner.update(0.2, final=True)
    masks = pruner.masks()
    assert all(_structured(mask, block) for mask in masks.values())
    assert pruner.density() == pytest.approx(0.2, abs=0.01)
    dense_logits = model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits
    final = pruner.finalize()
    for name, mask in final.items():
        assert torch.equal(mask, masks[name])
        assert bool((model.get_submodule(name).weight[~mask] == 0).all())
    torch.testing.assert_close(model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits, dense_logits)


def test_smp_s_budgets_are_computed_over_block_scores(tiny_model_dir):
    torch.manual_seed(2)
    model = load_classifier(tiny_model_dir, 2).eval()
    pruner = Pruner(model, "smp-s", smp_temperature=1.0, block=Block(1, 4))
    for i, s in enumerate(pruner.score_parameters()):
        torch.nn.init.normal_(s, mean=0.5 * (i % 3) - 0.5)
    pruner.update(0.25)
    masks = pruner.masks()
    for layers in pruner.by_type.values():
        expected = binarizers.smp_s_keep_ratios([m.mask_scores for m in layers], 0.25, 1.0)
        assert [m.keep_ratio for m in layers] == pytest.approx(expected)
        assert sum(expected) == pytest.approx(0.25 * len(layers))
        for m, ratio in zip(layers, expected):
            name = next(n for n, mod in pruner.modules.items() if mod is m)
            kept, budget = int(masks[name].sum()), binarizers.kept_count(ratio, m.weight.numel())
            assert budget - 4 < kept <= budget
    assert len({round(m.keep_ratio, 6) for m in pruner.modules.values()}) > 1  # really reallocated


# -- gradients and initial scores ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["topk", "threshold"])
@pytest.mark.parametrize("block", [Block(1, 4), Block(4, 1), Block(2, 2)])
def test_ste_gradient_is_the_block_sum_of_the_elementwise_gradient(kind, block):
    torch.manual_seed(3)
    layer = MaskedLinear(10, 7, kind=kind, block=block)
    with torch.no_grad():
        layer.mask_scores.normal_()
    layer.keep_ratio, layer.threshold = 0.4, 0.0
    x = torch.randn(5, 10)
    target = torch.randn(5, 7)
    ((layer(x) - target) ** 2).sum().backward()
    # The same forward with the mask as a leaf: dL/dM elementwise, the gradient unstructured STE gives a weight.
    mask = layer.mask().detach().requires_grad_(True)
    ((torch.nn.functional.linear(x, layer.weight.detach() * mask, layer.bias.detach()) - target) ** 2).sum().backward()
    block_sum = block.pool(mask.grad) * block.sizes(mask.shape)
    torch.testing.assert_close(layer.mask_scores.grad, block_sum)
    assert (layer.mask_scores.grad[layer.block.pool(mask.detach()) == 0] != 0).any()  # pruned blocks learn too


def test_magnitude_init_is_the_block_mean_over_the_layer_mean_and_starts_from_the_magnitude_mask():
    torch.manual_seed(4)
    linear = torch.nn.Linear(10, 6)
    w = linear.weight.detach().abs()
    block = Block(1, 4)
    scores = initial_scores(linear.weight, "magnitude", block)
    expected = torch.stack([torch.stack([w[r, 0:4].mean(), w[r, 4:8].mean(), w[r, 8:10].mean()])
                            for r in range(6)]) / w.mean()
    torch.testing.assert_close(scores, expected)
    layer = MaskedLinear.from_linear(linear, "topk", score_init="magnitude", block=block)
    layer.keep_ratio = 0.3
    assert torch.equal(layer.mask().bool(), binarizers.magnitude_mask(linear.weight, 0.3, block).bool())
    assert tuple(initial_scores(linear.weight, 0.0, block).shape) == (6, 3)


def test_magnitude_block_mask_hand_computed():
    # Row 0: blocks |W| means 1.0, 0.25 and (partial, 2 weights) 2.0; row 1: 0.5, 3.0, 0.1.
    w = torch.tensor([[1.0, -1.0, 1.0, -1.0, 0.5, 0.0, 0.0, -0.5, 2.0, -2.0],
                      [0.5, 0.5, -0.5, 0.5, 3.0, 3.0, -3.0, 3.0, 0.1, 0.1]])
    block = Block(1, 4)
    # keep 0.5 of 20 weights = 10: blocks by mean |W|: 3.0 (4 weights), 2.0 (2), 1.0 (4) -> 10 weights, then full.
    expected = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0, 1, 1],
                             [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(binarizers.magnitude_mask(w, 0.5, block).bool(), expected)
    # keep 0.3 = 6 weights: 3.0 (4), 2.0 (2).
    expected = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
                             [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(binarizers.magnitude_mask(w, 0.3, block).bool(), expected)


# -- refusals -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, named", [(dict(method="l0"), "not to l0"), (dict(method="abp"), "not to abp"),
                                             (dict(method="lpaf"), "not to lpaf"),
                                             (dict(method="finetune"), "not to finetune"),
                                             (dict(method="movement", masking="l0"), "movement with masking l0"),
                                             (dict(method="smp-s", masking="abp"), "smp-s with masking abp")])
def test_methods_without_blocks_refuse_the_option(settings, named):
    with pytest.raises(ValueError, match=rf"--block 1x4 applies to the score-based methods \(smp-s, smp-l, "
                                         rf"movement, soft-movement, magnitude, smp-struct\).*{named}"):
        PruneConfig(block="1x4", **settings).validate()
    PruneConfig(block="1x1", **settings).validate()  # unstructured is every method's default


@pytest.mark.parametrize("method", ["smp-s", "smp-l", "movement", "soft-movement", "magnitude", "smp-struct"])
def test_methods_with_blocks_accept_the_option(method):
    config = PruneConfig(block="1X4", method=method)
    config.validate()
    assert config.block == "1x4"


def test_mask_kinds_without_blocks_refuse_them():
    for kind in ("l0", "abp"):
        with pytest.raises(ValueError, match=f"{kind} masks cannot be made of 1x4 blocks"):
            MaskedLinear(8, 4, kind=kind, block=Block(1, 4))


def test_the_cli_refuses_before_training(tmp_path, tiny_model_dir):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["prune", "--method", "l0", "--block", "1x4", "--model", str(tiny_model_dir),
                                 "-o", str(out)], terminal_width=200)
    assert result.exit_code == 2 and "--block 1x4 applies to the score-based methods" in result.output
    result = runner.invoke(app, ["prune", "--block", "1by4", "--model", str(tiny_model_dir), "-o", str(out)],
                           terminal_width=200)
    assert result.exit_code == 2 and "block (--block) must be ROWSxCOLS" in result.output
    assert not out.exists()


# -- runs: resume, outputs, export ------------------------------------------------------------------------------

def test_resume_with_blocks_is_exact_and_another_block_is_refused(tiny_model_dir, tmp_path):
    run = dict(method="movement", keep=0.3, steps=6, save_every=2, block="1x4")
    prune(_config(tiny_model_dir, tmp_path / "straight", **run))
    out = tmp_path / "run"
    prune(_config(tiny_model_dir, out, stop_after=3, **run))
    saved = load_file(str(complete_checkpoints(out)[0] / "model.safetensors"))
    scores = {k: v for k, v in saved.items() if k.endswith(".mask_scores")}
    weights = {k: saved[k.replace(".mask_scores", ".weight")] for k in scores}
    assert scores and all(v.shape == (weights[k].shape[0], weights[k].shape[1] // 4) for k, v in scores.items())
    with pytest.raises(ValueError, match=r"block: '1x4' -> '1x1'"):
        prune(_config(tiny_model_dir, out, resume=True, **{**run, "block": "1x1"}))
    with pytest.raises(ValueError, match=r"block: '1x4' -> '4x1'"):
        prune(_config(tiny_model_dir, out, resume=True, **{**run, "block": "4x1"}))
    prune(_config(tiny_model_dir, out, resume=True, **run))
    assert (out / "masks.bin").read_bytes() == (tmp_path / "straight" / "masks.bin").read_bytes()
    a, b = load_pruned(out), load_pruned(tmp_path / "straight")
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key


def test_a_checkpoint_from_before_blocks_resumes_as_unstructured(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run = dict(method="smp-l", keep=0.3, steps=4, save_every=2)
    prune(_config(tiny_model_dir, out, stop_after=2, **run))
    for ckpt in complete_checkpoints(out):  # as written before the block setting existed
        record = json.loads((ckpt / "run_config.json").read_text())
        del record["block"]
        (ckpt / "run_config.json").write_text(json.dumps(record))
        listing = json.loads((ckpt / "complete.json").read_text())
        listing["files"].pop("run_config.json", None)
        (ckpt / "complete.json").write_text(json.dumps(listing))
    with pytest.raises(ValueError, match=r"block: '1x1' -> '1x4'"):
        prune(_config(tiny_model_dir, out, resume=True, block="1x4", **run))
    assert prune(_config(tiny_model_dir, out, resume=True, **run)).steps == 4


@pytest.fixture(scope="module")
def block_run(tiny_model_dir, tmp_path_factory):
    """An SMP-S run at 30% with 1x4 blocks through the CLI (its summary), and its directory."""
    out = tmp_path_factory.mktemp("block") / "run"
    result = CliRunner().invoke(app, ["prune", "--model", str(tiny_model_dir), "-o", str(out), "--method", "smp-s",
                                      "--keep", "0.3", "--steps", "6", "--block", "1x4", "--train-samples", "48",
                                      "--eval-samples", "24", "--batch-size", "8", "--max-length", "24",
                                      "--no-progress"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_prune_export_load_with_1x4_blocks(block_run, tmp_path):
    out, summary = block_run
    assert "smp-s, 1x4 blocks" in summary
    pruned = load_pruned(out)
    assert pruned.recipe["block"] == "1x4" and pruned.recipe["config"]["block"] == "1x4"
    assert pruned.report["block"] == "1x4"
    block = Block(1, 4)
    kept = total = 0
    for m in prunable_matrices(pruned.model):
        mask = pruned.masks[m.name]
        assert _structured(mask, block), m.name
        assert torch.equal(pruned.model.get_submodule(m.name).weight != 0, mask)  # random weights: none are 0
        kept, total = kept + int(mask.sum()), total + mask.numel()
    assert 0.3 - 0.02 <= kept / total <= 0.3 + 1e-9

    art = export(out, tmp_path / "art", formats="csr")
    loaded = load(tmp_path / "art")
    batch = pruned.tokenizer(["a good film", "not funny and boring"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, pruned.model(**batch).logits, rtol=0, atol=1e-5)
    assert art.bytes_exported > 0
    # Exact compaction removes whole output rows, which keeps 1x4 groups, and input columns only of attention-out
    # and FFN-out (compacted V/O and FFN dimensions), whose groups it can shift (see the README). The matrices that
    # read the hidden size (Q, K, V, FFN-in) are exported 1x4-structured.
    hidden = pruned.model.config.hidden_size
    reading_hidden = [mod for mod in loaded.modules() if hasattr(mod, "fmt") and mod.in_features == hidden]
    assert len(reading_hidden) >= 3 * pruned.model.config.num_hidden_layers
    for mod in reading_hidden:
        assert _structured(mod.fmt.to_dense() != 0, block), mod


def test_report_names_the_blocks(block_run):
    out, _ = block_run
    result = CliRunner().invoke(app, ["report", str(out)], terminal_width=200)
    assert result.exit_code == 0 and "1x4 blocks" in result.output
    data = json.loads(CliRunner().invoke(app, ["report", str(out), "--json"]).output)
    assert data["block"] == "1x4"


def test_structure_aware_smp_with_blocks(tiny_model_dir, tmp_path):
    result = prune(_config(tiny_model_dir, tmp_path / "run", method="smp-struct", keep=0.2, steps=6, block="1x4"))
    masks = load_pruned(tmp_path / "run").masks
    assert all(_structured(mask, Block(1, 4)) for mask in masks.values())
    assert 0.2 - 0.02 <= result.density <= 0.2 + 1e-9


@pytest.mark.parametrize("method", ["smp-l", "movement", "soft-movement", "magnitude"])
def test_every_block_method_runs_to_whole_block_masks(tiny_model_dir, tmp_path, method):
    extra = {"score_lr": 2.0} if method == "soft-movement" else {}  # as test_train: prunes within 6 steps
    result = prune(_config(tiny_model_dir, tmp_path / method, method=method, keep=0.3, steps=6, block="1x4", **extra))
    pruned = load_pruned(tmp_path / method)
    assert pruned.recipe["block"] == "1x4"
    assert all(_structured(mask, Block(1, 4)) for mask in pruned.masks.values())
    assert result.density < 1.0
    if method != "soft-movement":  # soft movement's final density is steered by its threshold over blocks
        assert 0.3 - 0.02 <= result.density <= 0.3 + 1e-9


def test_structure_aware_smp_with_blocks_on_fused_modules(tmp_path):
    """ModernBERT's fused Wqkv / GLU Wi: block scores expanded, split by row slices, coupled, pooled back."""
    result = prune(PruneConfig(model="random:modernbert-tiny", method="smp-struct", keep=0.1, steps=3,
                               train_samples=32, eval_samples=16, batch_size=8, max_length=16, progress=False,
                               output_dir=str(tmp_path / "run"), block="1x4"))
    assert all(_structured(mask, Block(1, 4)) for mask in load_pruned(tmp_path / "run").masks.values())
    assert 0.08 <= result.density <= 0.1 + 1e-9


def test_a_recipe_from_before_blocks_loads_as_unstructured():
    data = PruneConfig().to_dict()
    del data["block"]
    assert PruneConfig.from_dict(data).block == "1x1"
