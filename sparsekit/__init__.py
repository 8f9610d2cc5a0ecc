"""sparsekit: prune BERT-style models for a task, export them compact, run them fast.

Python API (the CLI ``sparsekit ...`` calls the same functions)::

    import sparsekit
    result = sparsekit.prune(sparsekit.PruneConfig(method="smp-s", keep=0.1, task="sst2"))
    sparsekit.export_model(result.output_dir, "artifacts/sst2")  # exact compaction + formats, one directory
    model = sparsekit.load("artifacts/sst2")                     # ready model, tokenizer attached
    sparsekit.compile(model)                                     # fastest kernel per layer, measured here
"""
__version__ = "0.1.0"

from sparsekit.export import Predictor, compact, load, verify  # noqa: E402
from sparsekit.export import export as export_model  # noqa: E402  (sparsekit.export stays the subpackage)
from sparsekit.compiler import compile  # noqa: E402
from sparsekit.prune import PruneConfig, PrunedModel, PruneResult, load_pruned, prune  # noqa: E402

__all__ = ["PruneConfig", "PruneResult", "PrunedModel", "Predictor", "compact", "compile", "export_model", "load",
           "load_pruned", "prune", "verify", "__version__"]
