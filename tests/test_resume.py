"""Interrupted runs: resume is bit-identical at any step (mid-epoch too), checkpoints survive kill -9 during a
write, damaged checkpoints fall back to the previous one, the settings guard lives in every checkpoint, a run that
fails before training does not block its retry, and --overwrite removes only what sparsekit wrote."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from sparsekit.prune import PruneConfig, prune
from sparsekit.prune.checkpoints import CheckpointError, complete_checkpoints

# 48 examples in batches of 8: 6 steps per epoch, so step 4 is mid-epoch and 10 steps cross an epoch boundary.
RUN = dict(task="sst2", train_samples=48, eval_samples=24, batch_size=8, max_length=24, progress=False,
           method="movement", keep=0.3, steps=10, save_every=2)


def _config(model_dir, out, **kw):
    return PruneConfig(**{**RUN, "model": str(model_dir), "output_dir": str(out), **kw})


def _assert_same_run(a_dir, b_dir):
    a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (a_dir / "masks.bin").read_bytes() == (b_dir / "masks.bin").read_bytes()


@pytest.fixture(scope="module")
def straight(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    prune(_config(tiny_model_dir, out))
    return out


@pytest.mark.parametrize("stop_after", [3, 4, 7])
def test_resume_is_bit_identical_mid_epoch(tiny_model_dir, tmp_path, straight, stop_after):
    out = tmp_path / "run"
    partial = prune(_config(tiny_model_dir, out, stop_after=stop_after))
    assert partial.steps == stop_after and (out / "checkpoints" / f"step-{stop_after}").is_dir()
    prune(_config(tiny_model_dir, out, resume=True))
    _assert_same_run(straight, out)


def test_kill_9_during_a_checkpoint_write_resumes_from_the_previous_one(tiny_model_dir, tmp_path, straight):
    out = tmp_path / "run"
    # A real process, killed with SIGKILL after Accelerate wrote part of checkpoint step-6.
    script = textwrap.dedent(f"""
        import os, signal
        import accelerate
        from sparsekit.prune import PruneConfig, prune
        original = accelerate.Accelerator.save_state
        def save_state(self, output_dir=None, **kw):
            result = original(self, output_dir, **kw)
            if str(output_dir).endswith(".step-6.partial"):
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        accelerate.Accelerator.save_state = save_state
        prune(PruneConfig(**{dict(RUN, model=str(tiny_model_dir), output_dir=str(out))!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "checkpoints" / ".step-6.partial").is_dir()
    assert [p.name for p in complete_checkpoints(out)] == ["step-4", "step-2"]
    prune(_config(tiny_model_dir, out, resume=True))
    _assert_same_run(straight, out)


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tiny_model_dir, tmp_path, straight, capsys):
    out = tmp_path / "run"
    prune(_config(tiny_model_dir, out, stop_after=5))
    assert [p.name for p in complete_checkpoints(out)] == ["step-5", "step-4"]
    newest = out / "checkpoints" / "step-5" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    shutil.copytree(out / "checkpoints" / "step-4", out / "checkpoints" / "step-20.bak")  # a stray copy: ignored
    prune(_config(tiny_model_dir, out, resume=True))
    assert "skipped step-5: model.safetensors was modified or truncated" in capsys.readouterr().err
    _assert_same_run(straight, out)


def test_no_usable_checkpoint_is_a_clear_error(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    prune(_config(tiny_model_dir, out, stop_after=3))
    for ckpt in complete_checkpoints(out):
        (ckpt / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no checkpoint of .* can be resumed"):
        prune(_config(tiny_model_dir, out, resume=True))


def test_the_settings_guard_lives_in_every_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    prune(_config(tiny_model_dir, out, stop_after=3))
    with pytest.raises(ValueError, match="keep: 0.3 -> 0.5"):
        prune(_config(tiny_model_dir, out, keep=0.5, resume=True))
    for ckpt in complete_checkpoints(out):
        (ckpt / "run_config.json").unlink()
    with pytest.raises(CheckpointError, match="settings cannot be checked"):
        prune(_config(tiny_model_dir, out, keep=0.5, resume=True))


def test_a_moved_run_directory_resumes(tiny_model_dir, tmp_path, straight, monkeypatch):
    prune(_config(tiny_model_dir, tmp_path / "first", stop_after=4))
    (tmp_path / "first").rename(tmp_path / "moved")
    (tmp_path / "link").symlink_to(tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    prune(_config(tiny_model_dir, "link", resume=True))  # relative path through a symlink
    _assert_same_run(straight, tmp_path / "moved")


def test_a_failure_before_training_does_not_block_the_retry(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    for name in os.listdir(broken):
        if name.endswith((".safetensors", ".bin")):
            (broken / name).write_bytes(b"not weights")
    out = tmp_path / "run"
    with pytest.raises(Exception):  # noqa: B017  (whatever loading the broken weights raises)
        prune(_config(broken, out, steps=2))
    assert not out.exists() or not any(out.iterdir())
    prune(_config(tiny_model_dir, out, steps=2))  # the same command with a good model, no --overwrite
    assert (out / "metrics.json").is_file()


def test_overwrite_removes_only_what_sparsekit_wrote(tiny_model_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "data").mkdir()
    with pytest.raises(FileExistsError, match="did not write.*data, thesis.tex"):
        prune(_config(tiny_model_dir, out, steps=2, overwrite=True))
    assert (out / "thesis.tex").read_text() == "years of work" and (out / "data").is_dir()
    run = tmp_path / "run"
    prune(_config(tiny_model_dir, run, steps=2))
    prune(_config(tiny_model_dir, run, steps=2, overwrite=True))  # a sparsekit run is replaced
    assert (run / "metrics.json").is_file()
