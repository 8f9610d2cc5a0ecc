"""``sparsekit.compile(model)``: run every matrix of a pruned or exported model on the fastest backend.

A model the fused encoder runtime runs (sparsekit.runtime.models: a compacted model, or a Hugging Face post-LayerNorm
encoder such as BERT or DistilBERT, on the CPU in float32) runs on it and its matrices are the fused layer's (Q, K
and V stacked); any other model keeps its module tree. For each matrix (``nn.Linear``
or the exporter's ``FormatLinear``) the backends that can run it (see
``sparsekit.backends``) are built and timed on this machine, for this layer's shape and the given token count,
against dense ``F.linear``; ``sparsekit.backends.choose`` keeps the fastest. A backend must beat dense by
``min_gain`` to be chosen, so the compiled model is never slower than dense on a layer (up to timing noise).
Returns a CompileReport (printed as a table) with the shape, density, chosen backend, why, and the measured
speedup per layer.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from sparsekit.backends import Backend, LayerSpec, choose, registry
from sparsekit.formats import Int8BlockFormat
from sparsekit.formats.int8 import weight_qmax
from sparsekit.machine import STEAL_WARNING, cpu_time_counters, steal_share
from sparsekit.timing import measure

#: compile's precisions: fp32 (exact up to rounding) and int8 (int8 weights and activations in the Linears).
PRECISIONS = ("fp32", "int8")


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
    """What compile did. runtime: ``fused`` (sparsekit's encoder runtime; layers are its fused matrices,
    ``layers.<i>.qkv`` ...) or ``modules`` (the model's own modules, each Linear swapped); runtime_why: why."""

    layers: list[LayerChoice]
    tokens: int
    threads: int
    runtime: str = "modules"
    runtime_why: str = ""
    precision: str = "fp32"
    #: Share of the machine's CPU time the hypervisor took while the backends were timed (sparsekit.machine.
    #: steal_share); None when nothing was timed (a saved plan) or it is unknown.
    steal: float | None = None
    #: At int8 precision: the width (8 or 7 bits) float matrices were quantised to; None at fp32.
    int8_weight_bits: int | None = None

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "threads": self.threads, "runtime": self.runtime,
                "runtime_why": self.runtime_why, "precision": self.precision, "steal": self.steal,
                "int8_weight_bits": self.int8_weight_bits, "layers": [asdict(c) for c in self.layers]}

    def table(self):
        from rich.table import Table

        table = Table(title=f"sparsekit.compile: {self.tokens} tokens, {self.threads} threads, runtime "
                            f"{self.runtime} ({self.runtime_why})")
        for col, justify in (("layer", "left"), ("shape", "left"), ("density", "right"), ("backend", "left"),
                             ("speedup", "right"), ("why", "left")):
            table.add_column(col, justify=justify)
        for c in self.layers:
            table.add_row(c.name, f"{c.shape[0]}x{c.shape[1]}", f"{100 * c.density:.1f}%", c.backend,
                          f"{c.speedup:.2f}x", c.why)
        return table


def _timing_steal(counters: tuple[int, int] | None) -> float | None:
    """The hypervisor's steal share since ``counters`` (sparsekit.machine), with a warning when it is high enough
    to have skewed the timings the backends were chosen on."""
    steal = steal_share(counters, cpu_time_counters())
    if steal is not None and steal > STEAL_WARNING:
        warnings.warn(f"sparsekit.compile: the hypervisor took {100 * steal:.0f}% of this machine's CPU time while "
                      f"the backends were timed (a shared virtual machine), so the choices may be off; compile again "
                      f"when the machine is quieter (and save that plan with the artifact)", RuntimeWarning,
                      stacklevel=4)  # past compile and its no_grad wrapper
    return steal


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


