"""Export: exact compaction of pruned models, per-matrix storage formats, one-directory artifacts.

- :mod:`sparsekit.export.compact`: function-preserving removal of empty rows / columns / heads, bias folding.
- :mod:`sparsekit.export.formats`: dense / CSR / BSR / low-rank layouts that the kernels consume.
- :mod:`sparsekit.export.artifact`: ``export`` / ``load`` / ``verify`` of an artifact directory.
- :mod:`sparsekit.export.manifest` / :mod:`sparsekit.export.safeio`: the manifest's schema and digest, and
  reading an artifact's untrusted files safely (the loader's defences, see the README's threat model).

The package itself is callable: ``sparsekit.export(model, path, ...)`` is ``artifact.export``, while
``sparsekit.export.formats`` etc. stay importable (a function of the same name would shadow them).
"""
import sys
import types

from sparsekit.export.artifact import ExportResult, FormatLinear, export, load, verify
from sparsekit.export.compact import CompactionReport, compact
from sparsekit.export.errors import ArtifactError
from sparsekit.export.formats import (
    FORMAT_VERSION,
    FORMATS,
    INT16_MAX_COLS,
    VALUE_DTYPES,
    BSRFormat,
    CSRFormat,
    DenseFormat,
    FormatError,
    LowRankFormat,
    MatrixFormat,
    from_tensors,
    to_format,
)
from sparsekit.export.predict import Prediction, Predictor

__all__ = [
    "ArtifactError", "BSRFormat", "CSRFormat", "CompactionReport", "DenseFormat", "ExportResult", "FORMATS",
    "FORMAT_VERSION", "FormatError", "FormatLinear", "INT16_MAX_COLS", "LowRankFormat", "MatrixFormat",
    "Prediction", "Predictor", "VALUE_DTYPES", "compact", "export", "from_tensors", "load", "to_format", "verify",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)

    __call__.__doc__ = export.__doc__


sys.modules[__name__].__class__ = _CallableModule
