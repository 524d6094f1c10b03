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
ended epochs 1.2e-3 to 5.5e-3 above ``coeff``. The bound needs the iteration to
converge within ``power_iterations``: the "mnist" recipe's 3x3 convolutions on 14x14x4
under Adam 6e-3 reach the cap of 50 from about step 120 and lag by up to 1.3 % (a
convolution on a large grid has many singular values just below its norm, so the
iteration converges slowly); :class:`~keras_iresnet.callbacks.RefineSpectralNorm` warns
at the end of such a run. How:

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
:mod:`keras_iresnet.layers.residual` apply slice ``i`` in block ``i``.

**When the vectors advance** is the layer's ``update_policy``, an explicit
attribute: ``"every_call"`` (the default: a layer used on its own, in a custom or
TFP loop, iterates in every training call) or ``"after_update"`` (training calls
use the stored vectors as they are, because the owner calls :meth:`track` right
after each optimizer update; the keras_iresnet models set it on their layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import spectral, validation
from keras_iresnet._tf import graph_function
from keras_iresnet.layers.invertible import Stackable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias

    _InitializerLike: TypeAlias = str | dict[str, Any] | keras.initializers.Initializer
    _RegularizerLike: TypeAlias = str | dict[str, Any] | keras.regularizers.Regularizer

__all__ = ["SpectralLayerBase", "UPDATE_POLICIES", "CONVERGED_ITERATIONS", "CONVERGED_RTOL"]

#: Iterations and tolerance of the power iteration at build, of ``refine()`` and of
#: ``operator_norm()`` (conv layers; dense layers use an SVD).
CONVERGED_ITERATIONS = 1000
CONVERGED_RTOL = 1e-6
#: :meth:`SpectralLayerBase.refine` iterates at least this many vectors (the stored ones
#: plus random ones): with the paper's single vector, a start nearly orthogonal to the top
#: singular vector converges to the second singular value first, and the stopping rule,
#: seeing no change, stops there (measured: 0.16 % low on a trained 3x3 convolution).
REFINE_VECTORS = 8

#: When a training call advances the vectors (see the module docstring).
UPDATE_POLICIES = ("every_call", "after_update")

# One traced power iteration per operator signature, shared by every layer that
# has it (a deep network of identical blocks traces it once, not once per layer).
_POWER_ITERATION_FUNCTIONS = {}


class SpectralLayerBase(Stackable, keras.layers.Layer):
    """Shared machinery of :class:`SpectralDense` and :class:`SpectralConv2D`.

    Subclasses define the linear operator (``apply_operator``), its adjoint
    (``apply_adjoint``), the kernel shape and the shapes of the power-iteration
    vectors for a given input shape, and ``signature()`` (what determines the
    operator besides the kernel).
    """

    operator_rank = None  # 2 for dense, 4 for conv

    def __init__(
        self,
        coeff: float | None = 0.97,
        power_iterations: int = 50,
        power_tol: float | None = 1e-4,
        power_vectors: int = 8,
        use_bias: bool = True,
        kernel_initializer: _InitializerLike = "glorot_uniform",
        bias_initializer: _InitializerLike = "zeros",
        kernel_regularizer: _RegularizerLike | None = None,
        bias_regularizer: _RegularizerLike | None = None,
        stack: int | None = None,
        update_policy: str = "every_call",
        **kwargs: Any,
    ) -> None:
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
        self.set_stack(stack)
        self.update_policy = validation.one_of("update_policy", update_policy, UPDATE_POLICIES)

    # -- to be defined by subclasses ---------------------------------------
    def _kernel_shape(self, input_shape):
        raise NotImplementedError

    def _vector_shapes(self, input_shape):
        """``(u_shape, v_shape)``: output-space and input-space vector shapes (batch 1)."""
        raise NotImplementedError

    def spec(self) -> tuple[Any, ...]:
        """Hashable description of the operator apart from its kernel (after ``build``)."""
        raise NotImplementedError

    @staticmethod
    def operator(spec: tuple[Any, ...], x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """The linear map without bias, ``x -> W x``, for one kernel (not a stack)."""
        raise NotImplementedError

    @staticmethod
    def adjoint(
        spec: tuple[Any, ...],
        u: tf.Tensor,
        kernel: tf.Tensor,
        input_shape: Sequence[int | None] | None = None,
    ) -> tf.Tensor:
        """The adjoint map ``u -> W^T u`` (exact transpose of :meth:`operator`)."""
        raise NotImplementedError

    @staticmethod
    def matrix(
        spec: tuple[Any, ...], kernel: tf.Tensor | np.ndarray
    ) -> tf.Tensor | np.ndarray | None:
        """The operator as a matrix ``[..., in, out]`` acting on rows when its norm is a
        matrix norm (dense layers, 1x1 stride-1 convolutions), else None."""
        return None

    def apply_operator(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """``x -> W x`` with this layer's operator (one kernel, not a stack)."""
        return self.operator(self.spec(), x, kernel)

    def apply_adjoint(
        self, u: tf.Tensor, kernel: tf.Tensor, input_shape: Sequence[int | None] | None = None
    ) -> tf.Tensor:
        """``u -> W^T u``; ``input_shape`` ([batch,] H, W, C) selects a conv input space other
        than the built one.
        """
        return self.adjoint(self.spec(), u, kernel, input_shape)

    # -- build / state -------------------------------------------------------
    def _check_input_shape(self, input_shape):
        input_shape = validation.input_shape(self, input_shape, (self.operator_rank,))
        return input_shape

    def build(self, input_shape: Sequence[int | None]) -> None:
        input_shape = self._check_input_shape(input_shape)
        self.built_input_shape = input_shape
        kernel_shape = self._kernel_shape(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.stacked_shape(kernel_shape),
            initializer=self.per_slice(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=self.stacked_shape((kernel_shape[-1],)),
                initializer=self.per_slice(self.bias_initializer),
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None
        u_shape, v_shape = self._vector_shapes(input_shape)
        # k orthonormal input-space vectors (k <= both dimensions of the operator).
        self.vector_count = min(self.power_vectors, int(np.prod(u_shape)), int(np.prod(v_shape)))
        self.power_v = self.add_weight(
            name="power_v",
            shape=self.stacked_shape((self.vector_count,) + tuple(v_shape[1:])),
            initializer=keras.initializers.RandomNormal(seed=2),
            trainable=False,
            aggregation="only_first_replica",
        )
        # The Ritz value sigma~ the last iteration ended with: the next call measures its
        # first change against it (one iteration when the vectors still fit the weights).
        self.power_sigma = self.add_weight(
            name="power_sigma",
            shape=self.stacked_shape(()),
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

            def run(
                kernel: tf.Tensor, v: tf.Tensor, max_iterations: tf.Tensor, rtol: tf.Tensor
            ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
                return _iterate(cls, spec, stack, kernel, v, max_iterations, rtol)

            _POWER_ITERATION_FUNCTIONS[key] = graph_function(run)
        return _POWER_ITERATION_FUNCTIONS[key]

    def refine(
        self, max_iterations: int = CONVERGED_ITERATIONS, rtol: float = CONVERGED_RTOL
    ) -> np.ndarray | np.floating:
        """Run the iteration to convergence (eagerly) and store the vectors.

        Convolutions iterate at least :data:`REFINE_VECTORS` vectors (the stored ones and
        random ones) and keep the top ``vector_count``. Dense layers (and 1x1
        convolutions) use an exact SVD instead. Returns the
        new estimate(s) sigma~ of the raw kernel (numpy: a float, or ``[stack]``).
        """
        with tf.init_scope():
            matrix = self.matrix(self.spec(), self.kernel.numpy())
            if matrix is not None:
                v, sigma = spectral.dense_singular_vectors(matrix, self.vector_count)
            else:
                stored = tf.convert_to_tensor(self.power_v)
                axis = 1 if self.stack else 0  # the vectors' axis
                extra = REFINE_VECTORS - self.vector_count
                start = stored
                if extra > 0:
                    shape = stored.shape.as_list()
                    shape[axis] = extra
                    noise = tf.random.stateless_normal(shape, seed=[7, 11], dtype=stored.dtype)
                    start = tf.concat([stored, noise], axis=axis)
                v, sigma, _, _ = self._compiled_iteration()(
                    tf.convert_to_tensor(self.kernel),
                    start,
                    tf.constant(int(max_iterations), tf.int32),
                    tf.constant(float(rtol), self.kernel.dtype),
                )
                # Sorted by Ritz value: the first vector_count are the top directions.
                v = v[:, : self.vector_count] if self.stack else v[: self.vector_count]
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

    def track(self) -> tf.Tensor:
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

    def sigma_estimate(self) -> tf.Tensor:
        """Current estimate sigma~ = ||W v_1|| of the *raw* kernel (a lower bound); ``[]`` or
        ``[stack]``.
        """
        kernel = tf.convert_to_tensor(self.kernel)
        operator, _ = self._operator_pair(kernel)
        return spectral._norms(
            operator(self._top_vector(tf.convert_to_tensor(self.power_v))), self._batch_dims
        )

    def normalized_kernel(self, training: bool = False) -> tf.Tensor:
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
        if training and self.update_policy == "every_call":
            v, _ = self._advance(tf.stop_gradient(kernel))
        operator, _ = self._operator_pair(kernel)
        sigma = spectral._norms(operator(self._top_vector(v)), self._batch_dims)
        factor = tf.maximum(tf.ones_like(sigma), sigma / self.coeff)
        if self.stack:
            factor = tf.reshape(factor, [-1] + [1] * (len(kernel.shape) - 1))
        return kernel / factor

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        self.refuse_if_stacked("kernels")
        kernel = self.normalized_kernel(training=bool(training))
        outputs = self.apply_operator(inputs, kernel)
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs

    # -- exact norms (after training) -------------------------------------------
    def operator_norm(
        self,
        input_shape: Sequence[int] | None = None,
        max_iterations: int = 5000,
        tol: float = 1e-7,
        seed: int = 0,
    ) -> float | list[float]:
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
        start_shape = self.stacked_shape((vectors,) + tuple(shape[1:]))
        operator, adjoint = self._operator_pair(kernel, input_shape=(1,) + tuple(shape[1:]))
        _, sigma, _, _ = graph_function(
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

    def get_config(self) -> dict[str, Any]:
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
            update_policy=self.update_policy,
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

    def slice_by_slice(
        fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    ) -> Callable[[tf.Tensor], tf.Tensor]:
        # A stack is small (blocks of one scale): one op per slice, unrolled, is cheaper
        # at run time than a tf.map_fn loop around every application.
        def apply(t: tf.Tensor) -> tf.Tensor:
            return tf.stack([fn(t[index], kernel[index]) for index in range(stack)])

        return apply

    return (
        slice_by_slice(lambda t, k: cls.operator(spec, t, k)),
        slice_by_slice(lambda t, k: cls.adjoint(spec, t, k, input_shape)),
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
