"""Spectral-normalized dense and convolutional layers (equation (2), section 2.1).

``W~ = W / max(1, sigma~ / coeff)``, with sigma~ the estimate of the operator
norm of ``W`` *as it is applied* (dense: the matrix; conv: the convolution with
its strides and zero padding on the layer's input shape; a 1x1 stride-1
convolution: its channel matrix, which has the same norm).

**The guarantee.** With the defaults (``power_vectors=8``, ``power_tol=1e-4``)
every layer's *effective* operator norm is at most ``coeff * (1 + 1e-3)`` after
every training step, not only after training (tested: 2-D and image flows
trained with Adam 1e-2 through ``keras.Model.fit``, exact norms checked after
every epoch, also under ``MirroredStrategy``). The stopping tolerance is ten
times tighter than the guaranteed bound because the predicted error is an
extrapolation: with ``power_tol=1e-3`` the digits image flow under Adam 1e-2
ended epochs 1.2e-3 to 5.5e-3 above ``coeff``. How:

- the estimate is a *subspace* iteration with Rayleigh-Ritz
  (:func:`keras_iresnet.spectral.subspace_iteration`): ``power_vectors``
  orthonormal vectors track the top of the spectrum. A single warm-started
  power vector fails here: when the top singular values of a convolution are
  close and cross as the weights move, the old top vector has almost no
  component on the new one and needs hundreds of iterations (measured: 1-9 %
  under-estimates after Adam 1e-2 epochs on digits convolutions);
- on every training call the iteration is warm-started from the stored vectors
  and runs until its predicted relative error (the last change extrapolated
  with the measured convergence rate) is below ``power_tol``, at most
  ``power_iterations`` times, in a ``tf.while_loop`` (``tf.function`` and XLA
  compatible; measured 2.6-2.9 iterations per layer and step). The first change
  is measured against the Ritz value the previous call ended with
  (``power_sigma``), so a call on unchanged weights stops after one iteration. The vectors are under
  ``tf.stop_gradient``; the gradient flows through ``sigma~ = ||W v_1||`` into
  the kernel, as in the paper;
- the keras_iresnet models also re-track the vectors right after each optimizer
  update (:meth:`SpectralLayerBase.track`), so the model that ``evaluate``,
  ``predict`` or an inverse sees after any step is normalized with the estimate
  of *its* weights (Residual Flows does the same, ``update_lipschitz`` after
  each step);
- at ``build`` the vectors start converged (dense and 1x1: an exact SVD;
  conv: the iteration run to ``rtol = 1e-6``), so an inverse before any step is sound.

``power_tol=None`` with ``power_iterations=1`` and ``power_vectors=1`` restores
the paper's rule (one power iteration per step). The vectors are identical on
every replica of a ``tf.distribute`` strategy (``ONLY_FIRST_REPLICA``
aggregation: all replicas compute them from the same mirrored kernel) and are
saved with the model. ``power_iterations_run`` counts the iterations.

A layer built with ``stack=n`` holds ``n`` independent kernels ``[n, ...]`` (the
iterations of all ``n`` run as one batched iteration); the residual stacks of
:mod:`keras_iresnet.layers.residual_block` apply slice ``i`` in block ``i``.
"""

from __future__ import annotations

import contextlib
import threading

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import spectral, validation
from keras_iresnet._tf import graph_function

__all__ = ["SpectralLayerBase", "SpectralDense", "SpectralConv2D", "tracked_after_update"]

#: Iterations and tolerance of the power iteration at build, of ``refine()`` and of
#: ``operator_norm()`` (conv layers; dense layers use an SVD).
CONVERGED_ITERATIONS = 1000
CONVERGED_RTOL = 1e-6

# One traced power iteration per operator signature, shared by every layer that
# has it (a deep network of identical blocks traces it once, not once per layer).
_POWER_ITERATION_FUNCTIONS = {}
_TRACKING = threading.local()


@contextlib.contextmanager
def tracked_after_update():
    """Within this context, training calls use the stored vectors as they are.

    For training steps that re-track every layer right after the optimizer
    update (:meth:`SpectralLayerBase.track`; the keras_iresnet models' steps
    do): the stored vectors then already belong to the current weights, so the
    forward pass need not iterate again. Read at trace time.
    """
    previous = getattr(_TRACKING, "active", False)
    _TRACKING.active = True
    try:
        yield
    finally:
        _TRACKING.active = previous


