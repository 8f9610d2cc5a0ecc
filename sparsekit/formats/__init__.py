"""Storage formats of one pruned weight matrix: the layouts the exporter writes and the kernels consume.

- :mod:`sparsekit.formats.validate`: the checks shared with the kernels' packed layouts (one compressed-row
  check) and the two error types, :class:`FormatError` and :class:`KernelInputError`.
- :mod:`sparsekit.formats.base`: :class:`MatrixFormat`, :data:`FORMAT_VERSION`, :data:`VALUE_DTYPES`, the
  registry :data:`FORMATS`, :func:`to_format` and :func:`from_tensors` (the conventions every format follows).
- :mod:`~sparsekit.formats.dense`, :mod:`~sparsekit.formats.csr`, :mod:`~sparsekit.formats.bsr`,
  :mod:`~sparsekit.formats.lowrank`, :mod:`~sparsekit.formats.int8`: one format each.

This package imports nothing else from sparsekit: the kernels and the exporter both build on it.
"""
from sparsekit.formats.base import FORMAT_VERSION, FORMATS, VALUE_DTYPES, MatrixFormat, from_tensors, to_format
from sparsekit.formats.bsr import BSRFormat
from sparsekit.formats.csr import INT16_MAX_COLS, CSRFormat
from sparsekit.formats.dense import DenseFormat
from sparsekit.formats.int8 import Int8BlockFormat
from sparsekit.formats.lowrank import LowRankFormat
from sparsekit.formats.validate import FormatError, KernelInputError

__all__ = [
    "BSRFormat",
    "CSRFormat",
    "DenseFormat",
    "FORMATS",
    "FORMAT_VERSION",
    "FormatError",
    "INT16_MAX_COLS",
    "Int8BlockFormat",
    "KernelInputError",
    "LowRankFormat",
    "MatrixFormat",
    "VALUE_DTYPES",
    "from_tensors",
    "to_format",
]
