"""sparsekit's CPU encoder runtime (fused layers over packed tokens): :class:`FusedEncoder`, built by
``sparsekit.compile``; :mod:`~sparsekit.runtime.models` says which models it runs and puts it into them;
:mod:`~sparsekit.runtime.packing` turns padded batches into packed tokens and back;
:mod:`~sparsekit.runtime.profile` times a compiled forward by stage, inside the real forward."""
from sparsekit.runtime.encoder import MATRICES, RUNTIME_BACKENDS, FusedEncoder, LayerWeights, layer_weights, \
    stacked_layer
from sparsekit.runtime.models import FusedLayers, runtime_of, unsupported_reason
from sparsekit.runtime.profile import StageProfile, stage_profile

__all__ = ["MATRICES", "RUNTIME_BACKENDS", "FusedEncoder", "FusedLayers", "LayerWeights", "layer_weights",
           "StageProfile", "runtime_of", "stacked_layer", "stage_profile", "unsupported_reason"]
