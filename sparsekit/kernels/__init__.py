"""sparsekit.kernels: fast sparse x dense products for Linear layers, organised by packed layout.

CPU (C++ extension ``sparsekit._C_cpu``, AVX-512 / AVX2 / scalar chosen at run time)::

    from sparsekit import kernels
    packed = kernels.pack_cpu_csr(fmt_or_dense_weight)  # once: CSRFormat or dense [out, in] -> CpuCSRWeight
    y = kernels.csr_linear(x, packed, bias)             # x [..., in] float32 -> [..., out]
    packed = kernels.pack_cpu_bsr(bsr_format)           # BSRFormat, any block shape -> CpuBSRWeight
    y = kernels.bsr_linear(x, packed, bias)

Modules (a layout ``<target>_<layout>_layout`` holds ``<Target><LAYOUT>Weight`` and ``pack_<target>_<layout>``;
an op module holds kernels only):

- :mod:`~sparsekit.kernels.cpu_layout` (CPU CSR / BSR packing) and :mod:`~sparsekit.kernels.cpu` (the ops
  ``torch.ops.sparsekit.csr_linear`` / ``bsr_linear``, ISA selection);
- :mod:`~sparsekit.kernels.cpu_int8_layout` (``CpuInt8B4Weight``, ``pack_cpu_int8_b4``: int8 weights in 1x4 blocks)
  and :mod:`~sparsekit.kernels.cpu_int8` (the op ``torch.ops.sparsekit.int8_b4_linear``, C++ extension
  ``sparsekit._C_cpu_int8``, int8 ISA selection with ``SPARSEKIT_INT8_ISA``; not re-exported here);
- :mod:`~sparsekit.kernels.gpu_csr_layout` (``GpuCSRWeight``, ``pack_gpu_csr``), used by
  :mod:`~sparsekit.kernels.triton_csr` and :mod:`~sparsekit.kernels.cuda`;
- :mod:`~sparsekit.kernels.gpu_bsr_layout` (``GpuBSRWeight``, ``pack_gpu_bsr``), used by
  :mod:`~sparsekit.kernels.triton_bsr`;
- :mod:`~sparsekit.kernels.triton_runtime` (what both Triton kernels share), :mod:`~sparsekit.kernels.cpu_packed`
  (what both CPU layouts share), :mod:`~sparsekit.kernels.extension` (lazy loading of the C++ / CUDA extensions,
  the CPU ones' ISA choice), :mod:`~sparsekit.kernels.reference` (pure-torch references of every op).

The layouts' validation is :mod:`sparsekit.formats.validate`, shared with the storage formats. The GPU modules
are not imported here (they import Triton): import them by name.
``available()`` says whether the C++ kernels are built (if not, the CPU ops fall back to the reference), and
``isa()`` which code path runs here (``SPARSEKIT_ISA=avx512|avx2|scalar`` forces one).
"""
from sparsekit.kernels import cpu, cpu_int8, cpu_int8_layout, cpu_layout, reference
from sparsekit.kernels.cpu import *  # noqa: F403  (the CPU ops' public API, listed once in cpu.__all__)
from sparsekit.kernels.cpu_layout import *  # noqa: F403  (the CPU packed layout, listed once in cpu_layout.__all__)

__all__ = [*cpu.__all__, *cpu_layout.__all__, "cpu_int8", "cpu_int8_layout", "reference"]