def _build(backends: list[Backend], spec: LayerSpec, weight: torch.Tensor, bias: torch.Tensor | None,
           int8: Int8BlockFormat | None = None) -> tuple[dict[str, nn.Module], dict[str, list[str]]]:
    """``(built, rejected)``: the module of every backend that can run the layer, the reasons of the others.

    ``int8``: the matrix's stored :class:`~sparsekit.formats.Int8BlockFormat` when it runs at int8 precision: the
    int8 backend packs those ints as stored, dense runs their dequantised values (``weight``), no other backend
    runs it."""
    from sparsekit.backends import CpuInt8B4Backend

    built, rejected = {}, {}
    for backend in backends:
        reasons = backend.not_supported_reasons(spec)
        if int8 is not None and backend.name not in ("dense", CpuInt8B4Backend.name):
            reasons = [*reasons, f"the matrix is stored int8: it runs as stored ({CpuInt8B4Backend.name}) or dense"]
        if reasons:
            rejected[backend.name] = reasons
            continue
        source = int8 if int8 is not None and backend.name == CpuInt8B4Backend.name else weight
        try:
            built[backend.name] = backend.build(source, bias)
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
        model.set_submodule(name, built[best])
    elif not isinstance(module, nn.Linear):
        model.set_submodule(name, built["dense"])


def _choose_matrix(name: str, weight: torch.Tensor, bias: torch.Tensor | None, candidates: list[Backend],
                   tokens: int, warmup: int, repeats: int, min_gain: float, force: str | None,
                   int8: Int8BlockFormat | None = None) -> tuple[LayerChoice, dict[str, nn.Module]]:
    """Build every candidate backend of one matrix, time them against dense and choose (see module docstring;
    ``int8``: see _build)."""
    spec = LayerSpec.of(weight)
    built, rejected = _build(candidates, spec, weight, bias, int8)
    timings = _time(built, spec, tokens, warmup, repeats)
    best, speedup, why = choose(timings, rejected, min_gain, force)
    return LayerChoice(name, tuple(weight.shape), spec.density, best, why, speedup, timings, rejected), built


def _compile_fused(model: nn.Module, candidates: list[Backend], tokens: int, warmup: int, repeats: int,
                   min_gain: float, force: str | None, plan: dict | None,
                   precision: str, int8_weight_bits: int) -> tuple[list[LayerChoice], str, str | None]:
    """Install sparsekit's fused encoder (sparsekit.runtime) in a model it runs (sparsekit.runtime.models): per
    layer, the backend of each fused matrix (Q, K and V stacked as one) measured here among the backends the fused
    layer runs, or taken from ``plan`` when it matches this machine and model. At int8 precision a matrix stored
    int8 runs its stored ints or dense (see _build). Returns the choices, where they came from, and why the model
    kept its own layers (_check_own_layers; then no runtime is installed) or None."""
    from sparsekit.runtime import MATRICES, RUNTIME_BACKENDS, FusedEncoder
    from sparsekit.runtime import models as runtime_models
    from sparsekit.runtime import plan as plans

    fused_candidates = [b for b in candidates if b.name in RUNTIME_BACKENDS]
    layers = runtime_models.fused_layers(model)
    named = {f"layers.{i}.{m}": lw.matrices[m] for i, lw in enumerate(layers) for m in MATRICES}
    stored = {f"layers.{i}.{m}": lw.int8.get(m) if precision == "int8" else None
              for i, lw in enumerate(layers) for m in MATRICES}
    why_retime = None if plan is None else plans.mismatch(plan, {n: tuple(w.shape) for n, (w, _) in named.items()})
    reused = plan is not None and why_retime is None and force is None
    if reused:
        saved = plan["matrices"]
        choices = [LayerChoice(name, tuple(w.shape), LayerSpec.of(w).density, saved[name]["backend"],
                               f"saved plan ({plan['tokens']} tokens)", float(saved[name].get("speedup", 1.0)), {}, {})
                   for name, (w, _) in named.items()]
        source = f"saved plan, measured at {plan['tokens']} tokens on this CPU"
    else:
        if why_retime is not None:
            warnings.warn(f"sparsekit.compile: {why_retime}", RuntimeWarning, stacklevel=4)
        choices = [_choose_matrix(name, w, b, fused_candidates, tokens, warmup, repeats, min_gain, force,
                                  stored[name])[0] for name, (w, b) in named.items()]
        for choice, (w, _) in zip(choices, named.values()):  # say why the other backends were not candidates
            for backend in candidates:
                if backend.name not in RUNTIME_BACKENDS:
                    own = backend.not_supported_reasons(LayerSpec.of(w))
                    choice.rejected[backend.name] = own or [f"not a backend of the fused runtime (it runs "
                                                            f"{', '.join(RUNTIME_BACKENDS)}; fused=False runs it)"]
        source = "measured here"
    picks = iter(c.backend for c in choices)
    encoder = FusedEncoder(layers, [{m: next(picks) for m in MATRICES} for _ in layers], int8_weight_bits)
    if not reused and force is None and any(c.backend != "dense" for c in choices):
        encoder, choices = _check_whole_encoder(encoder, layers, choices, tokens, warmup, repeats)
    if not reused and force is None and all(c.backend == "dense" for c in choices):
        own = _check_own_layers(model, encoder, tokens, warmup, repeats)
        if own is not None:
            return [replace(c, why=f"{c.why}; {own}" if c.why else own) for c in choices], source, own
    runtime_models.install(model, encoder)
    return choices, source, None


