"""benchmarks/results_io.py, the one writer of the benchmark scripts' result files: the JSON layouts, the markdown
as text or lines, what is printed; and the committed results, re-rendered from their JSON by the scripts' own
renderers and re-written by the writer, byte for byte (nothing is timed, nothing is written under
benchmarks/results).

Committed reports that cannot be re-rendered from their JSON, left out below: accuracy_sst2_cpu and
accuracy_sst2_issue7_cpu (their JSON predates ``metric_names``), serve_load_cpu (written before the title named the
task types), fuzz_artifacts (its per-kind table counts the random mutations that ended in a clean ArtifactError,
which the JSON does not list); sdpa_head_width has no report.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from benchmark_scripts import BENCHMARKS, load_script

RESULTS = BENCHMARKS / "results"

#: Committed result stem -> (script, its renderer, JSON indent, final newline after the JSON).
RENDERED = {
    "abp_lr_sst2_cpu": ("abp_score_lr", "markdown", 2, True),
    "accuracy_conll2003_cpu": ("accuracy", "report.to_markdown", 2, True),
    "accuracy_conll2003_kd_cpu": ("accuracy", "report.to_markdown", 2, True),
    "accuracy_squad_resplit_cpu": ("accuracy", "report.to_markdown", 2, True),
    "accuracy_sst2_block_cpu": ("accuracy", "report.to_markdown", 2, True),
    "accuracy_sst2_softmvp_cpu": ("accuracy", "report.to_markdown", 2, True),
    "structured_smp_cpu": ("accuracy", "structure_markdown", 2, True),
    "architectures_cpu": ("architectures_cpu", "markdown", 2, True),
    "attention_cpu": ("attention_cpu", "markdown", 2, True),
    "export_compaction": ("export_compaction", "to_markdown", 2, True),
    "ffn_cpu": ("ffn_cpu", "markdown", 2, True),
    "int8_accuracy_sst2_cpu": ("int8_accuracy", "markdown_lines", 1, False),
    "int8_accuracy_sst2_cpu_zen_w7": ("int8_accuracy", "markdown_lines", 1, False),
    "kernels_cpu": ("kernels_cpu", "markdown", 2, True),
    "kernels_cpu_bert95": ("kernels_cpu", "markdown", 2, True),
    "kernels_cpu_minilm": ("kernels_cpu", "markdown", 2, True),
    "kernels_int8_cpu": ("kernels_int8_cpu", "markdown", 2, True),
    "kernels_int8_cpu_avx2": ("kernels_int8_cpu", "markdown", 2, True),
    "kernels_int8_cpu_zen_s14": ("kernels_int8_cpu", "markdown", 2, True),
    "kernels_int8_cpu_zen_s15_split": ("kernels_int8_cpu", "markdown", 2, True),
    "epilogue_cpu": ("epilogue_cpu", "markdown", 2, True),
    "main_job_seeds_cpu": ("main_job_seeds", "markdown", 2, True),
    "op_validation_cost": ("op_validation_cost", "markdown", 2, True),
    "runtime_cpu": ("runtime_cpu", "markdown", 1, False),
    "runtime_cpu_avx2": ("runtime_cpu", "markdown", 1, False),
    "runtime_cpu_zen_int8_s14": ("runtime_cpu", "markdown", 1, False),
    "runtime_profile_cpu": ("runtime_profile", "markdown_lines", 1, False),
    "runtime_profile_cpu_avx2": ("runtime_profile", "markdown_lines", 1, False),
    "torch_compile_over_fused": ("torch_compile_over_fused", "markdown_lines", 1, False),
}


@pytest.fixture(scope="module")
def results_io():
    return load_script("results_io")


def _renderer(script: str, name: str):
    obj = load_script(script)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("stem", sorted(RENDERED))
def test_committed_result_is_rewritten_byte_for_byte(stem, results_io, tmp_path, capsys):
    script, renderer, indent, final_newline = RENDERED[stem]
    result = json.loads((RESULTS / f"{stem}.json").read_text())
    markdown = _renderer(script, renderer)(result)
    path = results_io.write_result(tmp_path / stem, result, markdown, indent=indent, final_newline=final_newline)
    assert path == tmp_path / f"{stem}.json"
    assert path.read_bytes() == (RESULTS / f"{stem}.json").read_bytes()
    assert (tmp_path / f"{stem}.md").read_bytes() == (RESULTS / f"{stem}.md").read_bytes()
    # printed as the script printed it: a text with print's newline after it, lines joined (print adds the last)
    printed = (RESULTS / f"{stem}.md").read_text() + ("\n" if isinstance(markdown, str) else "")
    assert capsys.readouterr().out == printed


def test_json_layouts_and_folders(results_io, tmp_path):
    data = {"a": [1, 2], "b": {"c": None}}
    two = results_io.write_json(tmp_path / "new" / "deeper" / "two.json", data)
    assert two.read_text() == json.dumps(data, indent=2) + "\n"
    one = results_io.write_json(tmp_path / "one.json", data, indent=1, final_newline=False)
    assert one.read_text() == json.dumps(data, indent=1)
    odd = results_io.write_json(tmp_path / "odd.json", {"p": tmp_path}, default=str)
    assert json.loads(odd.read_text()) == {"p": str(tmp_path)}


def test_markdown_text_is_written_as_is_and_printed(results_io, tmp_path, capsys):
    path = results_io.write_result(tmp_path / "r", {"x": 1}, "# title\n\n| a |\n")
    assert path == tmp_path / "r.json" and path.read_text() == '{\n  "x": 1\n}\n'
    assert (tmp_path / "r.md").read_text() == "# title\n\n| a |\n"
    assert capsys.readouterr().out == "# title\n\n| a |\n\n"


def test_markdown_lines_get_a_final_newline_in_the_file_only(results_io, tmp_path, capsys):
    results_io.write_result(tmp_path / "r", {}, ["# title", "", "| a |"])
    assert (tmp_path / "r.md").read_text() == "# title\n\n| a |\n"
    assert capsys.readouterr().out == "# title\n\n| a |\n"


def test_quiet_no_markdown_and_stems_with_dots(results_io, tmp_path, capsys):
    results_io.write_result(tmp_path / "q", {}, "text\n", quiet=True)
    assert (tmp_path / "q.md").read_text() == "text\n"
    path = results_io.write_result(tmp_path / "sub" / "x.v2", {"y": 2})
    assert path == tmp_path / "sub" / "x.v2.json" and not (tmp_path / "sub" / "x.v2.md").exists()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.v2.json"]
    assert capsys.readouterr().out == ""


def test_results_folder_is_the_committed_one(results_io):
    assert results_io.RESULTS.resolve() == RESULTS.resolve()


def test_timing_entries_carry_the_steal_and_reports_state_it(results_io):
    entry = results_io.timing_ms({"median": 0.002, "p25": 0.001, "p75": 0.003, "runs": 7, "steal": 0.25})
    assert entry == {"median_ms": 2.0, "p25_ms": 1.0, "p75_ms": 3.0, "runs": 7, "steal": 0.25}
    assert results_io.timing_ms({"median": 0.002, "p25": 0.001, "p75": 0.003, "runs": 7})["steal"] is None
    result = {"rows": [{"timing": {"steal": 0.01}}, {"timing": {"steal": None}}], "x": {"a": {"steal": 0.08}},
              "y": [{"steal": 0.02}]}
    assert sorted(results_io.steal_values(result)) == [0.01, 0.02, 0.08]
    line = results_io.steal_lines(result)[0]
    assert "median 2.0%" in line and "at most 8.0%" in line and "shared" in line
    assert results_io.most_steal({"a": {"steal": 0.01}, "b": {"steal": None}, "c": {"steal": 0.03}}) == 0.03
    assert results_io.most_steal({"a": {"median_ms": 1.0}}) is None
    assert "shared" not in results_io.steal_lines({"t": {"steal": 0.01}})[0]
    assert results_io.steal_lines({"rows": [{"median_ms": 1.0}]}) == []  # results from before steal was recorded


def test_isa_avx2_reruns_the_script_under_the_limits_once(results_io, monkeypatch):
    from sparsekit.machine import AVX2_LIMITS

    for name in AVX2_LIMITS:
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(results_io.os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)))
    monkeypatch.setattr(results_io, "cpu_flags", lambda: ["avx2", "fma", "avx512f"])
    monkeypatch.setattr(results_io.sys, "argv", ["benchmarks/x.py", "--isa", "avx2"])
    results_io.run_with_isa("native")
    assert calls == []
    results_io.run_with_isa("avx2", ["--isa", "avx2", "--quick"])
    (exe, argv, env), = calls
    assert argv[1:] == ["benchmarks/x.py", "--isa", "avx2", "--quick"]
    assert all(env[k] == v for k, v in AVX2_LIMITS.items())
    for name, value in AVX2_LIMITS.items():  # the re-run process: nothing to do
        monkeypatch.setenv(name, value)
    results_io.run_with_isa("avx2")
    assert len(calls) == 1
    monkeypatch.setattr(results_io, "cpu_flags", lambda: ["fma"])
    for name in AVX2_LIMITS:
        monkeypatch.delenv(name)
    with pytest.raises(SystemExit, match="lacks AVX2"):
        results_io.run_with_isa("avx2")


def test_results_record_and_state_the_isa_limits(results_io, monkeypatch):
    from sparsekit.machine import AVX2_LIMITS, machine_info

    for name in AVX2_LIMITS:
        monkeypatch.delenv(name, raising=False)
    assert machine_info()["isa_limits"] == {}
    assert results_io.isa_limit_lines(machine_info()) == []
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    info = machine_info()
    assert info["isa_limits"] == {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert info["aten_isa"] == torch.backends.cpu.get_cpu_capability()
    (line, _), = [results_io.isa_limit_lines(info)]
    assert "MKL_ENABLE_INSTRUCTIONS=AVX2" in line and "not timed" in line


def test_engines_that_cannot_be_limited_are_left_out_under_limits(monkeypatch):
    from types import SimpleNamespace

    runtime_cpu, kernels_int8_cpu = load_script("runtime_cpu"), load_script("kernels_int8_cpu")
    monkeypatch.setattr(runtime_cpu, "isa_limits", lambda: {"SPARSEKIT_ISA": "avx2"})
    engines, missing, ort = runtime_cpu.dense_engines(object(), SimpleNamespace(torch_compile=False, threads=1))
    assert list(engines) == ["eager"] and ort is None
    assert "cannot be limited" in missing["onnxruntime"]
    monkeypatch.setattr(kernels_int8_cpu, "isa_limits", lambda: {"SPARSEKIT_INT8_ISA": "avx2"})
    monkeypatch.setattr(kernels_int8_cpu, "SHAPES", ((8, 16),))
    monkeypatch.setattr(kernels_int8_cpu, "measure_interleaved",
                        lambda fns, *a, **k: {n: {"median": 1e-3, "p25": 1e-3, "p75": 1e-3, "runs": 1} for n in fns})
    args = SimpleNamespace(int8_isas=None, tokens=[4], sparsity=[0.5], rounds=1, warmup=0, repeats=1, min_seconds=0,
                           weight_bits=7)
    row, = kernels_int8_cpu.bench_layers(args)
    assert "dense_int8_dyn" not in row["timings"] and "cannot be limited" in row["dense_int8_dyn_unavailable"]
    assert row["weight_bits"] == 7 and any(name.endswith(",w8]") for name in row["timings"])  # 8-bit alongside


def test_isa_avx2_reruns_a_real_script_under_the_limits(tmp_path):
    from sparsekit.kernels import cpu, cpu_int8
    from sparsekit.machine import AVX2_LIMITS, cpu_flags

    if not {"avx2", "fma"} <= set(cpu_flags()):
        pytest.skip("this CPU lacks AVX2 / FMA")
    if not (cpu.available() and cpu_int8.available()):
        pytest.skip("the C++ kernels are not built")
    env = {k: v for k, v in os.environ.items() if k not in AVX2_LIMITS}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS.parent), env.get("PYTHONPATH", "")])
    out = tmp_path / "k"
    subprocess.run([sys.executable, str(BENCHMARKS / "kernels_int8_cpu.py"), "--isa", "avx2", "--tokens", "4",
                    "--sparsity", "0.9", "--rounds", "1", "--repeats", "1", "--warmup", "0", "--min-seconds", "0",
                    "--threads", "1", "--out", str(out)], check=True, env=env, capture_output=True, timeout=600)
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["machine"]["isa_limits"] == AVX2_LIMITS and data["machine"]["aten_isa"] == "AVX2"
    assert data["fp32_isa"] == "avx2" and data["int8_isa"] == "avx2"
    assert all("dense_int8_dyn" not in r["timings"] for r in data["layers"])
    assert "Instruction set limited" in out.with_suffix(".md").read_text()


def test_cpu_name_carries_the_x86_family_and_model(monkeypatch):
    from sparsekit import machine

    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    amd = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
           "model name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\ncpu family\t: 25\nmodel\t\t: 17\n"
           "model name\t: AMD EPYC\n")
    assert machine._cpuinfo(amd) == ("AMD EPYC (family 25, model 17)", {"fpu", "avx2", "fma"})
    arm = "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"  # no family / model lines
    assert machine._cpuinfo(arm) == ("unknown", {"fp", "asimd"})
