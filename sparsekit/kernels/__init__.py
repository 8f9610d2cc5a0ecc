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
from sparsekit.kernels import reference
from sparsekit.kernels.cpu import (
    ISA_ENV,
    PackedBSR,
    PackedCSR,
    PackedWeight,
    available,
    bsr_linear,
    choose_chunk,
    csr_linear,
    force_isa,
    isa,
    pack_bsr,
    pack_csr,
    parallel_threads,
    supported_isas,
    unavailable_reason,
)

__all__ = [
    "ISA_ENV",
    "PackedBSR",
    "PackedCSR",
    "PackedWeight",
    "available",
    "bsr_linear",
    "choose_chunk",
    "csr_linear",
    "force_isa",
    "isa",
    "pack_bsr",
    "pack_csr",
    "parallel_threads",
    "reference",
    "supported_isas",
    "unavailable_reason",
]
