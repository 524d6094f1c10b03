"""Invertible layers with exact log-determinants: ActNorm, Squeeze, InjectivePad, FlattenEvent."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.layers.base import InvertibleLayer

__all__ = ["ActNorm", "Squeeze", "InjectivePad", "FlattenEvent"]


def _check_rank(layer, input_shape, ranks):
    input_shape = tuple(input_shape)
    if len(input_shape) not in ranks or any(d is None for d in input_shape[1:]):
        kinds = {2: "[batch, features]", 4: "[batch, H, W, C]"}
        expected = " or ".join(kinds[r] for r in ranks)
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r} expects inputs {expected} with a known event "
            f"shape; got input shape {input_shape}."
        )
    return input_shape


@keras.saving.register_keras_serializable(package="keras_iresnet")
class ActNorm(InvertibleLayer):
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

    def __init__(self, per_position=False, variance_floor=0.0, epsilon=1e-6, stack=None, **kwargs):
        super().__init__(**kwargs)
        self.per_position = bool(per_position)
        self.variance_floor = validation.non_negative_float("variance_floor", variance_floor)
        self.epsilon = validation.non_negative_float("epsilon", epsilon)
        self.stack = None if stack is None else validation.positive_int("stack", stack)

    def build(self, input_shape):
        input_shape = _check_rank(self, input_shape, (2, 4))
        self.parameter_shape = (
            tuple(input_shape[1:]) if self.per_position else (int(input_shape[-1]),)
        )
        self.positions = 1 if self.per_position else int(math.prod(input_shape[1:-1]))
        shape = ((self.stack,) if self.stack else ()) + self.parameter_shape
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
    def initial_values(self, x):
        """``(bias, log_scale)`` that give the batch ``x`` zero mean and unit variance."""
        axes = [0] if self.per_position else list(range(x.shape.rank - 1))
        mean = tf.reduce_mean(x, axis=axes)
        variance = tf.maximum(tf.math.reduce_variance(x, axis=axes), self.variance_floor)
        return -mean, -tf.math.log(tf.sqrt(variance) + self.epsilon)

    def affine(self, x, bias, log_scale):
        """``(y, log_det[batch])`` of the affine map with the given parameters."""
        y = (x + bias) * tf.exp(log_scale)
        log_det = tf.reduce_sum(log_scale) * float(self.positions)
        return y, log_det * tf.ones(tf.shape(x)[:1], dtype=x.dtype)

    def inverse_affine(self, y, bias, log_scale):
        return y * tf.exp(-log_scale) - bias

    def is_initialized(self):
        return tf.convert_to_tensor(self.initialized) > 0.5

    def parameters_for_step(self, x, bias, log_scale, training):
        """The parameters a training call uses: the initial values while uninitialized.

        The statistics are computed in a ``tf.cond`` branch, so an initialized
        layer pays nothing for them (no assignment happens in the branch).
        """
        if not training:
            return bias, log_scale
        return tf.cond(
            self.is_initialized(), lambda: (bias, log_scale), lambda: self.initial_values(x)
        )

    def store_initialization(self, bias, log_scale):
        """Assign the initial values once (written without ``tf.cond``: a cross-replica
        ``MEAN`` assignment cannot sit in a control-flow branch under a strategy)."""
        done = self.is_initialized()
        self.bias.assign(tf.where(done, tf.convert_to_tensor(self.bias), bias))
        self.log_scale.assign(tf.where(done, tf.convert_to_tensor(self.log_scale), log_scale))
        self.initialized.assign(tf.ones_like(tf.convert_to_tensor(self.initialized)))

    # -- protocol -------------------------------------------------------------------
    def _unstacked(self):
        if self.stack:
            raise ValueError(
                f"ActNorm {self.name!r} holds {self.stack} parameter sets; a residual stack applies it."
            )

    def forward_and_log_det(self, inputs, training=None, logdet=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        self._unstacked()
        bias, log_scale = tf.convert_to_tensor(self.bias), tf.convert_to_tensor(self.log_scale)
        if training:
            bias, log_scale = self.parameters_for_step(x, bias, log_scale, training)
            self.store_initialization(bias, log_scale)
        return self.affine(x, bias, log_scale)

    def _inverse(self, y, settings):
        self._unstacked()
        return self.inverse_affine(
            y, tf.convert_to_tensor(self.bias), tf.convert_to_tensor(self.log_scale)
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            per_position=self.per_position,
            variance_floor=self.variance_floor,
            epsilon=self.epsilon,
            stack=self.stack,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_iresnet")
class Squeeze(InvertibleLayer):
    """Invertible downsampling (space-to-depth, i-RevNet; Jacobsen et al. 2018).

    ``[batch, H, W, C] -> [batch, H/f, W/f, C*f*f]``; a permutation, so log|det| = 0.
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        factor = validation.positive_int("factor", factor)
        if factor < 2:
            raise ValueError(f"factor must be an integer >= 2; got factor={factor!r}.")
        self.factor = factor

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"Squeeze expects image inputs [batch, H, W, C]; got input shape {tuple(input_shape)}."
            )
        for size in input_shape[1:3]:
            if size is not None and size % self.factor:
                raise ValueError(
                    f"Squeeze(factor={self.factor}) needs H and W divisible by {self.factor}; "
                    f"got input shape {tuple(input_shape)}."
                )

    def forward_and_log_det(self, inputs, training=None, logdet=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        return tf.nn.space_to_depth(x, self.factor), self._zero_log_det(x)

    def _inverse(self, y, settings):
        return tf.nn.depth_to_space(y, self.factor)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        f = self.factor
        return (b, None if h is None else h // f, None if w is None else w // f, c * f * f)

    def compute_inverse_shape(self, output_shape):
        b, h, w, c = output_shape
        f = self.factor
        return (b, None if h is None else h * f, None if w is None else w * f, c // (f * f))

    def get_config(self):
        config = super().get_config()
        config["factor"] = self.factor
        return config


@keras.saving.register_keras_serializable(package="keras_iresnet")
class InjectivePad(InvertibleLayer):
    """Append ``pad`` zero channels: ``[..., C] -> [..., C + pad]`` (section 5.1).

    This map is *injective, not bijective*: its inverse drops the appended
    channels (whatever they hold), and ``forward_and_log_det`` returns 0, the
    log-volume change of the map onto its image. Use it in classifiers; a density
    model should not rely on it for a likelihood in the padded space.
    """

    def __init__(self, pad, **kwargs):
        super().__init__(**kwargs)
        self.pad = validation.positive_int("pad", pad)

    def build(self, input_shape):
        _check_rank(self, input_shape, (2, 4))

    def forward_and_log_det(self, inputs, training=None, logdet=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        paddings = [[0, 0]] * (x.shape.rank - 1) + [[0, self.pad]]
        return tf.pad(x, paddings), self._zero_log_det(x)

    def _inverse(self, y, settings):
        return y[..., : y.shape[-1] - self.pad]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.pad,)

    def compute_inverse_shape(self, output_shape):
        return tuple(output_shape[:-1]) + (output_shape[-1] - self.pad,)

    def get_config(self):
        config = super().get_config()
        config["pad"] = self.pad
        return config


@keras.saving.register_keras_serializable(package="keras_iresnet")
class FlattenEvent(InvertibleLayer):
    """``[batch, H, W, C] -> [batch, H*W*C]`` and back: a permutation, log|det| = 0.

    Puts fully connected blocks after convolutional ones (Residual Flows' end
    blocks act on the flattened event).
    """

    def build(self, input_shape):
        input_shape = _check_rank(self, input_shape, (2, 4))
        self.event_shape = tuple(int(d) for d in input_shape[1:])

    def forward_and_log_det(self, inputs, training=None, logdet=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        return tf.reshape(
            x, [tf.shape(x)[0], int(math.prod(self.event_shape))]
        ), self._zero_log_det(x)

    def _inverse(self, y, settings):
        if not self.built:
            raise ValueError(
                f"FlattenEvent {self.name!r} must be built (it needs the event shape to invert)."
            )
        return tf.reshape(y, tf.concat([tf.shape(y)[:1], self.event_shape], 0))

    def _ensure_built_from_output(self, output_shape):
        if not self.built:
            raise ValueError(
                f"FlattenEvent {self.name!r} must be built before its inverse (event shape unknown)."
            )

    def compute_output_shape(self, input_shape):
        size = math.prod(input_shape[1:]) if all(d is not None for d in input_shape[1:]) else None
        return (input_shape[0], size)

    def compute_inverse_shape(self, output_shape):
        return (output_shape[0],) + self.event_shape
