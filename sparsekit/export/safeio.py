"""Reading an artifact's files without trusting them: plain names, regular files, byte caps, bounded JSON.

Every file of an artifact is named by the artifact itself (its manifest), so a name is checked before it is
joined to the directory: a plain file name (no separators, no ``..``), a regular file (never a device, FIFO or
directory: those could block forever or never end), and, when it is a symlink, one whose target stays inside
the directory. Files are opened non-blocking, re-checked with ``fstat`` on the open descriptor, and read only
up to a cap, so nothing here can hang, read outside the directory or exhaust memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

from sparsekit.export.errors import ArtifactError

MAX_JSON_DEPTH = 64
MAX_HEADER_BYTES = 64 << 20  # a safetensors header (BERT-large: ~40 kB)
_CHUNK = 1 << 20
#: safetensors dtype names -> bytes per element
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1}


def check_name(name: Any, what: str = "file name") -> str:
    """``name`` if it is a plain file name inside a directory (str, no separators, not ``.``/``..``, no NUL)."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or len(name) > 255):
        raise ArtifactError(f"{what} {name!r} is not a plain file name inside the artifact directory")
    return name


def _open_regular(directory: Path, name: str, max_bytes: int) -> tuple[int, int]:
    """(fd, size) of the regular file ``directory / name``; ArtifactError for anything else."""
    check_name(name)
    full = directory / name
    try:
        if os.path.islink(full):
            inside = os.path.realpath(directory)
            if os.path.dirname(os.path.realpath(full)) != inside:
                raise ArtifactError(f"{full} is a symlink leading out of the artifact directory; refused")
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ArtifactError(f"{full} is missing: not a complete sparsekit artifact (export it again)") from None
    except OSError as exc:
        raise ArtifactError(f"{full} cannot be opened ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ArtifactError(f"{full} is not a regular file (a directory, device or pipe); refused")
    if info.st_size > max_bytes:
        os.close(fd)
        raise ArtifactError(f"{full} has {info.st_size} bytes, more than the {max_bytes} allowed for it")
    return fd, info.st_size


def read_bytes(directory: Path, name: str, max_bytes: int) -> bytes:
    """The content of the regular file ``directory / name`` (at most ``max_bytes``)."""
    fd, size = _open_regular(directory, name, max_bytes)
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(size + 1)
    except OSError as exc:
        raise ArtifactError(f"{directory / name} cannot be read ({exc.strerror or exc})") from None
    if len(data) != size:
        raise ArtifactError(f"{directory / name} changed size while it was read")
    return data


def file_digest(directory: Path, name: str, max_bytes: int) -> str:
    """Hex sha256 of the regular file ``directory / name``, read in chunks (at most ``max_bytes``)."""
    fd, size = _open_regular(directory, name, max_bytes)
    h, left = hashlib.sha256(), size + 1  # one byte more than stat says: a file that grows is a mismatch anyway
    try:
        with os.fdopen(fd, "rb") as f:
            while left > 0 and (chunk := f.read(min(_CHUNK, left))):
                h.update(chunk)
                left -= len(chunk)
    except OSError as exc:
        raise ArtifactError(f"{directory / name} cannot be read ({exc.strerror or exc})") from None
    return h.hexdigest()


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, iteratively."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json(data: bytes, what: str) -> Any:
    """``data`` (UTF-8 JSON) parsed; ArtifactError for invalid JSON or nesting deeper than MAX_JSON_DEPTH."""
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ArtifactError(f"{what} is nested too deeply to be an artifact file; the artifact is corrupt") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, over-long integers
        raise ArtifactError(f"{what} is not valid JSON ({exc}); the artifact is corrupt") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ArtifactError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels; the artifact is corrupt")
    return value


def read_json(directory: Path, name: str, max_bytes: int) -> Any:
    """The JSON file ``directory / name`` parsed (byte cap, depth guard)."""
    return parse_json(read_bytes(directory, name, max_bytes), str(directory / name))


def safetensors_header(directory: Path, name: str, max_bytes: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (dtype, shape)}`` from a safetensors file's header, without reading any tensor.

    Checks the layout: an 8-byte little-endian header length, a JSON header of known dtypes and
    non-negative integer shapes whose ``data_offsets`` tile the rest of the file exactly.
    """
    fd, size = _open_regular(directory, name, max_bytes)
    where = directory / name
    try:
        with os.fdopen(fd, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ArtifactError(f"{where} is truncated (no safetensors header); the artifact is corrupt")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise ArtifactError(f"{where} declares a {n}-byte header in a {size}-byte file; the artifact is "
                                    f"corrupt")
            raw = f.read(n)
    except OSError as exc:
        raise ArtifactError(f"{where} cannot be read ({exc.strerror or exc})") from None
    header = parse_json(raw, f"{where} (safetensors header)")
    if not isinstance(header, dict):
        raise ArtifactError(f"{where}: the safetensors header is not a JSON object; the artifact is corrupt")
    header.pop("__metadata__", None)
    spans, out = [], {}
    for key, entry in header.items():
        if not (isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}
                and entry["dtype"] in SAFETENSORS_DTYPES and isinstance(entry["shape"], list)
                and all(type(d) is int and d >= 0 for d in entry["shape"]) and isinstance(entry["data_offsets"], list)
                and len(entry["data_offsets"]) == 2 and all(type(o) is int for o in entry["data_offsets"])):
            raise ArtifactError(f"{where}: tensor {key!r} has a malformed header entry; the artifact is corrupt")
        numel = 1
        for d in entry["shape"]:
            numel *= d
        begin, end = entry["data_offsets"]
        if not 0 <= begin <= end or end - begin != numel * SAFETENSORS_DTYPES[entry["dtype"]]:
            raise ArtifactError(f"{where}: tensor {key!r} has shape {entry['shape']} but {end - begin} bytes of "
                                f"data; the artifact is corrupt")
        spans.append((begin, end))
        out[key] = (entry["dtype"], tuple(entry["shape"]))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise ArtifactError(f"{where}: tensor data overlaps or leaves gaps; the artifact is corrupt")
        position = end
    if position != size - 8 - n:
        raise ArtifactError(f"{where} has {size - 8 - n} bytes of tensor data, its header describes {position}; "
                            f"the file is truncated or corrupt")
    return out
