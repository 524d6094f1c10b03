"""The logit pre-transform of image density models (RealNVP; Residual Flows)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet._tf import check
from keras_iresnet.layers.invertible import InvertibleLayer

if TYPE_CHECKING:
    from typing import Any

    from keras_iresnet.logdet import LogDetEstimator

__all__ = ["Logit"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class Logit(InvertibleLayer):
    """``x in [0, 1) -> logit(alpha + (1 - 2 alpha) x)`` (RealNVP, Dinh et al. 2017;
    Residual Flows).

    Maps dequantized images from the unit cube to the real line, where a flow
    with a Gaussian base has a chance: MNIST's flat background becomes a
    near-constant value far out in the tail rather than a wall at 0.
    ``alpha`` keeps the map finite at 0 and 1 (Residual Flows: 1e-6 for MNIST,
    0.05 for CIFAR-10).

    log|det| per example (equation (3) applied elementwise, ``s = alpha + (1 - 2 alpha) x``)::

        sum_i [ log(1 - 2 alpha) - log s_i - log(1 - s_i) ]

    It is part of the density: a model whose first layer is ``Logit`` still
    returns ``ln p(x)`` of the data ``x`` in ``[0, 1)^D``, so bits/dim of 8-bit
    data keep their meaning (see :mod:`keras_iresnet.models`). The inverse is
    ``(sigmoid(y) - alpha) / (1 - 2 alpha)``.

    Args:
      alpha: in ``(0, 0.5)``.
      validate_args: check that inputs lie in ``[0, 1]`` (a clear error instead
        of NaN; eager: ``ValueError``, graph: a failed assertion).

    Shapes: any ``[batch, ...]`` -> same.
    """

    def __init__(self, alpha: float = 1e-6, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        alpha = validation.open_unit("alpha", alpha)
        if alpha >= 0.5:
            raise ValueError(f"alpha must satisfy 0 < alpha < 0.5; got alpha={alpha!r}.")
        self.alpha = alpha
        self.validate_args = bool(validate_args)

    def _check_range(self, x):
        if not self.validate_args:
            return x
        message = (
            f"Logit {self.name!r} expects inputs in [0, 1] (dequantized images, e.g. "
            "keras_iresnet.data.image_dataset(..., task='density')); got values outside."
        )
        inside = tf.reduce_all((x >= 0) & (x <= 1))
        return check(
            inside,
            message,
            x,
            details=lambda: (
                f"(min {float(tf.reduce_min(x)):.4g}, max {float(tf.reduce_max(x)):.4g})"
            ),
        )

    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | LogDetEstimator | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        x = self._check_range(x)
        s = self.alpha + (1.0 - 2.0 * self.alpha) * x
        y = tf.math.log(s) - tf.math.log1p(-s)
        elementwise = math.log1p(-2.0 * self.alpha) - tf.math.log(s) - tf.math.log1p(-s)
        return y, tf.reduce_sum(tf.reshape(elementwise, [tf.shape(x)[0], -1]), axis=1)

    def _inverse(self, y, settings):
        return (tf.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(alpha=self.alpha, validate_args=self.validate_args)
        return config
