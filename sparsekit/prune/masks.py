"""Packing binary masks into one bit vector, and back.

Layout (compatible with the released SMP masks, spec §3.6): the masks are concatenated in
lexicographically sorted module-name order (so layer 10 comes before layer 2), each flattened in
row-major order (``[out, in]``), and the bits packed with ``numpy.packbits`` (big-endian bit order,
the last byte zero-padded). An index (name, shape, bit offset) travels with the bytes.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch


def pack_masks(masks: Mapping[str, torch.Tensor]) -> tuple[bytes, dict]:
    """Pack bool masks into bytes. Returns ``(data, index)``.

    ``index`` = ``{"order": [{"name", "shape", "offset"}...], "total_bits": n, "sha256": hex}``;
    ``offset`` is in bits. ``len(data) == ceil(total_bits / 8)``.
    """
    order, chunks, offset = [], [], 0
    for name in sorted(masks):
        mask = masks[name]
        if mask.dtype != torch.bool:
            raise TypeError(f"mask {name} must be bool, got {mask.dtype}")
        flat = mask.detach().cpu().reshape(-1).numpy()
        order.append({"name": name, "shape": list(mask.shape), "offset": offset})
        chunks.append(flat)
        offset += flat.size
    bits = np.concatenate(chunks) if chunks else np.zeros(0, dtype=bool)
    data = np.packbits(bits).tobytes()
    return data, {"order": order, "total_bits": int(offset), "sha256": hashlib.sha256(data).hexdigest()}


def unpack_masks(data: bytes, index: Mapping) -> dict[str, torch.Tensor]:
    """Inverse of pack_masks. Raises ValueError if the bytes do not match the index."""
    total = int(index["total_bits"])
    if len(data) != (total + 7) // 8:
        raise ValueError(f"mask data has {len(data)} bytes, the index expects {(total + 7) // 8}")
    expected = index.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ValueError("mask data checksum does not match its index: the file is corrupt or was modified")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=total).astype(bool)
    out = {}
    for entry in index["order"]:
        shape = tuple(entry["shape"])
        n = int(np.prod(shape)) if shape else 1
        start = int(entry["offset"])
        if start + n > total:
            raise ValueError(f"mask {entry['name']} runs past the end of the data")
        out[entry["name"]] = torch.from_numpy(bits[start:start + n].reshape(shape).copy())
    return out
