"""What every backend of ``sparsekit.compile`` is: a ``Backend`` declares what it can run, and says why not.

The pattern is xformers' operators: a backend declares its capabilities as class attributes (device types,
dtypes, minimum compute capability, maximum density, a requirement such as a built extension), the base class
turns them into human-readable reasons for a given :class:`LayerSpec` (empty list = it can run the layer), and a
subclass adds only the reasons that are its own (``extra_reasons``) and ``build``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_DEVICE_NAMES = {"cpu": "CPU", "cuda": "GPU"}


@dataclass(frozen=True)
class LayerSpec:
    """What a backend needs to know about a Linear: weight ``[out, in]``, its density, device and dtype."""

    out_features: int
    in_features: int
    density: float
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def of(cls, weight: torch.Tensor) -> "LayerSpec":
        """The spec of a dense weight ``[out, in]`` (density = fraction of non-zero entries)."""
        numel = weight.numel()
        density = float((weight != 0).sum()) / numel if numel else 0.0
        return cls(weight.shape[0], weight.shape[1], density, weight.device, weight.dtype)


def _no_cuda_device() -> str:
    why = "torch is a CPU-only build" if torch.version.cuda is None else "torch.cuda.is_available() is False"
    return f"no CUDA device ({why})"


class Backend:
    """One way to run a Linear ``x Wᵀ + b``; ``build(weight, bias)`` returns the ``nn.Module`` that does it.

    Declared capabilities (class attributes; an instance may override them):

    * ``devices``: device types it runs on (``"cpu"``, ``"cuda"``), or None for any.
    * ``dtypes``: weight / activation dtypes of its kernels, or None for any (bfloat16 among them needs
      compute capability 8.0 on a GPU).
    * ``min_capability``: minimum CUDA compute capability ``(major, minor)``, or None.
    * ``max_density``: above this weight density it is never used, with ``max_density_why`` saying why.
    * ``requirement()``: why it cannot run at all here (extension not built, Triton missing), or None.

    ``not_supported_reasons`` turns these into reasons and appends ``extra_reasons(spec)``, the backend's own.
    Weight-pattern conditions a LayerSpec cannot show (block density, 2:4) are checked by ``build``, which raises
    ``ValueError``; ``compile`` reports that as a rejection with its message.
    """

    name = "base"
    description = ""
    devices: tuple[str, ...] | None = None
    dtypes: tuple[torch.dtype, ...] | None = None
    min_capability: tuple[int, int] | None = None
    max_density: float | None = None
    max_density_why = ""

    def requirement(self) -> str | None:
        """Why this backend cannot run anything on this installation (None when it can)."""
        return None

    def extra_reasons(self, spec: LayerSpec) -> list[str]:
        """Reasons of this backend's own (shape rules and the like); the declared capabilities are checked already."""
        return []

    def not_supported_reasons(self, spec: LayerSpec) -> list[str]:
        """Why this backend cannot run a layer like ``spec`` (empty: it can). Not overridden by subclasses."""
        reasons = self._device_reasons(spec)
        missing = self.requirement()
        if missing:
            reasons.append(missing)
        reasons += self._dtype_reasons(spec)
        if self.max_density is not None and spec.density > self.max_density:
            reasons.append(f"density {spec.density:.2f} > {self.max_density}: {self.max_density_why}")
        return reasons + self.extra_reasons(spec)

    def build(self, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        """A module computing ``x Wᵀ + b`` for x ``[..., in]`` from a dense ``weight [out, in]``, ``bias [out]``."""
        raise NotImplementedError

    def _device_reasons(self, spec: LayerSpec) -> list[str]:
        if self.devices is not None and spec.device.type not in self.devices:
            if self.devices == ("cuda",):
                if not torch.cuda.is_available():
                    return [_no_cuda_device()]
                return [f"GPU only (layer is on {spec.device.type}; move the model with .cuda())"]
            only = " / ".join(_DEVICE_NAMES.get(d, d) for d in self.devices)
            return [f"{only} only (layer is on {spec.device.type})"]
        if spec.device.type == "cuda" and self.min_capability is not None:
            cap = torch.cuda.get_device_capability(spec.device)
            if cap < self.min_capability:
                need = self.min_capability
                return [f"compute capability {cap[0]}.{cap[1]} < {need[0]}.{need[1]}"]
        return []

    def _dtype_reasons(self, spec: LayerSpec) -> list[str]:
        if self.dtypes is None:
            return []
        if spec.dtype not in self.dtypes:
            return [f"dtype {spec.dtype} not supported ({', '.join(str(d) for d in self.dtypes)})"]
        if (spec.dtype == torch.bfloat16 and spec.device.type == "cuda" and torch.cuda.is_available()
                and torch.cuda.get_device_capability(spec.device) < (8, 0)):
            return ["bfloat16 needs compute capability >= 8.0"]
        return []
