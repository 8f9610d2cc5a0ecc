"""The backends ``sparsekit.compile`` knows, and the pure rule that picks one per layer from its timings."""
from __future__ import annotations

from sparsekit.backends.base import Backend
from sparsekit.backends.cpu import CpuBsrBackend, CpuCsrBackend
from sparsekit.backends.gpu import CudaCsrBackend, TritonBsrBackend, TritonCsrBackend
from sparsekit.backends.torch import DenseBackend, Semi24Backend, TorchSparseBackend


def default_backends() -> list[Backend]:
    """Every backend of this installation, dense first; each says through ``not_supported_reasons`` where it
    cannot run (extension not built, no GPU, dtype, density ...)."""
    return [DenseBackend(), TorchSparseBackend(), CpuCsrBackend(), CpuBsrBackend(),
            TritonBsrBackend(64), TritonBsrBackend(32), TritonBsrBackend(16), TritonCsrBackend(), CudaCsrBackend(),
            Semi24Backend()]


def choose(timings: dict[str, float], rejected: dict[str, list[str]], min_gain: float,
           force: str | None = None) -> tuple[str, float, str]:
    """The backend one layer runs on: ``(name, speedup over dense, why)``.

    timings: ms per backend that could run the layer (must include ``"dense"``).
    rejected: reasons per backend that could not (consulted only for ``force``).
    min_gain: a sparse backend must be at least this much faster than dense to be chosen.
    force: a backend name to use wherever it could run (dense where it was rejected, with its reasons).
    """
    if "dense" not in timings:
        raise ValueError("the timings must include 'dense', the fallback every layer can use")
    if force is not None:
        best = force if force in timings else "dense"
        why = f"forced ({force})" if best == force else f"{force} cannot run it: {'; '.join(rejected[force])}"
        return best, timings["dense"] / timings[best], why
    best = min(timings, key=timings.get)
    speedup = timings["dense"] / timings[best]
    if best == "dense":
        return "dense", speedup, "no sparse backend was faster" if len(timings) > 1 else "no sparse backend can run it"
    if speedup < min_gain:
        return "dense", 1.0, f"{best} only {speedup:.2f}x, below the {min_gain:.2f}x threshold"
    return best, speedup, f"fastest of {len(timings)} measured"
