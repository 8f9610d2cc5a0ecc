"""``sparsekit info``: which backends are built and usable on this machine, and why not the others.

A doctor command in the spirit of ``python -m xformers.info``: the C++ CPU kernels (built? the ISA path
chosen and the ones this CPU supports; does OpenMP really run the kernels on several threads), the C++ INT8
kernels (built? the int8 paths this CPU has: avx512-vnni / avx-vnni / avx512bw / avx2 / scalar), CUDA and
its extension, Triton, the compilers torch.compile and the extensions need, ONNX Runtime (an optional
bench baseline), threads, CPU flags and GPU, library versions. Every backend of
``sparsekit.backends.registry.default_backends()`` is asked, through its own ``not_supported_reasons``, whether it
can run a representative layer (BERT-base FFN-in at 10% density: CPU float32, and CUDA bfloat16 when a GPU
is present), so backends added later appear here without changes. It also lists the task types an artifact can
hold (the Hugging Face head of each; ``sparsekit.compile`` runs the encoder of every one, the head stays dense).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil

import torch

#: The representative layer every backend is asked about: BERT-base FFN-in, 10% of the weights kept.
REPRESENTATIVE = {"out_features": 3072, "in_features": 768, "density": 0.1}


def _error(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def threads_info() -> dict:
    """torch intra-/inter-op threads, OMP_NUM_THREADS, logical cores and the cores this process may use; and
    ``steal_since_boot``: the share of this machine's CPU time its hypervisor gave to other guests since boot (None
    where unknown), which says whether timings here can drift with the host's load."""
    from sparsekit.machine import cpu_time_counters, steal_share

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "cores": os.cpu_count(), "usable_cores": usable,
            "steal_since_boot": steal_share((0, 0), cpu_time_counters())}


def cpu_kernels_info() -> dict:
    """The C++ CPU extension: built, why not, ISA chosen / supported / forced, and real parallelism.

    ``parallel_threads`` is measured with the current torch thread count; when that is 1 on a multi-core
    machine, ``parallel_threads_at_2`` probes 2 threads (then restores the setting) to tell a serial build
    (OpenMP missing: always 1) from a single-thread configuration.
    """
    from sparsekit.kernels import cpu

    info = {"built": cpu.available(), "reason": cpu.unavailable_reason(), "isa": None, "supported_isas": [],
            "forced_isa": os.environ.get(cpu.ISA_ENV), "torch_threads": torch.get_num_threads(),
            "parallel_threads": 0, "parallel_threads_at_2": None, "openmp_parallel": None}
    if not info["built"]:
        return info
    try:
        info["isa"] = cpu.isa()
    except ValueError as exc:  # a bad SPARSEKIT_ISA value
        info["isa"], info["reason"] = None, str(exc)
    info["supported_isas"] = list(cpu.supported_isas())
    info["parallel_threads"] = cpu.parallel_threads()
    threads = torch.get_num_threads()
    if threads > 1:
        info["openmp_parallel"] = info["parallel_threads"] > 1
    elif (os.cpu_count() or 1) > 1:
        try:
            torch.set_num_threads(2)
            info["parallel_threads_at_2"] = cpu.parallel_threads()
        finally:
            torch.set_num_threads(threads)
        info["openmp_parallel"] = info["parallel_threads_at_2"] > 1
    return info


def cuda_info() -> dict:
    """torch's CUDA (version, devices) and sparsekit's CUDA extension module, if this installation has one."""
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devices.append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                            "memory_gib": round(p.total_memory / 2**30, 1)})
    ext = {"module": "sparsekit.kernels.cuda", "present": False, "available": None, "reason": None}
    if importlib.util.find_spec("sparsekit.kernels.cuda") is None:
        ext["reason"] = "this installation has no sparsekit.kernels.cuda module"
    else:
        ext["present"] = True
        try:
            mod = importlib.import_module("sparsekit.kernels.cuda")
            available = getattr(mod, "available", None)
            ext["available"] = bool(available()) if callable(available) else None
            reason = getattr(mod, "unavailable_reason", None)
            ext["reason"] = reason() if callable(reason) else None
        except Exception as exc:  # a broken extension must not break the doctor
            ext["available"], ext["reason"] = False, f"import failed: {_error(exc)}"
    return {"torch_cuda": torch.version.cuda, "available": torch.cuda.is_available(), "devices": devices,
            "extension": ext}


