"""Build script.

Metadata lives in pyproject.toml. This file exists for the native extensions in ``csrc/``, which need
``torch.utils.cpp_extension`` at build time and are therefore built with ``pip install --no-build-isolation``
against the torch already installed:

* ``sparsekit._C_cpu`` -- the C++ CPU sparse Linear kernels (``csrc/spmm_cpu``). The AVX-512 / AVX2 code is
  enabled per function and picked at run time, so the module is compiled for the baseline target (no
  ``-march=native``) and runs on any CPU of the architecture.
* ``sparsekit._C_cpu_int8`` -- the C++ CPU INT8 1x4-block sparse Linear kernels (``csrc/spmm_cpu_int8``), built
  the same way (AVX-512 VNNI / AVX-VNNI / AVX-512BW / AVX2 / scalar picked at run time).
* ``sparsekit._C_cuda`` -- the CUDA CSR kernel (``csrc/spmm_cuda``), built only when this torch can use it:
  ``torch.cuda.is_available()``, or a CUDA build of torch (``torch.version.cuda``) with a CUDA toolkit
  (``CUDA_HOME`` / ``nvcc``). Elsewhere (a CPU-only torch) it is skipped with the reason printed.
  ``SPARSEKIT_SKIP_CUDA=1`` skips it alone; ``TORCH_CUDA_ARCH_LIST`` picks the GPU targets (default without a
  visible GPU: 8.0 and 9.0 with PTX).

The extensions are optional: with ``SPARSEKIT_SKIP_CPP=1``, without torch at build time, or if the compiler
fails, the install still succeeds without them (the reason is printed) and sparsekit falls back to its
pure-torch implementations (``sparsekit.kernels.available()`` is then False and says why).
"""
import os
import sys

from setuptools import setup

# The fused encoder (encoder_*) runs int8 matrices too, so _C_cpu also compiles the int8 kernel (not its binding).
CPU_SOURCES = ["csrc/spmm_cpu/spmm_cpu.cpp", "csrc/spmm_cpu/spmm_cpu_binding.cpp", "csrc/spmm_cpu/encoder_cpu.cpp",
               "csrc/spmm_cpu/encoder_binding.cpp", "csrc/spmm_cpu_int8/spmm_cpu_int8.cpp"]
CPU_INT8_SOURCES = ["csrc/spmm_cpu_int8/spmm_cpu_int8.cpp", "csrc/spmm_cpu_int8/spmm_cpu_int8_binding.cpp"]
CUDA_SOURCES = ["csrc/spmm_cuda/spmm_cuda.cu", "csrc/spmm_cuda/spmm_cuda_binding.cpp"]


def _say(msg: str) -> None:
    print(f"sparsekit setup: {msg}", file=sys.stderr, flush=True)


def _skip(var: str) -> bool:
    return os.environ.get(var, "0").strip().lower() not in ("", "0", "false", "no")


def _cuda_extension(here: str):
    """The CUDA extension, or None (the reason is printed) when this torch / machine cannot build it."""
    import shutil

    import torch

    if _skip("SPARSEKIT_SKIP_CUDA"):
        _say("SPARSEKIT_SKIP_CUDA is set: building without the CUDA kernels")
        return None
    from torch.utils.cpp_extension import CUDA_HOME, CUDAExtension

    toolkit = CUDA_HOME or shutil.which("nvcc")
    if not torch.cuda.is_available() and not (torch.version.cuda and toolkit):
        why = ("torch is a CPU-only build (torch.version.cuda is None)" if not torch.version.cuda
               else "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)")
        _say(f"skipping the CUDA kernels (sparsekit._C_cuda): {why}; sparsekit's GPU backends use Triton only")
        return None
    if not all(os.path.exists(os.path.join(here, s)) for s in CUDA_SOURCES):
        _say("CUDA sources not found (csrc/spmm_cuda): building without the CUDA kernels")
        return None
    if not torch.cuda.is_available():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")  # no GPU to detect the target from
    return CUDAExtension(
        name="sparsekit._C_cuda",
        sources=CUDA_SOURCES,
        include_dirs=[os.path.join(here, "csrc", "spmm_cuda")],
        extra_compile_args={"cxx": ["-O3", "-g0"] if os.name != "nt" else ["/O2"], "nvcc": ["-O3", "-lineinfo"]},
    )


