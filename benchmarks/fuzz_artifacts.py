"""Fuzzing of artifact loading: N seeded hostile variants of a small artifact, each outcome counted.

Every named hostile case of issue 12 (path tricks, size bombs, malformed and lying manifests, bad
tensors, tokenizer and samples damage) plus N seeded random mutations (truncation, byte flips, manifest
field replacements / deletions, tensor values and dtypes; each left unsigned like an accident or re-signed
like a forger), loaded by ``sparsekit.load`` + ``verify`` in a worker capped at ``--memory-gib`` of address
space and ``--timeout`` seconds per case (tests/artifact_fuzz.py has the cases and the outcome rules).
Hangs, crashes, memory blow-ups and silent wrong answers must all be 0; ``forged_wrong_model`` counts
re-signed tensor-value changes that the recorded samples do not exercise: the accepted forger case.

    python benchmarks/fuzz_artifacts.py --n 5000 --seed 0
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from artifact_fuzz import FAILURES, OUTCOMES, build_pristine, make_cases, run_cases  # noqa: E402

from results_io import RESULTS, write_result  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from sparsekit.machine import header  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="seeded random mutations (after the named cases)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60, help="seconds per case before it counts as a hang")
    parser.add_argument("--memory-gib", type=float, default=3, help="RLIMIT_AS of the loading worker")
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz_artifacts")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sparsekit-fuzz-") as tmp:
        pristine = build_pristine(Path(tmp))
        cases = make_cases(pristine, Path(tmp) / "cases", args.seed, args.n)
        results = run_cases(pristine, cases, args.timeout, int(args.memory_gib * (1 << 30)))
    counts = collections.Counter(r["outcome"] for r in results)
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in results:  # named cases one row each; random ones grouped by mutation kind
        by_kind[r["case"] if r["id"] < len(cases) - args.n else f"{r['case']} (random)"][r["outcome"]] += 1
    data = {
        "benchmark": "fuzz_artifacts", **header(),
        "settings": {"named_cases": len(cases) - args.n, "random_mutations": args.n, "seed": args.seed,
                     "timeout_s": args.timeout, "memory_limit_gib": args.memory_gib},
        "counts": {o: counts.get(o, 0) for o in OUTCOMES},
        "failures": {o: counts.get(o, 0) for o in FAILURES},
        "ok": all(counts.get(o, 0) == 0 for o in FAILURES),
        "wall_s": round(time.perf_counter() - started, 1),
        "slowest_case_s": max(r["seconds"] for r in results),
        # the named cases, and the random ones that did not end in a clean ArtifactError
        "cases": [{k: r[k] for k in ("id", "case", "signed", "outcome", "detail", "seconds")} for r in results
                  if r["id"] < len(cases) - args.n or r["outcome"] != "artifact_error"],
    }
    lines = [
        "# Artifact loading under fuzzing",
        "",
        f"`python benchmarks/fuzz_artifacts.py --n {args.n} --seed {args.seed}`: {len(cases)} hostile artifacts "
        f"({len(cases) - args.n} named cases of issue 12 + {args.n} seeded random mutations), each loaded with "
        f"`sparsekit.load` + `verify` in a worker limited to {args.memory_gib:g} GiB of address space and "
        f"{args.timeout:g} s. Machine: {data['machine'].get('cpu', '?')}; torch {data['versions'].get('torch')}. "
        f"Wall time {data['wall_s']} s, slowest case {data['slowest_case_s']} s.",
        "",
        "| outcome | count |",
        "|---|---:|",
        *[f"| {o} | {counts.get(o, 0)} |" for o in OUTCOMES],
        "",
        f"Hangs, crashes, memory blow-ups and silent wrong answers: **{sum(data['failures'].values())}**. "
        "`forged_wrong_model`: re-signed changes of tensor values that load, pass `verify` (its recorded samples do "
        "not exercise them) and answer differently: the forger case of the threat model (README), a wrong model "
        "that cannot harm the host.",
        "",
        "| case | outcomes |",
        "|---|---|",
        *[f"| {kind} | {', '.join(f'{o} {n}' for o, n in sorted(c.items()))} |" for kind, c in by_kind.items()],
    ]
    write_result(args.out.with_suffix(""), data, lines, indent=1, quiet=True)
    print("\n".join(lines[:16]))
    sys.exit(0 if data["ok"] else 1)


if __name__ == "__main__":
    main()
