"""The GPU BSR layout: one weight packed for the Triton BSR kernel (tensor cores).

``W [out, in]`` is stored as ``br x bc`` blocks (``br, bc`` in 16 / 32 / 64, as ``tl.dot`` needs every dimension
>= 16); only non-zero blocks are kept. ``nbr = ceil(out / br)``, ``nbc = ceil(in / bc)``::

    packed = pack_gpu_bsr(weight_or_bsr_format, block=(32, 32), dtype=torch.bfloat16, device="cuda")
    y = triton_bsr_linear(x, packed, bias)

* ``row_ptr`` int32 ``[nbr + 1]``: block row ``i`` owns stored blocks ``[row_ptr[i], row_ptr[i + 1])``.
* ``col_idx`` int32 ``[nblocks]``: block ``k`` covers columns ``col_idx[k]*bc .. col_idx[k]*bc + bc - 1``;
  strictly increasing within a block row.
* ``blocks_t`` ``[nblocks, bc, br]`` (x's dtype), each block **transposed**:
  ``blocks_t[k, b, a] = W[i*br + a, col_idx[k]*bc + b]`` (zero beyond the matrix edges), so a block is
  already the ``K x N`` operand of ``tl.dot``.
* ``row_order`` int32 ``[nbr]``: a permutation of the block rows, most stored blocks first.

Index ranges are validated once, when a :class:`GpuBSRWeight` is built (:mod:`sparsekit.formats.validate`), and
trusted by the op; :func:`check_gpu_bsr_args` is the op's per-call check (dtypes and shapes, no data access).
The pure-torch reference is :func:`sparsekit.kernels.reference.triton_bsr_linear`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from sparsekit.formats.base import nbytes_of
from sparsekit.formats.bsr import BSRFormat
from sparsekit.formats.csr import length_order
from sparsekit.formats.validate import INT32_MAX, KernelInputError, check_swizzled_rows, check_vector
from sparsekit.kernels.reference import gpu_bsr_to_dense
from sparsekit.kernels.triton_runtime import DTYPES, check_activation, check_dtype

__all__ = ["BLOCK_SIZES", "GpuBSRWeight", "check_gpu_bsr_args", "pack_gpu_bsr"]

#: Block edge lengths the kernel supports (``tl.dot`` needs every dimension >= 16).
BLOCK_SIZES: tuple[int, ...] = (16, 32, 64)


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class GpuBSRWeight:
    """A weight ``[out, in]`` in the GPU BSR layout (module docstring). Construction validates dtypes, shapes,
    pointers, block indices and their order, the row order and finiteness (``TypeError`` /
    ``KernelInputError``).

    Fields: ``shape = (out, in)``, ``block = (br, bc)``, ``row_ptr``, ``col_idx``, ``blocks_t``, ``row_order``.
    """

    kind: ClassVar[str] = "gpu-bsr"
    shape: tuple[int, int]
    block: tuple[int, int]
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    blocks_t: torch.Tensor
    row_order: torch.Tensor

    def __post_init__(self) -> None:
        out, inp = self.shape
        br, bc = self.block
        op = "GpuBSRWeight"
        if br not in BLOCK_SIZES or bc not in BLOCK_SIZES:
            raise KernelInputError(f"block must be two of {BLOCK_SIZES} (tl.dot needs >= 16), got {tuple(self.block)}")
        if out < 0 or inp < 0:
            raise KernelInputError(f"shape must be non-negative, got {tuple(self.shape)}")
        if not isinstance(self.blocks_t, torch.Tensor) or self.blocks_t.dtype not in DTYPES:
            raise TypeError(f"{op}: blocks_t must be a tensor of {DTYPES}, "
                            f"got {getattr(self.blocks_t, 'dtype', None)}")
        bt = self.blocks_t
        if bt.dim() != 3 or tuple(bt.shape[1:]) != (bc, br) or not bt.is_contiguous():
            raise KernelInputError(f"{op}: blocks_t must be contiguous [nblocks, {bc}, {br}], got {list(bt.shape)}")
        if bt.numel() > INT32_MAX:  # the kernel's block offsets are int32
            raise KernelInputError(f"{op}: too many stored values for int32 offsets: {bt.numel()}")
        check_swizzled_rows(op, self.row_ptr, self.col_idx, self.row_order, ("blocks_t", bt), nrows=-(-out // br),
                            ncols=-(-inp // bc), index_dtypes=(torch.int32,), index_word="block",
                            count_what="the number of blocks")

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks_t.dtype

    @property
    def device(self) -> torch.device:
        return self.blocks_t.device

    @property
    def nblocks(self) -> int:
        return self.blocks_t.shape[0]

    @property
    def block_density(self) -> float:
        """Stored blocks over all blocks of the padded tiling (the fraction of tensor-core work kept)."""
        (out, inp), (br, bc) = self.shape, self.block
        total = -(-out // br) * -(-inp // bc)
        return self.nblocks / total if total else 0.0

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.op_tensors())

    def op_tensors(self) -> tuple[torch.Tensor, ...]:
        """``(row_ptr, col_idx, blocks_t, row_order)``: the op's tensor arguments, in their order."""
        return self.row_ptr, self.col_idx, self.blocks_t, self.row_order

    def to_dense(self) -> torch.Tensor:
        """The represented weight, float32 ``[out, in]``, on the weight's device."""
        return gpu_bsr_to_dense(self.row_ptr, self.col_idx, self.blocks_t, self.shape[1], self.shape[0])

    def __repr__(self) -> str:
        return (f"GpuBSRWeight(shape={tuple(self.shape)}, block={tuple(self.block)}, nblocks={self.nblocks}, "
                f"block_density={self.block_density:.3f}, dtype={self.dtype}, device={self.device})")


