"""Storage formats for one pruned weight matrix: the shared base, the registry, loading.

The exporter converts every pruned ``nn.Linear`` weight ``W`` (PyTorch layout: float32, shape
``[out, in]``, the layer computes ``y = x @ W.T + b``) into one of the formats below, chosen per
layer. Kernels (C++, Triton, CUDA) are written against the layouts documented here, so every class
docstring states its fields, dtypes, shapes and index semantics exactly. The bias is *not* part of
a format: the exporter stores it next to the format.

Conventions shared by all formats
---------------------------------
* ``shape == (out, in)`` is always the true (unpadded) shape of ``W``.
* All tensors are CPU, C-contiguous (row-major) and, once written by safetensors, little-endian.
* Value dtypes are ``torch.float32`` or ``torch.bfloat16`` (:data:`VALUE_DTYPES`), except for ``int8-b4``,
  which stores int8 values and float32 scales (a class's ``value_dtypes``). Every stored float is finite
  (no NaN / inf); loaders reject anything else.
* Index tensors are signed integers and all indices are zero-based. Pointer arrays are int32, so a
  single matrix holds at most ``2**31 - 1`` stored values / blocks.
* ``nnz`` is the number of stored weight values that lie inside the matrix: dense ``out*in``;
  CSR ``len(values)``; BSR the in-bounds positions of the stored blocks (edge padding excluded);
  int8-b4 the in-bounds positions of the stored 1x4 blocks; low-rank the parameter count
  ``r * (out + in)``. ``density = nnz / (out * in)`` (0.0 for a matrix with no elements; may exceed 1
  only for a low-rank factorisation larger than dense).
  ``count_nonzero()`` gives the number of truly non-zero entries of the represented matrix.
* ``nbytes`` is the exact byte count of all tensors returned by ``tensors()`` (values, indices,
  pointers, permutations, padding).
* ``tensors()`` gives the tensors to store (names are per format, see each class) and ``meta()`` a
  JSON-serialisable dict (always with ``format_version``, ``kind``, ``shape`` and ``value_dtype``).
  :func:`from_tensors` rebuilds a format from these two and validates everything, raising
  :class:`FormatError` (a ``ValueError``) that says what is wrong. It is the entry point for
  loading untrusted artifacts.

Formats (``kind``)
------------------
* ``"dense"``   -- :class:`DenseFormat`: the matrix as is.
* ``"csr"``     -- :class:`CSRFormat`: compressed sparse rows, int16/int32 columns, row swizzle.
* ``"bsr"``     -- :class:`BSRFormat`: block-sparse rows, ``br x bc`` blocks, edges zero-padded.
* ``"lowrank"`` -- :class:`LowRankFormat`: ``W ~= u @ v`` from a truncated SVD.
* ``"int8-b4"`` -- :class:`Int8BlockFormat`: int8 weights with a float32 scale per row, in 1x4 blocks (lossy).

Use :func:`to_format` to pack a weight and :func:`from_tensors` to load one. Each format lives in its own
module (:mod:`~sparsekit.formats.dense`, ``csr``, ``bsr``, ``lowrank``, ``int8``) and registers itself in
:data:`FORMATS` by subclassing :class:`MatrixFormat` with a ``kind``; the checks shared with the kernels'
packed layouts are in :mod:`sparsekit.formats.validate`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch

from sparsekit.formats.validate import (
    INT32_MAX,
    FormatError,
    check,
    check_shape,
    dtype_name,
    is_int,
)

__all__ = ["FORMATS", "FORMAT_VERSION", "VALUE_DTYPES", "MatrixFormat", "SizedMatrix", "as_x", "check_value_dtype",
           "density_of", "from_tensors", "nbytes_of", "prepare_weight", "to_format"]

#: Version of the layouts below, stored as ``meta()["format_version"]``. Bump on any layout change.
FORMAT_VERSION = 1

#: Allowed dtypes of stored weight values (dense weight, CSR values, BSR blocks, low-rank factors).
VALUE_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)

#: kind -> format class; every :class:`MatrixFormat` subclass with a ``kind`` registers itself here.
FORMATS: dict[str, type[MatrixFormat]] = {}


def density_of(nnz: int, shape: tuple[int, int]) -> float:
    """``nnz / (out * in)`` of a matrix of ``shape``; 0.0 for a matrix with no elements."""
    out, inp = shape
    return nnz / (out * inp) if out * inp else 0.0


def nbytes_of(tensors: Iterable[torch.Tensor]) -> int:
    """Exact number of bytes of ``tensors``."""
    return sum(t.numel() * t.element_size() for t in tensors)


def check_value_dtype(value_dtype: Any) -> torch.dtype:
    """``value_dtype`` must be one of :data:`VALUE_DTYPES` (``ValueError``)."""
    if value_dtype not in VALUE_DTYPES:
        raise ValueError(f"value_dtype must be one of {[dtype_name(d) for d in VALUE_DTYPES]}, got {value_dtype}")
    return value_dtype


def prepare_weight(weight: Any, value_dtype: torch.dtype) -> torch.Tensor:
    """Validate a weight to pack and return it detached, on CPU, contiguous, in ``value_dtype``."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    check_value_dtype(value_dtype)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {list(weight.shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must be a floating-point tensor, got dtype {dtype_name(weight.dtype)}")
    if weight.layout != torch.strided:
        raise ValueError(f"weight must be a strided (dense) tensor, got layout {weight.layout}")
    out, inp = weight.shape
    if out > INT32_MAX or inp > INT32_MAX:
        raise ValueError(f"weight shape {list(weight.shape)} too large (int32 indices)")
    w = weight.detach().cpu()
    if w.numel() and not bool(torch.isfinite(w).all()):
        raise ValueError(f"weight contains {int((~torch.isfinite(w)).sum())} NaN/inf value(s)")
    w = w.to(value_dtype).contiguous()
    if w.numel() and not bool(torch.isfinite(w).all()):
        raise ValueError(f"weight overflows {dtype_name(value_dtype)} (values too large to represent)")
    return w


