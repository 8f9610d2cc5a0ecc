"""sparsekit: prune BERT-style models for a task, export them compact, run them fast.

Python API (the CLI ``sparsekit ...`` calls the same functions)::

    import sparsekit
    result = sparsekit.prune(sparsekit.PruneConfig(method="smp-s", keep=0.1, task="sst2"))
    pruned = sparsekit.load_pruned(result.output_dir)
"""
__version__ = "0.1.0"

from sparsekit.prune import PruneConfig, PrunedModel, PruneResult, load_pruned, prune  # noqa: E402

__all__ = ["PruneConfig", "PruneResult", "PrunedModel", "load_pruned", "prune", "__version__"]
