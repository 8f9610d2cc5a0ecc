"""What the CPU kernels' packed weights share: :class:`CpuPackedBase`, the base of
:class:`~sparsekit.kernels.cpu_layout.CpuPackedWeight` (fp32 CSR / BSR) and
:class:`~sparsekit.kernels.cpu_int8_layout.CpuInt8B4Weight` (int8 1x4 blocks).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch

from sparsekit.formats.base import SizedMatrix
from sparsekit.formats.validate import KernelInputError, check_row_ptr, check_shape, check_vector

__all__ = ["CpuPackedBase"]


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class CpuPackedBase(SizedMatrix):
    """A weight ``[out, in]`` packed for a CPU kernel as compressed runs: ``shape = (out, in)``, ``ptr`` (int32 run
    pointers), ``col`` (one index per stored entry) and ``val`` (the stored values, whose non-zeros are the stored
    non-zero weights). A subclass (a frozen dataclass) adds its own fields, lists all its tensors in ``tensors()``
    and checks them in ``_validate``, which construction calls once ``shape`` is checked. Gives the derived sizes
    and the checks every packed weight starts with."""

    shape: tuple[int, int]
    ptr: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor

    def __post_init__(self) -> None:
        op = type(self).__name__
        object.__setattr__(self, "shape", check_shape(self.shape, KernelInputError, op))
        self._validate(op, *self.shape)

    @abstractmethod
    def _validate(self, op: str, out: int, inp: int) -> None:
        """Check every field (``shape`` is checked: ``out, inp``); raise ``TypeError`` / ``KernelInputError`` from
        ``op`` (the class name)."""

    def _check_runs(self, op: str, nruns: int, col_dtype: torch.dtype, val_dtype: torch.dtype, val_per_entry: int,
                    count_what: str, more: tuple[tuple[str, torch.Tensor, torch.dtype, int], ...] = ()
                    ) -> tuple[int, torch.Tensor]:
        """Check the tensors before their contents: ``ptr`` int32 ``[nruns + 1]``, ``col`` 1-D of ``col_dtype``,
        ``val`` of ``val_dtype`` ``[len(col) * val_per_entry]``, each ``(name, tensor, dtype, numel)`` of ``more``,
        all contiguous 1-D tensors on the CPU; then ``ptr`` as compressed-row pointers over ``len(col)`` entries
        (``count_what``: "the number of entries", in messages). Returns ``(len(col), ptr as int64)``; raises
        ``TypeError`` / ``KernelInputError`` from ``op``."""
        check_vector(op, "ptr", self.ptr, (torch.int32,), nruns + 1)
        check_vector(op, "col", self.col, (col_dtype,))
        nent = self.col.numel()
        check_vector(op, "val", self.val, (val_dtype,), nent * val_per_entry)
        for name, t, dtype, numel in more:
            check_vector(op, name, t, (dtype,), numel)
        for name, t in self.tensors().items():
            if t.device.type != "cpu":
                raise KernelInputError(f"{op}: {name} must be on the CPU, got {t.device}")
        return nent, check_row_ptr(self.ptr, nent, ptr_name="ptr", count_what=count_what,
                                   error=KernelInputError, where=op)

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def nnz(self) -> int:
        """Stored non-zero weights."""
        return int(self.val.count_nonzero())