def triton_info() -> dict:
    """Triton: importable, version, and whether its kernels can run natively (a CUDA GPU is needed)."""
    try:
        import triton
    except Exception as exc:  # ImportError, or a broken install
        return {"importable": False, "version": None, "gpu": torch.cuda.is_available(), "reason": _error(exc)}
    gpu = torch.cuda.is_available()
    reason = None if gpu else ("no CUDA GPU: Triton kernels cannot run here (TRITON_INTERPRET=1 runs them slowly "
                               "on the CPU, for tests)")
    return {"importable": True, "version": triton.__version__, "gpu": gpu, "reason": reason}


def compilers_info() -> dict:
    """The C++ compiler (torch.compile's inductor on CPU and the extension builds need one) and nvcc."""
    cxx = os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    return {"cxx": shutil.which(cxx) if cxx else None, "nvcc": shutil.which("nvcc"),
            "CUDA_HOME": os.environ.get("CUDA_HOME")}


def onnxruntime_info() -> dict:
    """ONNX Runtime (an optional baseline of ``sparsekit bench``)."""
    try:
        import onnxruntime
    except Exception as exc:
        return {"importable": False, "version": None, "reason": _error(exc)}
    return {"importable": True, "version": onnxruntime.__version__, "reason": None}


def representative_specs() -> dict:
    """``{label: LayerSpec}``: CPU float32 always, CUDA bfloat16 when a GPU is present."""
    from sparsekit.backends import LayerSpec

    r = REPRESENTATIVE
    shape = f"{r['out_features']}x{r['in_features']} at {100 * r['density']:.0f}% density"
    specs = {f"cpu float32, {shape}": LayerSpec(r["out_features"], r["in_features"], r["density"],
                                                torch.device("cpu"), torch.float32)}
    if torch.cuda.is_available():
        specs[f"cuda bfloat16, {shape}"] = LayerSpec(r["out_features"], r["in_features"], r["density"],
                                                     torch.device("cuda"), torch.bfloat16)
    return specs


def backends_info() -> list[dict]:
    """Each backend of ``default_backends()``: name, description, and per representative layer whether it can run
    it (``reasons`` empty) or why not."""
    from sparsekit.backends import registry

    specs = representative_specs()
    out = []
    for backend in registry.default_backends():
        checks = {}
        for label, spec in specs.items():
            try:
                reasons = list(backend.not_supported_reasons(spec))
            except Exception as exc:
                reasons = [f"not_supported_reasons raised {_error(exc)}"]
            checks[label] = {"usable": not reasons, "reasons": reasons}
        out.append({"name": backend.name, "description": backend.description, "layers": checks})
    return out


def task_types_info() -> dict[str, str]:
    """The task types export / serve / bench handle, with the transformers Auto class of each head."""
    from sparsekit.models import TASK_MODEL_CLASSES

    return dict(TASK_MODEL_CLASSES)


def fused_runtime_info() -> dict:
    """The fused CPU encoder runtime: usable here (it needs the C++ CPU kernels), and the model families it runs,
    by layer layout (``Architecture.fused_layout``)."""
    from sparsekit.architectures import ARCHITECTURES
    from sparsekit.kernels import cpu

    layouts: dict[str, list[str]] = {}
    for arch in ARCHITECTURES:
        layouts.setdefault(arch.fused_layout, []).extend(arch.model_types)
    return {"usable": cpu.available(), "reason": None if cpu.available() else cpu.unavailable_reason(),
            "layouts": layouts}


