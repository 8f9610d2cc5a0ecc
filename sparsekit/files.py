"""Small file helpers shared by the pruning outputs and the artifacts: checksums, safe ``--overwrite``."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_owned_output(path: str | Path, owned: set[str], what: str) -> None:
    """Empty ``path`` for ``--overwrite``, removing only entries sparsekit writes there.

    owned: the names (``fnmatch`` patterns) of the files and folders sparsekit writes in such a directory. If
        ``path`` holds anything
    else, nothing is removed and FileExistsError names the foreign entries: ``--overwrite`` must never delete
    what a user put there.
    """
    import shutil
    from fnmatch import fnmatchcase

    path = Path(path)
    entries = list(path.iterdir())
    foreign = sorted(p.name for p in entries if not any(fnmatchcase(p.name, pattern) for pattern in owned))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FileExistsError(f"--overwrite refused: {path} holds files sparsekit did not write ({shown}), so it "
                              f"is not a {what}; remove them yourself or choose another directory")
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
