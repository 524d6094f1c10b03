"""Spectral-normalized layers: the shared machinery, dense and convolution."""

from keras_iresnet.layers.spectral.base import (
    CONVERGED_ITERATIONS,
    CONVERGED_RTOL,
    UPDATE_POLICIES,
    SpectralLayerBase,
)
from keras_iresnet.layers.spectral.conv import SpectralConv2D
from keras_iresnet.layers.spectral.dense import SpectralDense

__all__ = [
    "CONVERGED_ITERATIONS",
    "CONVERGED_RTOL",
    "UPDATE_POLICIES",
    "SpectralConv2D",
    "SpectralDense",
    "SpectralLayerBase",
]
