"""CPU sparse x dense Linear kernels: the ``torch.library`` ops, their C++ backend and its ISA selection.

Computes ``y = x @ W.T + bias`` for a sparse weight ``W [out, in]`` and dense float32 activations
``x [..., in]`` (tokens in the leading dimensions), as an ``nn.Linear`` does::

    from sparsekit import kernels
    packed = kernels.pack_cpu_csr(csr_format)      # or a dense [out, in] weight; once, offline
    y = kernels.csr_linear(x, packed, bias)        # x [..., in] float32 -> y [..., out] float32

Ops (declared here, once, with ``torch.library.custom_op`` and a fake implementation, so they work in
eager mode, under ``torch.compile(fullgraph=True)`` and with ``torch.library.opcheck``)::

    sparsekit::csr_linear(Tensor x, Tensor ptr, Tensor col, Tensor val, int in_features,
                          int out_features, int chunk, Tensor? bias=None) -> Tensor
    sparsekit::bsr_linear(Tensor x, Tensor ptr, Tensor col, Tensor val, int in_features,
                          int out_features, int group_rows, int chunk, Tensor? bias=None) -> Tensor

Their CPU implementation is the C++ extension ``sparsekit._C_cpu`` (``csrc/spmm_cpu``): AVX-512, AVX2
and scalar code paths chosen at run time from the CPU, or forced with the environment variable
``SPARSEKIT_ISA=avx512|avx2|scalar`` (or :func:`force_isa`). The ops are registered for every device;
on a device other than CPU they raise ``ValueError`` until a backend registers a kernel for it
(``torch.library.register_kernel("sparsekit::csr_linear", "cuda", ...)``).

The extension is loaded lazily, on first use. If it is missing (built with ``SPARSEKIT_SKIP_CPP=1``, no
compiler, a failed build, a torch version mismatch), ``import sparsekit`` still works, ``AVAILABLE`` is
False, ``UNAVAILABLE_REASON`` says why, and the ops fall back to the pure-torch reference
(:mod:`sparsekit.kernels.reference`) with one ``RuntimeWarning``.

The packed layout and its packing (:class:`~sparsekit.kernels.cpu_layout.CpuCSRWeight`,
:class:`~sparsekit.kernels.cpu_layout.CpuBSRWeight`, ``pack_cpu_csr`` / ``pack_cpu_bsr``) are
:mod:`sparsekit.kernels.cpu_layout`; packing validates everything once, and the ops re-check the indices on
every call (below).

Safety: the ops never read out of bounds, whatever tensors they are given. Every call checks, in C++ before
touching memory, the dtypes, layouts, devices and sizes of all arguments and the contents of every index
the kernels use (``ptr[0] == 0``, ``ptr`` non-decreasing, ``ptr[-1] == len(col)``, each column offset inside
its chunk and below ``in_features``) -- a vectorised O(entries) scan, measured at <= 1.4% of the op at 128
tokens on BERT-base shapes (up to 8% for 1 token, where the op takes tens of microseconds;
``benchmarks/results/op_validation_cost.md``). Bad
arguments raise ``ValueError`` / ``TypeError`` naming what is wrong, also for packed weights modified after
packing.

Semantics, the same for CSR and BSR and for every backend: ``y = x @ W.T + bias`` where ``W`` holds the
stored non-zero weights and all others are *absent*: a NaN / inf in ``x`` reaches an output only through a
stored non-zero weight of its row. Pruned weights, and explicit zeros stored inside a group or block, never
contribute ``0 * NaN = NaN``. NaN / inf in ``val`` or ``bias`` propagate. (The kernels run their fast path
and recompute exactly the non-finite outputs of tokens whose ``x`` holds a NaN / inf.)

Inference only: the ops have no autograd formula. Kernel tuning (chunk, tile and GEMV thresholds) was
measured on a 2-core AVX-512 Xeon (Sapphire-Rapids class); see the constants in ``spmm_cpu.cpp``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from sparsekit.formats.validate import KernelInputError
from sparsekit.kernels import reference
from sparsekit.kernels.cpu_layout import MAX_CHUNK, CpuBSRWeight, CpuCSRWeight
from sparsekit.kernels.extension import CpuExtension

__all__ = [
    "ISA_ENV",
    "ISAS",
    "available",
    "bsr_linear",
    "csr_linear",
    "force_isa",
    "isa",
    "parallel_threads",
    "supported_isas",
    "unavailable_reason",
]

#: Environment variable that forces an ISA path: ``avx512``, ``avx2``, ``scalar`` (or ``auto``).
ISA_ENV = "SPARSEKIT_ISA"
#: ISA paths, fastest first.
ISAS: tuple[str, ...] = ("avx512", "avx2", "scalar")

# =============================================================================================
# Extension loading (lazy) and ISA selection
# =============================================================================================
_EXT = CpuExtension("sparsekit._C_cpu", ISA_ENV, ISAS, what="", kernels="CPU kernels")
__getattr__ = _EXT.module_getattr(__name__)  # AVAILABLE / UNAVAILABLE_REASON load the extension on first access
# available(): the C++ kernels are built and load (else the ops fall back to the torch reference); else
# unavailable_reason() says why.
available, unavailable_reason = _EXT.available, _EXT.unavailable_reason
# supported_isas(): the paths this CPU runs, fastest first; isa(): the one the kernels use here and now (or
# "reference"; honours SPARSEKIT_ISA); force_isa(name): context manager that forces one (None = auto).
supported_isas, isa, force_isa = _EXT.supported_isas, _EXT.isa, _EXT.force_isa
_resolve_isa, _warn_unavailable = _EXT.resolve_isa, _EXT.warn_unavailable


def parallel_threads(n: int | None = None) -> int:
    """How many distinct threads the kernels' parallel loop really runs on, over ``n`` work items (default:
    ``torch.get_num_threads()``). 1 with several torch threads means the extension was built without OpenMP and
    every kernel runs serially; 0 if the extension is unavailable."""
    ext = _EXT.load()
    if ext is None:
        return 0
    return int(ext.parallel_threads(torch.get_num_threads() if n is None else int(n)))


# =============================================================================================
# Ops
# =============================================================================================
def _check_x_bias(op: str, x: Any, bias: Any, in_features: int, out_features: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{op}: x must be float32, got {x.dtype} (convert with x.float())")
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise KernelInputError(f"{op}: x must have shape [..., {in_features}] (in_features), got {list(x.shape)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"{op}: bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dtype != torch.float32:
            raise TypeError(f"{op}: bias must be float32, got {bias.dtype}")
        if bias.dim() != 1 or bias.shape[0] != out_features:
            raise KernelInputError(f"{op}: bias must have shape [{out_features}] (out_features), "
                                   f"got {list(bias.shape)}")


def _check_op_args(op: str, x: Any, ptr: Any, col: Any, val: Any, in_features: int, out_features: int,
                   group_rows: int, chunk: int, bias: Any) -> None:
    """Shape / dtype checks shared by the real and the fake implementations (no data access)."""
    _check_x_bias(op, x, bias, in_features, out_features)
    if group_rows not in (1, 2, 4):
        raise KernelInputError(f"{op}: group_rows must be 1, 2 or 4, got {group_rows}")
    if not 1 <= chunk <= MAX_CHUNK:
        raise KernelInputError(f"{op}: chunk must be in [1, {MAX_CHUNK}], got {chunk}")
    if in_features < 0 or out_features < 0:
        raise KernelInputError(f"{op}: negative in_features / out_features")
    for name, t, dtype in (("ptr", ptr, torch.int32), ("col", col, torch.uint8), ("val", val, torch.float32)):
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.dim() != 1:
            raise TypeError(f"{op}: {name} must be a 1-D {dtype} tensor (use pack_cpu_csr / pack_cpu_bsr), "
                            f"got {getattr(t, 'dtype', type(t).__name__)}")
    ng = -(-out_features // group_rows)
    nch = -(-in_features // chunk)
    if ptr.shape[0] != nch * ng + 1 or val.shape[0] != col.shape[0] * group_rows:
        raise KernelInputError(f"{op}: packed tensors do not match in_features={in_features}, "
                               f"out_features={out_features}, group_rows={group_rows}, chunk={chunk}")


def _run(op: str, x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
         out_features: int, group_rows: int, chunk: int, bias: Optional[torch.Tensor],
         packed_ok: bool = False) -> torch.Tensor:
    """The CPU implementation of both ops. ``packed_ok``: ptr / col / val come from a validated CpuPackedWeight."""
    if packed_ok:
        _check_x_bias(op, x, bias, in_features, out_features)
        tensors = (("x", x), ("bias", bias))
    else:
        _check_op_args(op, x, ptr, col, val, in_features, out_features, group_rows, chunk, bias)
        tensors = (("x", x), ("ptr", ptr), ("col", col), ("val", val), ("bias", bias))
    for name, t in tensors:
        if t is not None and t.device.type != "cpu":
            raise KernelInputError(f"{op}: {name} is on {t.device}; sparsekit's kernels for this op run on the CPU "
                                   f"only (move the tensors with .cpu())")
    ext = _EXT.load()
    x2 = x if x.dim() == 2 else x.reshape(-1, in_features)
    if ext is None:
        _warn_unavailable()
        y = reference.bsr_linear(x2, ptr, col, val, in_features, out_features, group_rows, chunk, bias)
    else:
        y = ext.linear(x2, ptr, col, val, in_features, out_features, group_rows, chunk, bias, _resolve_isa())
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], out_features)


@torch.library.custom_op("sparsekit::csr_linear", mutates_args=())
def _csr_linear_op(x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
                   out_features: int, chunk: int, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sparsekit::csr_linear``: ``x [..., in]`` float32 -> ``[..., out]`` for a packed weight (``group_rows``
    1). Any tensors are safe to pass: all are validated (module docstring, "Safety"); NaN / inf semantics:
    module docstring, "Semantics"."""
    return _run("sparsekit::csr_linear", x, ptr, col, val, in_features, out_features, 1, chunk, bias)


