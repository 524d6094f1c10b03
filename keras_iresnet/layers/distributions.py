"""Base distributions of density models, as Keras layers (their parameters are Keras weights).

A flow ``z = F(x)`` has density ``ln p(x) = ln p_Z(F(x)) + ln|det J_F(x)|``
(equation (3)); these layers are ``p_Z`` over the latent event:

- :class:`StandardNormal` -- ``N(0, I)`` (the paper, Residual Flows);
- :class:`DiagonalGaussian` -- ``N(mu, diag(sigma^2))`` with one learned mean and
  log-std per latent dimension, zero-initialized (the official i-ResNet code's
  learned prior, ``prior_mu`` / ``prior_logstd``), so the model can give every
  dimension its own scale from the first step;
- :class:`ConditionalDiagonalGaussian` -- ``N(mu(c), diag(sigma(c)^2))`` of a
  conditional flow ``p(x | c)``: ``[mu, log sigma] = A c + a``, zero-initialized
  (a standard normal at the start).

Each has ``log_prob(z) -> [batch]`` and ``sample(n, temperature, seed)`` (the
conditional one with ``context=``); the same distribution as a TFP object (built
on the ``tf.Variable`` objects behind the Keras weights, so TFP training loops
train them) is :func:`keras_iresnet.bijector.base_distribution` (this module
imports no TFP).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.layers.invertible import broadcast_context

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = [
    "StandardNormal",
    "DiagonalGaussian",
    "ConditionalDiagonalGaussian",
    "get_base",
    "BASES",
]

_LOG_2PI = math.log(2.0 * math.pi)


class _Base(keras.layers.Layer):
    """Shared shape handling: built on ``[batch, *latent_shape]``."""

    #: Whether ``log_prob`` and ``sample`` take a context.
    conditional = False

    def build(self, input_shape: Sequence[int | None]) -> None:
        self._set_latent_shape(input_shape)

    def _set_latent_shape(self, input_shape):
        self.latent_shape = tuple(int(d) for d in input_shape[1:])

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.log_prob(inputs)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None]:
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

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        z = tf.convert_to_tensor(z)
        return self._sum_event(-0.5 * tf.square(z) - 0.5 * _LOG_2PI)

    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None) -> tf.Tensor:
        """``n`` latents ``T * eps``, ``eps ~ N(0, I)``: ``[n, *latent_shape]``."""
        return self._noise(n, temperature, seed)


@keras.saving.register_keras_serializable(package="keras_iresnet")
class DiagonalGaussian(_Base):
    """``N(mu, diag(exp(2 log_sigma)))`` with a learned mean and log-std per latent dimension.

    Both start at zero (a standard normal). Shapes: ``log_prob``: ``[batch, ...] -> [batch]``.
    """

    def build(self, input_shape: Sequence[int | None]) -> None:
        self._set_latent_shape(input_shape)  # (not super().build: Keras would lock the layer)
        self.loc = self.add_weight(name="loc", shape=self.latent_shape, initializer="zeros")
        self.log_scale = self.add_weight(
            name="log_scale", shape=self.latent_shape, initializer="zeros"
        )

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        z = tf.convert_to_tensor(z)
        log_scale = tf.convert_to_tensor(self.log_scale)
        standardized = (z - self.loc) * tf.exp(-log_scale)
        return self._sum_event(-0.5 * tf.square(standardized) - log_scale - 0.5 * _LOG_2PI)

    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None) -> tf.Tensor:
        """``n`` latents ``mu + T * sigma * eps``: ``[n, *latent_shape]``."""
        return self.loc + tf.exp(tf.convert_to_tensor(self.log_scale)) * self._noise(
            n, temperature, seed
        )


@keras.saving.register_keras_serializable(package="keras_iresnet")
class ConditionalDiagonalGaussian(_Base):
    """``N(mu(c), diag(sigma(c)^2))``: the base of a conditional flow ``p(x | c)``.

    ``[mu(c), log sigma(c)] = A flatten(c) + a`` with ``A`` and ``a``
    zero-initialized, so the base starts as ``N(0, I)`` for every context and learns
    a context-dependent mean and scale per latent dimension. With an identity
    trunk it is exactly the linear-Gaussian conditional ``x | c ~ N(A_mu c + a_mu,
    diag(exp(2 (A_sigma c + a_sigma))))``.

    Args:
      context_shape: the context's event shape, ``(k,)`` or ``(H, W, k)``.

    Shapes: ``log_prob(z, context)``: ``[batch, ...]``, ``[batch, *context_shape]``
    (or one ``[*context_shape]`` for all) ``-> [batch]``.
    """

    conditional = True

    def __init__(self, context_shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context_shape = validation.shape("context_shape", context_shape)

    @staticmethod
    def _z_shape(shape):
        """The latent's shape from ``shape`` or from the pair ``[z shape, context shape]``."""
        first = tuple(shape)[0] if len(tuple(shape)) else None
        return tuple(first) if isinstance(first, (list, tuple)) else tuple(shape)

    def build(self, input_shape: Sequence[int | None] | Sequence[Sequence[int | None]]) -> None:
        self._set_latent_shape(self._z_shape(input_shape))  # (not super().build: Keras locks it)
        size = int(math.prod(self.latent_shape))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(math.prod(self.context_shape)), 2 * size),
            initializer="zeros",
        )
        self.bias = self.add_weight(name="bias", shape=(2 * size,), initializer="zeros")

    def call(
        self, inputs: tf.Tensor | Sequence[tf.Tensor], context: tf.Tensor | None = None
    ) -> tf.Tensor:
        """``log_prob(z, context)``; also ``call([z, c])`` (Keras' multi-input idiom)."""
        if context is None and isinstance(inputs, (list, tuple)):
            inputs, context = inputs
        return self.log_prob(inputs, context)

    def compute_output_shape(
        self, input_shape: Sequence[int | None] | Sequence[Sequence[int | None]]
    ) -> tuple[int | None]:
        return (self._z_shape(input_shape)[0],)

    def loc_and_log_scale(self, context: tf.Tensor, like: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(mu(c), log sigma(c))``, each ``[batch, *latent_shape]``, for inputs ``like``."""
        c = tf.cast(tf.convert_to_tensor(context), like.dtype)
        c = broadcast_context(self, c, self.context_shape, like)
        flat = tf.reshape(c, [tf.shape(c)[0], -1])
        out = tf.matmul(flat, tf.cast(self.kernel, like.dtype)) + tf.cast(self.bias, like.dtype)
        loc, log_scale = tf.split(out, 2, axis=1)
        shape = tf.concat([tf.shape(c)[:1], self.latent_shape], 0)
        return tf.reshape(loc, shape), tf.reshape(log_scale, shape)

    def log_prob(self, z: tf.Tensor, context: tf.Tensor | None = None) -> tf.Tensor:
        z = tf.convert_to_tensor(z)
        self._require(context)
        loc, log_scale = self.loc_and_log_scale(context, z)
        standardized = (z - loc) * tf.exp(-log_scale)
        return self._sum_event(-0.5 * tf.square(standardized) - log_scale - 0.5 * _LOG_2PI)

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        seed: int | None = None,
        context: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """``n`` latents ``mu(c) + T * sigma(c) * eps``: ``[n, *latent_shape]``; ``context``
        ``[n, *context_shape]`` (one per latent) or ``[*context_shape]`` (one for all)."""
        self._require(context)
        noise = self._noise(n, temperature, seed)
        loc, log_scale = self.loc_and_log_scale(context, noise)
        return loc + tf.exp(log_scale) * noise

    def _require(self, context):
        if context is None:
            raise ValueError(
                f"ConditionalDiagonalGaussian {self.name!r} needs context= (shape [batch, "
                f"{', '.join(str(d) for d in self.context_shape)}])."
            )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["context_shape"] = list(self.context_shape)
        return config


BASES = {
    "standard": StandardNormal,
    "diagonal": DiagonalGaussian,
    "conditional_diagonal": ConditionalDiagonalGaussian,
}


def get_base(
    identifier: str | dict[str, Any] | _Base, context_shape: Sequence[int] | None = None
) -> _Base:
    """A base layer from ``"standard"``, ``"diagonal"``, ``"conditional_diagonal"`` (needs
    ``context_shape``), a serialized layer or a layer instance."""
    if isinstance(identifier, _Base):
        return identifier
    if identifier == "conditional_diagonal":
        if context_shape is None:
            raise ValueError(
                "base='conditional_diagonal' is the base of a conditional flow: give "
                "context_shape=."
            )
        return ConditionalDiagonalGaussian(context_shape)
    if isinstance(identifier, str) and identifier in BASES:
        return BASES[identifier]()
    if isinstance(identifier, dict):
        layer = keras.saving.deserialize_keras_object(identifier)
        if isinstance(layer, _Base):
            return layer
    raise ValueError(
        f"base must be one of {tuple(BASES)} or a base layer; got base={identifier!r}."
    )
