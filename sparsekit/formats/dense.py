"""The dense storage format: the weight matrix as is (see :mod:`sparsekit.formats.base` for the conventions)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sparsekit.formats.base import VALUE_DTYPES, MatrixFormat, prepare_weight
from sparsekit.formats.validate import check, check_finite, check_shape, check_stored_tensor

__all__ = ["DenseFormat"]


@dataclass(frozen=True, eq=False, repr=False)
class DenseFormat(MatrixFormat):
    """The matrix stored as is.

    Fields / tensors:
        weight: ``float32`` or ``bfloat16``, shape ``[out, in]``, row-major, ``weight[o, i] = W[o, i]``.

    ``nnz = out * in`` (all positions are stored). ``meta()``: ``format_version, kind="dense",
    shape, value_dtype``.
    """

    kind: ClassVar[str] = "dense"
    _values_name: ClassVar[str] = "weight"
    _tensor_names: ClassVar[tuple[str, ...]] = ("weight",)
    weight: torch.Tensor

    @classmethod
    def pack(cls, weight: torch.Tensor, *, value_dtype: torch.dtype = torch.float32) -> DenseFormat:
        return cls(prepare_weight(weight, value_dtype))

    def _validate(self) -> None:
        check_stored_tensor(self.weight, "weight", ndim=2, dtypes=VALUE_DTYPES)
        check_shape(list(self.weight.shape))
        check_finite(self.weight, "weight")

    @property
    def shape(self) -> tuple[int, int]:  # type: ignore[override]
        return int(self.weight.shape[0]), int(self.weight.shape[1])

    @property
    def nnz(self) -> int:
        return self.weight.numel()

    def to_dense(self) -> torch.Tensor:
        return self.weight.to(torch.float32, copy=True)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight}

    def _meta_extra(self) -> dict:
        return {}

    @classmethod
    def _from_parts(cls, meta, tensors, shape):
        w = tensors["weight"]
        check_stored_tensor(w, "weight", ndim=2, dtypes=VALUE_DTYPES)
        check(tuple(w.shape) == shape, f"weight has shape {list(w.shape)}, expected {list(shape)}")
        return cls(w)

