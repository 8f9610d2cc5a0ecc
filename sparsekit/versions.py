"""Versions of Python and the libraries sparsekit depends on, recorded in pruning recipes and artifacts."""
from __future__ import annotations

import platform
import sys

import torch


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a run depends on."""
    import accelerate
    import numpy
    import transformers

    import sparsekit

    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "numpy": numpy.__version__, "sparsekit": sparsekit.__version__}