def _native_build():
    """(ext_modules, cmdclass) for the C++ extensions, or ([], {}) when they cannot or should not be built."""
    if os.environ.get("SPARSEKIT_SKIP_CPP", "0").strip().lower() not in ("", "0", "false", "no"):
        _say("SPARSEKIT_SKIP_CPP is set: building without the C++ kernels")
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except Exception as exc:  # torch missing: e.g. an isolated build environment
        _say(f"torch is not importable at build time ({exc}); building without the C++ kernels. "
             "Install with `pip install --no-build-isolation -e .` to build them.")
        return [], {}

    here = os.path.dirname(os.path.abspath(__file__))
    if not all(os.path.exists(os.path.join(here, s)) for s in CPU_SOURCES):
        _say("C++ sources not found (csrc/spmm_cpu, csrc/spmm_cpu_int8): building without the C++ kernels")
        return [], {}

    def failed(what: str, exc: Exception) -> None:
        _say(f"building {what} FAILED ({type(exc).__name__}: {exc}); installing without it. "
             "sparsekit will use its pure-torch fallbacks (sparsekit.kernels.available() is False).")

    class OptionalBuildExtension(BuildExtension):
        """BuildExtension that turns a failed extension build into a message instead of a failed install."""

        def run(self):
            self.sparsekit_failed = []
            try:
                super().run()
            except Exception as exc:  # an unusable compiler (checked before any extension is built), or the
                if not self.sparsekit_failed:  # copy of an extension that failed below (already reported)
                    failed("the C++ extensions", exc)

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # CompileError, LinkError, OSError, ...
                self.sparsekit_failed = [*getattr(self, "sparsekit_failed", []), ext.name]
                failed(ext.name, exc)

    def cpu_extension(name: str, sources: list[str], folders: list[str]):
        incs = [os.path.join("csrc", folder) for folder in folders]
        return CppExtension(
            name=name,
            sources=sources,
            include_dirs=[os.path.join(here, inc) for inc in incs],
            # the headers and the per-ISA kernel bodies (.inc): a change there must rebuild the module too
            depends=sorted(os.path.join(inc, f) for inc in incs for f in os.listdir(os.path.join(here, inc))
                           if f.endswith((".h", ".inc"))),
            # -O3, and no -march=native: the binary must run on any x86-64 CPU (see csrc/spmm_cpu/spmm_cpu.h).
            # -g0: no debug info (Python's default CFLAGS carry -g, which makes the module ~20x larger).
            # -fopenmp: ATen's at::parallel_for is a header template that expands to `#pragma omp parallel` when
            # torch uses OpenMP; without the flag the pragma is ignored and every kernel silently runs on one
            # thread.
            extra_compile_args={"cxx": ["/O2", "/openmp"] if os.name == "nt" else ["-O3", "-g0", "-fopenmp"]},
            extra_link_args=[] if os.name == "nt" else ["-fopenmp"],
        )

    cpu = [cpu_extension("sparsekit._C_cpu", CPU_SOURCES, ["spmm_cpu", "spmm_cpu_int8"])]
    if all(os.path.exists(os.path.join(here, s)) for s in CPU_INT8_SOURCES):
        # spmm_cpu/ for the headers the int8 kernel shares with the fp32 one (isa_macros.h, scratch.h, ...)
        cpu.append(cpu_extension("sparsekit._C_cpu_int8", CPU_INT8_SOURCES, ["spmm_cpu_int8", "spmm_cpu"]))
    else:
        _say("INT8 C++ sources not found (csrc/spmm_cpu_int8): building without the INT8 kernels")
    try:
        cuda = _cuda_extension(here)
    except Exception as exc:  # a broken torch CUDA setup must not break the CPU install
        _say(f"skipping the CUDA kernels (sparsekit._C_cuda): {type(exc).__name__}: {exc}")
        cuda = None
    # Plain setuptools compilation (one file at a time); ninja would add nothing for a few files.
    return cpu + ([cuda] if cuda is not None else []), {"build_ext": OptionalBuildExtension.with_options(
        use_ninja=False)}


ext_modules, cmdclass = _native_build()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
