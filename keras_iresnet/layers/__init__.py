"""Keras 3 layers of keras_iresnet."""

from keras_iresnet.layers.activations import LipSwish, get_activation
from keras_iresnet.layers.base import InvertibleLayer
from keras_iresnet.layers.bases import DiagonalGaussian, StandardNormal, get_base
from keras_iresnet.layers.data_layers import Logit
from keras_iresnet.layers.flow_layers import ActNorm, FlattenEvent, InjectivePad, Squeeze
from keras_iresnet.layers.heads import ClassifierHead
from keras_iresnet.layers.multiscale import FactorOut
from keras_iresnet.layers.residual_block import InvertibleResidualBlock, InvertibleResidualStack
from keras_iresnet.layers.sequential import InvertibleSequential
from keras_iresnet.layers.spectral_layers import SpectralConv2D, SpectralDense, SpectralLayerBase

__all__ = [
    "ActNorm",
    "ClassifierHead",
    "DiagonalGaussian",
    "FactorOut",
    "FlattenEvent",
    "InjectivePad",
    "InvertibleLayer",
    "InvertibleResidualBlock",
    "InvertibleResidualStack",
    "InvertibleSequential",
    "LipSwish",
    "Logit",
    "SpectralConv2D",
    "SpectralDense",
    "SpectralLayerBase",
    "Squeeze",
    "StandardNormal",
    "get_activation",
    "get_base",
]
