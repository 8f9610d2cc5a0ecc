"""sparsekit.kernels: fast sparse x dense products for Linear layers.

CPU (C++ extension ``sparsekit._C_cpu``, AVX-512 / AVX2 / scalar chosen at run time)::

    from sparsekit import kernels
    packed = kernels.pack_csr(fmt_or_dense_weight)   # once: CSRFormat or dense [out, in]
    y = kernels.csr_linear(x, packed, bias)          # x [..., in] float32 -> [..., out]
    packed = kernels.pack_bsr(bsr_format)            # BSRFormat, any block shape
    y = kernels.bsr_linear(x, packed, bias)

The ops ``torch.ops.sparsekit.csr_linear`` / ``bsr_linear`` are declared in :mod:`sparsekit.kernels.cpu`
(work under ``torch.compile``); their pure-torch references live in :mod:`sparsekit.kernels.reference`.
``available()`` says whether the C++ kernels are built (if not, the ops fall back to the reference), and
``isa()`` which code path runs here (``SPARSEKIT_ISA=avx512|avx2|scalar`` forces one).
"""
from sparsekit.kernels import cpu, reference
from sparsekit.kernels.cpu import *  # noqa: F403  (the CPU kernels' public API, listed once in cpu.__all__)

__all__ = [*cpu.__all__, "reference"]