def pack_gpu_bsr(weight: Any, *, block: tuple[int, int] = (32, 32), dtype: Optional[torch.dtype] = None,
                 device: Any = None) -> GpuBSRWeight:
    """Pack a weight once for :func:`~sparsekit.kernels.triton_bsr.triton_bsr_linear`.

    Args:
        weight: a dense ``[out, in]`` floating-point tensor (any device; packed there, a block is stored iff it
            holds a non-zero after conversion to ``dtype``), or a :class:`sparsekit.formats.BSRFormat` whose
            block is two of 16 / 32 / 64 (its stored blocks are kept as they are).
        block: ``(br, bc)``, each 16, 32 or 64; for a dense ``weight`` only.
        dtype: bfloat16, float16 or float32 (the activations' dtype). Default: a dense weight's own dtype if it
            is one of these (else float32); a BSRFormat's value dtype.
        device: where the packed tensors live (default: the weight's device).
    Returns:
        a validated :class:`GpuBSRWeight`. Raises ``TypeError`` / ``ValueError`` for bad input.
    """
    if isinstance(weight, BSRFormat):
        br, bc = weight.block
        dtype = check_dtype(dtype or weight.value_dtype)
        (out, inp), nb = weight.shape, weight.nblocks
        if br not in BLOCK_SIZES or bc not in BLOCK_SIZES:
            raise ValueError(f"the BSRFormat's block {weight.block} is not two of {BLOCK_SIZES}; repack the dense "
                             f"weight with pack_gpu_bsr(fmt.to_dense(), block=...)")
        blocks_t = weight.blocks.to(dtype).transpose(1, 2).contiguous()
        row_ptr, col_idx = weight.block_row_ptr, weight.block_col_idx
        lengths = row_ptr[1:].to(torch.int64) - row_ptr[:-1].to(torch.int64)
        if nb == 0:
            blocks_t = blocks_t.reshape(0, bc, br)
    elif isinstance(weight, torch.Tensor):
        if weight.dim() != 2 or not weight.is_floating_point():
            raise ValueError(f"weight must be a 2-D floating-point tensor [out, in], got {weight.dtype} "
                             f"{list(weight.shape)}")
        if (not isinstance(block, (tuple, list)) or len(block) != 2
                or any(isinstance(b, bool) or b not in BLOCK_SIZES for b in block)):
            raise ValueError(f"block must be two of {BLOCK_SIZES} (tl.dot needs >= 16), got {block!r}")
        br, bc = int(block[0]), int(block[1])
        dtype = check_dtype(dtype or (weight.dtype if weight.dtype in DTYPES else torch.float32))
        w = weight.detach().to(dtype)
        if not bool(torch.isfinite(w).all()):
            raise ValueError("weight holds NaN or inf")
        out, inp = w.shape
        nbr, nbc = -(-out // br), -(-inp // bc)
        padded = w.new_zeros(nbr * br, nbc * bc)
        padded[:out, :inp] = w
        tiles = padded.view(nbr, br, nbc, bc).permute(0, 2, 3, 1)  # [nbr, nbc, bc, br]: each block transposed
        keep = (tiles != 0).flatten(2).any(dim=2)  # [nbr, nbc]
        brow, bcol = torch.nonzero(keep, as_tuple=True)  # sorted by block row, then block column
        lengths = keep.sum(dim=1, dtype=torch.int64)
        row_ptr = torch.zeros(nbr + 1, dtype=torch.int64, device=w.device)
        torch.cumsum(lengths, dim=0, out=row_ptr[1:])
        row_ptr, col_idx = row_ptr.to(torch.int32), bcol.to(torch.int32)
        blocks_t = tiles[brow, bcol].contiguous()
    else:
        raise TypeError(f"pack_gpu_bsr expects a dense weight tensor or a BSRFormat, got {type(weight).__name__}")
    device = torch.device(device) if device is not None else blocks_t.device
    return GpuBSRWeight(shape=(int(out), int(inp)), block=(br, bc), row_ptr=row_ptr.to(device).contiguous(),
                        col_idx=col_idx.to(device).contiguous(), blocks_t=blocks_t.to(device),
                        row_order=length_order(lengths).to(device))


def check_gpu_bsr_args(op: str, x: Any, row_ptr: Any, col_idx: Any, blocks_t: Any, row_order: Any, in_features: int,
                       out_features: int, bias: Any) -> None:
    """Dtype / shape checks of the GPU BSR op's arguments, real and fake implementations (no data access)."""
    if not isinstance(blocks_t, torch.Tensor) or blocks_t.dim() != 3 or blocks_t.dtype not in DTYPES:
        raise TypeError(f"{op}: blocks_t must be a 3-D tensor [nblocks, bc, br] of {DTYPES} (use pack_gpu_bsr)")
    nb, bc, br = blocks_t.shape
    if br not in BLOCK_SIZES or bc not in BLOCK_SIZES:
        raise KernelInputError(f"{op}: block ({br}, {bc}) is not two of {BLOCK_SIZES}")
    if in_features < 0 or out_features < 0:
        raise KernelInputError(f"{op}: negative in_features / out_features")
    nbr = -(-out_features // br)
    check_activation(op, x, bias, in_features, out_features, blocks_t.dtype)
    check_vector(op, "row_ptr", row_ptr, (torch.int32,), nbr + 1)
    check_vector(op, "col_idx", col_idx, (torch.int32,), nb)
    check_vector(op, "row_order", row_order, (torch.int32,), nbr)