def collect() -> dict:
    """Everything ``sparsekit info`` reports, as JSON-ready data."""
    from sparsekit.machine import header

    return {**header(), "threads": threads_info(), "cpu_kernels": cpu_kernels_info(),
            "int8_kernels": int8_kernels_info(), "fused_runtime": fused_runtime_info(), "cuda": cuda_info(),
            "triton": triton_info(), "compilers": compilers_info(), "onnxruntime": onnxruntime_info(),
            "backends": backends_info(), "task_types": task_types_info()}


def int8_kernels_info() -> dict:
    """The C++ INT8 CPU extension: built, why not, the int8 path chosen / supported by this CPU / compiled / forced,
    and the weight width that path runs faster (cpu_int8.preferred_weight_bits)."""
    from sparsekit.kernels import cpu_int8

    info = {"built": cpu_int8.available(), "reason": cpu_int8.unavailable_reason(), "isa": None,
            "supported_isas": [], "compiled_isas": [], "forced_isa": os.environ.get(cpu_int8.INT8_ISA_ENV),
            "preferred_weight_bits": None}
    if not info["built"]:
        return info
    try:
        info["isa"] = cpu_int8.int8_isa()
        info["preferred_weight_bits"] = cpu_int8.preferred_weight_bits()
    except ValueError as exc:  # a bad SPARSEKIT_INT8_ISA value
        info["reason"] = str(exc)
    info["supported_isas"] = list(cpu_int8.supported_int8_isas())
    info["compiled_isas"] = list(cpu_int8.compiled_int8_isas())
    return info


def _yes(ok: bool | None) -> str:
    return "[green]yes[/]" if ok else "[dim]n/a[/]" if ok is None else "[red]no[/]"


def _component_rows(data: dict) -> list[tuple[str, str, str]]:
    from rich.markup import escape

    k, cuda, tr, cc, ort = data["cpu_kernels"], data["cuda"], data["triton"], data["compilers"], data["onnxruntime"]
    if k["built"] and k["isa"]:
        if k["openmp_parallel"] is None:
            parallel = "one core: serial"
        elif not k["openmp_parallel"]:
            parallel = "[red]serial: built without OpenMP, the kernels use one thread[/]"
        elif k["parallel_threads_at_2"] is not None:
            parallel = (f"parallel ({k['parallel_threads_at_2']} threads measured with 2; torch is set to "
                        f"{k['torch_threads']} thread now)")
        else:
            parallel = f"parallel ({k['parallel_threads']} threads measured with {k['torch_threads']})"
        kernel = (f"ISA {k['isa']}{' (forced by SPARSEKIT_ISA)' if k['forced_isa'] else ''}; supported: "
                  f"{', '.join(k['supported_isas'])}; {parallel}")
    else:
        kernel = escape(k["reason"] or "")
    i8 = data.get("int8_kernels") or {"built": False, "isa": None, "reason": "not collected"}
    if i8["built"] and i8["isa"]:
        lacking = [i for i in i8["compiled_isas"] if i not in i8["supported_isas"]]
        int8 = (f"path {i8['isa']}{' (forced by SPARSEKIT_INT8_ISA)' if i8['forced_isa'] else ''}; this CPU has: "
                f"{', '.join(i8['supported_isas'])}{'; lacks: ' + ', '.join(lacking) if lacking else ''}"
                + (f"; faster weights: {i8['preferred_weight_bits']}-bit" if i8.get("preferred_weight_bits") else ""))
    else:
        int8 = escape(i8["reason"] or "")
    fused = data.get("fused_runtime") or {"usable": False, "reason": "not collected", "layouts": {}}
    fused_detail = (escape(fused["reason"]) + "; " if fused["reason"] else "") + "compacted models and " + "; ".join(
        f"{layout} layers: {', '.join(types)}" for layout, types in fused["layouts"].items())
    gpus = ", ".join(f"{d['name']} (sm {d['capability']}, {d['memory_gib']} GiB)" for d in cuda["devices"])
    ext = cuda["extension"]
    ext_detail = escape(ext["reason"] or ("loaded" if ext["available"] else ""))
    return [
        ("C++ CPU kernels", _yes(k["built"] and k["isa"] is not None), kernel),
        ("C++ INT8 CPU kernels", _yes(i8["built"] and i8["isa"] is not None), int8),
        ("Fused CPU runtime", _yes(fused["usable"]), fused_detail),
        ("CUDA (torch)", _yes(cuda["available"]),
         gpus or f"no CUDA GPU visible (torch built with CUDA {cuda['torch_cuda'] or 'none: CPU-only wheel'})"),
        ("CUDA extension", _yes(ext["available"]) if ext["present"] else _yes(False), ext_detail),
        ("Triton", _yes(tr["importable"] and tr["gpu"]),
         f"{'version ' + tr['version'] if tr['version'] else 'not importable'}"
         f"{'; ' + escape(tr['reason']) if tr['reason'] else ''}"),
        ("C++ compiler", _yes(cc["cxx"] is not None),
         (cc["cxx"] or "none found (set CXX)") + ": torch.compile on CPU and the extension builds need it"),
        ("nvcc", _yes(cc["nvcc"] is not None), cc["nvcc"] or "not on PATH (only needed to build CUDA code)"),
        ("ONNX Runtime", _yes(ort["importable"]),
         f"version {ort['version']}" if ort["importable"] else "not installed (optional bench baseline)"),
        ("Task heads", _yes(True), "; ".join(f"{t} ({cls})" for t, cls in data.get("task_types", {}).items())),
    ]


