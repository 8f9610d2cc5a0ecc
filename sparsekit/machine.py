"""What machine and software a measurement ran on: the header of every benchmark result file."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

#: CPU feature flags that decide which kernel paths can run.
_INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "amx_bf16",
                      "avx512_vnni", "avx_vnni", "neon", "asimd")


#: Environment that limits every engine of a process started with it to AVX2 + FMA, so that an AVX-512 machine runs
#: the instruction set of an AVX2-only CPU (not its microarchitecture): sparsekit's fp32 and int8 kernels, ATen's
#: vectorised kernels and the code torch.compile generates, MKL's BLAS and oneDNN. ONNX Runtime and fbgemm (PyTorch's
#: dynamic int8 Linear) have no such switch: they keep using what the CPU has.
AVX2_LIMITS = {"SPARSEKIT_ISA": "avx2", "SPARSEKIT_INT8_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2",
               "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def isa_limits() -> dict[str, str]:
    """The variables of :data:`AVX2_LIMITS` set in this process's environment, with their values (empty: every
    engine uses what the CPU has)."""
    return {k: os.environ[k] for k in AVX2_LIMITS if k in os.environ}


def _cpuinfo(text: str | None = None) -> tuple[str, set[str]]:
    """The CPU's name and its flags. Virtual machines often report a generic name ("AMD EPYC", "Intel(R) Xeon(R)
    Processor"), so the x86 family and model numbers are appended where /proc/cpuinfo has them: they tell the
    generation apart (AMD family 25 is Zen 3 / Zen 4; a hypervisor may still hide some of its instructions, which
    the flags show). ``text``: the contents of /proc/cpuinfo (default: read it)."""
    name, flags, ids = platform.processor() or "unknown", set(), {}
    try:
        for line in (Path("/proc/cpuinfo").read_text() if text is None else text).splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and name in ("unknown", "", "x86_64"):
                name = value.strip()
            elif key in ("cpu family", "model") and key not in ids:
                ids[key] = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    if len(ids) == 2 and ids["model"].isdigit():
        name = f"{name} (family {ids['cpu family']}, model {ids['model']})"
    return name, flags


def cpu_flags() -> list[str]:
    """The kernel-relevant CPU flags this machine reports (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    return [f for f in _INTERESTING_FLAGS if f in _cpuinfo()[1]]


def machine_info() -> dict:
    """CPU model, flags, cores, torch threads, GPU (name, capability, memory) of this machine; the vector ISA of
    ATen's kernels (``aten_isa``) and any instruction-set limits this process runs under (``isa_limits``)."""
    name, _ = _cpuinfo()
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "capability": f"{props.major}.{props.minor}",
               "memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count()}
    return {"cpu": name, "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "aten_isa": torch.backends.cpu.get_cpu_capability(), "isa_limits": isa_limits(), "gpu": gpu,
            "platform": platform.platform()}


def software_versions() -> dict[str, str | None]:
    """Versions of Python, torch (and its CUDA), transformers, triton and sparsekit."""
    import transformers

    import sparsekit

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "triton": triton_version, "sparsekit": sparsekit.__version__}


#: Steal share above which sparsekit warns that timings (compile's choices, bench's ratios) were disturbed.
STEAL_WARNING = 0.05


def cpu_time_counters() -> tuple[int, int] | None:
    """``(steal, total)``: the machine's CPU time since boot, summed over its CPUs, in clock ticks (Linux
    ``/proc/stat``): the ticks the hypervisor gave to other guests while this one wanted to run, and all ticks;
    None where that file is unavailable. Differences of two readings give the steal share of an interval
    (:func:`steal_share`)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)


#: Fewest clock ticks (summed over the CPUs; 100 a second each on Linux) of an interval whose steal share is
#: reported: one stolen tick is then at most 2% of it; over shorter intervals the share is too coarse to tell.
MIN_STEAL_TICKS = 50


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Fraction (0..1) of the CPU time between two :func:`cpu_time_counters` readings that the hypervisor took
    away from this machine (0 on bare metal); None when unknown or the interval is shorter than MIN_STEAL_TICKS."""
    if before is None or after is None or after[1] - before[1] < MIN_STEAL_TICKS:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def header() -> dict:
    """``{"machine": machine_info(), "versions": software_versions()}`` for a result file."""
    return {"machine": machine_info(), "versions": software_versions()}
