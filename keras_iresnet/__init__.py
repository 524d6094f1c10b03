"""keras_iresnet: Invertible Residual Networks (Behrmann et al., ICML 2019) for Keras 3 and TFP.

Importing the package sets exactly one thing globally: if the environment
variable ``KERAS_BACKEND`` is unset, it is set to ``"tensorflow"`` *before*
``keras`` is imported (our layers use TensorFlow ops directly). Nothing else is
changed: no logging levels, no devices, no random seeds.
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the user's env
    raise ImportError(
        "keras_iresnet needs the TensorFlow backend of Keras 3, but KERAS_BACKEND="
        f"{_keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before importing keras."
    )

from keras_iresnet import (  # noqa: E402  # noqa: E402
    bridge,
    callbacks,
    certify,
    data,
    inverse,
    logdet,
    metrics,
    models,
    recipes,
    runs,
    spectral,
    train,
    validation,
)
from keras_iresnet.bijector import IResNetBijector, density_model  # noqa: E402
from keras_iresnet.inverse import InverseSettings  # noqa: E402
from keras_iresnet.layers import (  # noqa: E402
    ActNorm,
    ClassifierHead,
    DiagonalGaussian,
    FactorOut,
    FlattenEvent,
    InjectivePad,
    InvertibleLayer,
    InvertibleResidualBlock,
    InvertibleResidualStack,
    InvertibleSequential,
    LipSwish,
    Logit,
    SpectralConv2D,
    SpectralDense,
    Squeeze,
    StandardNormal,
)

__version__ = "0.1.0"

__all__ = [
    "ActNorm",
    "ClassifierHead",
    "DiagonalGaussian",
    "FactorOut",
    "FlattenEvent",
    "IResNetBijector",
    "InjectivePad",
    "InverseSettings",
    "InvertibleLayer",
    "InvertibleResidualBlock",
    "InvertibleResidualStack",
    "InvertibleSequential",
    "LipSwish",
    "Logit",
    "SpectralConv2D",
    "SpectralDense",
    "Squeeze",
    "StandardNormal",
    "bridge",
    "callbacks",
    "certify",
    "data",
    "density_model",
    "inverse",
    "logdet",
    "metrics",
    "models",
    "recipes",
    "runs",
    "spectral",
    "train",
    "validation",
]
