"""Keras 3 layers of keras_iresnet, each in a module of its own job.

- :mod:`~keras_iresnet.layers.invertible`: the contract every invertible layer speaks
  (:class:`InvertibleLayer`) and stacked parameters (:class:`Stackable`);
- :mod:`~keras_iresnet.layers.spectral`: spectral-normalized dense and conv layers;
- :mod:`~keras_iresnet.layers.activations`: 1-Lipschitz activations (:class:`LipSwish`);
- :mod:`~keras_iresnet.layers.residual_function`: ``g`` and its Lipschitz bound;
- :mod:`~keras_iresnet.layers.residual`: invertible residual blocks and stacks;
- :mod:`~keras_iresnet.layers.normalization`, :mod:`~keras_iresnet.layers.reshaping`,
  :mod:`~keras_iresnet.layers.logit`, :mod:`~keras_iresnet.layers.containers`: the
  data-space and structural invertible layers;
- :mod:`~keras_iresnet.layers.distributions`: base distributions (no TFP);
- :mod:`~keras_iresnet.layers.heads`: the classification head;
- :mod:`~keras_iresnet.layers.walk`: finding the spectral layers and stacks of a model.
"""

from keras_iresnet.layers.activations import LipSwish, get_activation
from keras_iresnet.layers.containers import FactorOut, InvertibleSequential
from keras_iresnet.layers.distributions import (
    ConditionalDiagonalGaussian,
    DiagonalGaussian,
    StandardNormal,
    get_base,
)
from keras_iresnet.layers.heads import ClassifierHead
from keras_iresnet.layers.invertible import InvertibleLayer, Stackable
from keras_iresnet.layers.logit import Logit
from keras_iresnet.layers.normalization import ActNorm
from keras_iresnet.layers.reshaping import FlattenEvent, InjectivePad, Squeeze
from keras_iresnet.layers.residual import InvertibleResidualBlock, InvertibleResidualStack
from keras_iresnet.layers.spectral import SpectralConv2D, SpectralDense, SpectralLayerBase

__all__ = [
    "ActNorm",
    "ClassifierHead",
    "ConditionalDiagonalGaussian",
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
    "Stackable",
    "StandardNormal",
    "get_activation",
    "get_base",
]
