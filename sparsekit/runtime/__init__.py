"""sparsekit's CPU encoder runtime (fused layers over packed tokens): :class:`FusedEncoder`, built by
``sparsekit.compile``; :mod:`~sparsekit.runtime.packing` turns padded batches into packed tokens and back."""
from sparsekit.runtime.encoder import MATRICES, RUNTIME_BACKENDS, FusedEncoder, LayerWeights, layer_weights, \
    unsupported_reason

__all__ = ["MATRICES", "RUNTIME_BACKENDS", "FusedEncoder", "LayerWeights", "layer_weights", "unsupported_reason"]
