"""ActNorm (Glow): a per-channel or per-position affine map with data-dependent initialization."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.layers.invertible import InvertibleLayer, Stackable

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from keras_iresnet.logdet import LogDetEstimator

__all__ = ["ActNorm"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class ActNorm(Stackable, InvertibleLayer):
    """Affine map ``y = (x + bias) * exp(log_scale)`` (Glow, Kingma & Dhariwal 2018).

    Args:
      per_position: ``False`` (default): one scale and bias per channel, shared
        by all positions (Glow's ActNorm). ``True``: one per dimension of the
        event (Residual Flows' ActNorm over the flattened event), which lets a
        density model scale every pixel on its own.
      variance_floor: the data-dependent initialization uses
        ``max(variance, variance_floor)`` (Residual Flows: 0.2), so near-constant
        dimensions (an image's background) do not start with huge scales.
      epsilon: added to the standard deviation at initialization.
      stack: hold this many independent parameter sets ``[stack, ...]`` (for
        residual stacks), or None.

    Data-dependent initialization: on the first call with ``training=True`` the
    bias and scale are set so that that batch has zero mean and unit variance
    (per channel or per position). Under a ``tf.distribute`` strategy the
    replicas' statistics are averaged (``MEAN`` aggregation), so all replicas
    hold the same values. An uninitialized ActNorm is the identity (so inverses
    before training work). The models initialize on a larger first batch (see
    :class:`keras_iresnet.callbacks.DataDependentInit`).

    log|det| per example: ``positions * sum(log_scale)`` (per channel) or
    ``sum(log_scale)`` (per position).

    Shapes: ``[batch, features]`` or ``[batch, H, W, C]`` -> same.
    """

    def __init__(
        self,
        per_position: bool = False,
        variance_floor: float = 0.0,
        epsilon: float = 1e-6,
        stack: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.per_position = bool(per_position)
        self.variance_floor = validation.non_negative_float("variance_floor", variance_floor)
        self.epsilon = validation.non_negative_float("epsilon", epsilon)
        self.set_stack(stack)

    def build(self, input_shape: Sequence[int | None]) -> None:
        input_shape = validation.input_shape(self, input_shape, (2, 4))
        self.parameter_shape = (
            tuple(input_shape[1:]) if self.per_position else (int(input_shape[-1]),)
        )
        self.positions = 1 if self.per_position else int(math.prod(input_shape[1:-1]))
        shape = self.stacked_shape(self.parameter_shape)
        self.bias = self.add_weight(
            name="bias", shape=shape, initializer="zeros", aggregation="mean"
        )
        self.log_scale = self.add_weight(
            name="log_scale", shape=shape, initializer="zeros", aggregation="mean"
        )
        self.initialized = self.add_weight(
            name="initialized",
            shape=(),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    # -- the math, shared with residual stacks -----------------------------------
    def initial_values(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(bias, log_scale)`` that give the batch ``x`` zero mean and unit variance."""
        axes = [0] if self.per_position else list(range(x.shape.rank - 1))
        mean = tf.reduce_mean(x, axis=axes)
        variance = tf.maximum(tf.math.reduce_variance(x, axis=axes), self.variance_floor)
        return -mean, -tf.math.log(tf.sqrt(variance) + self.epsilon)

    def affine(
        self, x: tf.Tensor, bias: tf.Tensor, log_scale: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """``(y, log_det[batch])`` of the affine map with the given parameters."""
        y = (x + bias) * tf.exp(log_scale)
        log_det = tf.reduce_sum(log_scale) * float(self.positions)
        return y, log_det * tf.ones(tf.shape(x)[:1], dtype=x.dtype)

    def inverse_affine(self, y: tf.Tensor, bias: tf.Tensor, log_scale: tf.Tensor) -> tf.Tensor:
        return y * tf.exp(-log_scale) - bias

    def is_initialized(self) -> tf.Tensor:
        return tf.convert_to_tensor(self.initialized) > 0.5

    def parameters_for_step(
        self, x: tf.Tensor, bias: tf.Tensor, log_scale: tf.Tensor, training: bool | None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The parameters a training call uses: the initial values while uninitialized.

        The statistics are computed in a ``tf.cond`` branch, so an initialized
        layer pays nothing for them (no assignment happens in the branch).
        """
        if not training:
            return bias, log_scale
        return tf.cond(
            self.is_initialized(), lambda: (bias, log_scale), lambda: self.initial_values(x)
        )

    def store_initialization(self, bias: tf.Tensor, log_scale: tf.Tensor) -> None:
        """Assign the initial values once (written without ``tf.cond``: a cross-replica
        ``MEAN`` assignment cannot sit in a control-flow branch under a strategy)."""
        done = self.is_initialized()
        self.bias.assign(tf.where(done, tf.convert_to_tensor(self.bias), bias))
        self.log_scale.assign(tf.where(done, tf.convert_to_tensor(self.log_scale), log_scale))
        self.initialized.assign(tf.ones_like(tf.convert_to_tensor(self.initialized)))

    # -- protocol -------------------------------------------------------------------
    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | LogDetEstimator | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        self.refuse_if_stacked()
        bias, log_scale = tf.convert_to_tensor(self.bias), tf.convert_to_tensor(self.log_scale)
        if training:
            bias, log_scale = self.parameters_for_step(x, bias, log_scale, training)
            self.store_initialization(bias, log_scale)
        return self.affine(x, bias, log_scale)

    def _inverse(self, y, settings):
        self.refuse_if_stacked()
        return self.inverse_affine(
            y, tf.convert_to_tensor(self.bias), tf.convert_to_tensor(self.log_scale)
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            per_position=self.per_position,
            variance_floor=self.variance_floor,
            epsilon=self.epsilon,
            stack=self.stack,
        )
        return config
