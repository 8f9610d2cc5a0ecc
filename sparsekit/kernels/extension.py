"""Lazy loading of a compiled sparsekit extension: imported on first use, once per process, never raising; and
the run-time choice of its ISA path.

``import sparsekit`` must work without the native kernels (a failed build, ``SPARSEKIT_SKIP_CPP=1``, a CPU-only
torch for the CUDA one); the ops then fall back or say why. ``kernels/cpu.py``, ``kernels/cpu_int8.py`` and
``kernels/cuda.py`` load their extension through :class:`LazyExtension`, which also answers whether it is
available and why not; the CPU ones choose their ISA path with :class:`IsaChoice`.
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
    """The extension module ``name`` (e.g. ``"sparsekit._C_cpu"``), or None with a ``reason``.

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
        """The module, or None (then :attr:`reason` says why). The import is tried once."""
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

    @property
    def reason(self) -> str | None:
        """Why the extension is unavailable, or None if it loads."""
        self.load()
        return self._reason

    def module_getattr(self, module: str, name: str) -> Any:
        """PEP 562 ``__getattr__`` of the loading module: ``AVAILABLE`` / ``UNAVAILABLE_REASON``, loaded on access."""
        if name == "AVAILABLE":
            return self.available()
        if name == "UNAVAILABLE_REASON":
            return self.reason
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    def warn_fallback(self, what: str, stacklevel: int = 5) -> None:
        """Warn once per process that ``what`` falls back to the slow pure-torch reference, and why (``stacklevel``
        counted from the caller of this method; the default points past the op's own frames)."""
        if not self.warned_fallback:
            self.warned_fallback = True
            warnings.warn(f"sparsekit {what} unavailable, using the slow pure-torch reference: {self.reason}",
                          RuntimeWarning, stacklevel=stacklevel)

    def simulate_unavailable(self, reason: str) -> None:
        """Behave as if the import had failed with ``reason`` (tests of the fallback paths)."""
        self.module, self._reason, self._tried = None, reason, True


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