class SpectralLayerBase(keras.layers.Layer):
    """Shared machinery of :class:`SpectralDense` and :class:`SpectralConv2D`.

    Subclasses define the linear operator (``apply_operator``), its adjoint
    (``apply_adjoint``), the kernel shape and the shapes of the power-iteration
    vectors for a given input shape, and ``signature()`` (what determines the
    operator besides the kernel).
    """

    operator_rank = None  # 2 for dense, 4 for conv

    def __init__(
        self,
        coeff=0.97,
        power_iterations=50,
        power_tol=1e-4,
        power_vectors=8,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        stack=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.coeff = validation.coeff(coeff)
        self.power_iterations = validation.positive_int("power_iterations", power_iterations)
        self.power_tol = (
            None if power_tol is None else validation.positive_float("power_tol", power_tol)
        )
        self.power_vectors = validation.positive_int("power_vectors", power_vectors)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.stack = None if stack is None else validation.positive_int("stack", stack)

    # -- to be defined by subclasses ---------------------------------------
    def _kernel_shape(self, input_shape):
        raise NotImplementedError

    def _vector_shapes(self, input_shape):
        """``(u_shape, v_shape)``: output-space and input-space vector shapes (batch 1)."""
        raise NotImplementedError

    def spec(self):
        """Hashable description of the operator apart from its kernel (after ``build``)."""
        raise NotImplementedError

    @staticmethod
    def operator(spec, x, kernel):
        """The linear map without bias, ``x -> W x``, for one kernel (not a stack)."""
        raise NotImplementedError

    @staticmethod
    def adjoint(spec, u, kernel, input_shape=None):
        """The adjoint map ``u -> W^T u`` (exact transpose of :meth:`operator`)."""
        raise NotImplementedError

    @staticmethod
    def matrix(spec, kernel):
        """The operator as a matrix ``[..., in, out]`` acting on rows when its norm is a
        matrix norm (dense layers, 1x1 stride-1 convolutions), else None."""
        return None

    def apply_operator(self, x, kernel):
        """``x -> W x`` with this layer's operator (one kernel, not a stack)."""
        return self.operator(self.spec(), x, kernel)

    def apply_adjoint(self, u, kernel, input_shape=None):
        """``u -> W^T u``; ``input_shape`` ([batch,] H, W, C) selects a conv input space other than the built one."""
        return self.adjoint(self.spec(), u, kernel, input_shape)

    # -- build / state -------------------------------------------------------
    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != self.operator_rank:
            expected = (
                "[batch, features]"
                if self.operator_rank == 2
                else "[batch, height, width, channels]"
            )
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

    def _stacked(self, shape):
        return ((self.stack,) if self.stack else ()) + tuple(shape)

    def _per_slice(self, initializer):
        """A stack initializes every slice as a single kernel (fans from the slice's shape,
        not from the stacked one, which would shrink Glorot's scale by ``sqrt(stack)``)."""
        if not self.stack:
            return initializer

        def slice_initializer(index):
            # A Keras 3 random initializer holds an int seed (drawn once when unseeded)
            # and returns the same values on every call: give each slice its own seed,
            # or every block of a stack would start with the same kernel.
            seed = getattr(initializer, "seed", None)
            if not isinstance(seed, int) or isinstance(seed, bool):
                return initializer
            config = initializer.get_config()
            config["seed"] = seed + index
            return type(initializer).from_config(config)

        def initialize(shape, dtype=None):
            return tf.stack([slice_initializer(i)(shape[1:], dtype=dtype) for i in range(shape[0])])

        return initialize

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        self.built_input_shape = input_shape
        kernel_shape = self._kernel_shape(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=self._stacked(kernel_shape),
            initializer=self._per_slice(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=self._stacked((kernel_shape[-1],)),
                initializer=self._per_slice(self.bias_initializer),
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None
        u_shape, v_shape = self._vector_shapes(input_shape)
        # k orthonormal input-space vectors (k <= both dimensions of the operator).
        self.vector_count = min(self.power_vectors, int(np.prod(u_shape)), int(np.prod(v_shape)))
        self.power_v = self.add_weight(
            name="power_v",
            shape=self._stacked((self.vector_count,) + tuple(v_shape[1:])),
            initializer=keras.initializers.RandomNormal(seed=2),
            trainable=False,
            aggregation="only_first_replica",
        )
        # The Ritz value sigma~ the last iteration ended with: the next call measures its
        # first change against it (one iteration when the vectors still fit the weights).
        self.power_sigma = self.add_weight(
            name="power_sigma",
            shape=self._stacked(()),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.power_iterations_run = self.add_weight(
            name="power_iterations_run",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        if self.coeff is not None:
            # A sound estimate from the start: an inverse or inference before any
            # training step must already see a contraction.
            self.refine()

    # -- the power iteration ---------------------------------------------------
    @property
    def _batch_dims(self):
        return 1 if self.stack else 0

    def _operator_pair(self, kernel, input_shape=None):
        return _operator_pair(type(self), self.spec(), self.stack, kernel, input_shape)

    def _iterate(self, kernel, v, max_iterations, rtol, previous_sigma=None):
        return _iterate(
            type(self), self.spec(), self.stack, kernel, v, max_iterations, rtol, previous_sigma
        )

    def _compiled_iteration(self):
        """The power iteration of this operator as one traced graph, shared by equal operators."""
        key = (type(self), self.spec(), self.stack)
        if key not in _POWER_ITERATION_FUNCTIONS:
            cls, spec, stack = key

            def run(kernel, v, max_iterations, rtol):
                return _iterate(cls, spec, stack, kernel, v, max_iterations, rtol)

            _POWER_ITERATION_FUNCTIONS[key] = graph_function(run)
        return _POWER_ITERATION_FUNCTIONS[key]

    def refine(self, max_iterations=CONVERGED_ITERATIONS, rtol=CONVERGED_RTOL):
        """Run the iteration to convergence (eagerly) and store the vectors.

        Dense layers (and 1x1 convolutions) use an exact SVD instead. Returns the
        new estimate(s) sigma~ of the raw kernel (numpy: a float, or ``[stack]``).
        """
        with tf.init_scope():
            matrix = self.matrix(self.spec(), self.kernel.numpy())
            if matrix is not None:
                v, sigma = spectral.dense_singular_vectors(matrix, self.vector_count)
            else:
                v, sigma, _ = self._compiled_iteration()(
                    tf.convert_to_tensor(self.kernel),
                    tf.convert_to_tensor(self.power_v),
                    tf.constant(int(max_iterations), tf.int32),
                    tf.constant(float(rtol), self.kernel.dtype),
                )
                sigma = sigma.numpy()
            self.power_v.assign(tf.cast(v, self.power_v.dtype))
            self.power_sigma.assign(
                tf.cast(tf.reshape(sigma, self.power_sigma.shape), self.power_sigma.dtype)
            )
            return sigma

    def _advance(self, kernel):
        """The warm-started iteration of a training call or of :meth:`track`: stores the
        vectors and the final Ritz value; returns the vectors and the iterations run."""
        v, _, iterations, sigma = self._iterate(
            kernel,
            tf.convert_to_tensor(self.power_v),
            self.power_iterations,
            self.power_tol,
            previous_sigma=tf.convert_to_tensor(self.power_sigma),
        )
        v = tf.stop_gradient(v)
        self.power_v.assign(v)
        self.power_sigma.assign(tf.stop_gradient(sigma))
        self.power_iterations_run.assign_add(iterations)
        return v, iterations

    def track(self):
        """Advance the stored vectors to the current kernel (graph-safe, no gradient).

        Warm-started subspace iteration until the ``power_tol`` rule stops it (at
        most ``power_iterations``). The models call it right after each
        optimizer update; returns the number of iterations run.
        """
        if self.coeff is None:
            return tf.constant(0)
        return self._advance(tf.stop_gradient(tf.convert_to_tensor(self.kernel)))[1]

    def _top_vector(self, v):
        return v[:, :1] if self.stack else v[:1]

    def sigma_estimate(self):
        """Current estimate sigma~ = ||W v_1|| of the *raw* kernel (a lower bound); ``[]`` or ``[stack]``."""
        kernel = tf.convert_to_tensor(self.kernel)
        operator, _ = self._operator_pair(kernel)
        return spectral._norms(
            operator(self._top_vector(tf.convert_to_tensor(self.power_v))), self._batch_dims
        )

    def normalized_kernel(self, training=False):
        """The kernel actually applied, ``W~`` of equation (2) (a stack: ``[stack, ...]``).

        With ``training=True`` this first advances the iteration on the current
        kernel (warm start, ``power_tol`` rule, at most ``power_iterations``;
        vectors under ``tf.stop_gradient``) and stores the vectors; otherwise it
        uses the stored vectors. Gradients flow through sigma~ = ||W v_1|| into
        the kernel, as in the paper.
        """
        kernel = tf.convert_to_tensor(self.kernel)
        if self.coeff is None:
            return kernel
        v = tf.convert_to_tensor(self.power_v)
        if training and not getattr(_TRACKING, "active", False):
            v, _ = self._advance(tf.stop_gradient(kernel))
        operator, _ = self._operator_pair(kernel)
        sigma = spectral._norms(operator(self._top_vector(v)), self._batch_dims)
        factor = tf.maximum(tf.ones_like(sigma), sigma / self.coeff)
        if self.stack:
            factor = tf.reshape(factor, [-1] + [1] * (len(kernel.shape) - 1))
        return kernel / factor

    def call(self, inputs, training=None):
        if self.stack:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} holds a stack of {self.stack} kernels; it is "
                "applied slice by slice by a residual stack, not called directly."
            )
        kernel = self.normalized_kernel(training=bool(training))
        outputs = self.apply_operator(inputs, kernel)
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs

    # -- exact norms (after training) -------------------------------------------
    def operator_norm(self, input_shape=None, max_iterations=5000, tol=1e-7, seed=0):
        """Norm of the *effective* (normalized) operator as applied; a float, or a list per slice.

        Dense: the largest singular value of the normalized kernel (SVD). Conv:
        the operator norm of the convolution with the layer's real strides and
        zero padding on ``input_shape`` (``(H, W, C)``; default: the built
        one), by power iteration from a random start run until sigma~ changes by
        less than ``tol`` (relative). This converges to the true norm from below;
        the exact circular-padding values of
        :func:`keras_iresnet.spectral.conv_singular_values` are an independent
        check for stride-1 layers.
        """
        if not self.built:
            raise ValueError(f"layer {self.name!r} is not built yet: call it on an input first.")
        kernel = self.normalized_kernel(training=False)
        matrix = self.matrix(self.spec(), kernel.numpy())
        if matrix is not None:
            values = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)[..., 0]
            return values.tolist() if self.stack else float(values)
        shape = self.built_input_shape
        if input_shape is not None:
            shape = (1,) + tuple(int(d) for d in input_shape[-3:])
            if shape[-1] != self.built_input_shape[-1]:
                raise ValueError(
                    f"input_shape must have {self.built_input_shape[-1]} channels for layer "
                    f"{self.name!r}; got input_shape={tuple(input_shape)}."
                )
        vectors = max(8, self.vector_count)
        start_shape = self._stacked((vectors,) + tuple(shape[1:]))
        operator, adjoint = self._operator_pair(kernel, input_shape=(1,) + tuple(shape[1:]))
        _, sigma, _ = graph_function(
            lambda start: spectral.subspace_iteration(
                operator,
                adjoint,
                start,
                max_iterations=max_iterations,
                rtol=tol,
                batch_dims=self._batch_dims,
            )
        )(tf.random.stateless_normal(start_shape, seed=[seed, 17], dtype=kernel.dtype))
        return sigma.numpy().tolist() if self.stack else float(sigma)

    def get_config(self):
        config = super().get_config()
        config.update(
            coeff=self.coeff,
            power_iterations=self.power_iterations,
            power_tol=self.power_tol,
            power_vectors=self.power_vectors,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            stack=self.stack,
        )
        return config


def _operator_pair(cls, spec, stack, kernel, input_shape=None):
    """``(operator, adjoint)`` closures on the power-iteration vectors for ``kernel``
    (a stack: each slice on its own vectors)."""
    matrix = cls.matrix(spec, kernel)
    if matrix is not None:  # rows times a matrix; batched matmul handles a stack
        return (lambda t: tf.matmul(t, matrix), lambda t: tf.matmul(t, matrix, transpose_b=True))
    if not stack:
        return (
            lambda t: cls.operator(spec, t, kernel),
            lambda t: cls.adjoint(spec, t, kernel, input_shape),
        )

    def per_slice(fn):
        # A stack is small (blocks of one scale): one op per slice, unrolled, is cheaper
        # at run time than a tf.map_fn loop around every application.
        def apply(t):
            return tf.stack([fn(t[index], kernel[index]) for index in range(stack)])

        return apply

    return (
        per_slice(lambda t, k: cls.operator(spec, t, k)),
        per_slice(lambda t, k: cls.adjoint(spec, t, k, input_shape)),
    )


def _iterate(cls, spec, stack, kernel, v, max_iterations, rtol, previous_sigma=None):
    operator, adjoint = _operator_pair(cls, spec, stack, kernel)
    return spectral.subspace_iteration(
        operator,
        adjoint,
        v,
        max_iterations=max_iterations,
        rtol=rtol,
        batch_dims=1 if stack else 0,
        previous_sigma=previous_sigma,
    )


@keras.saving.register_keras_serializable(package="keras_iresnet")
class SpectralDense(SpectralLayerBase):
    """Dense layer ``y = W~ x + b`` with soft spectral normalization (equation (2)).

    Args:
      units: output features.
      coeff: target Lipschitz bound, ``0 < coeff < 1``; the kernel is rescaled
        only when the estimate sigma~ exceeds it. ``None`` disables normalization.
      power_iterations: cap on the iterations per training call (>= 1).
      power_tol: stop once the predicted relative error of sigma~ is at most
        this; ``None`` runs exactly ``power_iterations``.
      power_vectors: vectors of the subspace iteration (>= 1; capped by the
        operator's dimensions).
      use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
      bias_regularizer: as in ``keras.layers.Dense``.
      stack: hold this many independent kernels (for residual stacks), or None.

    Shapes: input ``[batch, in_features]`` -> output ``[batch, units]``.
    """

    operator_rank = 2

    def __init__(self, units, coeff=0.97, **kwargs):
        super().__init__(coeff=coeff, **kwargs)
        self.units = validation.positive_int("units", units)

    def _kernel_shape(self, input_shape):
        return (int(input_shape[-1]), self.units)

    def _vector_shapes(self, input_shape):
        return (1, self.units), (1, int(input_shape[-1]))

    def spec(self):
        return ()

    @staticmethod
    def operator(spec, x, kernel):
        return tf.matmul(x, kernel)

    @staticmethod
    def adjoint(spec, u, kernel, input_shape=None):
        return tf.matmul(u, kernel, transpose_b=True)

    @staticmethod
    def matrix(spec, kernel):
        return kernel

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config


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
      coeff, power_iterations, power_tol, ...: as in :class:`SpectralDense`.

    Shapes: ``[batch, H, W, C_in]`` -> ``[batch, H', W', filters]``; H and W must
    be static.
    """

    operator_rank = 4

    def __init__(self, filters, kernel_size, strides=1, padding="same", coeff=0.97, **kwargs):
        super().__init__(coeff=coeff, **kwargs)
        self.filters = validation.positive_int("filters", filters)
        self.kernel_size = validation.int_pair("kernel_size", kernel_size)
        self.strides = validation.int_pair("strides", strides)
        self.padding = validation.one_of("padding", str(padding).lower(), ("same", "valid"))

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

    @property
    def pointwise(self):
        """A 1x1 stride-1 convolution: its operator norm is that of the ``C_in x C_out`` matrix."""
        return self.kernel_size == (1, 1) and self.strides == (1, 1)

    def _vector_shapes(self, input_shape):
        h, w, c = (int(d) for d in input_shape[1:])
        if self.pointwise:  # the power iteration runs on the channel matrix (exact, and no
            return (1, self.filters), (1, c)  # degenerate spatial copies of every singular value)
        return (1,) + self._spatial_output(input_shape) + (self.filters,), (1, h, w, c)

    def spec(self):
        """``(strides, padding, (H, W, C) of the built input, pointwise)``."""
        return (
            self.strides,
            self.padding.upper(),
            tuple(int(d) for d in self.built_input_shape[1:]),
            self.pointwise,
        )

    @staticmethod
    def operator(spec, x, kernel):
        strides, padding = spec[:2]
        return tf.nn.conv2d(x, kernel, strides=strides, padding=padding)

    @staticmethod
    def adjoint(spec, u, kernel, input_shape=None):
        """``conv2d_transpose`` onto inputs of ``input_shape`` (default: the built one)."""
        strides, padding, built = spec[:3]
        h, w, c = tuple(input_shape or built)[-3:]
        output_shape = tf.stack([tf.shape(u)[0], h, w, c])
        return tf.nn.conv2d_transpose(u, kernel, output_shape, strides=strides, padding=padding)

    @staticmethod
    def matrix(spec, kernel):
        return kernel[..., 0, 0, :, :] if spec[3] else None

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
