"""CPU INT8 sparse x dense Linear kernels: the ``torch.library`` op, its C++ backend and its ISA selection.

Computes ``y ~ x @ W.T + bias`` for a weight ``W [out, in]`` quantised to int8 per output row and stored in 1x4
blocks along the input dimension, and float32 activations ``x [..., in]`` quantised per token inside the op::

    from sparsekit.kernels import cpu_int8
    packed = cpu_int8.pack_cpu_int8_b4(weight)          # dense [out, in] -> CpuInt8B4Weight; once, offline
    y = cpu_int8.int8_b4_linear(x, packed, bias)        # x [..., in] float32 -> y [..., out] float32

Numerics (exact definition: ``csrc/spmm_cpu_int8/spmm_cpu_int8.h``, reference:
:func:`sparsekit.kernels.reference.int8_b4_linear`): ``s[m] = max|x[m, :]| / 127``,
``xq = clamp(round_half_even(x * (127 / max|x[m, :]|)), -127, 127)``, ``acc = xq @ q.T`` exactly in int32,
``y = float(acc) * (s[m] * scale[o]) + bias[o]``. Every ISA path computes bit-identical ``acc``
(:func:`int8_b4_accumulators` returns them). A token that is all zeros gives ``y = bias``; a token holding a NaN
/ inf gives NaN outputs. The error against the float32 product is the int8 quantisation error of ``x`` and ``W``
(about ``0.5 * (s[m] * sum|q[o]| * scale[o] + ...)``, see the tests), so this op changes numerics: it is not a
default backend.

Op (declared here, once, with ``torch.library.custom_op`` and a fake implementation)::

    sparsekit::int8_b4_linear(Tensor x, Tensor ptr, Tensor col, Tensor val, Tensor scale, Tensor wsum,
                              int in_features, int out_features, Tensor? bias=None) -> Tensor

Its CPU implementation is the C++ extension ``sparsekit._C_cpu_int8`` (``csrc/spmm_cpu_int8``): ISA paths
``avx512-vnni``, ``avx-vnni`` (vpdpbusd), ``avx512bw``, ``avx2`` (vpmaddubsw + vpmaddwd, exact through the sign
trick, or without it for 7-bit weights: see :func:`preferred_weight_bits`) and ``scalar``, chosen at run time from
the CPU, or forced with the environment variable ``SPARSEKIT_INT8_ISA`` (or :func:`force_int8_isa`). The extension
is loaded lazily; if it is missing, the op falls back to the pure-torch reference with one ``RuntimeWarning``
(``available()`` / ``unavailable_reason()``).

Safety: as for :mod:`sparsekit.kernels.cpu`, every call checks, in C++ before touching memory, the dtypes,
devices and sizes of all arguments and every index the kernel uses (``ptr`` monotone from 0 to ``len(col)``, each
block column in range), that no value is -128 and that ``wsum`` totals the values (a weight changed after packing);
bad arguments raise ``ValueError`` / ``TypeError``.
Inference only (no autograd formula).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from sparsekit.formats.validate import KernelInputError
from sparsekit.kernels import reference
from sparsekit.kernels.cpu import _check_x_bias, _plain_eager
from sparsekit.kernels.cpu_int8_layout import BLOCK, MAX_IN_FEATURES, CpuInt8B4Weight, pack_cpu_int8_b4
from sparsekit.kernels.extension import CpuExtension

__all__ = [
    "INT8_ISAS",
    "INT8_ISA_ENV",
    "available",
    "compiled_int8_isas",
    "force_int8_isa",
    "int8_b4_accumulators",
    "int8_b4_linear",
    "int8_isa",
    "pack_cpu_int8_b4",
    "preferred_weight_bits",
    "supported_int8_isas",
    "unavailable_reason",
]

#: Environment variable that forces an int8 ISA path (one of :data:`INT8_ISAS`, or ``auto``).
INT8_ISA_ENV = "SPARSEKIT_INT8_ISA"
#: int8 ISA paths, fastest first.
INT8_ISAS: tuple[str, ...] = ("avx512-vnni", "avx-vnni", "avx512bw", "avx2", "scalar")

# =============================================================================================
# Extension loading (lazy) and ISA selection
# =============================================================================================
_EXT = CpuExtension("sparsekit._C_cpu_int8", INT8_ISA_ENV, INT8_ISAS, what="int8", kernels="INT8 CPU kernels")
__getattr__ = _EXT.module_getattr(__name__)  # AVAILABLE / UNAVAILABLE_REASON load the extension on first access
# available(): the C++ INT8 kernels are built and load (else the op falls back to the torch reference); else
# unavailable_reason() says why.
available, unavailable_reason = _EXT.available, _EXT.unavailable_reason
# supported_int8_isas(): the int8 paths this CPU runs, fastest first; compiled_int8_isas(): those compiled into the
# extension, whether or not this CPU has them.
supported_int8_isas, compiled_int8_isas = _EXT.supported_isas, _EXT.compiled_isas
# int8_isa(): the int8 path the kernels use here and now (or "reference"; honours SPARSEKIT_INT8_ISA);
# force_int8_isa(name): context manager that forces one of INT8_ISAS (None = auto).
int8_isa, force_int8_isa = _EXT.isa, _EXT.force_isa
_resolve_isa, _warn_unavailable = _EXT.resolve_isa, _EXT.warn_unavailable


def preferred_weight_bits() -> int:
    """The int8 weight width (8 or 7, see :func:`~sparsekit.formats.int8.quantize_rows`) that runs fastest on the
    int8 path in use here: 7 on ``avx2`` / ``avx512bw``, whose vpmaddubsw kernels multiply weights within
    ``[-63, 63]`` without the sign trick (one multiply-pipe instruction fewer per product; the kernel picks that
    from the weight's values), else 8 (the vpdpbusd paths multiply 8-bit weights at full speed; the scalar path and
    the reference run both alike). ``sparsekit.compile`` uses it when ``int8_weight_bits`` is not given (an export
    stores 8-bit weights unless asked for 7)."""
    return 7 if int8_isa() in ("avx2", "avx512bw") else 8


# =============================================================================================
# Op
# =============================================================================================
_OP = "sparsekit::int8_b4_linear"


def _check_op_args(op: str, x: Any, ptr: Any, col: Any, val: Any, scale: Any, wsum: Any, in_features: int,
                   out_features: int, bias: Any) -> None:
    """Shape / dtype checks shared by the real and the fake implementations (no data access)."""
    _check_x_bias(op, x, bias, in_features, out_features)
    if not 0 <= in_features <= MAX_IN_FEATURES or out_features < 0:
        raise KernelInputError(f"{op}: in_features must be in [0, {MAX_IN_FEATURES}] and out_features >= 0, got "
                               f"{in_features} / {out_features}")
    for name, t, dtype in (("ptr", ptr, torch.int32), ("col", col, torch.int16), ("val", val, torch.int8),
                           ("scale", scale, torch.float32), ("wsum", wsum, torch.int32)):
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.dim() != 1:
            raise TypeError(f"{op}: {name} must be a 1-D {dtype} tensor (use pack_cpu_int8_b4), "
                            f"got {getattr(t, 'dtype', type(t).__name__)}")
    if ptr.shape[0] != out_features + 1 or val.shape[0] != col.shape[0] * BLOCK or scale.shape[0] != out_features \
            or wsum.shape[0] != out_features:
        raise KernelInputError(f"{op}: packed tensors do not match in_features={in_features}, "
                               f"out_features={out_features}")


def _check_cpu(op: str, tensors: tuple) -> None:
    for name, t in tensors:
        if t is not None and t.device.type != "cpu":
            raise KernelInputError(f"{op}: {name} is on {t.device}; sparsekit's INT8 kernels run on the CPU only "
                                   f"(move the tensors with .cpu())")


def _run(op: str, x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, scale: torch.Tensor,
         wsum: torch.Tensor, in_features: int, out_features: int, bias: Optional[torch.Tensor],
         packed_ok: bool = False) -> torch.Tensor:
    """The CPU implementation of the op. ``packed_ok``: the packed tensors come from a validated CpuInt8B4Weight."""
    if packed_ok:
        _check_x_bias(op, x, bias, in_features, out_features)
        _check_cpu(op, (("x", x), ("bias", bias)))
    else:
        _check_op_args(op, x, ptr, col, val, scale, wsum, in_features, out_features, bias)
        _check_cpu(op, (("x", x), ("ptr", ptr), ("col", col), ("val", val), ("scale", scale), ("wsum", wsum),
                        ("bias", bias)))
    ext = _EXT.load()
    x2 = x if x.dim() == 2 else x.reshape(1, in_features) if x.dim() == 1 else x.flatten(0, -2)
    if ext is None:
        _warn_unavailable()
        y = reference.int8_b4_linear(x2, ptr, col, val, scale, wsum, in_features, out_features, bias)
    else:
        y = ext.linear(x2, ptr, col, val, scale, wsum, in_features, out_features, bias, _resolve_isa())
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], out_features)


@torch.library.custom_op(_OP, mutates_args=())
def _int8_b4_linear_op(x: torch.Tensor, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor,
                       scale: torch.Tensor, wsum: torch.Tensor, in_features: int, out_features: int,
                       bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sparsekit::int8_b4_linear``: ``x [..., in]`` float32 -> ``[..., out]`` float32 for a packed int8 1x4-block
    weight. Any tensors are safe to pass: all are validated (module docstring, "Safety")."""
    return _run(_OP, x, ptr, col, val, scale, wsum, in_features, out_features, bias)


