"""The CUDA C++ CSR kernel (``sparsekit._C_cuda``, ``csrc/spmm_cuda``): lazy loading and the op.

``y = x @ W.T + bias`` for a sparse weight in the GPU CSR layout of :mod:`sparsekit.kernels.gpu_csr_layout`, on
CUDA cores, for few tokens (Sputnik-style: row swizzle, subwarps, vector loads; see ``csrc/spmm_cuda/spmm_cuda.h``)::

    from sparsekit.kernels import cuda, gpu_csr_layout
    packed = gpu_csr_layout.pack_gpu_csr(weight, dtype=torch.bfloat16, device="cuda")
    y = cuda.cuda_csr_linear(x, packed, bias)    # x [..., in] bf16 / fp16 / fp32 on CUDA -> [..., out]

Op (declared here, once, with a fake implementation; its CUDA kernel registered for the "cuda" device)::

    sparsekit::cuda_csr_linear(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor row_order,
                               int in_features, int out_features, Tensor? bias=None) -> Tensor

The extension is built by ``setup.py`` only where CUDA is usable (a CUDA build of torch with a toolkit, or a
visible GPU), and loaded on first use. If it is missing or fails to load, ``import sparsekit`` still works,
``AVAILABLE`` is False and ``UNAVAILABLE_REASON`` says why; the op then raises with that reason (the
dispatcher never picks it: :class:`sparsekit.backends.gpu.CudaCsrBackend` reports the reason).
"""
from __future__ import annotations

from typing import Optional

import torch

from sparsekit.formats.validate import KernelInputError
from sparsekit.kernels.extension import LazyExtension, describe_load_error
from sparsekit.kernels.gpu_csr_layout import GpuCSRWeight, check_gpu_csr_args
from sparsekit.kernels.triton_runtime import fake_linear, token_rows

__all__ = ["available", "cuda_csr_linear", "unavailable_reason"]

_EXTENSION = "sparsekit._C_cuda"
_EXT = LazyExtension(_EXTENSION, describe_load_error(_EXTENSION, (
    f"torch {torch.__version__} is a CPU-only build, so setup.py skips it" if torch.version.cuda is None else
    "no CUDA toolkit at build time, SPARSEKIT_SKIP_CUDA=1, or its build failed; reinstall with "
    "`pip install --no-build-isolation -e .` on a machine with nvcc and read the build log")))


__getattr__ = _EXT.module_getattr(__name__)  # AVAILABLE / UNAVAILABLE_REASON load the extension on first access
# available(): the CUDA kernel is built and loads; else unavailable_reason() says why.
available, unavailable_reason = _EXT.available, _EXT.unavailable_reason


@torch.library.custom_op("sparsekit::cuda_csr_linear", mutates_args=())
def _cuda_csr_linear_op(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                        row_order: torch.Tensor, in_features: int, out_features: int,
                        bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    # Devices other than CUDA: the kernel is registered for "cuda" below; say so instead of failing obscurely.
    op = "sparsekit::cuda_csr_linear"
    check_gpu_csr_args(op, x, row_ptr, col_idx, values, row_order, in_features, out_features, bias)
    raise KernelInputError(f"{op}: runs on CUDA tensors only, x is on {x.device} (the pure-torch reference is "
                           f"sparsekit.kernels.reference.cuda_csr_linear)")


@_cuda_csr_linear_op.register_kernel("cuda")
def _cuda_csr_linear_cuda(x, row_ptr, col_idx, values, row_order, in_features, out_features, bias=None):
    op = "sparsekit::cuda_csr_linear"
    check_gpu_csr_args(op, x, row_ptr, col_idx, values, row_order, in_features, out_features, bias)
    ext = _EXT.load()
    if ext is None:
        raise RuntimeError(f"{op}: {_EXT.unavailable_reason()}")
    y = ext.linear(token_rows(x, in_features), row_ptr, col_idx, values, row_order, in_features, out_features, bias)
    return y.reshape(*x.shape[:-1], out_features)


_cuda_csr_linear_op.register_fake(fake_linear("sparsekit::cuda_csr_linear", check_gpu_csr_args))


def cuda_csr_linear(x: torch.Tensor, packed: GpuCSRWeight, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y = x @ W.T + bias`` for a packed CSR weight ``W [out, in]`` on CUDA (op ``sparsekit::cuda_csr_linear``).

    Args:
        x: ``[..., in]`` CUDA tensor of the packed weight's dtype (bf16 / fp16 / fp32); meant for 1-16 tokens
            (more tokens re-read the weight once per 8).
        packed: from :func:`sparsekit.kernels.gpu_csr_layout.pack_gpu_csr`, on x's device.
        bias: ``[out]`` of x's dtype or float32, or None; added in float32.
    Returns:
        ``[..., out]`` of x's dtype (float32 accumulation).
    """
    if not isinstance(packed, GpuCSRWeight):
        raise TypeError(f"packed must be a GpuCSRWeight (use pack_gpu_csr), got {type(packed).__name__}")
    out, inp = packed.shape
    return torch.ops.sparsekit.cuda_csr_linear(x, *packed.op_tensors(), inp, out, bias)
