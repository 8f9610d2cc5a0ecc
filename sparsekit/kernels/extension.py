"""Lazy loading of a compiled sparsekit extension: imported on first use, once per process, never raising; and
the run-time choice of its ISA path.

``import sparsekit`` must work without the native kernels (a failed build, ``SPARSEKIT_SKIP_CPP=1``, a CPU-only
torch for the CUDA one); the ops then fall back or say why. ``kernels/cpu.py``, ``kernels/cpu_int8.py`` and
``kernels/cuda.py`` load their extension through :class:`LazyExtension`, which also answers whether it is
available and why not; the CPU ones through :class:`CpuExtension`, which adds the choice of their ISA path
(:class:`IsaChoice`) and the functions their modules export.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Optional

import torch


#: Why a C++ CPU extension (``sparsekit._C_cpu``, ``sparsekit._C_cpu_int8``) may be missing: the ``not_built`` of
#: :func:`describe_load_error`.
_CPP_NOT_BUILT = ("installed with SPARSEKIT_SKIP_CPP=1, without torch or a C++ compiler at build time, or its build "
                 "failed; reinstall with `pip install --no-build-isolation -e .` and read the build log")


def describe_load_error(name: str, not_built: str) -> Callable[[BaseException], str]:
    """The usual ``describe`` of :class:`LazyExtension`: ``not_built`` says why module ``name`` may be missing
    (and what to do); any other import error asks for a rebuild against the installed torch."""

    def describe(exc: BaseException) -> str:
        if isinstance(exc, ModuleNotFoundError) and exc.name == name:
            return f"the extension {name} is not built ({not_built})"
        return (f"the extension {name} failed to load ({type(exc).__name__}: {exc}); it must be built against the "
                f"installed torch {torch.__version__}: reinstall with `pip install --no-build-isolation -e .`")

    return describe


class LazyExtension:
    """The extension module ``name`` (e.g. ``"sparsekit._C_cpu"``), or None with a reason (:meth:`unavailable_reason`).

    ``describe(exc)`` turns the import error into a message that says what to do. An extension built against
    another torch version (its ``TORCH_VERSION`` attribute) is refused, as importing it could crash later.
    """

    def __init__(self, name: str, describe: Callable[[BaseException], str]) -> None:
        self.name, self._describe = name, describe
        self._lock = threading.Lock()
        self._tried = False
        self.module: Any = None  # the loaded module once load() succeeded (read directly on hot paths)
        self._reason: str | None = None
        self.warned_fallback = False  # warn_fallback has warned (once per process)

    def load(self) -> Any:
        """The module, or None (then :meth:`unavailable_reason` says why). The import is tried once."""
        if not self._tried:
            with self._lock:
                if not self._tried:
                    try:
                        mod = importlib.import_module(self.name)
                        built_for = getattr(mod, "TORCH_VERSION", None)
                        if built_for is not None and built_for != torch.__version__.split("+")[0]:
                            raise ImportError(f"built for torch {built_for}")
                        self.module = mod
                    except Exception as exc:  # ImportError, OSError (undefined symbol, missing libcudart), ...
                        self._reason = self._describe(exc)
                    self._tried = True
        return self.module

    def available(self) -> bool:
        """Whether the extension is built and loads."""
        return self.load() is not None

    def unavailable_reason(self) -> str | None:
        """Why the extension is unavailable, or None if it loads."""
        self.load()
        return self._reason

    def module_getattr(self, module: str) -> Callable[[str], Any]:
        """The PEP 562 ``__getattr__`` of the loading module ``module``: ``AVAILABLE`` / ``UNAVAILABLE_REASON``, loaded
        on access."""

        def getattr_(name: str) -> Any:
            if name == "AVAILABLE":
                return self.available()
            if name == "UNAVAILABLE_REASON":
                return self.unavailable_reason()
            raise AttributeError(f"module {module!r} has no attribute {name!r}")

        return getattr_

    def warn_fallback(self, what: str, stacklevel: int = 5) -> None:
        """Warn once per process that ``what`` falls back to the slow pure-torch reference, and why (``stacklevel``
        counted from the caller of this method; the default points past the op's own frames)."""
        if not self.warned_fallback:
            self.warned_fallback = True
            warnings.warn(f"sparsekit {what} unavailable, using the slow pure-torch reference: "
                          f"{self.unavailable_reason()}",
                          RuntimeWarning, stacklevel=stacklevel)

    @contextlib.contextmanager
    def simulate_unavailable(self, reason: str) -> Iterator[None]:
        """Context manager: behave as if the import had failed with ``reason`` inside the block (tests of the
        fallback paths); the loaded state comes back on exit."""
        self.load()
        saved = self.module, self._reason
        self.module, self._reason = None, reason
        try:
            yield
        finally:
            self.module, self._reason = saved


class IsaChoice:
    """The ISA path a CPU extension runs: the fastest this CPU supports, or the one the environment variable ``env``
    forces (``auto`` = fastest; a path the CPU lacks falls back to the next slower one, with one warning).

    paths: every path name, fastest first; supported: the paths this CPU runs, fastest first (non-empty whenever
    the extension loads); what: the kernels' name in messages ("" for the fp32 kernels, "int8").
    """

    def __init__(self, env: str, paths: tuple[str, ...], supported: Callable[[], tuple[str, ...]], what: str) -> None:
        self.env, self.paths, self._supported = env, paths, supported
        self.what = f"{what} " if what else ""
        self._cache: dict[Optional[str], str] = {}

    def resolve(self) -> str:
        """The path to run now (honours the environment variable; cached per value)."""
        requested = os.environ.get(self.env)
        hit = self._cache.get(requested)
        if hit is not None:
            return hit
        supported = self._supported()
        want = (requested or "").strip().lower()
        if want in ("", "auto"):
            chosen = supported[0]
        elif want not in self.paths:
            raise ValueError(f"{self.env}={requested!r} is not an {self.what}ISA path; expected one of "
                             f"{', '.join(self.paths)} or auto")
        elif want in supported:
            chosen = want
        else:
            chosen = next(i for i in self.paths[self.paths.index(want):] if i in supported)
            warnings.warn(f"{self.env}={want}: this CPU does not support it; using {chosen}", RuntimeWarning,
                          stacklevel=5)  # the caller of the op
        self._cache[requested] = chosen
        return chosen

    @contextlib.contextmanager
    def force(self, name: str | None) -> Iterator[None]:
        """Context manager: run path ``name`` (None = auto) by setting the environment variable (process-wide) for
        the duration of the block."""
        if name is not None and name not in self.paths + ("auto",):
            raise ValueError(f"unknown {self.what}ISA {name!r}; expected one of {', '.join(self.paths)} or auto")
        old = os.environ.get(self.env)
        if name is None:
            os.environ.pop(self.env, None)
        else:
            os.environ[self.env] = name
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(self.env, None)
            else:
                os.environ[self.env] = old


class CpuExtension(LazyExtension):
    """A C++ CPU extension whose kernels run one of several ISA paths (``sparsekit._C_cpu``,
    ``sparsekit._C_cpu_int8``): a :class:`LazyExtension` with its :class:`IsaChoice` and the functions its op module
    exports (``available``, ``unavailable_reason``, the ISA queries, ``isa``, ``force_isa``).

    isa_env / isa_paths / what: as :class:`IsaChoice` (``isa_paths`` fastest first); kernels: the kernels' name in
    the fallback warning (e.g. ``"CPU kernels"``). The extension module lists its paths with ``supported_isas()``
    (and, where it has one, ``compiled_isas()``).
    """

    def __init__(self, name: str, isa_env: str, isa_paths: tuple[str, ...], what: str, kernels: str) -> None:
        super().__init__(name, describe_load_error(name, _CPP_NOT_BUILT))
        self.kernels = kernels
        self.isa_choice = IsaChoice(isa_env, isa_paths, self.supported_isas, what)

    def _isa_names(self, query: str) -> tuple[str, ...]:
        ext = self.load()
        return tuple(getattr(ext, query)()) if ext is not None else ()

    def supported_isas(self) -> tuple[str, ...]:
        """ISA paths this CPU can run, fastest first (empty if the extension is unavailable)."""
        return self._isa_names("supported_isas")

    def compiled_isas(self) -> tuple[str, ...]:
        """ISA paths compiled into the extension, whether or not this CPU has them (empty if unavailable)."""
        return self._isa_names("compiled_isas")

    def resolve_isa(self) -> str:
        """The ISA path the kernels run now (:meth:`IsaChoice.resolve`; the extension must be available)."""
        return self.isa_choice.resolve()

    def isa(self) -> str:
        """The ISA path the kernels use here and now, or ``reference`` when the extension is unavailable. Honours
        the environment variable of the ISA choice (e.g. ``SPARSEKIT_ISA``)."""
        return self.resolve_isa() if self.available() else "reference"

    def force_isa(self, name: str | None) -> contextlib.AbstractContextManager[None]:
        """Context manager: run the kernels on ISA path ``name`` (None = auto) by setting the environment variable
        (process-wide) for the duration of the block."""
        return self.isa_choice.force(name)

    def warn_unavailable(self) -> None:
        """Warn once per process that the kernels fall back to the pure-torch reference (called by an op's
        implementation; the warning points at the op's caller)."""
        self.warn_fallback(self.kernels)
