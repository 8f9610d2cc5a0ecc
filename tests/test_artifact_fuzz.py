"""Hostile artifacts (issue 12): nothing hangs, crashes, exhausts memory or answers wrong without notice.

The default run loads every named hostile case plus a seeded handful of random mutations in a worker
capped at 3 GiB of address space and 60 s per case (tests/artifact_fuzz.py); ``-m fuzz`` runs 2000 more.
benchmarks/fuzz_artifacts.py is the long run whose counts are committed under benchmarks/results/.
"""
import collections

import pytest
from typer.testing import CliRunner

from artifact_forge import rewrite_manifest
from artifact_fuzz import FAILURES, build_pristine, make_cases, run_cases
from sparsekit.cli import app


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return build_pristine(tmp_path_factory.mktemp("fuzz"))


def _run(pristine, tmp_path, seed, n_random, named):
    results = run_cases(pristine, make_cases(pristine, tmp_path, seed, n_random, named), timeout_s=60,
                        memory_bytes=3 << 30)
    counts = collections.Counter(r["outcome"] for r in results)
    failures = [f"{r['case']}: {r['outcome']} {r['detail']}" for r in results if r["outcome"] in FAILURES]
    assert not failures, "\n".join(failures)
    return counts, results


def test_named_and_seeded_hostile_artifacts(pristine, tmp_path):
    counts, results = _run(pristine, tmp_path, seed=12, n_random=20, named=True)
    assert counts["artifact_error"] >= 70
    lies = {r["case"]: r["outcome"] for r in results if r["case"].startswith("lie:")}
    assert set(lies.values()) <= {"artifact_error", "verify_mismatch"} and len(lies) == 5  # every lie is noticed


@pytest.mark.fuzz
def test_fuzz_long(pristine, tmp_path):
    _run(pristine, tmp_path, seed=1234, n_random=2000, named=False)


@pytest.mark.parametrize("command", [["verify"], ["predict", "--json", "hello"], ["serve", "--no-compile"],
                                     ["bench", "--repeats", "1", "--warmup", "0", "--batch", "1", "--seq", "8"]])
def test_cli_reports_a_hostile_artifact_in_one_line(pristine, tmp_path, command):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(pristine, art)
    rewrite_manifest(art, lambda m: m["checksums"].__setitem__("/dev/zero", "0" * 64))
    extra = ["-o", str(tmp_path / "out")] if command[0] == "bench" else []
    result = CliRunner().invoke(app, [command[0], str(art), *command[1:], *extra])
    assert result.exit_code == 2, result.output
    assert "not a plain file name" in result.output and "Traceback" not in result.output
