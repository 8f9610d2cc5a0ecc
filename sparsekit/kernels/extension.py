"""Lazy loading of a compiled sparsekit extension: imported on first use, once per process, never raising.

``import sparsekit`` must work without the native kernels (a failed build, ``SPARSEKIT_SKIP_CPP=1``, a CPU-only
torch for the CUDA one); the ops then fall back or say why. Both ``kernels/cpu.py`` and ``kernels/cuda.py`` load
their extension through this class, which also answers whether it is available and why not.
"""
from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

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

    def simulate_unavailable(self, reason: str) -> None:
        """Behave as if the import had failed with ``reason`` (tests of the fallback paths)."""
        self.module, self._reason, self._tried = None, reason, True
