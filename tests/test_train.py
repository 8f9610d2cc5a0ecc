"""The training loop on a tiny random BERT and real SST-2 rows: every method runs, SMP keeps weights
bit-identical, TopK counts are exact, resume is exact, outputs reload and refuse to be overwritten."""
import json

import pytest
import torch
from safetensors.torch import load_file

from sparsekit.models import load_classifier, prunable_matrices
from sparsekit.prune import PruneConfig, load_pruned, prune
from sparsekit.prune.binarizers import kept_count

TINY_RUN = dict(task="sst2", train_samples=48, eval_samples=24, batch_size=8, max_length=24, progress=False)


def _config(model_dir, out, **kw):
    return PruneConfig(**{**TINY_RUN, "model": str(model_dir), "output_dir": str(out), **kw})


@pytest.mark.parametrize("method", ["smp-s", "smp-l", "movement", "soft-movement", "magnitude", "l0", "finetune"])
def test_every_method_runs_and_reloads(tiny_model_dir, tmp_path, method):
    # Soft movement and L0 only prune once scores fall below a threshold (logit(0.1), about -2.2); a large
    # score LR gets there within 6 steps.
    extra = {"score_lr": 2.0} if method in ("soft-movement", "l0") else {}
    result = prune(_config(tiny_model_dir, tmp_path / method, method=method, keep=0.3, steps=6, **extra))
    assert set(result.metrics) >= {"accuracy", "train_seconds", "density"}
    loaded = load_pruned(tmp_path / method)
    assert loaded.recipe["method"] == method
    assert loaded.recipe["config"]["keep"] == 0.3
    assert loaded.recipe["data"]["files"]["train"]["sha256"]
    assert loaded.recipe["versions"]["torch"] == torch.__version__
    if method == "finetune":
        assert result.density == 1.0
    else:
        assert result.density < 1.0


def test_smp_keeps_every_non_score_weight_bit_identical(tiny_model_dir, tmp_path):
    prune(_config(tiny_model_dir, tmp_path / "run", method="smp-s", keep=0.2, steps=8))
    original = load_classifier(tiny_model_dir, 2).state_dict()
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    masks = load_pruned(tmp_path / "run").masks
    prunable = {f"{m.name}.weight": m.name for m in prunable_matrices(load_classifier(tiny_model_dir, 2))}
    checked = 0
    for key, tensor in original.items():
        if key.startswith("classifier."):
            continue  # the new task head is trained
        if key in prunable:
            assert torch.equal(saved[key], tensor * masks[prunable[key]]), key
        else:
            assert torch.equal(saved[key], tensor), key
        checked += 1
    assert checked == len(original) - 2


def test_smp_l_keeps_exactly_floor_v_n_in_every_matrix(tiny_model_dir, tmp_path):
    result = prune(_config(tiny_model_dir, tmp_path / "run", method="smp-l", keep=0.1, steps=5))
    for s in result.stats:
        assert s.kept == kept_count(0.1, s.numel)


def test_smp_s_density_at_most_target(tiny_model_dir, tmp_path):
    result = prune(_config(tiny_model_dir, tmp_path / "run", method="smp-s", keep=0.1, steps=5))
    assert 0.09 <= result.density <= 0.1 + 1e-9
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["summary"]["density"] == pytest.approx(result.density)
    assert all(s["empty_rows"] >= 0 for s in report["matrices"])


def test_movement_trains_weights(tiny_model_dir, tmp_path):
    prune(_config(tiny_model_dir, tmp_path / "run", method="movement", keep=1.0, steps=4, weight_lr=1e-2))
    original = load_classifier(tiny_model_dir, 2).state_dict()
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    key = "bert.encoder.layer.0.intermediate.dense.weight"
    assert not torch.equal(saved[key], original[key])
    emb = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(saved[emb], original[emb])  # movement freezes the embeddings


def test_resume_is_exact(tiny_model_dir, tmp_path):
    straight = _config(tiny_model_dir, tmp_path / "straight", method="smp-s", keep=0.3, steps=10, save_every=4)
    prune(straight)
    interrupted = _config(tiny_model_dir, tmp_path / "resumed", method="smp-s", keep=0.3, steps=10, save_every=4,
                          stop_after=6)
    partial = prune(interrupted)
    assert partial.steps == 6 and not partial.metrics
    assert (tmp_path / "resumed" / "checkpoints" / "step-6").is_dir()
    with pytest.raises(FileExistsError, match="--resume"):
        prune(_config(tiny_model_dir, tmp_path / "resumed", method="smp-s", keep=0.3, steps=10))
    prune(_config(tiny_model_dir, tmp_path / "resumed", method="smp-s", keep=0.3, steps=10, save_every=4,
                  resume=True))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "straight" / "masks.bin").read_bytes() == (tmp_path / "resumed" / "masks.bin").read_bytes()
    assert not (tmp_path / "resumed" / "checkpoints").exists()


