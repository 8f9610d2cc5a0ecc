"""Test helpers that edit an exported artifact and re-sign it like a forger would (checksums + manifest digest)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sparsekit.export.manifest import DIGEST_KEY, canonical_digest


def sign_manifest(path: Path, manifest: dict) -> None:
    """Write ``manifest`` into ``path`` with its own digest recomputed."""
    manifest = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    manifest[DIGEST_KEY] = canonical_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def resign(path: Path, names=None) -> None:
    """Recompute the checksums of ``names`` (default: every listed regular file) and the manifest digest."""
    manifest = json.loads((path / "manifest.json").read_text())
    for name in names if names is not None else list(manifest.get("checksums", {})):
        if (path / name).is_file():
            manifest["checksums"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    sign_manifest(path, manifest)


def rewrite_manifest(path: Path, edit, sign: bool = True) -> None:
    """Apply ``edit(manifest)`` in place; ``sign``: recompute the manifest's own digest (a forger's edit)."""
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    if sign:
        sign_manifest(path, manifest)
    else:
        (path / "manifest.json").write_text(json.dumps(manifest))


def rewrite_tensors(path: Path, edit) -> None:
    """Change tensors and re-sign the checksum, so only the deeper validation can catch it."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))
    resign(path, ["model.safetensors"])