def as_x(x: torch.Tensor, inp: int) -> torch.Tensor:
    """``x [..., inp]`` as float32 (the reference matmuls' input check)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != inp:
        raise ValueError(f"x must have shape [..., {inp}], got {list(x.shape)}")
    return x.to(torch.float32)


class SizedMatrix(ABC):
    """A weight ``[out, in]`` held in tensors (a storage format, a packed kernel layout): from its ``shape``, ``nnz``
    and ``tensors()`` it reports ``density`` and ``nbytes``."""

    shape: tuple[int, int]

    @property
    @abstractmethod
    def nnz(self) -> int:
        """Stored non-zero weights."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """All tensors of the weight, by name (a format's: the tensors it stores)."""

    @property
    def density(self) -> float:
        """``nnz / (out * in)``; 0.0 for a matrix with no elements."""
        return density_of(self.nnz, self.shape)

    @property
    def nbytes(self) -> int:
        """Exact number of bytes of all tensors in ``tensors()``."""
        return nbytes_of(self.tensors().values())


class MatrixFormat(SizedMatrix):
    """Base class of all formats (see the module docstring for the shared conventions).

    Subclasses are frozen dataclasses (immutable by convention: do not modify their tensors in
    place). Every subclass has ``kind`` (class attribute), ``shape``, ``nnz``, ``density``,
    ``nbytes``, ``value_dtype``, ``count_nonzero()``, ``to_dense()``, ``matmul_reference(x)``,
    ``tensors()``, ``meta()``, and the classmethods ``pack(weight, ...)`` and
    ``from_tensors(meta, tensors)``.
    """

    kind: ClassVar[str] = ""
    #: The dtypes this format stores its values in (``meta()["value_dtype"]`` names one).
    value_dtypes: ClassVar[tuple[torch.dtype, ...]] = VALUE_DTYPES

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            FORMATS[cls.kind] = cls

    # --- subclass API -------------------------------------------------------------------------
    @abstractmethod
    def _validate(self) -> None:
        """Raise FormatError(problem) if the fields are inconsistent."""

    @abstractmethod
    def _meta_extra(self) -> dict:
        ...

    @classmethod
    @abstractmethod
    def _from_parts(cls, meta: Mapping, tensors: Mapping[str, torch.Tensor],
                    shape: tuple[int, int]) -> MatrixFormat:
        """Build from validated-looking meta + tensors; field validation happens in __post_init__."""

    #: The tensor field holding the stored values (dense, CSR, BSR, int8): its dtype is ``value_dtype`` and its
    #: non-zeros are the matrix's. None (low rank): the subclass defines ``value_dtype``.
    _values_name: ClassVar[str | None] = None

    @property
    def value_dtype(self) -> torch.dtype:
        """The dtype the values are stored in."""
        if self._values_name is None:
            raise NotImplementedError(f"{type(self).__name__} must define value_dtype")
        return getattr(self, self._values_name).dtype

    @abstractmethod
    def to_dense(self) -> torch.Tensor:
        """The represented matrix as a new float32 tensor of shape ``[out, in]``."""

    # --- shared -------------------------------------------------------------------------------
    _tensor_names: ClassVar[tuple[str, ...]] = ()
    _optional_tensor_names: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        try:
            self._normalize()
            self._validate()
        except FormatError as e:
            raise FormatError(f"invalid {type(self).__name__}: {e.problem}", e.problem) from None

    def _normalize(self) -> None:
        """Make tensor fields contiguous and the shape a tuple of ints (before validation)."""
        for name in self._tensor_names + self._optional_tensor_names:
            t = getattr(self, name, None)
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and not t.is_contiguous():
                object.__setattr__(self, name, t.contiguous())

    def count_nonzero(self) -> int:
        """Number of non-zero entries of the represented matrix."""
        values = self.to_dense() if self._values_name is None else getattr(self, self._values_name)
        return int(values.count_nonzero())

    def matmul_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Reference ``x @ W.T`` (no bias) in float32: ``x [..., in]`` -> ``[..., out]``.

        ``x`` is converted to float32 and stored values are widened to float32 first. Kernels are
        tested against this.
        """
        x = as_x(x, self.shape[1])
        return x @ self.to_dense().T

    def meta(self) -> dict:
        """JSON-serialisable description (plain ints, floats, strings, lists, bools)."""
        m = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "shape": [int(self.shape[0]), int(self.shape[1])],
            "value_dtype": dtype_name(self.value_dtype),
        }
        m.update(self._meta_extra())
        return m

    @classmethod
    def from_tensors(cls, meta: Mapping, tensors: Mapping[str, torch.Tensor], *,
                     name: str | None = None) -> MatrixFormat:
        """Rebuild this format from ``meta()`` and ``tensors()``, validating everything.

        Raises :class:`FormatError` (a ``ValueError``) naming the problem if the artifact is corrupt.
        """
        fmt = from_tensors(meta, tensors, name=name)
        if not isinstance(fmt, cls):
            raise FormatError(f"expected a {cls.kind!r} matrix artifact, got kind {fmt.kind!r}")
        return fmt

    def __repr__(self) -> str:
        out, inp = self.shape
        extra = "".join(f", {k}={v}" for k, v in self._repr_extra().items())
        return (f"{type(self).__name__}(shape=({out}, {inp}), nnz={self.nnz}, density={self.density:.4f}, "
                f"value_dtype={dtype_name(self.value_dtype)}{extra}, nbytes={self.nbytes})")

    def _repr_extra(self) -> dict:
        return {}


def to_format(weight: torch.Tensor, kind: str, *, value_dtype: torch.dtype = torch.float32,
              block: tuple[int, int] = (32, 32), rank: int | None = None,
              tol: float | None = None, weight_bits: int | None = None) -> MatrixFormat:
    """Pack a weight ``[out, in]`` (any float dtype, finite) into the format ``kind``.

    ``block`` applies to ``"bsr"``; ``rank`` / ``tol`` (exactly one) to ``"lowrank"``; ``weight_bits`` (8, the
    default, or 7) to ``"int8-b4"``.
    Raises ``ValueError`` for an unknown kind, a non-2-D / non-float / non-finite weight, a bad
    ``value_dtype``, or ``rank``/``tol`` given for a kind other than ``"lowrank"``.
    """
    if kind not in FORMATS:
        raise ValueError(f"unknown format kind {kind!r}; expected one of {sorted(FORMATS)}")
    if kind != "lowrank" and (rank is not None or tol is not None):
        raise ValueError(f"rank= and tol= only apply to kind='lowrank', not {kind!r}")
    if kind != "int8-b4" and weight_bits is not None:
        raise ValueError(f"weight_bits= only applies to kind='int8-b4', not {kind!r}")
    options = {"bsr": {"block": block}, "lowrank": {"rank": rank, "tol": tol},
               "int8-b4": {"weight_bits": 8 if weight_bits is None else weight_bits}}.get(kind, {})
    return FORMATS[kind].pack(weight, value_dtype=value_dtype, **options)


def from_tensors(meta: Mapping, tensors: Mapping[str, torch.Tensor], *,
                 name: str | None = None) -> MatrixFormat:
    """Rebuild a format from ``fmt.meta()`` and ``fmt.tensors()`` (e.g. read back from disk).

    Validates the version, kind, shape, the exact set of tensor names, dtypes, shapes, pointer
    arrays, index ranges and ordering, permutations, zero padding and finiteness. Raises
    :class:`FormatError` (a ``ValueError``) saying what is wrong; ``name`` (e.g. the layer name)
    is included in the message.
    """
    where = f" for {name!r}" if name else ""

    def corrupt(problem: str) -> FormatError:
        kind = meta.get("kind") if isinstance(meta, Mapping) else None
        what = f"{kind!r} matrix artifact" if isinstance(kind, str) and kind in FORMATS else "matrix artifact"
        return FormatError(f"corrupt {what}{where}: {problem}", problem)

    if not isinstance(meta, Mapping):
        raise corrupt(f"meta must be a dict, got {type(meta).__name__}")
    if not isinstance(tensors, Mapping):
        raise corrupt(f"tensors must be a dict of name -> tensor, got {type(tensors).__name__}")
    version = meta.get("format_version")
    if version is None:
        raise corrupt("meta lacks 'format_version'")
    if not is_int(version) or version != FORMAT_VERSION:
        raise corrupt(f"unsupported format_version {version!r} (this sparsekit reads version {FORMAT_VERSION})")
    kind = meta.get("kind")
    if kind not in FORMATS:
        raise corrupt(f"unknown format kind {kind!r}; expected one of {sorted(FORMATS)}")
    cls = FORMATS[kind]
    try:
        check("shape" in meta, "meta lacks 'shape'")
        shape = check_shape(meta["shape"])
        names = set(tensors)
        required = set(cls._tensor_names)
        allowed = required | set(cls._optional_tensor_names)
        missing, extra = sorted(required - names), sorted(names - allowed)
        check(not missing, f"missing tensor(s) {missing}")
        check(not extra, f"unexpected tensor(s) {extra}")
        for tname in sorted(names):
            check(isinstance(tensors[tname], torch.Tensor),
                  f"{tname} must be a torch.Tensor, got {type(tensors[tname]).__name__}")
        vd = meta.get("value_dtype")
        allowed_dtypes = sorted(dtype_name(d) for d in cls.value_dtypes)
        check(vd in allowed_dtypes, f"meta value_dtype {vd!r} must be one of {allowed_dtypes}")
        fmt = cls._from_parts(meta, tensors, shape)
        check(fmt.shape == shape, f"tensors describe shape {list(fmt.shape)}, meta says {list(shape)}")
        check(dtype_name(fmt.value_dtype) == vd,
              f"value tensors have dtype {dtype_name(fmt.value_dtype)}, meta value_dtype says {vd!r}")
    except FormatError as e:
        raise corrupt(e.problem) from None
    return fmt
