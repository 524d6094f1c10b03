"""Base distributions of density models, as Keras layers (their parameters are Keras weights).

A flow ``z = F(x)`` has density ``ln p(x) = ln p_Z(F(x)) + ln|det J_F(x)|``
(equation (3)); these layers are ``p_Z`` over the latent event:

- :class:`StandardNormal` -- ``N(0, I)`` (the paper, Residual Flows);
- :class:`DiagonalGaussian` -- ``N(mu, diag(sigma^2))`` with one learned mean and
  log-std per latent dimension, zero-initialized (the official i-ResNet code's
  learned prior, ``prior_mu`` / ``prior_logstd``), so the model can give every
  dimension its own scale from the first step.

Each has ``log_prob(z) -> [batch]`` and ``sample(n, temperature, seed)``; the same
distribution as a TFP object (built on the ``tf.Variable`` objects behind the Keras
weights, so TFP training loops train them) is
:func:`keras_iresnet.bijector.base_distribution` (this module imports no TFP).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from keras_iresnet import validation

__all__ = ["StandardNormal", "DiagonalGaussian", "get_base", "BASES"]

_LOG_2PI = math.log(2.0 * math.pi)


class _Base(keras.layers.Layer):
    """Shared shape handling: built on ``[batch, *latent_shape]``."""

    def build(self, input_shape):
        self._set_latent_shape(input_shape)

    def _set_latent_shape(self, input_shape):
        self.latent_shape = tuple(int(d) for d in input_shape[1:])

    def call(self, inputs):
        return self.log_prob(inputs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def _noise(self, n, temperature, seed):
        temperature = validation.positive_float("temperature", temperature)
        n = validation.positive_int("n", n)
        return temperature * tf.random.normal((n,) + self.latent_shape, seed=seed)

    @staticmethod
    def _sum_event(t):
        return tf.reduce_sum(tf.reshape(t, [tf.shape(t)[0], -1]), axis=1)


@keras.saving.register_keras_serializable(package="keras_iresnet")
class StandardNormal(_Base):
    """``N(0, I)`` over the latent event. Shapes: ``log_prob``: ``[batch, ...] -> [batch]``."""

    def log_prob(self, z):
        z = tf.convert_to_tensor(z)
        return self._sum_event(-0.5 * tf.square(z) - 0.5 * _LOG_2PI)

    def sample(self, n, temperature=1.0, seed=None):
        """``n`` latents ``T * eps``, ``eps ~ N(0, I)``: ``[n, *latent_shape]``."""
        return self._noise(n, temperature, seed)


@keras.saving.register_keras_serializable(package="keras_iresnet")
class DiagonalGaussian(_Base):
    """``N(mu, diag(exp(2 log_sigma)))`` with a learned mean and log-std per latent dimension.

    Both start at zero (a standard normal). Shapes: ``log_prob``: ``[batch, ...] -> [batch]``.
    """

    def build(self, input_shape):
        self._set_latent_shape(input_shape)  # (not super().build: Keras would lock the layer)
        self.loc = self.add_weight(name="loc", shape=self.latent_shape, initializer="zeros")
        self.log_scale = self.add_weight(
            name="log_scale", shape=self.latent_shape, initializer="zeros"
        )

    def log_prob(self, z):
        z = tf.convert_to_tensor(z)
        log_scale = tf.convert_to_tensor(self.log_scale)
        standardized = (z - self.loc) * tf.exp(-log_scale)
        return self._sum_event(-0.5 * tf.square(standardized) - log_scale - 0.5 * _LOG_2PI)

    def sample(self, n, temperature=1.0, seed=None):
        """``n`` latents ``mu + T * sigma * eps``: ``[n, *latent_shape]``."""
        return self.loc + tf.exp(tf.convert_to_tensor(self.log_scale)) * self._noise(
            n, temperature, seed
        )


BASES = {"standard": StandardNormal, "diagonal": DiagonalGaussian}


def get_base(identifier):
    """A base layer from ``"standard"``, ``"diagonal"``, a serialized layer or a layer instance."""
    if isinstance(identifier, _Base):
        return identifier
    if isinstance(identifier, str) and identifier in BASES:
        return BASES[identifier]()
    if isinstance(identifier, dict):
        layer = keras.saving.deserialize_keras_object(identifier)
        if isinstance(layer, _Base):
            return layer
    raise ValueError(
        f"base must be one of {tuple(BASES)} or a base layer; got base={identifier!r}."
    )
