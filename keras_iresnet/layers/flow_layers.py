"""Simple invertible layers with exact log-determinants: ActNorm, Squeeze, InjectivePad."""
from __future__ import annotations

import keras
import tensorflow as tf

from keras_iresnet.layers.base import InvertibleLayer

__all__ = ["ActNorm", "Squeeze", "InjectivePad"]


def _spatial_size(x):
    """Number of positions that share one channel's parameters (1 for vectors)."""
    shape = tf.shape(x)
    return tf.cast(tf.reduce_prod(shape[1:-1]), x.dtype)


@keras.saving.register_keras_serializable(package="keras_iresnet")
class ActNorm(InvertibleLayer):
    """Per-channel affine map ``y = (x + bias) * exp(log_scale)`` (Glow, Kingma & Dhariwal 2018).

    Data-dependent initialization: on the first call with ``training=True`` the
    bias and scale are set so that the batch has zero mean and unit variance per
    channel. Under a ``tf.distribute`` strategy the replicas' statistics are
    averaged (``MEAN`` aggregation), so all replicas hold the same values. An
    uninitialized ActNorm is the identity (so inverses before training work).

    log|det| = ``prod(spatial dims) * sum(log_scale)`` per example.

    Shapes: ``[batch, ..., channels]`` (rank 2 or 4) -> same.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        if len(input_shape) not in (2, 4) or input_shape[-1] is None:
            raise ValueError(
                f"ActNorm expects inputs [batch, features] or [batch, H, W, C] with a known "
                f"channel axis; got input shape {tuple(input_shape)}."
            )
        channels = int(input_shape[-1])
        self.bias = self.add_weight(
            name="bias", shape=(channels,), initializer="zeros", aggregation="mean"
        )
        self.log_scale = self.add_weight(
            name="log_scale", shape=(channels,), initializer="zeros", aggregation="mean"
        )
        self.initialized = self.add_weight(
            name="initialized",
            shape=(),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    def _maybe_initialize(self, x):
        """Data-dependent initialization on the first training batch.

        Written without ``tf.cond`` (a cross-replica ``MEAN`` assignment cannot sit
        in a control-flow branch under a strategy): the variables are re-assigned
        their own value once initialized.
        """
        axes = list(range(x.shape.rank - 1))
        mean = tf.reduce_mean(x, axis=axes)
        std = tf.math.reduce_std(x, axis=axes)
        done = tf.convert_to_tensor(self.initialized) > 0.5
        self.bias.assign(tf.where(done, tf.convert_to_tensor(self.bias), -mean))
        self.log_scale.assign(
            tf.where(done, tf.convert_to_tensor(self.log_scale), -tf.math.log(std + self.epsilon))
        )
        self.initialized.assign(tf.ones_like(tf.convert_to_tensor(self.initialized)))

    def forward_and_log_det(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        if training:
            self._maybe_initialize(x)
        log_scale = tf.convert_to_tensor(self.log_scale)
        y = (x + self.bias) * tf.exp(log_scale)
        log_det = tf.reduce_sum(log_scale) * _spatial_size(x)
        return y, log_det * tf.ones(tf.shape(x)[:1], dtype=x.dtype)

    def inverse(self, outputs):
        y = tf.convert_to_tensor(outputs)
        self._ensure_built_from_output(y.shape)
        return y * tf.exp(-tf.convert_to_tensor(self.log_scale)) - self.bias

    def get_config(self):
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config


@keras.saving.register_keras_serializable(package="keras_iresnet")
class Squeeze(InvertibleLayer):
    """Invertible downsampling (space-to-depth, i-RevNet; Jacobsen et al. 2018).

    ``[batch, H, W, C] -> [batch, H/f, W/f, C*f*f]``; a permutation, so log|det| = 0.
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
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

    def forward_and_log_det(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        return tf.nn.space_to_depth(x, self.factor), self._zero_log_det(x)

    def inverse(self, outputs):
        y = tf.convert_to_tensor(outputs)
        self._ensure_built_from_output(y.shape)
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
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 1:
            raise ValueError(f"pad must be an integer >= 1; got pad={pad!r}.")
        self.pad = pad

    def build(self, input_shape):
        if len(input_shape) not in (2, 4):
            raise ValueError(
                f"InjectivePad expects inputs of rank 2 or 4; got input shape {tuple(input_shape)}."
            )

    def forward_and_log_det(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        paddings = [[0, 0]] * (x.shape.rank - 1) + [[0, self.pad]]
        return tf.pad(x, paddings), self._zero_log_det(x)

    def inverse(self, outputs):
        y = tf.convert_to_tensor(outputs)
        self._ensure_built_from_output(y.shape)
        return y[..., : y.shape[-1] - self.pad]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.pad,)

    def compute_inverse_shape(self, output_shape):
        return tuple(output_shape[:-1]) + (output_shape[-1] - self.pad,)

    def get_config(self):
        config = super().get_config()
        config["pad"] = self.pad
        return config
