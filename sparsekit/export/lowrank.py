"""Per-layer low-rank choice for LPAF outputs (the pruning run records the rank of every matrix).

An LPAF run saves each factorised matrix as its product ``W = u @ v`` (so every tool reads it as a plain
checkpoint) and lists the ranks in ``recipe.json`` (``extensions.lpaf.ranks``). The exporter packs such a
matrix in the LowRank format at its recorded rank when that is *smaller* than the best of dense / CSR
and *at least as accurate*: the re-factorised ``u @ v`` must reproduce the stored matrix to float32
rounding (relative Frobenius error <= ``tol``); otherwise the matrix keeps the dense / CSR choice.
"""
from __future__ import annotations

import torch

from sparsekit.formats import LowRankFormat, MatrixFormat, to_format

#: Largest relative error accepted for "the low-rank factors reproduce the matrix" (float32 rounding).
EXACT_TOL = 1e-5


def recorded_ranks(recipe: dict | None) -> dict[tuple[int, str], int]:
    """``{(layer, matrix type): rank}`` from a pruning recipe (empty for runs that are not LPAF)."""
    from sparsekit.architectures import match_name

    entries = ((recipe or {}).get("extensions") or {}).get("lpaf", {}).get("ranks", [])
    matched = ((match_name(e["name"]), int(e["rank"])) for e in entries)
    return {where: rank for where, rank in matched if where is not None}


def choose_with_rank(weight: torch.Tensor, rank: int, value_dtype: torch.dtype = torch.float32,
                     tol: float = EXACT_TOL) -> MatrixFormat:
    """The smallest of dense, CSR and LowRank at ``rank`` for ``weight`` ``[out, in]``.

    LowRank is only a candidate when its stored factors reproduce ``weight`` within ``tol`` (relative
    Frobenius error; or within twice the dense / CSR choice's own rounding error in ``value_dtype``, e.g.
    bfloat16), i.e. when it is at least as accurate as storing the matrix itself.
    """
    dense = to_format(weight, "dense", value_dtype=value_dtype)
    csr = to_format(weight, "csr", value_dtype=value_dtype)
    best = csr if csr.nbytes < dense.nbytes else dense
    if 0 <= rank <= min(weight.shape):
        low = LowRankFormat.pack(weight, rank=rank, value_dtype=value_dtype)
        w = weight.detach().float().cpu()
        norm = float(torch.linalg.norm(w))
        own = float(torch.linalg.norm(w - best.to_dense())) / norm if norm > 0 else 0.0
        if low.nbytes < best.nbytes and low.relative_error is not None and low.relative_error <= max(tol, 2 * own):
            return low
    return best
