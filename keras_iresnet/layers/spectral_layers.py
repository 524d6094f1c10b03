"""Spectral-normalized ``Dense`` and ``Conv2D`` layers (section 2.1, equation (2)).

Both layers own their kernel and bias. In ``call`` they compute the normalized
kernel

    W~ = coeff * W / sigma~   if coeff / sigma~ < 1,   else  W          (eq. 2)

where sigma~ is a power-iteration estimate of the operator norm ``||W||_2``
taken through the operator itself (the convolution and its transpose on the
layer's input shape, Gouk et al. 2018), not through the reshaped kernel matrix.
The stored kernel is never overwritten: gradients flow through sigma~ as in the
paper, and the kernel variable stays the optimizer's.

The power-iteration vectors ``power_u`` (output space) and ``power_v`` (input
space) are non-trainable weights: created in ``build`` from the input shape
(already iterated to a good estimate there, so an inverse or inference before
any training step is sound), advanced only when ``training=True``, identical on
every replica of a ``tf.distribute`` strategy (``ONLY_FIRST_REPLICA``
aggregation: all replicas compute the same vectors from the same mirrored
kernel), and saved with the model.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from keras_iresnet._compile import graph_function

from keras_iresnet.spectral import l2_normalize, power_iteration

__all__ = ["SpectralLayerBase", "SpectralDense", "SpectralConv2D"]


def validate_coeff(coeff, allow_none=True):
    """Check the normalization coefficient of equation (2): ``0 < coeff < 1`` or None."""
    if coeff is None and allow_none:
        return None
    if isinstance(coeff, bool) or not isinstance(coeff, (int, float)):
        raise ValueError(
            f"coeff must be a float with 0 < coeff < 1 (or None to disable normalization); "
            f"got coeff={coeff!r}."
        )
    if not 0.0 < float(coeff) < 1.0:
        raise ValueError(
            "coeff must satisfy 0 < coeff < 1 so that the layer is a contraction "
            f"(Lip(g) < 1, Theorem 1); got coeff={coeff!r}. Use coeff=None to build an "
            "unnormalized (vanilla) layer."
        )
    return float(coeff)


def validate_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {name}={value!r}.")
    return value


class SpectralLayerBase(keras.layers.Layer):
    """Shared machinery of :class:`SpectralDense` and :class:`SpectralConv2D`.

    Subclasses define the linear operator (``apply_operator``), its adjoint
    (``apply_adjoint``), the kernel shape and the shapes of the power-iteration
    vectors for a given input shape.
    """

    operator_rank = None  # 2 for dense, 4 for conv

    def __init__(
        self,
        coeff=0.97,
        power_iterations=1,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        build_power_iterations=200,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.coeff = validate_coeff(coeff)
        self.power_iterations = validate_positive_int("power_iterations", power_iterations)
        self.build_power_iterations = validate_positive_int(
            "build_power_iterations", build_power_iterations
        )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self._power_iteration_fn = None

    # -- to be defined by subclasses ---------------------------------------
    def _kernel_shape(self, input_shape):
        raise NotImplementedError

    def _vector_shapes(self, input_shape):
        """``(u_shape, v_shape)``: output-space and input-space vector shapes."""
        raise NotImplementedError

    def apply_operator(self, x, kernel):
        """The linear map without bias, ``x -> W x``."""
        raise NotImplementedError

    def apply_adjoint(self, u, kernel, input_shape=None):
        """The adjoint map ``u -> W^T u`` (exact transpose of ``apply_operator``).

        ``input_shape`` ([batch,] H, W, C) selects the input space of a convolution
        other than the built one."""
        raise NotImplementedError

    # -- build / state -------------------------------------------------------
    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != self.operator_rank:
            expected = "[batch, features]" if self.operator_rank == 2 else "[batch, height, width, channels]"
            raise ValueError(
                f"{type(self).__name__} {self.name!r} expects inputs of rank {self.operator_rank} "
                f"{expected}; got input shape {input_shape}."
            )
        if any(d is None for d in input_shape[1:]):
            raise ValueError(
                f"{type(self).__name__} {self.name!r} needs a fully known input shape apart from "
                f"the batch axis (the power iteration runs on the real operator); got {input_shape}."
            )
        return input_shape

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=self._kernel_shape(input_shape),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self._kernel_shape(input_shape)[-1],),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None
        u_shape, v_shape = self._vector_shapes(input_shape)
        self.power_u = self.add_weight(
            name="power_u",
            shape=u_shape,
            initializer=keras.initializers.RandomNormal(seed=1),
            trainable=False,
            aggregation="only_first_replica",
        )
        self.power_v = self.add_weight(
            name="power_v",
            shape=v_shape,
            initializer=keras.initializers.RandomNormal(seed=2),
            trainable=False,
            aggregation="only_first_replica",
        )
        self.built_input_shape = input_shape
        if self.coeff is not None:
            # A sound estimate from the start: an inverse or inference before any
            # training step must already see a contraction.
            self.refine_power_iteration(self.build_power_iterations, tol=1e-4)

    def refine_power_iteration(self, max_iterations=1000, tol=1e-5):
        """Run up to ``max_iterations`` more power iterations (eagerly) and store the vectors.

        Returns the new estimate sigma~ (Python float).
        """
        with tf.init_scope():
            u, v, sigma = self.compiled_power_iteration(
                tf.convert_to_tensor(self.kernel),
                tf.convert_to_tensor(self.power_v),
                max_iterations,
                tol,
            )
            self.power_u.assign(u)
            self.power_v.assign(v)
            return float(sigma)

    def compiled_power_iteration(self, kernel, v, max_iterations, tol):
        """:func:`keras_iresnet.spectral.power_iteration` of this layer's operator, as one
        graph traced once per layer (``max_iterations`` and ``tol`` are tensors)."""
        if getattr(self, "_power_iteration_fn", None) is None:

            def run(kernel, v, max_iterations, tol):
                return power_iteration(
                    lambda t: self.apply_operator(t, kernel),
                    lambda t: self.apply_adjoint(t, kernel),
                    v,
                    max_iterations=max_iterations,
                    tol=tol,
                )

            self._power_iteration_fn = graph_function(run)
        return self._power_iteration_fn(
            kernel,
            v,
            tf.constant(int(max_iterations), tf.int32),
            tf.constant(-1.0 if tol is None else float(tol), kernel.dtype),
        )

    def sigma_estimate(self):
        """Current power-iteration estimate sigma~ = ||W v|| of the *raw* kernel (a lower bound)."""
        kernel = tf.convert_to_tensor(self.kernel)
        return tf.norm(tf.reshape(self.apply_operator(self.power_v, kernel), [-1]))

    def normalized_kernel(self, training=False):
        """The kernel actually applied, ``W~`` of equation (2).

        With ``training=True`` this advances the power iteration by
        ``power_iterations`` steps (vectors under ``tf.stop_gradient``) and
        stores the vectors; otherwise it uses the stored vectors. Gradients flow
        through sigma~ into the kernel, as in the paper.
        """
        kernel = tf.convert_to_tensor(self.kernel)
        if self.coeff is None:
            return kernel
        if training:
            frozen = tf.stop_gradient(kernel)
            v = l2_normalize(self.apply_adjoint(tf.convert_to_tensor(self.power_u), frozen))
            for _ in range(self.power_iterations - 1):
                v = l2_normalize(self.apply_adjoint(self.apply_operator(v, frozen), frozen))
            v = tf.stop_gradient(v)
            wv = self.apply_operator(v, kernel)
            sigma = tf.norm(tf.reshape(wv, [-1]))
            self.power_u.assign(tf.stop_gradient(wv / (sigma + 1e-12)))
            self.power_v.assign(v)
        else:
            wv = self.apply_operator(tf.convert_to_tensor(self.power_v), kernel)
            sigma = tf.norm(tf.reshape(wv, [-1]))
        factor = tf.maximum(tf.ones_like(sigma), sigma / self.coeff)
        return kernel / factor

    def call(self, inputs, training=None):
        kernel = self.normalized_kernel(training=bool(training))
        outputs = self.apply_operator(inputs, kernel)
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            coeff=self.coeff,
            power_iterations=self.power_iterations,
            build_power_iterations=self.build_power_iterations,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_iresnet")
class SpectralDense(SpectralLayerBase):
    """Dense layer ``y = W~ x + b`` with soft spectral normalization (equation (2)).

    Args:
      units: output features.
      coeff: target Lipschitz bound, ``0 < coeff < 1``; the kernel is rescaled
        only when the estimate sigma~ exceeds it. ``None`` disables normalization.
      power_iterations: power-iteration steps per training call (>= 1).
      use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
      bias_regularizer: as in ``keras.layers.Dense``.
      build_power_iterations: iterations run once when the layer is built.

    Shapes: input ``[batch, in_features]`` -> output ``[batch, units]``.
    """

    operator_rank = 2

    def __init__(self, units, coeff=0.97, power_iterations=1, **kwargs):
        super().__init__(coeff=coeff, power_iterations=power_iterations, **kwargs)
        self.units = validate_positive_int("units", units)

    def _kernel_shape(self, input_shape):
        return (int(input_shape[-1]), self.units)

    def _vector_shapes(self, input_shape):
        return (1, self.units), (1, int(input_shape[-1]))

    def apply_operator(self, x, kernel):
        return tf.matmul(x, kernel)

    def apply_adjoint(self, u, kernel, input_shape=None):
        return tf.matmul(u, kernel, transpose_b=True)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config


def _pair(value, name):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or any((not isinstance(v, int)) or v < 1 for v in value):
        raise ValueError(f"{name} must be a positive int or a pair of them; got {name}={value!r}.")
    return value


@keras.saving.register_keras_serializable(package="keras_iresnet")
class SpectralConv2D(SpectralLayerBase):
    """2-D convolution with soft spectral normalization of its *operator* norm.

    The power iteration runs through ``tf.nn.conv2d`` and its exact adjoint
    ``tf.nn.conv2d_transpose`` on the layer's input shape, strides and padding,
    so sigma~ converges to the true operator norm of the convolution as applied
    (section 2.1; Gouk et al. 2018), not the looser reshaped-kernel bound of
    ``keras.layers.SpectralNormalization`` (Miyato et al. 2018).

    Args:
      filters: output channels.
      kernel_size: int or pair.
      strides: int or pair.
      padding: ``"same"`` or ``"valid"`` (zero padding).
      coeff, power_iterations, ...: as in :class:`SpectralDense`.

    Shapes: ``[batch, H, W, C_in]`` -> ``[batch, H', W', filters]``; H and W must
    be static.
    """

    operator_rank = 4

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        coeff=0.97,
        power_iterations=1,
        **kwargs,
    ):
        super().__init__(coeff=coeff, power_iterations=power_iterations, **kwargs)
        self.filters = validate_positive_int("filters", filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        padding = str(padding).lower()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid'; got padding={padding!r}.")
        self.padding = padding

    def _kernel_shape(self, input_shape):
        return self.kernel_size + (int(input_shape[-1]), self.filters)

    def _spatial_output(self, input_shape):
        out = []
        for size, k, s in zip(input_shape[1:3], self.kernel_size, self.strides):
            if self.padding == "same":
                out.append(-(-int(size) // s))
            else:
                out.append((int(size) - k) // s + 1)
        return tuple(out)

    def _vector_shapes(self, input_shape):
        h, w, c = (int(d) for d in input_shape[1:])
        return (1,) + self._spatial_output(input_shape) + (self.filters,), (1, h, w, c)

    def apply_operator(self, x, kernel):
        return tf.nn.conv2d(x, kernel, strides=self.strides, padding=self.padding.upper())

    def apply_adjoint(self, u, kernel, input_shape=None):
        """``conv2d_transpose`` onto inputs of ``input_shape`` (default: the built one)."""
        h, w, c = (input_shape or self.built_input_shape)[-3:]
        output_shape = tf.stack([tf.shape(u)[0], h, w, c])
        return tf.nn.conv2d_transpose(
            u, kernel, output_shape, strides=self.strides, padding=self.padding.upper()
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self._spatial_output(input_shape) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
        )
        return config
