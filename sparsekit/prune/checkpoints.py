"""Training checkpoints of a pruning run: atomic writes, the run configuration inside each, safe resume.

Layout of ``<output_dir>/checkpoints/``:

- ``step-N/``: one complete checkpoint (Accelerate's ``save_state``: model, scores, optimizer, LR scheduler,
  RNG states, the loop state) plus ``run_config.json`` (every setting that changes what is computed) and
  ``complete.json`` (size and sha256 of every file, written last);
- ``.step-N.partial/``: a checkpoint being written. It becomes ``step-N`` by one ``os.replace`` only when it is
  complete, so a run killed mid-write (even ``kill -9``) leaves the previous checkpoint intact; partial and
  foreign entries (``step-20.bak``) are never read.

Resume takes the newest complete checkpoint whose files still match ``complete.json`` and that loads; a damaged
one is skipped with a message and the one before it is used. The run configuration is compared with the
checkpoint's own record, so deleting a file elsewhere cannot make a 0.1 run resume as 0.5, and where the run
directory lives (moved, symlinked, relative) does not matter.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

from sparsekit.files import file_sha256

CHECKPOINT_DIR = "checkpoints"
RUN_CONFIG_FILE = "run_config.json"
COMPLETE_FILE = "complete.json"
_STEP_DIR = re.compile(r"step-(\d+)")

#: Settings that may differ between a run and its resumption (they do not change what is computed).
RESUME_FREE = frozenset({"resume", "overwrite", "progress", "stop_after", "save_every", "output_dir"})
#: Settings naming paths: compared as resolved paths, so ``./m`` and ``/abs/m`` are the same setting.
PATH_SETTINGS = ("model", "data_dir", "teacher")
#: Settings added after runs were first recorded, with a default that is not None: a record written before one
#: existed ran with this value (so older checkpoints and finished benchmark rows still compare equal).
ADDED_SETTINGS = {"block": "1x1"}


class CheckpointError(ValueError):
    """No usable checkpoint to resume from, or a resume with settings that differ from the run's."""


def run_record(config_dict: dict) -> dict:
    """The settings that define what a run computes: ``config_dict`` without the resume-free keys, paths resolved,
    settings the dict predates at their ADDED_SETTINGS value."""
    record = {**ADDED_SETTINGS, **{k: v for k, v in config_dict.items() if k not in RESUME_FREE}}
    for key in PATH_SETTINGS:
        value = record.get(key)
        if isinstance(value, str) and value and Path(value).expanduser().exists():
            record[key] = str(Path(value).expanduser().resolve())
    return record


def complete_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints of the run in ``out``, newest first (partial and foreign entries are ignored)."""
    root = out / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.fullmatch(path.name)
        if match and path.is_dir() and (path / COMPLETE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def save_checkpoint(accelerator, out: Path, step: int, record: dict, keep_last: int = 2) -> Path:
    """Write checkpoint ``step-<step>`` atomically and keep only the ``keep_last`` newest complete ones."""
    root = out / CHECKPOINT_DIR
    final, partial = root / f"step-{step}", root / f".step-{step}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        (partial / RUN_CONFIG_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        files = {p.relative_to(partial).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                 for p in sorted(partial.rglob("*")) if p.is_file()}
        _fsync_tree(partial)
        (partial / COMPLETE_FILE).write_text(json.dumps({"step": step, "files": files}, indent=2) + "\n")
        _fsync_tree(partial)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in complete_checkpoints(out)[keep_last:]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(".step-*.partial"):  # left by a run killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _damage(ckpt: Path) -> str | None:
    """Why ``ckpt``'s files no longer match its ``complete.json`` (None if they all do)."""
    try:
        listing = json.loads((ckpt / COMPLETE_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {COMPLETE_FILE} ({exc})"
    for name, meta in listing.items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta.get("bytes") or file_sha256(path) != meta.get("sha256"):
            return f"{name} was modified or truncated"
    return None


def check_settings(ckpt: Path, record: dict) -> None:
    """Raise CheckpointError if ``record`` differs from the settings the checkpoint was written with."""
    try:
        saved = json.loads((ckpt / RUN_CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{ckpt} has no readable {RUN_CONFIG_FILE}; the run's settings cannot be checked. "
                              f"Start a new run") from exc
    saved = {**ADDED_SETTINGS, **saved}
    diff = {k: (saved.get(k), v) for k, v in record.items() if saved.get(k) != v}
    diff.update({k: (v, None) for k, v in saved.items() if k not in record})
    if diff:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"--resume with settings that differ from the interrupted run ({detail}); "
                              f"resume with the same settings, or start a new run")


def resume(accelerator, out: Path, record: dict) -> Path:
    """Load the newest usable checkpoint of ``out`` into ``accelerator``'s registered objects; return its path.

    Checkpoints whose files are damaged or that fail to load are skipped (a message names each); a checkpoint
    written with other settings stops the resume with CheckpointError.
    """
    candidates = complete_checkpoints(out)
    if not candidates:
        raise CheckpointError(f"{out} has no complete checkpoint to resume from ({out / CHECKPOINT_DIR}/step-*); "
                              f"start the run again without --resume (use --overwrite to replace {out})")
    skipped = []
    for ckpt in candidates:
        check_settings(ckpt, record)
        problem = _damage(ckpt)
        if problem is None:
            try:
                accelerator.load_state(str(ckpt))
            except Exception as exc:  # a corrupt file: pickle, safetensors and torch raise many types
                problem = f"it does not load ({type(exc).__name__}: {exc})"
        if problem is None:
            if skipped:
                print(f"resuming from {ckpt.name}; skipped {'; '.join(skipped)}", file=sys.stderr)
            return ckpt
        skipped.append(f"{ckpt.name}: {problem}")
    raise CheckpointError(f"no checkpoint of {out} can be resumed ({'; '.join(skipped)}); start the run again "
                          f"without --resume (use --overwrite to replace {out})")