def test_output_dir_protection(tiny_model_dir, tmp_path):
    cfg = _config(tiny_model_dir, tmp_path / "run", method="magnitude", keep=0.5, steps=2)
    prune(cfg)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        prune(cfg)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    with pytest.raises(FileExistsError, match="finished run"):
        prune(_config(tiny_model_dir, tmp_path / "run", method="magnitude", keep=0.5, steps=2, resume=True))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        prune(_config(tiny_model_dir, tmp_path / "empty", method="magnitude", keep=0.5, steps=2, resume=True))
    prune(_config(tiny_model_dir, tmp_path / "run", method="magnitude", keep=0.5, steps=2, overwrite=True))


def test_knowledge_distillation_from_a_finetuned_teacher(tiny_model_dir, tmp_path):
    prune(_config(tiny_model_dir, tmp_path / "teacher", method="finetune", steps=3))
    result = prune(_config(tiny_model_dir, tmp_path / "student", method="smp-s", keep=0.3, steps=3,
                           teacher=str(tmp_path / "teacher")))
    assert load_pruned(tmp_path / "student").recipe["model"]["teacher"] == str(tmp_path / "teacher")
    assert result.metrics["accuracy"] >= 0


def test_regression_task_runs(tiny_model_dir, tmp_path):
    result = prune(_config(tiny_model_dir, tmp_path / "stsb", method="smp-s", keep=0.5, steps=3, task="stsb"))
    assert {"pearson", "spearman"} <= set(result.metrics)


def test_bad_settings_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="keep"):
        prune(_config(tiny_model_dir, tmp_path / "a", keep=0.0))
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune(_config(tiny_model_dir, tmp_path / "b", method="obs"))
    with pytest.raises(ValueError, match="known tasks|Known tasks|sst2"):
        prune(_config(tiny_model_dir, tmp_path / "c", task="imdb"))
    with pytest.raises(ValueError, match="lambda ramp"):
        prune(_config(tiny_model_dir, tmp_path / "d", lambda_ramp="linear", steps=1))
    with pytest.raises(ValueError, match="unknown masking"):
        prune(_config(tiny_model_dir, tmp_path / "e", masking="random", steps=1))
    with pytest.raises(ValueError, match="exceed"):
        prune(_config(tiny_model_dir, tmp_path / "f", warmup=0.6, cooldown=0.6, steps=10))
    for name in "abcdef":
        assert not (tmp_path / name).exists(), name


def test_bad_settings_never_delete_an_existing_run(tiny_model_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="lambda ramp"):
        prune(_config(tiny_model_dir, tmp_path / "run", lambda_ramp="linear", overwrite=True))
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep me"


def test_resume_refuses_changed_settings(tiny_model_dir, tmp_path):
    prune(_config(tiny_model_dir, tmp_path / "run", method="smp-s", keep=0.3, steps=6, save_every=2, stop_after=3))
    with pytest.raises(ValueError, match="keep: 0.3 -> 0.5"):
        prune(_config(tiny_model_dir, tmp_path / "run", method="smp-s", keep=0.5, steps=6, resume=True))


def test_load_pruned_refuses_inconsistent_outputs(tiny_model_dir, tmp_path):
    prune(_config(tiny_model_dir, tmp_path / "run", method="smp-l", keep=0.2, steps=2))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_pruned(tmp_path / "missing")
    data = bytearray((tmp_path / "run" / "masks.bin").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "run" / "masks.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_pruned(tmp_path / "run")
    (tmp_path / "run" / "recipe.json").unlink()
    with pytest.raises(FileNotFoundError, match="recipe.json"):
        load_pruned(tmp_path / "run")


@pytest.mark.parametrize("keep", [0.1, 0.3])
def test_soft_movement_lands_on_its_target_density(tiny_model_dir, tmp_path, keep):
    # A large score LR drives the adaptive lambda far past the target (the 1.8%-for-10% overshoot); the
    # cool-down's density-steered tau brings the final masks back to within one point of keep.
    result = prune(_config(tiny_model_dir, tmp_path / "run", method="soft-movement", keep=keep, steps=20,
                           score_lr=2.0))
    assert abs(result.density - keep) <= 0.01
    assert abs(sum(s.kept for s in result.stats) / sum(s.numel for s in result.stats) - keep) <= 0.01


def test_soft_movement_fixed_lambda_keeps_the_papers_threshold(tiny_model_dir, tmp_path, monkeypatch):
    # --lambda-ramp follow-threshold: tau follows its schedule to 0.1, the density is an outcome, nothing steers.
    from sparsekit.prune.pruner import Pruner

    def refuse(*args, **kwargs):
        raise AssertionError("the fixed-lambda variant must not steer tau")

    monkeypatch.setattr(Pruner, "steer_threshold", refuse)
    out = tmp_path / "run"
    prune(_config(tiny_model_dir, out, method="soft-movement", keep=0.1, steps=10, score_lr=2.0,
                  lambda_ramp="follow-threshold", regularizer_lambda=400.0))
    assert load_pruned(out).recipe["resolved"]["lambda_ramp"] == "follow-threshold"
