"""What both Triton kernels (:mod:`~sparsekit.kernels.triton_bsr`, :mod:`~sparsekit.kernels.triton_csr`) share:
Triton's availability, the interpreter mode, lazy ``triton.jit``, where a launch runs; and what every GPU op
(the CUDA one too) shares: the activation check, the token rows, the fake implementation.

Where the kernels run: CUDA tensors (compiled, autotuned), or CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1`` set before ``triton`` is first imported, as Triton's own library functions are built at
import; fixed tiles; for tests). Triton is optional: without it this module imports, ``triton`` and ``tl`` are
None and the launches raise with the reason, while the layouts, their validation and the references still work.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Optional

import torch

from sparsekit.formats.validate import KernelInputError

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None
    tl = None

__all__ = [
    "DTYPES",
    "check_activation",
    "check_dtype",
    "fake_linear",
    "interpreter_ready",
    "interpreting",
    "launch",
    "launch_mode",
    "lazy_kernel",
    "token_rows",
    "tl",
    "triton",
    "triton_available",
    "triton_unavailable_reason",
]

#: Activation / weight dtypes of the GPU kernels (accumulation is always float32).
DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16, torch.float32)


def triton_available() -> bool:
    """Whether Triton is importable here."""
    return triton is not None


def triton_unavailable_reason() -> Optional[str]:
    """Why the Triton kernels cannot run at all (None when Triton is installed)."""
    return None if triton is not None else "triton is not installed (pip install triton; Linux x86-64 only)"


def interpreting() -> bool:
    """Whether the Triton interpreter is requested (``TRITON_INTERPRET=1``): kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def interpreter_ready() -> bool:
    """Whether triton.language itself was imported under the interpreter (``TRITON_INTERPRET=1`` set before the
    first ``import triton``), which the interpreter needs for Triton's own ``@jit`` library functions."""
    if triton is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


@contextlib.contextmanager
def _interpret_env(value: bool) -> Iterator[None]:
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if value else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


def lazy_kernel(fn: Callable, make_tuned: Callable[[Any], Any]) -> Callable[[bool], Any]:
    """``get(interpret)`` -> the kernel ``fn`` jitted for the interpreter (``interpret=True``, untuned) or for
    the GPU (``make_tuned(jitted)``, e.g. wrapped in ``triton.autotune``), built on first use and cached.

    ``triton.jit`` decides at decoration time whether a function is interpreted, so decorating at import would
    tie the module to the ``TRITON_INTERPRET`` value of whoever imported it first; building per mode on first
    use does not.
    """
    cache: dict[bool, Any] = {}

    def get(interpret: bool) -> Any:
        if interpret not in cache:
            if triton is None:
                raise RuntimeError(triton_unavailable_reason())
            with _interpret_env(interpret):
                jitted = triton.jit(fn)
            cache[interpret] = jitted if interpret else make_tuned(jitted)
        return cache[interpret]

    return get


def launch_mode(op: str, tensors: dict[str, Optional[torch.Tensor]]) -> bool:
    """Check that every tensor is on one device where the Triton kernels run; returns ``interpret``."""
    if triton is None:
        raise RuntimeError(f"{op}: {triton_unavailable_reason()}")
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise KernelInputError(f"{op}: all tensors must be on one device, got "
                               + ", ".join(f"{n} on {d}" for n, d in devices.items()))
    device = next(iter(devices.values()))
    if device.type == "cuda":
        return False
    if device.type == "cpu" and interpreting():
        if not interpreter_ready():
            raise RuntimeError(f"{op}: TRITON_INTERPRET=1 was set after triton was imported; Triton's own library "
                               f"functions were then built for the GPU. Set it before the first `import triton` "
                               f"(e.g. in the environment of the process)")
        return True
    raise KernelInputError(f"{op}: the Triton kernels run on CUDA tensors (or on CPU tensors under the Triton "
                           f"interpreter, TRITON_INTERPRET=1); the tensors are on {device}")


def launch(op: str, x: torch.Tensor, tensors: dict[str, Optional[torch.Tensor]], in_features: int,
           out_features: int) -> tuple[bool, torch.Tensor, torch.Tensor]:
    """Before a Triton launch: ``(interpret, x2, y)`` with :func:`launch_mode` over ``x`` and ``tensors``,
    ``x2 = token_rows(x)`` ``[tokens, in]`` and the output ``y`` ``[tokens, out]`` (empty, x's dtype)."""
    interpret = launch_mode(op, {"x": x, **tensors})
    x2 = token_rows(x, in_features)
    return interpret, x2, torch.empty(x2.shape[0], out_features, dtype=x.dtype, device=x.device)


def check_dtype(dtype: Any) -> torch.dtype:
    """``dtype`` must be one of :data:`DTYPES` (``TypeError``)."""
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(str(d) for d in DTYPES)}, got {dtype}")
    return dtype


def check_activation(op: str, x: Any, bias: Any, in_features: int, out_features: int, dtype: torch.dtype) -> None:
    """``x [..., in]`` of the weight's dtype, ``bias [out]`` of that dtype or float32 (no data access)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(f"{op}: x is {x.dtype} but the packed weight is {dtype}; pack the weight with "
                        f"dtype={x.dtype} or convert x")
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise KernelInputError(f"{op}: x must have shape [..., {in_features}] (in_features), got {list(x.shape)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"{op}: bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dtype not in (dtype, torch.float32):
            raise TypeError(f"{op}: bias must be {dtype} or float32, got {bias.dtype}")
        if bias.dim() != 1 or bias.shape[0] != out_features:
            raise KernelInputError(f"{op}: bias must have shape [{out_features}] (out_features), "
                                   f"got {list(bias.shape)}")


def token_rows(x: torch.Tensor, in_features: int) -> torch.Tensor:
    """``x [..., in]`` as ``[tokens, in]`` with unit column stride (a view unless the last dimension is strided)."""
    x2 = x.reshape(-1, in_features)
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def fake_linear(op: str, check_args: Callable[..., None]) -> Callable[..., torch.Tensor]:
    """The fake implementation of a GPU op ``op(x, row_ptr, col_idx, stored, row_order, in_features,
    out_features, bias)``: ``check_args`` (no data access), then an empty ``[..., out]`` like ``x``."""

    def fake(x, row_ptr, col_idx, stored, row_order, in_features, out_features, bias=None):
        check_args(op, x, row_ptr, col_idx, stored, row_order, in_features, out_features, bias)
        return x.new_empty((*x.shape[:-1], out_features))

    return fake
