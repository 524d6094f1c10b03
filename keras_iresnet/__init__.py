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

from keras_iresnet import bridge, callbacks, inverse, logdet, spectral  # noqa: E402
from keras_iresnet import certify, data, models, train  # noqa: E402
from keras_iresnet.bijector import IResNetBijector, density_model  # noqa: E402
from keras_iresnet.layers import (  # noqa: E402
    ActNorm,
    InjectivePad,
    InvertibleLayer,
    InvertibleResidualBlock,
    InvertibleSequential,
    LipSwish,
    SpectralConv2D,
    SpectralDense,
    Squeeze,
)

__version__ = "0.1.0"

__all__ = [
    "ActNorm",
    "IResNetBijector",
    "bridge",
    "density_model",
    "InjectivePad",
    "InvertibleLayer",
    "InvertibleResidualBlock",
    "InvertibleSequential",
    "LipSwish",
    "SpectralConv2D",
    "SpectralDense",
    "Squeeze",
    "callbacks",
    "certify",
    "data",
    "models",
    "train",
    "inverse",
    "logdet",
    "spectral",
]
