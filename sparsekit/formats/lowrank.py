"""The low-rank storage format: ``W ~= u @ v`` from a truncated SVD (LPAF exports)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from sparsekit.formats.base import VALUE_DTYPES, MatrixFormat, as_x, check_value_dtype, prepare_weight
from sparsekit.formats.validate import check, check_finite, check_shape, check_stored_tensor, dtype_name, is_int

__all__ = ["LowRankFormat"]


@dataclass(frozen=True, eq=False, repr=False)
class LowRankFormat(MatrixFormat):
    """Low-rank factorisation ``W ~= u @ v`` (LPAF export), from a truncated SVD.

    With ``W = U diag(s) Vh`` (singular values ``s`` descending), the balanced split keeps the top
    ``r``: ``u = U[:, :r] * sqrt(s[:r])`` and ``v = sqrt(s[:r])[:, None] * Vh[:r]``. Component ``j``
    (column ``j`` of ``u``, row ``j`` of ``v``) belongs to the j-th largest singular value, so the
    leading ``r' < r`` components give the best rank-``r'`` approximation.

    Fields / tensors:
        u: ``float32`` or ``bfloat16 [out, r]``, row-major.
        v: same dtype as ``u``, ``[r, in]``, row-major. ``0 <= r <= min(out, in)``.
        relative_error: ``||W - u @ v||_F / ||W||_F`` of the stored (dtype-converted) factors against
            the packed weight (0.0 when ``W`` is all zero), or ``None`` if unknown.
        method: how the factors were computed (``"svd"``).

    Semantics (two Linears): ``y = (x @ v.T) @ u.T``, i.e. ``in -> r`` then ``r -> out``; the layer
    bias belongs to the second. ``nnz = r * (out + in)`` (the parameter count).
    ``meta()``: ``format_version, kind="lowrank", shape, value_dtype, rank, relative_error, method``.
    """

    kind: ClassVar[str] = "lowrank"
    _tensor_names: ClassVar[tuple[str, ...]] = ("u", "v")
    u: torch.Tensor
    v: torch.Tensor
    relative_error: float | None = None
    method: str = "svd"

    @classmethod
    def pack(cls, weight: torch.Tensor, *, rank: int | None = None, tol: float | None = None,
             value_dtype: torch.dtype = torch.float32) -> LowRankFormat:
        """Truncated SVD with a fixed ``rank``, or the smallest rank whose relative Frobenius error
        ``||W - W_r||_F / ||W||_F <= tol``. Exactly one of ``rank`` / ``tol`` must be given.

        The SVD runs in float64; ``relative_error`` is measured on the stored factors.
        """
        if (rank is None) == (tol is None):
            raise ValueError("lowrank packing needs exactly one of rank= or tol=")
        w = prepare_weight(weight, torch.float32)  # validate; factors are converted at the end
        check_value_dtype(value_dtype)
        out, inp = w.shape
        kmax = min(out, inp)
        if rank is not None:
            if not is_int(rank) or rank < 0:
                raise ValueError(f"rank must be a non-negative int, got {rank!r}")
            if rank > kmax:
                raise ValueError(f"rank {rank} exceeds min(out, in) = {kmax} for shape {[out, inp]}")
        else:
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
                raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
        w64 = w.to(torch.float64)
        if kmax == 0:
            U = torch.zeros(out, 0, dtype=torch.float64)
            s = torch.zeros(0, dtype=torch.float64)
            Vh = torch.zeros(0, inp, dtype=torch.float64)
        else:
            U, s, Vh = torch.linalg.svd(w64, full_matrices=False)
        if rank is None:
            energy = s.square()
            total = float(energy.sum())
            if total == 0.0:
                rank = 0
            else:
                # tail[r] = ||W - W_r||_F^2 / ||W||_F^2 for r = 0..kmax
                tail = torch.cat([energy.flip(0).cumsum(0).flip(0), energy.new_zeros(1)]) / total
                ok = torch.nonzero(tail.sqrt() <= tol)
                rank = int(ok[0, 0]) if ok.numel() else kmax
        root = s[:rank].sqrt()
        u = (U[:, :rank] * root).to(value_dtype).contiguous()
        v = (root[:, None] * Vh[:rank]).to(value_dtype).contiguous()
        if not (bool(torch.isfinite(u).all()) and bool(torch.isfinite(v).all())):
            raise ValueError(f"low-rank factors overflow {dtype_name(value_dtype)}")
        norm = float(torch.linalg.norm(w64))
        resid = float(torch.linalg.norm(w64 - u.to(torch.float64) @ v.to(torch.float64)))
        rel = resid / norm if norm > 0 else (0.0 if resid == 0 else float("inf"))
        return cls(u=u, v=v, relative_error=rel, method="svd")

    def _validate(self) -> None:
        check_stored_tensor(self.u, "u", ndim=2, dtypes=VALUE_DTYPES)
        check_stored_tensor(self.v, "v", ndim=2, dtypes=VALUE_DTYPES)
        check(self.u.dtype == self.v.dtype,
              f"u and v must share a dtype, got {dtype_name(self.u.dtype)} and {dtype_name(self.v.dtype)}")
        out, r = self.u.shape
        r2, inp = self.v.shape
        check(r == r2, f"rank mismatch: u has shape {list(self.u.shape)} but v has {list(self.v.shape)}")
        check_shape([int(out), int(inp)])
        check(r <= min(out, inp), f"rank {r} exceeds min(out, in) = {min(out, inp)}")
        check_finite(self.u, "u")
        check_finite(self.v, "v")
        re = self.relative_error
        check(re is None or (isinstance(re, (int, float)) and not isinstance(re, bool) and re >= 0
                             and math.isfinite(re)),
              f"relative_error must be a finite number >= 0 or None, got {re!r}")
        check(isinstance(self.method, str) and bool(self.method),
              f"method must be a non-empty string, got {self.method!r}")

    @property
    def shape(self) -> tuple[int, int]:  # type: ignore[override]
        return int(self.u.shape[0]), int(self.v.shape[1])

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])

    @property
    def nnz(self) -> int:
        out, inp = self.shape
        return self.rank * (out + inp)

    @property
    def value_dtype(self) -> torch.dtype:
        return self.u.dtype

    def to_dense(self) -> torch.Tensor:
        return (self.u.to(torch.float64) @ self.v.to(torch.float64)).to(torch.float32)

    def matmul_reference(self, x: torch.Tensor) -> torch.Tensor:
        """``(x @ v.T) @ u.T`` in float32 (the two-Linear computation)."""
        x = as_x(x, self.shape[1])
        return (x @ self.v.to(torch.float32).T) @ self.u.to(torch.float32).T

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"u": self.u, "v": self.v}

    def _meta_extra(self) -> dict:
        re = None if self.relative_error is None else float(self.relative_error)
        return {"rank": self.rank, "relative_error": re, "method": self.method}

    def _repr_extra(self) -> dict:
        return {"rank": self.rank, "relative_error": self.relative_error}

    @classmethod
    def _from_parts(cls, meta, tensors, shape):
        u, v = tensors["u"], tensors["v"]
        check_stored_tensor(u, "u", ndim=2, dtypes=VALUE_DTYPES)
        check_stored_tensor(v, "v", ndim=2, dtypes=VALUE_DTYPES)
        check("rank" in meta, "meta lacks 'rank'")
        r = meta["rank"]
        check(is_int(r) and r >= 0, f"meta rank must be a non-negative int, got {r!r}")
        check(tuple(u.shape) == (shape[0], r), f"u has shape {list(u.shape)}, expected {[shape[0], r]}")
        check(tuple(v.shape) == (r, shape[1]), f"v has shape {list(v.shape)}, expected {[r, shape[1]]}")
        return cls(u=u, v=v, relative_error=meta.get("relative_error"), method=meta.get("method", "svd"))

