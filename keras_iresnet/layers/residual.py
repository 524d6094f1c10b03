"""Invertible residual blocks ``y = x + g(x)`` with ``Lip(g) < 1`` (Theorem 1), alone or stacked.

:class:`InvertibleResidualStack` applies ``num_blocks`` independent blocks of the
same shape one after the other. Their weights are stacked (``[num_blocks, ...]``
per parameter) and the blocks run in one ``tf.while_loop`` over a single traced
body, so a deep flow costs the same to trace, compile and optimize as one block
(a 100-block 2-D flow starts training in seconds, and the optimizer updates a
handful of stacked variables instead of hundreds of small ones). Their power
iterations run as one batched iteration. :class:`InvertibleResidualBlock` is the
stack of one (unstacked variables). The residual function ``g`` itself -- layers,
parameters, dropout, Lipschitz bound -- is :mod:`keras_iresnet.layers.residual_function`.

Built with ``context_shape=``, a stack is *conditional*: ``F_i(x, c) = x + g_i(x, c)``
with the context entering ``g`` through its own projection (the Lipschitz argument
is in :mod:`keras_iresnet.layers.residual_function`); ``call``, ``forward_and_log_det``,
``inverse`` (a fixed point in ``x`` for fixed ``c``) and ``residual_function`` then
take ``context=``, and the log-det estimators see ``x -> g_i(x, c)`` unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import inverse as inverse_lib
from keras_iresnet import logdet as logdet_lib
from keras_iresnet import validation
from keras_iresnet._tf import in_xla_context, no_autograph
from keras_iresnet.layers.invertible import InvertibleLayer, Stackable, broadcast_context
from keras_iresnet.layers.normalization import ActNorm
from keras_iresnet.layers.residual_function import CONTEXT_MODES, ResidualFunction

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias

    _InitializerLike: TypeAlias = str | dict[str, Any] | keras.initializers.Initializer

__all__ = ["InvertibleResidualStack", "InvertibleResidualBlock", "ACTNORM_MODES"]

ACTNORM_MODES = ("channel", "position")


def _actnorm_mode(actnorm):
    if actnorm is True:
        return "channel"
    if actnorm is False or actnorm is None:
        return None
    return validation.one_of("actnorm", actnorm, ACTNORM_MODES + (True, False, None))


@keras.saving.register_keras_serializable(package="keras_iresnet")
class InvertibleResidualStack(InvertibleLayer):
    """``num_blocks`` invertible residual blocks ``F_i(x) = x + g_i(x)`` applied in turn
    (section 2).

    Each ``g_i = W_L phi(... W_2 phi(W_1 x))`` is built from spectral-normalized
    layers (equation (2)) and 1-Lipschitz activations, so ``Lip(g_i) <= coeff^L < 1``:

    - images ``[batch, H, W, C]``: :class:`SpectralConv2D` with ``kernel_sizes``
      (the paper's bottleneck ``(3, 1, 3)``), widths ``hidden, ..., hidden, C``;
    - vectors ``[batch, d]``: :class:`SpectralDense` with the same number of
      layers, ``len(kernel_sizes)`` (the sizes themselves are ignored).

    The inverse solves ``x + g_i(x) = y`` block by block, last first, by the
    fixed-point iteration of Algorithm 1 (or Anderson acceleration) in a
    ``tf.while_loop``; the log-det ``sum_i log det(I + J_{g_i})`` comes from a
    pluggable estimator (section 3).

    Args:
      num_blocks: how many blocks (>= 1); their weights are stacked.
      hidden: width of the hidden layers of g (channels or units).
      kernel_sizes: kernel size of each conv of g; its length is the number of
        linear layers (also for vectors).
      coeff: spectral-normalization coefficient, ``0 < coeff < 1``; ``None``
        builds the same blocks *without* normalization (vanilla ResNet blocks,
        not guaranteed invertible).
      activation: ``"elu"`` (default), ``"softplus"``, ``"relu"``, ``"tanh"``,
        ``"lipswish"`` (a learnable beta per block and layer) or a callable you
        guarantee to be 1-Lipschitz.
      power_iterations: cap on the power iterations per training call.
      power_tol: the iteration stops once the predicted relative error of sigma~
        is at most this (``None``: exactly ``power_iterations``).
      power_vectors: vectors of the subspace iteration (see
        :mod:`keras_iresnet.layers.spectral` for the guarantee).
      dropout: dropout rate on the hidden activations of g, training only. Note
        that inverted dropout scales by ``1 / (1 - rate)``, so during training
        ``Lip(g)`` can exceed ``coeff`` by that factor (choose coeff accordingly,
        as the paper does); at inference there is no dropout.
      preactivation: apply ``phi`` to the input of g too (pre-activation blocks,
        as in Residual Flows and the official code's density models).
      actnorm: put an :class:`ActNorm` before each residual map (its log-det is
        added): ``True`` or ``"channel"`` (per channel), ``"position"`` (per
        dimension), or ``False``.
      actnorm_variance_floor: the ActNorms' initialization variance floor.
      logdet: ``"auto"`` (exact for events of at most 16 dims, else power series),
        ``"exact"``, ``"power_series"``, ``"russian_roulette"`` or an estimator
        from :mod:`keras_iresnet.logdet`.
      solver, max_iterations, atol, rtol, strict: this layer's defaults for
        :class:`keras_iresnet.inverse.InverseSettings` (None: the package default).
      seed: seed of the log-det probes (each call draws fresh probes from it,
        different on each replica of a strategy and in each block).
      context_shape: a conditional stack ``x -> F(x, c)``: the context's event
        shape, ``(k,)`` (a vector; broadcast over the positions of conv blocks) or
        ``(H, W, k)`` (an image with the blocks' ``H`` and ``W``). None (default):
        unconditional, with the signatures of every other layer.
      context_mode: ``"additive"`` (``W_1 x + b_1 + U_i c``) or ``"film"``
        (``s_i(c) * (W_1 x + b_1) + t_i(c)`` with ``0 < s_i < 1``); see
        :mod:`keras_iresnet.layers.residual_function` for why both keep ``Lip_x g <= coeff^L``.
      context_initializer: initializer of the (unnormalized) context kernels.

    Shapes: ``[batch, d]`` or ``[batch, H, W, C]`` -> same; log-det ``[batch]``;
    a context ``[batch, *context_shape]`` or ``[*context_shape]`` (one for all).
    """

    def __init__(
        self,
        num_blocks: int = 1,
        hidden: int = 64,
        kernel_sizes: Sequence[int] = (3, 1, 3),
        coeff: float | None = 0.97,
        activation: str | dict[str, Any] | Callable[[tf.Tensor], tf.Tensor] = "elu",
        power_iterations: int = 50,
        power_tol: float | None = 1e-4,
        power_vectors: int = 8,
        dropout: float = 0.0,
        preactivation: bool = False,
        actnorm: bool | str | None = False,
        actnorm_variance_floor: float = 0.0,
        logdet: str | dict[str, Any] | logdet_lib.LogDetEstimator = "auto",
        solver: str | None = None,
        max_iterations: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        strict: bool | None = None,
        seed: int | None = None,
        context_shape: Sequence[int] | None = None,
        context_mode: str = "additive",
        context_initializer: _InitializerLike = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.context_shape = (
            None if context_shape is None else validation.shape("context_shape", context_shape)
        )
        self.context_mode = validation.one_of("context_mode", context_mode, CONTEXT_MODES)
        self.context_initializer = keras.initializers.get(context_initializer)
        self.num_blocks = validation.positive_int("num_blocks", num_blocks)
        self.hidden = validation.positive_int("hidden", hidden)
        try:
            kernel_sizes = tuple(validation.positive_int("kernel_sizes", k) for k in kernel_sizes)
        except TypeError:
            kernel_sizes = ()
        if not kernel_sizes:
            raise ValueError(
                f"kernel_sizes must be a non-empty list of sizes >= 1; got {kernel_sizes!r}."
            )
        self.kernel_sizes = kernel_sizes
        self.coeff = validation.coeff(coeff)
        self.activation = activation
        stack = self.num_blocks if self.num_blocks > 1 else None
        self.power_iterations = validation.positive_int("power_iterations", power_iterations)
        self.power_tol = (
            None if power_tol is None else validation.positive_float("power_tol", power_tol)
        )
        self.power_vectors = validation.positive_int("power_vectors", power_vectors)
        self.dropout = validation.fraction("dropout", dropout)
        self.preactivation = bool(preactivation)
        self.residual = ResidualFunction(
            self.name,
            self.hidden,
            self.kernel_sizes,
            self.coeff,
            activation,
            self.preactivation,
            self.dropout,
            spectral=dict(
                power_iterations=self.power_iterations,
                power_tol=self.power_tol,
                power_vectors=self.power_vectors,
            ),
            stack=stack,
            context_shape=self.context_shape,
            context_mode=self.context_mode,
            context_initializer=self.context_initializer,
        )
        # The stack owns g's sublayers (tracked, trained and saved under these names).
        self.activation_fns = self.residual.activation_fns
        self.actnorm_mode = _actnorm_mode(actnorm)
        self.actnorm_variance_floor = validation.non_negative_float(
            "actnorm_variance_floor", actnorm_variance_floor
        )
        self.actnorm = (
            ActNorm(
                per_position=self.actnorm_mode == "position",
                variance_floor=self.actnorm_variance_floor,
                stack=stack,
                name=f"{self.name}_actnorm",
            )
            if self.actnorm_mode
            else None
        )
        self.estimator = logdet_lib.get(logdet)
        self.inverse_defaults = inverse_lib.InverseSettings().replace(
            solver=solver, max_iterations=max_iterations, atol=atol, rtol=rtol, strict=strict
        )
        self.seed = None if seed is None else validation.non_negative_int("seed", seed)
        self.linear_layers = []  # g's spectral layers, made at build
        self._compiled_solvers = {}

    @property
    def conditional(self) -> bool:
        """Whether the stack takes a context (built with ``context_shape``)."""
        return self.context_shape is not None

    @property
    def stack_size(self) -> int | None:
        """``num_blocks`` if the weights are stacked, else None (a single block)."""
        return self.num_blocks if self.num_blocks > 1 else None

    # -- build ---------------------------------------------------------------
    def build(self, input_shape: Sequence[int | None] | Sequence[Sequence[int | None]]) -> None:
        input_shape = validation.input_shape(self, self._data_shape(input_shape), (2, 4))
        self.residual.build(input_shape)
        self.linear_layers = list(self.residual.linear_layers)
        if self.residual.context_projection is not None:
            self.context_projection = self.residual.context_projection
        if self.actnorm is not None:
            self.actnorm.build(input_shape)
        self.probe_counter = self.add_weight(
            name="probe_counter",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    def _pick(self, t, index):
        return Stackable.slice_of(t, index, self.stack_size is not None)

    def residual_function(
        self, training: bool = False, index: int = 0, context: tf.Tensor | None = None
    ) -> Callable[[tf.Tensor], tf.Tensor]:
        """A pure function ``g`` of block ``index`` for this call: kernels normalized once,
        dropout masks fixed; for a conditional stack ``x -> g(x, c)`` at this ``context``.

        With ``training=True`` the spectral layers advance their power iteration
        (once, here), so ``g`` can then be evaluated any number of times (by the
        log-det estimator or the inverse) without changing state. A conditional
        ``g`` takes inputs of the context's batch (or ``k`` example-major copies
        of each example, as the log-det estimators make them).
        """
        if not 0 <= int(index) < self.num_blocks:
            raise ValueError(f"index must be in [0, {self.num_blocks}); got index={index!r}.")
        if not self.built:
            raise ValueError(f"{type(self).__name__} {self.name!r} must be built first.")
        if self.conditional != (context is not None):
            self._take_context(context, None)  # the sentence for a missing / an unexpected context
        c = None
        if context is not None:  # one context, or one per example of the inputs g will take
            c = tf.cast(tf.convert_to_tensor(context), self.compute_dtype)
            c = c[None] if c.shape.rank == len(self.context_shape) else c
            c = broadcast_context(self, c, self.context_shape, c)
        return self.residual.function(self.residual.parameters(training, c), int(index), training)

    def _shape_context(self, context, x):
        return broadcast_context(self, context, self.context_shape, x)

    def _probe_seed(self):
        """A fresh ``[2]`` seed per call: (user seed + replica id, call counter)."""
        counter = tf.convert_to_tensor(self.probe_counter)
        self.probe_counter.assign_add(1)
        replica = 0
        context = tf.distribute.get_replica_context()
        if context is not None:
            replica = context.replica_id_in_sync_group
        base = 0 if self.seed is None else int(self.seed)
        return tf.stack([tf.cast(base, tf.int32) + tf.cast(replica, tf.int32) * 7919, counter])

    # -- protocol --------------------------------------------------------------
    @no_autograph
    def _forward(self, x, training, estimator, context=None):
        """``(y, log_det or None)``; ``estimator=None`` skips the log-det (classifiers).

        ``context``: ``[batch, *context_shape]`` (checked) for a conditional stack, else None.
        """
        parameters = self.residual.parameters(training, context)
        seed = self._probe_seed() if estimator is not None else None
        actnorm = self.actnorm
        if actnorm is not None:
            an_bias, an_log_scale = (
                tf.convert_to_tensor(actnorm.bias),
                tf.convert_to_tensor(actnorm.log_scale),
            )

        def block(
            index: int | tf.Tensor, x: tf.Tensor
        ) -> tuple[tf.Tensor, tf.Tensor, tuple[tf.Tensor, tf.Tensor] | None]:
            log_det = self._zero_log_det(x)
            used = None
            if actnorm is not None:
                used = actnorm.parameters_for_step(
                    x, self._pick(an_bias, index), self._pick(an_log_scale, index), training
                )
                x, log_det = actnorm.affine(x, *used)
            g = self.residual.function(parameters, index, training, batch=tf.shape(x)[0])
            if estimator is None:
                return x + g(x), log_det, used
            block_seed = tf.random.experimental.stateless_fold_in(seed, index)
            gx, block_log_det = estimator(g, x, seed=block_seed)
            return x + gx, log_det + block_log_det, used

        initialize = bool(training) and actnorm is not None
        if self.stack_size is None:
            y, log_det, used = block(0, x)
            if initialize:
                actnorm.store_initialization(*used)
            return y, log_det
        if in_xla_context() and x.shape.rank == 4:
            # XLA:CPU compiles the gradient of a tf.while_loop around convolutions
            # pathologically slowly (measured here: a 4-block loop's gradient 1.2-5 s
            # against 30-70 ms without XLA, and 81 ms unrolled), so under XLA the blocks
            # of an image stack are unrolled (static slices; compile time grows with depth).
            log_det, used_per_block = self._zero_log_det(x), []
            for index in range(self.num_blocks):
                x, block_log_det, used = block(index, x)
                log_det, used_per_block = log_det + block_log_det, used_per_block + [used]
            if initialize:
                actnorm.store_initialization(*(tf.stack(u) for u in zip(*used_per_block)))
            return x, log_det

        def body(
            index: tf.Tensor,
            x: tf.Tensor,
            log_det: tf.Tensor,
            bias_stack: tf.Tensor,
            log_scale_stack: tf.Tensor,
        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
            y, block_log_det, used = block(index, x)
            if initialize:  # collect the initial values (nothing to do once initialized)
                bias_stack, log_scale_stack = tf.cond(
                    actnorm.is_initialized(),
                    lambda: (bias_stack, log_scale_stack),
                    lambda: (
                        tf.tensor_scatter_nd_update(bias_stack, [[index]], used[0][None]),
                        tf.tensor_scatter_nd_update(log_scale_stack, [[index]], used[1][None]),
                    ),
                )
            return index + 1, y, log_det + block_log_det, bias_stack, log_scale_stack

        empty = tf.zeros([0])
        state = (
            tf.constant(0),
            x,
            self._zero_log_det(x),
            an_bias if initialize else empty,
            an_log_scale if initialize else empty,
        )
        _, y, log_det, bias_stack, log_scale_stack = tf.while_loop(
            lambda index, *_: index < self.num_blocks,
            body,
            state,
            maximum_iterations=self.num_blocks,
        )
        if initialize:
            actnorm.store_initialization(bias_stack, log_scale_stack)
        return y, log_det

    def call(
        self,
        inputs: tf.Tensor | Sequence[tf.Tensor],
        training: bool | None = None,
        context: tf.Tensor | None = None,
    ) -> tf.Tensor:
        inputs, context = self._split_pair(inputs, context)
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        return self._forward(x, bool(training), None, self._take_context(context, x))[0]

    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | logdet_lib.LogDetEstimator | None = None,
        context: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        estimator = self.estimator if logdet is None else logdet_lib.get(logdet)
        return self._forward(x, bool(training), estimator, self._take_context(context, x))

    def _inverse(self, y, settings, context=None):
        return self._solve(y, settings, False, context)[0]

    def _inverse_and_info(self, y, settings, context=None):
        return self._solve(y, settings, True, context)

    def _solve(self, y, overrides, return_info, context=None):
        settings = self.inverse_defaults.replace(**overrides)
        # The context is an argument of the traced solve, never captured: an eager solve
        # cached per settings must not keep the first call's context (design note, pitfall 2).
        return inverse_lib.solve_and_report(
            lambda t, *c: self._solve_graph(t, settings, return_info, *c),
            y,
            settings,
            return_info,
            compiled=self._compiled_solvers,
            arguments=() if context is None else (context,),
        )

    @no_autograph
    def _solve_graph(self, y, settings, return_info, context=None):
        """Every block's solve, last block first.

        Returns ``(x, converged, iterations, loop residual, final residual)``.

        A conditional stack solves ``x + g_i(x, c) = y`` for ``x`` with ``c`` held fixed.
        """
        parameters = self.residual.parameters(False, context)
        actnorm = self.actnorm
        if actnorm is not None:
            an_bias, an_log_scale = (
                tf.convert_to_tensor(actnorm.bias),
                tf.convert_to_tensor(actnorm.log_scale),
            )

        def block(
            index: int | tf.Tensor, y: tf.Tensor
        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
            g = self.residual.function(parameters, index, False)
            x, converged, iterations, residual = inverse_lib.run_solver(g, y, settings)
            if return_info:
                final = inverse_lib.final_info(g, x, y, converged, iterations).residual
            else:
                final = tf.zeros_like(residual)
            if actnorm is not None:
                x = actnorm.inverse_affine(
                    x, self._pick(an_bias, index), self._pick(an_log_scale, index)
                )
            return x, converged, iterations, residual, final

        if self.stack_size is None:
            return block(0, y)

        def body(
            index: tf.Tensor,
            y: tf.Tensor,
            converged: tf.Tensor,
            iterations: tf.Tensor,
            residual: tf.Tensor,
            final: tf.Tensor,
        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
            x, c, it, r, f = block(index, y)
            return (
                index - 1,
                x,
                tf.logical_and(converged, c),
                iterations + it,
                tf.maximum(residual, r),
                tf.maximum(final, f),
            )

        batch = tf.shape(y)[:1]
        state = (
            tf.constant(self.num_blocks - 1),
            y,
            tf.ones(batch, tf.bool),
            tf.zeros(batch, tf.int32),
            tf.zeros(batch, y.dtype),
            tf.zeros(batch, y.dtype),
        )
        _, x, converged, iterations, residual, final = tf.while_loop(
            lambda index, *_: index >= 0, body, state, maximum_iterations=self.num_blocks
        )
        return x, converged, iterations, residual, final

    def lipschitz_bounds(self, norms: Sequence[float | list[float]] | None = None) -> list[float]:
        """Certified upper bound on ``Lip(g_i)`` of every block: products of exact operator norms.

        Uses ``operator_norm()`` of each layer as applied (activations are
        1-Lipschitz), or the given ``norms`` (one entry per linear layer). Returns a
        list of ``num_blocks`` Python floats.
        """
        return self.residual.lipschitz_bounds(norms)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        activation = self.activation
        if callable(activation):
            activation = keras.saving.serialize_keras_object(activation)
        config.update(
            num_blocks=self.num_blocks,
            hidden=self.hidden,
            kernel_sizes=list(self.kernel_sizes),
            coeff=self.coeff,
            activation=activation,
            power_iterations=self.power_iterations,
            power_tol=self.power_tol,
            power_vectors=self.power_vectors,
            dropout=self.dropout,
            preactivation=self.preactivation,
            actnorm=self.actnorm_mode or False,
            actnorm_variance_floor=self.actnorm_variance_floor,
            logdet=logdet_lib.serialize(self.estimator),
            seed=self.seed,
        )
        if self.conditional:
            config.update(
                context_shape=list(self.context_shape),
                context_mode=self.context_mode,
                context_initializer=keras.initializers.serialize(self.context_initializer),
            )
        config.update(
            {k: v for k, v in self.inverse_defaults.to_dict().items() if k != "anderson_memory"}
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> InvertibleResidualStack:
        config = dict(config)
        activation = config.get("activation")
        if isinstance(activation, dict):
            config["activation"] = keras.saving.deserialize_keras_object(activation)
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_iresnet")
class InvertibleResidualBlock(InvertibleResidualStack):
    """One invertible residual block ``F(x) = x + g(x)`` (Behrmann et al. 2019, section 2).

    The same arguments as :class:`InvertibleResidualStack` without
    ``num_blocks`` (a stack of one, with unstacked variables). Use a stack for
    deep networks of blocks of the same shape: it traces, compiles and trains
    much faster than a chain of single blocks.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.pop("num_blocks", 1) != 1:
            raise ValueError(
                "InvertibleResidualBlock is one block; use InvertibleResidualStack(num_blocks=...)."
            )
        super().__init__(num_blocks=1, **kwargs)

    def lipschitz_bound(self) -> float:
        """Certified upper bound on ``Lip(g)`` (see :meth:`lipschitz_bounds`)."""
        return self.lipschitz_bounds()[0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("num_blocks")
        return config
