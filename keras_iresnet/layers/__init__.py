"""Keras 3 layers of keras_iresnet."""
from keras_iresnet.layers.activations import LipSwish, get_activation
from keras_iresnet.layers.base import InvertibleLayer
from keras_iresnet.layers.flow_layers import ActNorm, InjectivePad, Squeeze
from keras_iresnet.layers.residual_block import InvertibleResidualBlock
from keras_iresnet.layers.sequential import InvertibleSequential
from keras_iresnet.layers.spectral_layers import SpectralConv2D, SpectralDense, SpectralLayerBase

__all__ = [
    "ActNorm",
    "InjectivePad",
    "InvertibleLayer",
    "InvertibleResidualBlock",
    "InvertibleSequential",
    "LipSwish",
    "SpectralConv2D",
    "SpectralDense",
    "SpectralLayerBase",
    "Squeeze",
    "get_activation",
]
