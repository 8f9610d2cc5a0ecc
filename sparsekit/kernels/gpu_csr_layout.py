"""The GPU CSR layout: one weight packed for the Triton CSR kernel and the CUDA CSR kernel.

It is :class:`sparsekit.formats.CSRFormat`'s layout with the values in the activations' dtype, on the device::

    packed = pack_gpu_csr(weight_or_csr_format, dtype=torch.bfloat16, device="cuda")
    y = triton_csr_linear(x, packed, bias)   # or cuda_csr_linear(x, packed, bias)

* ``row_ptr`` int32 ``[out + 1]``: row ``r`` owns entries ``[row_ptr[r], row_ptr[r + 1])``.
* ``col_idx`` int16 (``in <= 32768``) or int32 ``[nnz]``: column of each entry, in ``[0, in)``, strictly
  increasing within a row.
* ``values`` ``[nnz]`` (x's dtype: bf16 / fp16 / fp32): ``W[r, col_idx[k]] = values[k]``.
* ``row_order`` int32 ``[out]``: the rows, longest first (ties: ascending row index).

Index ranges are validated once, when a :class:`GpuCSRWeight` is built (:mod:`sparsekit.formats.validate`), and
trusted by the ops; :func:`check_gpu_csr_args` is the ops' per-call check (dtypes and shapes, no data access).
The pure-torch reference is :func:`sparsekit.kernels.reference.triton_csr_linear`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from sparsekit.formats.base import density_of, nbytes_of
from sparsekit.formats.csr import CSRFormat, csr_index_dtype, length_order
from sparsekit.formats.validate import INT32_MAX, KernelInputError, check_swizzled_rows, check_vector
from sparsekit.kernels.reference import gpu_csr_to_dense
from sparsekit.kernels.triton_runtime import DTYPES, check_activation, check_dtype

__all__ = ["GpuCSRWeight", "check_gpu_csr_args", "pack_gpu_csr"]


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class GpuCSRWeight:
    """A weight ``[out, in]`` in the GPU CSR layout (module docstring). Construction validates dtypes, shapes,
    pointers, column ranges and order, the row order and finiteness (``TypeError`` / ``KernelInputError``); the
    ops trust it. The values and indices are fresh contiguous allocations, so they are 16-byte aligned (vector
    loads).

    Fields: ``shape = (out, in)``, ``row_ptr``, ``col_idx``, ``values``, ``row_order``.
    """

    kind: ClassVar[str] = "gpu-csr"
    shape: tuple[int, int]
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    row_order: torch.Tensor

    def __post_init__(self) -> None:
        out, inp = self.shape
        op = "GpuCSRWeight"
        if out < 0 or inp < 0:
            raise KernelInputError(f"{op}: shape must be non-negative, got {tuple(self.shape)}")
        check_vector(op, "values", self.values, DTYPES)
        if self.values.numel() > INT32_MAX:
            raise KernelInputError(f"{op}: too many non-zeros for int32 row pointers: {self.values.numel()}")
        check_swizzled_rows(op, self.row_ptr, self.col_idx, self.row_order, ("values", self.values), nrows=out,
                            ncols=inp, index_dtypes=(csr_index_dtype(inp),))

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        return density_of(self.nnz, self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the kernels read for the weight: values, indices, row pointers and the row order."""
        return nbytes_of(self.op_tensors())

    def op_tensors(self) -> tuple[torch.Tensor, ...]:
        """``(row_ptr, col_idx, values, row_order)``: the ops' tensor arguments, in their order."""
        return self.row_ptr, self.col_idx, self.values, self.row_order

    def to_dense(self) -> torch.Tensor:
        """The represented weight, float32 ``[out, in]``, on the weight's device."""
        return gpu_csr_to_dense(self.row_ptr, self.col_idx, self.values, self.shape[1], self.shape[0])

    def __repr__(self) -> str:
        return (f"GpuCSRWeight(shape={tuple(self.shape)}, nnz={self.nnz}, density={self.density:.3f}, "
                f"dtype={self.dtype}, index_dtype={self.col_idx.dtype}, device={self.device})")