#: Tokens per sequence of the whole-encoder check's input (attention costs the same under both plans).
_CHECK_SEQUENCE = 128


def _time_encoders(encoders: dict, x: torch.Tensor, cu: torch.Tensor, rope: list[torch.Tensor],
                   rel_index: torch.Tensor | None, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms of each fused encoder on the packed tokens ``x`` ``[N, hidden]`` (sequences ``cu``; rotary tables
    and relative index as FusedEncoder.forward takes them), interleaved."""
    from sparsekit.timing import measure_interleaved

    best = measure_interleaved({name: (lambda e=e: e(x, cu, rope, rel_index)) for name, e in encoders.items()},
                               rounds=2, warmup=warmup, repeats=repeats)
    return {name: 1e3 * r["median"] for name, r in best.items()}


def _check_whole_encoder(encoder, layers: list, choices: list[LayerChoice], tokens: int, warmup: int,
                         repeats: int):
    """sparsekit's "never slower than dense" for the whole encoder: the per-matrix choices (each timed alone) are
    timed together against every matrix dense, on ``tokens`` packed tokens; if they are not faster, every matrix
    goes dense and says why. Rotary tables and relative indices are stand-ins (the identity rotation, distance
    bucket 0): the kernels do the same work whatever their values. Returns the encoder to install and the choices."""
    from sparsekit.runtime import MATRICES, FusedEncoder

    dense = FusedEncoder(layers, [dict.fromkeys(MATRICES, "dense") for _ in layers])
    hidden = layers[0].matrices[MATRICES[0]][0].shape[1]
    x = torch.randn(tokens, hidden)
    cu = torch.tensor([*range(0, tokens, _CHECK_SEQUENCE), tokens], dtype=torch.int64)
    rope = []
    for table in range(encoder.rotary_tables):
        dq = next((lw.dq for lw in layers if lw.rope == table), max(lw.dq for lw in layers))  # unused: any width
        rope += [torch.ones(tokens, dq), torch.zeros(tokens, dq)]
    rel_index = torch.zeros(2 * _CHECK_SEQUENCE - 1, dtype=torch.int32) if encoder.relative else None
    ms = _time_encoders({"plan": encoder, "dense": dense}, x, cu, rope, rel_index, max(1, warmup),
                        max(3, repeats // 3))
    if ms["plan"] < ms["dense"]:
        return encoder, choices
    why = (f"whole-encoder check at {tokens} tokens: the per-matrix choices ran {ms['plan']:.2f} ms together, "
           f"every matrix dense {ms['dense']:.2f} ms")
    return dense, [replace(c, backend="dense", why=why, speedup=1.0) for c in choices]


def _timing_inputs(model: nn.Module, tokens: int) -> dict[str, torch.Tensor]:
    """Random model inputs of about ``tokens`` tokens: sequences of up to _CHECK_SEQUENCE, no padding;
    ``token_type_ids`` only for a model that has token types."""
    from sparsekit.data.inputs import random_inputs

    seq = min(tokens, _CHECK_SEQUENCE)
    x = random_inputs(max(1, tokens // seq), seq, int(model.config.vocab_size))
    if not getattr(model.config, "type_vocab_size", 0):
        del x["token_type_ids"]
    return x


def _forward_ms(model: nn.Module, inputs: dict, warmup: int, repeats: int) -> float:
    """Median ms of ``model(**inputs)``."""
    return 1e3 * measure(lambda: model(**inputs), warmup, repeats)["median"]


def _check_own_layers(model: nn.Module, encoder, tokens: int, warmup: int, repeats: int) -> str | None:
    """sparsekit's "never slower than dense" where every fused matrix ended dense: the model's whole forward on the
    fused runtime against its own layers (the runtime removed), 2 interleaved rounds of each, best median.
    Leaves the faster one installed; returns why the own layers were kept, or None when the fused runtime was."""
    from sparsekit.runtime import models as runtime_models

    x = _timing_inputs(model, tokens)
    best = {"fused": float("inf"), "own": float("inf")}
    for _ in range(2):
        for name in best:
            if name == "fused":
                runtime_models.install(model, encoder)
            else:
                runtime_models.remove(model)
            best[name] = min(best[name], _forward_ms(model, x, max(1, warmup), max(3, repeats // 3)))
    if best["fused"] <= best["own"]:
        runtime_models.install(model, encoder)
        return None
    return (f"every matrix ended dense, and the model's own layers ran its forward at {tokens} tokens in "
            f"{best['own']:.2f} ms against {best['fused']:.2f} ms on the fused runtime (all dense): kept its own")


@torch.no_grad()
def compile(model: nn.Module, tokens: int = 128, backends: list[Backend] | None = None, min_gain: float = 1.03,
            warmup: int = 3, repeats: int = 15, verbose: bool = True, force: str | None = None,
            fused: bool = True, plan: dict | None = None, retime: bool = False,
            precision: str | None = None, int8_weight_bits: int | None = None) -> CompileReport:
    """Make ``model`` (in place) run every encoder matrix on the fastest backend measured here.

    On the CPU in float32, a compacted model (``sparsekit.load`` of a compacted artifact) and a Hugging Face
    encoder of every family sparsekit supports (BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT, DistilBERT, DeBERTa-v2 /
    v3 and ModernBERT: a pruned checkpoint, the pruning engine's output, a structure-keeping artifact) get
    sparsekit's fused encoder runtime
    (:mod:`sparsekit.runtime`: Q, K and V as one matrix, fused epilogues and LayerNorms, packed tokens, one op call
    per forward; :mod:`sparsekit.runtime.models` says how it goes in), each of its matrices on the fastest of
    dense / ``csr-cpu`` / ``bsr-cpu``, and the chosen set is kept only if it beats every matrix dense when timed
    as a whole encoder (_check_whole_encoder); where every matrix ends dense, the whole forward on the fused runtime
    is timed against the model's own layers and the faster one kept (_check_own_layers; ``report.runtime`` is then
    ``modules`` and says why). A fused model is inference-only (``model.eval()``) and does not record
    per-layer hidden states or attentions. Any other model (a GPU model, a configuration the runtime does not
    run such as DeBERTa's convolution layer, ``fused=False``)
    keeps its modules, each encoder Linear swapped for its fastest backend; ``report.runtime`` says which and why.
    Exporting first is still faster than compiling the pruned checkpoint: compaction removes whole heads and
    neurons, which the uncompacted model computes (as zero rows, which the sparse kernels skip).

    tokens: rows of the activation matrix to time with (batch x sequence length of the deployment).
    min_gain: a sparse backend must be at least this much faster than dense to be chosen.
    force: a backend name to run every layer on that it can run, whatever the timings say (for tests and
        debugging; it is still timed against dense for the report, and layers it cannot run stay dense).
    fused: False keeps the module tree of any model (Linears swapped), e.g. to compare the two.
    precision: ``fp32`` (results equal the model's within rounding) or ``int8``: the int8 1x4-block kernel
        (``int8-b4-cpu``: int8 weights per output row, activations quantised per token) joins the candidates of
        every matrix, and wins where it is measured fastest; attention, softmax and LayerNorm stay fp32. Default:
        the loaded artifact's precision (``model.manifest``; fp32 for any other model). The matrices of an int8
        artifact (stored ``int8-b4``) run at int8 on their stored ints, never re-quantised, or dense on their
        dequantised values where that is faster; at fp32 every backend runs their dequantised values.
        ``backends`` given explicitly are used as given.
    int8_weight_bits: at int8 precision, the width a float matrix is quantised to: 8 (``[-127, 127]``) or 7
        (``[-63, 63]``, which the AVX2 / AVX-512BW kernels run faster; ~half the weight resolution). Default:
        :func:`sparsekit.kernels.cpu_int8.preferred_weight_bits` (7 on those paths, 8 on VNNI CPUs). Matrices
        stored int8 keep their ints.
    plan: a saved compile plan (sparsekit.runtime.plan; default: the loaded artifact's ``model.compile_plan``),
        reused without timing when it was measured on this CPU, ISA and thread count for this model; otherwise
        re-measured with a warning saying why. retime: always measure.
    Returns the CompileReport; prints its table when ``verbose``.
    """
    from sparsekit.runtime import RUNTIME_BACKENDS
    from sparsekit.runtime import models as runtime_models

    if precision is None:  # the loaded artifact's precision
        manifest = getattr(model, "manifest", None)
        precision = "fp32"
        if isinstance(manifest, dict):
            from sparsekit.export.artifact import manifest_precision

            precision = manifest_precision(manifest)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        from sparsekit.kernels import cpu_int8

        int8_weight_bits = cpu_int8.preferred_weight_bits() if int8_weight_bits is None else int8_weight_bits
        weight_qmax(int8_weight_bits)  # ValueError for another width
    elif int8_weight_bits is not None:
        raise ValueError(f"int8_weight_bits applies to precision='int8'; this compile is {precision}")
    if backends is None:
        backends = registry.default_backends()
        if precision == "int8":
            from sparsekit.backends import CpuInt8B4Backend

            backends = [*backends, CpuInt8B4Backend(int8_weight_bits)]
    if not any(b.name == "dense" for b in backends):
        raise ValueError("the backends must include 'dense', the fallback every layer can use")
    if force is not None and not any(b.name == force for b in backends):
        raise ValueError(f"unknown backend {force!r}; available: {', '.join(b.name for b in backends)}")
    candidates = [b for b in backends if force is None or b.name in ("dense", force)]
    why_not_fused = runtime_models.unsupported_reason(model) if fused else "fused=False"
    if why_not_fused is None and force is not None and force not in RUNTIME_BACKENDS:
        why_not_fused = (f"force={force!r}: the fused runtime runs {', '.join(RUNTIME_BACKENDS)}; each Linear runs "
                         f"{force} in the module tree")
    if why_not_fused is None:
        plan = None if retime else (plan if plan is not None else getattr(model, "compile_plan", None))
        if plan is not None and plan.get("precision", "fp32") != precision:
            warnings.warn(f"sparsekit.compile: the saved plan is for precision {plan.get('precision', 'fp32')}, "
                          f"this compile asks for {precision}; re-measuring", RuntimeWarning, stacklevel=3)
            plan = None
        counters = cpu_time_counters()
        choices, source, own = _compile_fused(model, candidates, tokens, warmup, repeats, min_gain, force, plan,
                                              precision, int8_weight_bits or 8)
        if own is not None and hasattr(model, "pad_layout"):  # a compacted model on its own layers, as modules do
            model.pad_layout()
        report = CompileReport(choices, tokens, torch.get_num_threads(), "fused" if own is None else "modules",
                               f"sparsekit fused encoder (sparsekit.runtime); backends: {source}" if own is None
                               else own, precision,
                               _timing_steal(counters) if any(c.timings_ms for c in choices) else None,
                               int8_weight_bits)
        if verbose:
            from rich.console import Console

            Console().print(report.table())
        return report
    runtime_models.remove(model)
    if hasattr(model, "pad_layout"):  # a compacted model: no gathers for ragged heads (zero rows cost kernels nothing)
        model.pad_layout()
    choices = []
    counters = cpu_time_counters()
    device = next(iter(model.parameters()), torch.empty(0)).device
    for name, module in list(_linears(model)):
        weight = _dense_weight(module, device)
        bias = None if module.bias is None else module.bias.detach()
        fmt = getattr(module, "fmt", None)
        int8 = fmt if precision == "int8" and isinstance(fmt, Int8BlockFormat) else None
        choice, built = _choose_matrix(name, weight, bias, candidates, tokens, warmup, repeats, min_gain, force,
                                       int8)
        _swap(model, name, module, built, choice.backend)
        choices.append(choice)
    report = CompileReport(choices, tokens, torch.get_num_threads(), "modules", why_not_fused, precision,
                           _timing_steal(counters) if choices else None, int8_weight_bits)
    if verbose:
        from rich.console import Console

        Console().print(report.table())
    return report
