"""The invertible residual block ``y = x + g(x)`` with ``Lip(g) < 1`` (Theorem 1)."""
from __future__ import annotations

import keras
import tensorflow as tf

from keras_iresnet._compile import graph_function

from keras_iresnet import inverse as inverse_lib
from keras_iresnet import logdet as logdet_lib
from keras_iresnet.layers.activations import get_activation
from keras_iresnet.layers.base import InvertibleLayer
from keras_iresnet.layers.flow_layers import ActNorm
from keras_iresnet.layers.spectral_layers import (
    SpectralConv2D,
    SpectralDense,
    validate_coeff,
    validate_positive_int,
)

__all__ = ["InvertibleResidualBlock"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class InvertibleResidualBlock(InvertibleLayer):
    """Invertible residual block ``F(x) = x + g(x)`` (Behrmann et al. 2019, section 2).

    ``g = W_L phi(... W_2 phi(W_1 x))`` is built from spectral-normalized layers
    (equation (2)) and 1-Lipschitz activations, so ``Lip(g) <= coeff^L < 1``:

    - images ``[batch, H, W, C]``: :class:`SpectralConv2D` with ``kernel_sizes``
      (the paper's bottleneck ``(3, 1, 3)``), widths ``hidden, ..., hidden, C``;
    - vectors ``[batch, d]``: :class:`SpectralDense` with the same number of
      layers, ``len(kernel_sizes)`` (the sizes themselves are ignored).

    The inverse solves ``x + g(x) = y`` by the fixed-point iteration of
    Algorithm 1 (or Anderson acceleration) in a ``tf.while_loop``; the log-det
    ``log det(I + J_g)`` comes from a pluggable estimator (section 3).

    Args:
      hidden: width of the hidden layers of g (channels or units).
      kernel_sizes: kernel size of each conv of g; its length is the number of
        linear layers (also for vectors).
      coeff: spectral-normalization coefficient, ``0 < coeff < 1``; ``None``
        builds the same block *without* normalization (a vanilla ResNet block,
        not guaranteed invertible).
      activation: ``"elu"`` (default), ``"softplus"``, ``"relu"``, ``"tanh"``,
        ``"lipswish"`` or a callable you guarantee to be 1-Lipschitz.
      power_iterations: power-iteration steps per training call.
      dropout: dropout rate on the hidden activations of g, training only. Note
        that inverted dropout scales by ``1 / (1 - rate)``, so during training
        ``Lip(g)`` can exceed ``coeff`` by that factor (choose coeff accordingly,
        as the paper does); at inference there is no dropout.
      preactivation: apply ``phi`` to the input of g too (the official code's
        pre-activation blocks).
      actnorm: put an :class:`ActNorm` before the residual map (its log-det is added).
      logdet: ``"auto"`` (exact for events of at most 16 dims, else power series),
        ``"exact"``, ``"power_series"``, ``"russian_roulette"`` or an estimator
        from :mod:`keras_iresnet.logdet`.
      solver: ``"fixed_point"`` (Algorithm 1) or ``"anderson"``.
      max_iterations, atol, rtol: inverse stopping rule, see
        :func:`keras_iresnet.inverse.solve_inverse`.
      strict: default for ``inverse(strict=...)``: raise instead of warning when
        the inverse does not converge.
      seed: seed of the log-det probes (each call draws fresh probes from it,
        different on each replica of a strategy).

    Shapes: ``[batch, d]`` or ``[batch, H, W, C]`` -> same; log-det ``[batch]``.
    """

    def __init__(
        self,
        hidden=64,
        kernel_sizes=(3, 1, 3),
        coeff=0.97,
        activation="elu",
        power_iterations=1,
        dropout=0.0,
        preactivation=False,
        actnorm=False,
        logdet="auto",
        solver="fixed_point",
        max_iterations=100,
        atol=1e-6,
        rtol=1e-6,
        strict=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden = validate_positive_int("hidden", hidden)
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not kernel_sizes or any(k < 1 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be a non-empty list of sizes >= 1; got {kernel_sizes}.")
        self.kernel_sizes = kernel_sizes
        self.coeff = validate_coeff(coeff)
        self.activation = activation
        # phi before every linear layer but the first (and before the first too with
        # preactivation); None where no activation is applied, so that a learnable
        # activation (LipSwish) creates no weight that never gets a gradient.
        self.activation_fns = [
            get_activation(activation) if i > 0 or preactivation else None for i in range(len(kernel_sizes))
        ]
        self.power_iterations = validate_positive_int("power_iterations", power_iterations)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must satisfy 0 <= dropout < 1; got dropout={dropout!r}.")
        self.dropout = float(dropout)
        self.preactivation = bool(preactivation)
        self.actnorm = ActNorm() if actnorm else None
        self.estimator = logdet_lib.get(logdet)
        if solver not in inverse_lib.SOLVERS:
            raise ValueError(f"solver must be one of {inverse_lib.SOLVERS}; got solver={solver!r}.")
        self.solver = solver
        self.inverse_settings = dict(
            max_iterations=validate_positive_int("max_iterations", max_iterations),
            atol=float(atol),
            rtol=float(rtol),
        )
        self.strict = bool(strict)
        self.seed = seed
        self.linear_layers = []
        self._compiled_inverse_fn = None

    # -- build ---------------------------------------------------------------
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) not in (2, 4) or any(d is None for d in input_shape[1:]):
            raise ValueError(
                "InvertibleResidualBlock expects inputs [batch, d] or [batch, H, W, C] with a "
                f"fully known event shape; got input shape {input_shape}."
            )
        channels = int(input_shape[-1])
        widths = [self.hidden] * (len(self.kernel_sizes) - 1) + [channels]
        is_image = len(input_shape) == 4
        shape = input_shape
        for i, (width, size) in enumerate(zip(widths, self.kernel_sizes)):
            common = dict(
                coeff=self.coeff,
                power_iterations=self.power_iterations,
                name=f"{self.name}_linear{i}",
            )
            if is_image:
                layer = SpectralConv2D(width, size, padding="same", **common)
            else:
                layer = SpectralDense(width, **common)
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
            self.linear_layers.append(layer)
        for act in self.activation_fns:
            if isinstance(act, keras.layers.Layer) and not act.built:
                act.build(input_shape)
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

    # -- the residual function -------------------------------------------------
    def residual_function(self, training=False):
        """A pure function ``g`` for this call: kernels normalized once, dropout masks fixed.

        With ``training=True`` the spectral layers advance their power iteration
        (once, here), so ``g`` can then be evaluated any number of times (by the
        log-det estimator or the inverse) without changing state.
        """
        kernels = [layer.normalized_kernel(training=training) for layer in self.linear_layers]
        biases = [layer.bias for layer in self.linear_layers]
        use_dropout = bool(training) and self.dropout > 0
        masks = {}

        def g(x):
            h = x
            for i, (layer, kernel, bias) in enumerate(zip(self.linear_layers, kernels, biases)):
                if i > 0 or self.preactivation:
                    h = self.activation_fns[i](h)
                    if use_dropout and i > 0:
                        if i not in masks:
                            keep = tf.random.uniform(tf.shape(h), dtype=h.dtype) >= self.dropout
                            masks[i] = tf.cast(keep, h.dtype) / (1.0 - self.dropout)
                        h = h * masks[i]
                h = layer.apply_operator(h, kernel)
                if bias is not None:
                    h = h + bias
            return h

        return g

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
    def call(self, inputs, training=None):
        x = inputs
        if self.actnorm is not None:
            x = self.actnorm(x, training=training)
        return x + self.residual_function(training=bool(training))(x)

    def forward_and_log_det(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        log_det = self._zero_log_det(x)
        if self.actnorm is not None:
            x, log_det = self.actnorm.forward_and_log_det(x, training=training)
        g = self.residual_function(training=bool(training))
        gx, block_log_det = self.estimator(g, x, seed=self._probe_seed())
        return x + gx, log_det + block_log_det

    def inverse(self, outputs, return_info=False, strict=None, solver=None, **overrides):
        """``x = F^{-1}(y)`` by fixed-point iteration (Algorithm 1) or Anderson acceleration.

        Args:
          outputs: ``y``, ``[batch, ...]``.
          return_info: also return a :class:`keras_iresnet.inverse.InverseInfo`
            (per-example iterations, final relative residual
            ``||x + g(x) - y|| / ||y||``, converged flags).
          strict: raise :class:`keras_iresnet.inverse.InverseNotConvergedError`
            instead of warning when the tolerance is not reached (default: the
            block's ``strict``).
          solver: override the block's solver for this call.
          **overrides: ``max_iterations``, ``atol``, ``rtol`` for this call.
        """
        y = tf.convert_to_tensor(outputs)
        self._ensure_built_from_output(y.shape)
        unknown = set(overrides) - set(self.inverse_settings)
        if unknown:
            raise TypeError(f"unexpected inverse arguments {sorted(unknown)}.")
        settings = {**self.inverse_settings, **overrides}
        solver = solver or self.solver
        strict = self.strict if strict is None else strict
        if tf.executing_eagerly():
            # One traced graph per block and setting (an eager while_loop is a slow
            # Python loop); non-convergence is reported here, in Python.
            inverse_lib.check_finite(y)
            x, info = self._compiled_inverse(y, solver, tuple(sorted(settings.items())))
            last = info.residual
            inverse_lib.report_non_convergence(
                info.converged, last, strict, settings["max_iterations"]
            )
            result = (x, info) if return_info else x
        else:
            result = inverse_lib.solve_inverse(
                self.residual_function(training=False),
                y,
                solver=solver,
                strict=strict,
                return_info=return_info,
                **settings,
            )
        x, info = result if return_info else (result, None)
        if self.actnorm is not None:
            x = self.actnorm.inverse(x)
        return (x, info) if return_info else x

    @property
    def _compiled_inverse(self):
        if getattr(self, "_compiled_inverse_fn", None) is None:

            def run(y, solver, settings):
                return inverse_lib.solve_inverse(
                    self.residual_function(training=False),
                    y,
                    solver=solver,
                    return_info=True,
                    report=False,
                    **dict(settings),
                )

            self._compiled_inverse_fn = graph_function(run)
        return self._compiled_inverse_fn

    def lipschitz_bound(self):
        """Certified upper bound on ``Lip(g)``: product of the exact operator norms.

        Uses :func:`keras_iresnet.spectral.operator_norm` of each layer as applied
        (activations are 1-Lipschitz). Returns a Python float.
        """
        from keras_iresnet.spectral import operator_norm

        bound = 1.0
        for layer in self.linear_layers:
            bound *= operator_norm(layer)
        return bound

    def get_config(self):
        config = super().get_config()
        activation = self.activation
        if callable(activation):
            activation = keras.saving.serialize_keras_object(activation)
        config.update(
            hidden=self.hidden,
            kernel_sizes=list(self.kernel_sizes),
            coeff=self.coeff,
            activation=activation,
            power_iterations=self.power_iterations,
            dropout=self.dropout,
            preactivation=self.preactivation,
            actnorm=self.actnorm is not None,
            logdet=logdet_lib.serialize(self.estimator),
            solver=self.solver,
            strict=self.strict,
            seed=self.seed,
            **self.inverse_settings,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        activation = config.get("activation")
        if isinstance(activation, dict):
            config["activation"] = keras.saving.deserialize_keras_object(activation)
        return cls(**config)