@_int8_b4_linear_op.register_fake
def _int8_b4_linear_fake(x, ptr, col, val, scale, wsum, in_features, out_features, bias=None):
    _check_op_args(_OP, x, ptr, col, val, scale, wsum, in_features, out_features, bias)
    return x.new_empty((*x.shape[:-1], out_features))


def int8_b4_linear(x: torch.Tensor, packed: CpuInt8B4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``y ~ x @ W.T + bias`` with int8 weights and per-token int8 activations (op ``sparsekit::int8_b4_linear``).

    Args:
        x: float32 CPU tensor ``[..., in]`` (row-major; other layouts are copied).
        packed: from :func:`sparsekit.kernels.cpu_int8_layout.pack_cpu_int8_b4`.
        bias: float32 ``[out]`` or None.
    Returns:
        float32 tensor ``[..., out]``: ``float(acc) * (s[m] * scale[o]) + bias[o]`` (module docstring); the packed
        indices are re-checked on every call.
    """
    if not isinstance(packed, CpuInt8B4Weight):
        raise TypeError(f"packed must be a CpuInt8B4Weight (from pack_cpu_int8_b4), got {type(packed).__name__}")
    out, inp = packed.shape
    if _plain_eager(x, bias):
        return _run("int8_b4_linear", x, packed.ptr, packed.col, packed.val, packed.scale, packed.wsum, inp, out,
                    bias, True)
    return torch.ops.sparsekit.int8_b4_linear(x, packed.ptr, packed.col, packed.val, packed.scale, packed.wsum, inp,
                                              out, bias)


def int8_b4_accumulators(x: torch.Tensor, packed: CpuInt8B4Weight,
                         isa: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact int32 accumulators ``acc [M, out]`` and the token scales ``s [M]`` the kernel computes for
    ``x [M, in]`` on ISA path ``isa`` (default: the one the op uses). For tests and debugging: every path must
    equal :func:`sparsekit.kernels.reference.int8_b4_accumulators` bit for bit. Needs the extension."""
    ext = _EXT.load()
    if ext is None:
        raise RuntimeError(f"sparsekit INT8 CPU kernels unavailable: {_EXT.unavailable_reason()}")
    if not isinstance(packed, CpuInt8B4Weight):
        raise TypeError(f"packed must be a CpuInt8B4Weight (from pack_cpu_int8_b4), got {type(packed).__name__}")
    out, inp = packed.shape
    _check_x_bias("int8_b4_accumulators", x, None, inp, out)
    if x.dim() != 2:
        raise KernelInputError(f"int8_b4_accumulators: x must be 2-D [M, {inp}], got {list(x.shape)}")
    return ext.accumulators(x, packed.ptr, packed.col, packed.val, packed.scale, packed.wsum, inp, out,
                            isa or _resolve_isa())
