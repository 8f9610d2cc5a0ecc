"""Export: exact compaction of pruned models into one-directory artifacts of per-matrix storage formats.

- :mod:`sparsekit.export.heads`: the task types (sequence classification, token classification, QA) and their
  Hugging Face heads; :mod:`sparsekit.export.modeling`: the compacted model with the head of its task type.
- :mod:`sparsekit.export.compact`: function-preserving removal of empty rows / columns / heads, bias folding.
- :mod:`sparsekit.export.artifact`: ``export`` / ``load`` / ``verify`` of an artifact directory
  (:mod:`sparsekit.export.samples`: the recorded sample inputs and outputs ``verify`` re-runs, per task type).
- :mod:`sparsekit.export.predict`: ``Predictor``, predictions by task type (labels, entities, answers).
- :mod:`sparsekit.export.lowrank`: the per-matrix low-rank choice for LPAF runs.
- :mod:`sparsekit.export.manifest` / :mod:`sparsekit.export.safeio`: the manifest's schema and digest, and
  reading an artifact's untrusted files safely (the loader's defences, see the README's threat model).

The storage formats themselves (dense / CSR / BSR / low-rank) are :mod:`sparsekit.formats`, shared with the kernels.
"""
from sparsekit.export.artifact import ExportResult, FormatLinear, export, load, verify
from sparsekit.export.compact import CompactionReport, compact
from sparsekit.export.errors import ArtifactError
from sparsekit.export.predict import Prediction, Predictor

__all__ = ["ArtifactError", "CompactionReport", "ExportResult", "FormatLinear", "Prediction", "Predictor", "compact",
           "export", "load", "verify"]
