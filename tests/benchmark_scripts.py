"""Import a script of benchmarks/ in a test, the way it imports when run as ``python benchmarks/<name>.py``.

A script imports its neighbours (``results_io``, ``runtime_cpu``) by their plain names, since Python puts the
script's folder first on ``sys.path``; ``load_script`` does the same while the script is imported.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str, module_name: str | None = None) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``module_name`` (default ``name``), registered in ``sys.modules``
    (dataclasses resolve a module's string annotations through it) and imported with ``benchmarks/`` first on
    ``sys.path``; a module already registered under that name is returned as it is."""
    module_name = module_name or name
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.syspath_prepend(str(BENCHMARKS))
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
