"""``sparsekit.compile(model)``: run every Linear of a pruned or exported model on the fastest backend.

For each Linear (``nn.Linear`` or the exporter's ``FormatLinear``) the backends that can run it (see
``sparsekit.backends``) are built and timed on this machine, for this layer's shape and the given token count,
against dense ``F.linear``; ``sparsekit.backends.choose`` keeps the fastest. A backend must beat dense by
``min_gain`` to be chosen, so the compiled model is never slower than dense on a layer (up to timing noise).
Returns a CompileReport (printed as a table) with the shape, density, chosen backend, why, and the measured
speedup per layer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from sparsekit.backends import Backend, LayerSpec, choose, registry
from sparsekit.timing import measure


@dataclass
class LayerChoice:
    """The decision for one layer: timings in ms of every candidate, the winner and why."""

    name: str
    shape: tuple[int, int]
    density: float
    backend: str
    why: str
    speedup: float
    timings_ms: dict[str, float]
    rejected: dict[str, list[str]]


@dataclass
class CompileReport:
    layers: list[LayerChoice]
    tokens: int
    threads: int

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "threads": self.threads, "layers": [asdict(c) for c in self.layers]}

    def table(self):
        from rich.table import Table

        table = Table(title=f"sparsekit.compile: {self.tokens} tokens, {self.threads} threads")
        for col, justify in (("layer", "left"), ("shape", "left"), ("density", "right"), ("backend", "left"),
                             ("speedup", "right"), ("why", "left")):
            table.add_column(col, justify=justify)
        for c in self.layers:
            table.add_row(c.name, f"{c.shape[0]}x{c.shape[1]}", f"{100 * c.density:.1f}%", c.backend,
                          f"{c.speedup:.2f}x", c.why)
        return table




def _linears(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The encoder Linears: the six matrices of every layer of a Hugging Face or a compacted model."""
    from sparsekit.architectures import encoder_linears
    from sparsekit.export.artifact import FormatLinear

    return [(name, m) for name, _, _, m in encoder_linears(model) if isinstance(m, (nn.Linear, FormatLinear))]


def _dense_weight(module, device: torch.device) -> torch.Tensor:
    """The layer's weight ``[out, in]``; a FormatLinear's densified onto ``device`` (the model's)."""
    from sparsekit.export.artifact import FormatLinear

    if isinstance(module, FormatLinear):
        return module.fmt.to_dense().to(module.bias.device if module.bias is not None else device)
    return module.weight.detach()


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _build(backends: list[Backend], spec: LayerSpec, weight: torch.Tensor,
           bias: torch.Tensor | None) -> tuple[dict[str, nn.Module], dict[str, list[str]]]:
    """``(built, rejected)``: the module of every backend that can run the layer, the reasons of the others."""
    built, rejected = {}, {}
    for backend in backends:
        reasons = backend.not_supported_reasons(spec)
        if reasons:
            rejected[backend.name] = reasons
            continue
        try:
            built[backend.name] = backend.build(weight, bias)
        except (RuntimeError, ValueError) as exc:
            rejected[backend.name] = [f"build failed: {exc}"]
    return built, rejected


def _time(built: dict[str, nn.Module], spec: LayerSpec, tokens: int, warmup: int,
          repeats: int) -> dict[str, float]:
    """Median ms of each built module on random activations ``[tokens, in]`` of the layer's device and dtype."""
    x = torch.randn(tokens, spec.in_features, device=spec.device, dtype=spec.dtype)
    return {name: 1e3 * measure(lambda m=m: m(x), warmup, repeats)["median"] for name, m in built.items()}


def _swap(model: nn.Module, name: str, module: nn.Module, built: dict[str, nn.Module], best: str) -> None:
    """Put the chosen module in place of layer ``name``; a FormatLinear left dense runs as dense F.linear."""
    if best != "dense":
        _set(model, name, built[best])
    elif not isinstance(module, nn.Linear):
        _set(model, name, built["dense"])


@torch.no_grad()
def compile(model: nn.Module, tokens: int = 128, backends: list[Backend] | None = None, min_gain: float = 1.03,
            warmup: int = 3, repeats: int = 15, verbose: bool = True, force: str | None = None) -> CompileReport:
    """Swap each encoder Linear of ``model`` (in place) for the fastest backend measured here.

    tokens: rows of the activation matrix to time with (batch x sequence length of the deployment).
    min_gain: a sparse backend must be at least this much faster than dense to be chosen.
    force: a backend name to run every layer on that it can run, whatever the timings say (for tests and
        debugging; it is still timed against dense for the report, and layers it cannot run stay dense).
    Returns the CompileReport; prints its table when ``verbose``.
    """
    backends = backends or registry.default_backends()
    if not any(b.name == "dense" for b in backends):
        raise ValueError("the backends must include 'dense', the fallback every layer can use")
    if force is not None and not any(b.name == force for b in backends):
        raise ValueError(f"unknown backend {force!r}; available: {', '.join(b.name for b in backends)}")
    candidates = [b for b in backends if force is None or b.name in ("dense", force)]
    if hasattr(model, "pad_layout"):  # a compacted model: no gathers for ragged heads (zero rows cost kernels nothing)
        model.pad_layout()
    choices = []
    device = next(iter(model.parameters()), torch.empty(0)).device
    for name, module in list(_linears(model)):
        weight = _dense_weight(module, device)
        bias = None if module.bias is None else module.bias.detach()
        spec = LayerSpec.of(weight)
        built, rejected = _build(candidates, spec, weight, bias)
        timings = _time(built, spec, tokens, warmup, repeats)
        best, speedup, why = choose(timings, rejected, min_gain, force)
        _swap(model, name, module, built, best)
        choices.append(LayerChoice(name, tuple(weight.shape), spec.density, best, why, speedup, timings, rejected))
    report = CompileReport(choices, tokens, torch.get_num_threads())
    if verbose:
        from rich.console import Console

        Console().print(report.table())
    return report