def render(data: dict) -> list:
    """Rich renderables for ``data`` (from collect()): components, backends x layers, machine and versions."""
    from rich.markup import escape
    from rich.table import Table

    comp = Table(title="sparsekit info: what can run here")
    for col in ("component", "usable", "detail"):
        comp.add_column(col)
    for row in _component_rows(data):
        comp.add_row(*row)

    labels = list(data["backends"][0]["layers"]) if data["backends"] else []
    back = Table(title="Backends of sparsekit.compile on a representative layer")
    back.add_column("backend")
    back.add_column("description")
    for label in labels:
        back.add_column(label)
    for b in data["backends"]:
        cells = []
        for label in labels:
            check = b["layers"][label]
            reasons = escape("; ".join(check["reasons"]))
            cells.append("[green]usable[/]" if check["usable"] else f"[red]no[/]: {reasons}")
        back.add_row(b["name"], escape(b["description"]), *cells)

    m, v, t = data["machine"], data["versions"], data["threads"]
    env = Table(title="Machine and versions", show_header=False)
    env.add_column(style="bold")
    env.add_column()
    gpu = m["gpu"]
    for key, value in (
        ("cpu", f"{m['cpu']} ({m['cores']} logical cores, {t['usable_cores']} usable by this process)"),
        ("cpu flags", ", ".join(m["cpu_flags"]) or "none of the kernel-relevant ones"),
        ("vector ISA", f"ATen kernels {m['aten_isa']}; " + (
            "limited by " + ", ".join(f"{k}={val}" for k, val in m["isa_limits"].items()) if m["isa_limits"]
            else "no instruction-set limit set (SPARSEKIT_ISA, SPARSEKIT_INT8_ISA, ATEN_CPU_CAPABILITY, "
                 "MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA)")),
        ("threads", f"torch {t['torch_threads']} intra-op / {t['torch_interop_threads']} inter-op; "
                    f"OMP_NUM_THREADS={t['OMP_NUM_THREADS'] or 'unset'}"),
        ("hypervisor steal", "unknown" if t.get("steal_since_boot") is None else
         f"{100 * t['steal_since_boot']:.1f}% of the CPU time since boot went to other guests of the host"
         + (" (a shared VM: timings can drift with its load)" if t["steal_since_boot"] > 0.001 else "")),
        ("gpu", f"{gpu['name']} x{gpu['count']}" if gpu else "none"),
        ("platform", m["platform"]),
        ("versions", ", ".join(f"{k} {val}" for k, val in v.items() if val)),
    ):
        env.add_row(key, escape(str(value)))
    return [comp, back, env]