@_csr_linear_op.register_fake
def _csr_linear_fake(x, ptr, col, val, in_features, out_features, chunk, bias=None):
    _check_op_args("sparsekit::csr_linear", x, ptr, col, val, in_features, out_features, 1, chunk, bias)
    return x.new_empty((*x.shape[:-1], out_features))


@torch.library.custom_op("sparsekit::bsr_linear", mutates_args=())
def _bsr_linear_op(x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, in_features: int,
                   out_features: int, group_rows: int, chunk: int,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sparsekit::bsr_linear``: ``x [..., in]`` float32 -> ``[..., out]`` for a packed weight with ``group_rows``
    1, 2 or 4. Any tensors are safe to pass: all are validated (module docstring, "Safety"); NaN / inf
    semantics: module docstring, "Semantics" (explicit zeros inside a group do not propagate a NaN of x)."""
    return _run("sparsekit::bsr_linear", x, ptr, col, val, in_features, out_features, group_rows, chunk, bias)


@_bsr_linear_op.register_fake
def _bsr_linear_fake(x, ptr, col, val, in_features, out_features, group_rows, chunk, bias=None):
    _check_op_args("sparsekit::bsr_linear", x, ptr, col, val, in_features, out_features, group_rows, chunk, bias)
    return x.new_empty((*x.shape[:-1], out_features))


def _vmap_rule(op: Any, info: Any, in_dims: tuple, x: torch.Tensor, *args: Any) -> tuple[torch.Tensor, Optional[int]]:
    """vmap over x only: the ops take x [..., in], so a batch dimension of x is one more leading dimension."""
    if any(d is not None for d in in_dims[1:]):
        raise NotImplementedError("sparsekit ops support vmap over x only, not over the packed weight or the bias")
    if in_dims[0] is None:  # nothing batched
        return op(x, *args), None
    return op(x.movedim(in_dims[0], 0), *args), 0


_csr_linear_op.register_vmap(lambda info, in_dims, x, *args: _vmap_rule(_csr_linear_op, info, in_dims, x, *args))
_bsr_linear_op.register_vmap(lambda info, in_dims, x, *args: _vmap_rule(_bsr_linear_op, info, in_dims, x, *args))


def _plain_eager(x: Any, bias: Any) -> bool:
    """True when calling the implementation directly is equivalent to going through the dispatcher (which
    costs ~10-20 us per call): plain tensors, no autograd, no torch.compile / dispatch-mode tracing."""
    if torch.compiler.is_compiling() or type(x) is not torch.Tensor or torch._C._are_functorch_transforms_active():
        return False
    if bias is not None and type(bias) is not torch.Tensor:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
        return False
    try:
        return torch._C._len_torch_dispatch_stack() == 0
    except AttributeError:  # private API moved: always take the dispatcher
        return False


def csr_linear(x: torch.Tensor, packed: CpuCSRWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``y = x @ W.T + bias`` for a packed CSR weight ``W [out, in]`` (op ``sparsekit::csr_linear``).

    Args:
        x: float32 CPU tensor ``[..., in]`` (row-major; other layouts are copied).
        packed: from :func:`sparsekit.kernels.cpu_layout.pack_cpu_csr`.
        bias: float32 ``[out]`` or None.
    Returns:
        float32 tensor ``[..., out]``. A NaN / inf in ``x`` reaches an output only through a stored non-zero
        weight of its row (module docstring, "Semantics"); the packed indices are re-checked on every call.
    """
    if not isinstance(packed, CpuCSRWeight):
        raise TypeError(f"packed must be a CpuCSRWeight (from pack_cpu_csr), got {type(packed).__name__}")
    out, inp = packed.shape
    if _plain_eager(x, bias):
        return _run("csr_linear", x, packed.ptr, packed.col, packed.val, inp, out, 1, packed.chunk, bias, True)
    return torch.ops.sparsekit.csr_linear(x, packed.ptr, packed.col, packed.val, inp, out, packed.chunk, bias)


def bsr_linear(x: torch.Tensor, packed: CpuBSRWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``y = x @ W.T + bias`` for a packed BSR weight ``W [out, in]`` (op ``sparsekit::bsr_linear``).

    Args:
        x: float32 CPU tensor ``[..., in]`` (row-major; other layouts are copied).
        packed: from :func:`sparsekit.kernels.cpu_layout.pack_cpu_bsr`.
        bias: float32 ``[out]`` or None.
    Returns:
        float32 tensor ``[..., out]``. A NaN / inf in ``x`` reaches an output only through a stored non-zero
        weight of its row (module docstring, "Semantics"); the packed indices are re-checked on every call.
    """
    if not isinstance(packed, CpuBSRWeight):
        raise TypeError(f"packed must be a CpuBSRWeight (from pack_cpu_bsr), got {type(packed).__name__}")
    out, inp = packed.shape
    R = packed.group_rows
    if _plain_eager(x, bias):
        return _run("bsr_linear", x, packed.ptr, packed.col, packed.val, inp, out, R, packed.chunk, bias, True)
    return torch.ops.sparsekit.bsr_linear(x, packed.ptr, packed.col, packed.val, inp, out, R, packed.chunk, bias)
