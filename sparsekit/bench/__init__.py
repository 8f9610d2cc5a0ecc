"""sparsekit.bench: honest latency / throughput benchmarks of a pruned model against the dense baselines.

Python API (``sparsekit bench`` calls exactly this)::

    from sparsekit.bench import BenchConfig, run_bench, compare_files
    result = run_bench(BenchConfig("random:bert-base", "bench/out", sparsity=[0.9], batch=[1, 8], seq=[128]))
    result.data["configs"][0]["variants"]["sparsekit"]["speedup"]    # over dense PyTorch eager
    print(compare_files("a/bench.json", "b/bench.json").markdown())

Modules: ``config`` (BenchConfig, variant names), ``subjects`` (what MODEL names, random masks),
``reconstruct`` (an artifact's original-size dense reference), ``inputs`` (inputs shaped like the task:
QA = question + context windows), ``variants`` / ``onnx`` (the ways to run a model), ``runner`` (the sweep
and the statistics), ``results`` (JSON schema, CSV, no overwriting),
``plot`` (PNG), ``tables`` (rich tables), ``compare`` (two result files), ``cliargs`` (``--batch 1 8``).
"""
from sparsekit.bench.compare import Comparison, compare, compare_files
from sparsekit.bench.config import VARIANTS, BenchConfig
from sparsekit.bench.results import SCHEMA_VERSION, ResultFileError, load
from sparsekit.bench.runner import BenchResult, run_bench
from sparsekit.bench.tables import notes, result_table

__all__ = ["SCHEMA_VERSION", "VARIANTS", "BenchConfig", "BenchResult", "Comparison", "ResultFileError", "compare",
           "compare_files", "load", "notes", "result_table",
           "run_bench"]