def pack_gpu_csr(weight: Any, *, dtype: Optional[torch.dtype] = None, device: Any = None) -> GpuCSRWeight:
    """Pack a weight once for :func:`~sparsekit.kernels.triton_csr.triton_csr_linear` and
    :func:`~sparsekit.kernels.cuda.cuda_csr_linear`.

    Args:
        weight: a dense ``[out, in]`` floating-point tensor (any device; its non-zeros after conversion to
            ``dtype`` are stored), or a :class:`sparsekit.formats.CSRFormat` (its entries are kept; the row
            order is recomputed if it has none).
        dtype: bfloat16, float16 or float32 (the activations' dtype). Default: a dense weight's own dtype if it
            is one of these (else float32); a CSRFormat's value dtype.
        device: where the packed tensors live (default: the weight's device).
    Returns:
        a validated :class:`GpuCSRWeight`. Raises ``TypeError`` / ``ValueError`` for bad input.
    """
    if isinstance(weight, CSRFormat):
        dtype = check_dtype(dtype or weight.value_dtype)
        (out, inp) = weight.shape
        row_ptr, col_idx, values = weight.row_ptr, weight.col_idx.to(csr_index_dtype(inp)), weight.values
        row_order = weight.row_order if weight.row_order is not None else length_order(weight.row_lengths())
    elif isinstance(weight, torch.Tensor):
        if weight.dim() != 2 or not weight.is_floating_point():
            raise ValueError(f"weight must be a 2-D floating-point tensor [out, in], got {weight.dtype} "
                             f"{list(weight.shape)}")
        dtype = check_dtype(dtype or (weight.dtype if weight.dtype in DTYPES else torch.float32))
        w = weight.detach().to(dtype)
        out, inp = w.shape
        nz = w != 0
        rows, cols = torch.nonzero(nz, as_tuple=True)  # row-major: by row, then column
        counts = nz.sum(dim=1, dtype=torch.int64)
        row_ptr = torch.zeros(out + 1, dtype=torch.int64, device=w.device)
        torch.cumsum(counts, dim=0, out=row_ptr[1:])
        row_ptr, col_idx, values = row_ptr.to(torch.int32), cols.to(csr_index_dtype(inp)), w[rows, cols]
        row_order = length_order(counts)
    else:
        raise TypeError(f"pack_gpu_csr expects a dense weight tensor or a CSRFormat, got {type(weight).__name__}")
    device = torch.device(device) if device is not None else values.device

    def fresh(t: torch.Tensor, dt: Optional[torch.dtype] = None) -> torch.Tensor:
        return t.to(device=device, dtype=dt or t.dtype).contiguous().clone()

    return GpuCSRWeight(shape=(int(out), int(inp)), row_ptr=fresh(row_ptr), col_idx=fresh(col_idx),
                        values=fresh(values, dtype), row_order=fresh(row_order))


def check_gpu_csr_args(op: str, x: Any, row_ptr: Any, col_idx: Any, values: Any, row_order: Any, in_features: int,
                       out_features: int, bias: Any) -> None:
    """Dtype / shape checks of the GPU CSR ops' arguments, real and fake implementations (no data access)."""
    if in_features < 0 or out_features < 0:
        raise KernelInputError(f"{op}: negative in_features / out_features")
    check_vector(op, "values", values, DTYPES)
    check_activation(op, x, bias, in_features, out_features, values.dtype)
    check_vector(op, "row_ptr", row_ptr, (torch.int32,), out_features + 1)
    check_vector(op, "col_idx", col_idx, (csr_index_dtype(in_features),), values.numel())
    check_vector(op, "row_order", row_order, (torch.int32,), out_features)
