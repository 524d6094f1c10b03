"""The residual function ``g`` of invertible residual blocks, with its Lipschitz bound
(section 2.1).

``g_i = W_L phi(... W_2 phi(W_1 x))`` for every block ``i`` of a stack: spectral-
normalized linear layers (equation (2)), each with ``||W_j|| <= coeff``, and
1-Lipschitz activations ``phi``, so ``Lip(g_i) <= prod_j ||W_j|| <= coeff^L < 1``
(the condition of Theorem 1).

:class:`ResidualFunction` owns the *math* of ``g``: it makes the spectral layers
and the activations, gathers every block's parameters once per call (kernels
normalized once), hands out a pure function ``g`` per block (dropout masks fixed
at its first evaluation, so the log-det estimator and the inverse may evaluate it
any number of times), and computes the certified bound. The sublayers it makes
are owned -- tracked, trained and saved -- by the residual stack that holds it
(:class:`keras_iresnet.InvertibleResidualStack`), under the attribute names they
have always had (``linear_layers``, ``activation_fns``), so ``.keras`` files keep
their weight paths.

**Conditional g** (``context_shape=``). A context ``c`` enters through its own,
*unnormalized* projection (:class:`ContextProjection`), after the first linear
layer and before the next activation; the first linear layer stays a spectral
layer of ``x`` only:

- ``"additive"``: ``h_1 = W_1 x + b_1 + U_i c``, then ``g_i = W_L phi(... W_2 phi(h_1))``
  as before (with ``preactivation``: ``W_1 phi(x) + b_1 + U_i c``; with a single
  linear layer ``g_i = W_1 x + b_1 + U_i c``);
- ``"film"``: ``h_1 = s_i(c) * (W_1 x + b_1) + t_i(c)`` with ``[a, t_i] = V_i c + v_i``
  and ``s_i = sigmoid(a)``, a scale in ``(0, 1)`` (``v_i`` starts at +3 for the scale
  logits, ``s ~ 0.95``, and at 0 for the shifts).

A vector context ``[batch, k]`` is projected once per example and broadcast over
the positions of a conv block; an image context ``[batch, H, W, k]`` (the block's
``H`` and ``W``) gets a 1x1 projection, one per position.

**Claim.** For every fixed ``c``, ``Lip_x g_i(., c) <= prod_j ||W_j|| <= coeff^L``:
the bound of the unconditional block, uniform in ``c``. **Why.** For fixed ``c``,
``x -> W_1 x + b_1 + U_i c`` is affine with linear part ``W_1``: a shift that does not
depend on ``x`` changes no Lipschitz constant. For FiLM the linear part is
``diag(s_i(c)) W_1``, with norm ``<= max_k |s_k(c)| ||W_1|| < ||W_1||`` because
``0 < s < 1``. The activations are 1-Lipschitz and the later layers do not see
``c``, so the product bound holds as before. This is why the FiLM scale is a
sigmoid: a scale that could exceed 1 (``2 sigmoid``) would multiply the bound by
``sup_c max_k s_k(c)`` and void the certificate. The size of ``U_i`` (``V_i``) does
not enter: ``g`` need not be Lipschitz in ``c``, because invertibility is asked in
``x`` for each ``c``. Consequences: for every ``c`` the block ``x -> x + g_i(x, c)``
is invertible (Theorem 1) and the fixed-point solve converges at the same rate
(the Banach bound of equation (1)); the truncation bound of Theorem 3 holds with
the same ``L``; :meth:`ResidualFunction.lipschitz_bounds` and
:func:`keras_iresnet.certify.certify` certify conditional blocks unchanged (the
context path does not count). We do not concatenate ``[x; c]`` into ``W_1``: the
normalization would then constrain the context columns for nothing.

The log-det estimators evaluate ``g`` on ``k`` example-major copies of each
example (``Exact``: ``k = d``): row ``r`` belongs to example ``r // k``. A block
gathers the context projection (like the dropout masks) by that rule
(:func:`rows_of_examples`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.layers.activations import (
    LipSwish,
    derivative,
    get_activation,
    lipswish,
    lipswish_derivative,
)
from keras_iresnet.layers.invertible import Stackable
from keras_iresnet.layers.spectral import SpectralConv2D, SpectralDense

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TypeAlias

    _InitializerLike: TypeAlias = str | dict[str, Any] | keras.initializers.Initializer
    #: Every block's parameters for one call (:meth:`ResidualFunction.parameters`).
    _Parameters: TypeAlias = tuple[
        list[tf.Tensor], list[tf.Tensor | None], list[tf.Tensor | None], tf.Tensor | None
    ]

__all__ = ["ResidualFunction", "ContextProjection", "CONTEXT_MODES", "rows_of_examples"]

CONTEXT_MODES = ("additive", "film")

#: FiLM: the scale logits start here (``sigmoid(3) = 0.95``: near the unconditional block).
FILM_SCALE_LOGIT = 3.0


def rows_of_examples(t: tf.Tensor, rows: tf.Tensor | int) -> tf.Tensor:
    """``t[r // k]`` for ``r < rows``: a per-example tensor ``[batch, ...]`` for
    ``rows = k * batch`` example-major copies (``k = 1``: ``t`` itself). A gather, not
    ``tf.repeat``, whose broadcast XLA cannot shape inside a loop."""
    copies = rows // tf.shape(t)[0]
    return tf.gather(t, tf.range(rows) // copies)


@keras.saving.register_keras_serializable(package="keras_iresnet")
class ContextProjection(Stackable, keras.layers.Layer):
    """The context path of a conditional ``g``: ``c -> U_i c`` (additive) or ``V_i c + v_i`` (FiLM).

    Unnormalized (see the module docstring for why it needs no bound). A residual
    stack makes it; :meth:`project` computes every block's projection at once.

    Args:
      context_shape: ``(k,)`` or ``(H, W, k)``.
      width: output channels of the first linear layer of ``g``.
      mode: ``"additive"`` or ``"film"`` (twice the width: scale logits, then shifts).
      initializer: of the kernel ``[stack?, k, m]`` (per slice).
      stack: number of stacked blocks, or None.
    """

    def __init__(
        self,
        context_shape: Sequence[int],
        width: int,
        mode: str = "additive",
        initializer: _InitializerLike = "glorot_uniform",
        stack: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.context_shape = validation.shape("context_shape", context_shape)
        self.width = validation.positive_int("width", width)
        self.mode = validation.one_of("context_mode", mode, CONTEXT_MODES)
        self.initializer = keras.initializers.get(initializer)
        self.set_stack(stack)

    @property
    def channels(self) -> int:
        return self.width * (2 if self.mode == "film" else 1)

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        k = self.context_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.stacked_shape((k, self.channels)),
            initializer=self.per_slice(self.initializer),
        )
        self.bias = None
        if self.mode == "film":
            start = [FILM_SCALE_LOGIT] * self.width + [0.0] * self.width

            def film_bias(shape: Sequence[int], dtype: Any = None) -> tf.Tensor:
                return tf.broadcast_to(tf.constant(start, dtype=dtype or "float32"), shape)

            self.bias = self.add_weight(
                name="bias", shape=self.stacked_shape((self.channels,)), initializer=film_bias
            )

    def project(self, context: tf.Tensor, image: bool) -> tf.Tensor:
        """Every block's projection: ``[stack?, batch, m]``, or ``[stack?, batch, 1, 1, m]``
        for a vector context of a conv block, or ``[stack?, batch, H, W, m]`` for an image context.

        Args:
          context: ``[batch, *context_shape]``.
          image: whether ``g`` acts on images ``[batch, H, W, C]``.
        """
        kernel = tf.cast(tf.convert_to_tensor(self.kernel), context.dtype)
        spatial = "hw" if len(self.context_shape) == 3 else ""
        blocks = "n" if self.stack else ""
        p = tf.einsum(f"b{spatial}k,{blocks}km->{blocks}b{spatial}m", context, kernel)
        if self.bias is not None:
            bias = tf.cast(tf.convert_to_tensor(self.bias), context.dtype)
            if self.stack:
                bias = tf.reshape(bias, [self.stack] + [1] * (p.shape.rank - 2) + [self.channels])
            p = p + bias
        if image and not spatial:
            p = p[..., None, None, :]
        return p

    def scale(self, projection: tf.Tensor) -> tf.Tensor | None:
        """The FiLM scale ``s_i(c)`` in ``(0, 1)`` of these projection rows (None: additive,
        whose ``d h_1 / d h`` is the identity)."""
        if self.mode == "film":
            return tf.sigmoid(projection[..., : self.width])
        return None

    def apply(self, h: tf.Tensor, projection: tf.Tensor) -> tf.Tensor:
        """``h_1`` of the module docstring from ``h = W_1 x + b_1`` and this block's projection
        rows (already gathered to the rows of ``h``)."""
        if self.mode == "film":
            return self.scale(projection) * h + projection[..., self.width :]
        return h + projection

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """Every block's projection of a vector context: ``[stack?, batch, m]``
        (:meth:`project`)."""
        return self.project(inputs, image=False)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return self.stacked_shape(tuple(input_shape[:-1]) + (self.channels,))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            context_shape=list(self.context_shape),
            width=self.width,
            mode=self.mode,
            initializer=keras.initializers.serialize(self.initializer),
            stack=self.stack,
        )
        return config


class ResidualFunction:
    """``g`` of ``stack`` (or one) residual blocks: layers, parameters, functions, bounds.

    Args:
      name: the owning stack's name (the layers are named ``{name}_linear{j}``).
      hidden: width of the hidden layers (channels or units).
      kernel_sizes: kernel size of each convolution; its length is the number of
        linear layers (also for vectors, where the sizes are ignored).
      coeff: spectral-normalization coefficient (None: no normalization).
      activation: a name of :data:`~keras_iresnet.layers.activations.LIPSCHITZ_ONE_ACTIVATIONS`,
        or a 1-Lipschitz callable.
      preactivation: apply ``phi`` to the input of ``g`` too.
      dropout: rate on the hidden activations, training only.
      spectral: keyword arguments of the spectral layers (``power_iterations``,
        ``power_tol``, ``power_vectors``).
      stack: number of stacked blocks, or None for one block.
      context_shape: a conditional ``g(x, c)``: the context's event shape,
        ``(k,)`` or ``(H, W, k)`` (None: unconditional).
      context_mode: ``"additive"`` or ``"film"`` (see the module docstring).
      context_initializer: initializer of the context kernels.
    """

    def __init__(
        self,
        name: str,
        hidden: int,
        kernel_sizes: Sequence[int],
        coeff: float | None,
        activation: str | dict[str, Any] | Callable[[tf.Tensor], tf.Tensor],
        preactivation: bool,
        dropout: float,
        spectral: Mapping[str, Any],
        stack: int | None = None,
        context_shape: Sequence[int] | None = None,
        context_mode: str = "additive",
        context_initializer: _InitializerLike = "glorot_uniform",
    ) -> None:
        self.name = name
        self.context_shape = (
            None if context_shape is None else validation.shape("context_shape", context_shape)
        )
        self.context_mode = validation.one_of("context_mode", context_mode, CONTEXT_MODES)
        self.context_initializer = keras.initializers.get(context_initializer)
        self.context_projection = None  # made at build for a conditional g
        self.hidden = hidden
        self.kernel_sizes = tuple(kernel_sizes)
        self.coeff = coeff
        self.dropout = validation.fraction("dropout", dropout)
        self.spectral = dict(spectral)
        self.stack = stack
        # phi before every linear layer but the first (and before the first too with
        # preactivation); None where no activation is applied, so that a learnable
        # activation (LipSwish) creates no weight that never gets a gradient.
        self.activation_fns = [
            get_activation(activation, stack=stack) if j > 0 or preactivation else None
            for j in range(len(self.kernel_sizes))
        ]
        self.linear_layers = []

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Make and build the spectral layers for inputs ``[batch, d]`` or ``[batch, H, W, C]``."""
        channels = int(input_shape[-1])
        widths = [self.hidden] * (len(self.kernel_sizes) - 1) + [channels]
        shape = tuple(input_shape)
        for j, (width, size) in enumerate(zip(widths, self.kernel_sizes)):
            common = dict(
                coeff=self.coeff, stack=self.stack, name=f"{self.name}_linear{j}", **self.spectral
            )
            if len(input_shape) == 4:
                layer = SpectralConv2D(width, size, padding="same", **common)
            else:
                layer = SpectralDense(width, **common)
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
            self.linear_layers.append(layer)
        for act in self.activation_fns:
            if isinstance(act, keras.layers.Layer) and not act.built:
                act.build(input_shape)
        if self.context_shape is not None:
            self._check_context_shape(input_shape)
            self.context_projection = ContextProjection(
                self.context_shape,
                self.linear_layers[0].compute_output_shape(tuple(input_shape))[-1],
                self.context_mode,
                self.context_initializer,
                stack=self.stack,
                name=f"{self.name}_context",
            )
            self.context_projection.build()

    def _check_context_shape(self, input_shape):
        if len(self.context_shape) != 3:
            return
        if len(input_shape) != 4:
            raise ValueError(
                f"context_shape={self.context_shape}: an image-shaped context (H, W, k) needs "
                f"image inputs [batch, H, W, C]; got input shape {tuple(input_shape)}."
            )
        if tuple(self.context_shape[:2]) != tuple(int(d) for d in input_shape[1:3]):
            raise ValueError(
                f"context_shape={self.context_shape}: an image-shaped context must have the "
                f"block's height and width {tuple(input_shape[1:3])} (a vector context (k,) is "
                "broadcast over positions instead)."
            )

    def parameters(self, training: bool, context: tf.Tensor | None = None) -> _Parameters:
        """Every block's parameters for this call: ``(kernels, biases, betas, projection)``,
        stacked if a stack.

        Kernels are normalized once here (``training=True`` advances the spectral
        layers' iteration, per their ``update_policy``). ``projection`` is every
        block's context projection for this call's context (``[stack?, batch, ...]``,
        :meth:`ContextProjection.project`), None for an unconditional ``g``.

        Args:
          training: a training call.
          context: ``[batch, *context_shape]`` (conditional ``g`` only; checked by the stack).
        """
        kernels = [layer.normalized_kernel(training=training) for layer in self.linear_layers]
        biases = [
            None if layer.bias is None else tf.convert_to_tensor(layer.bias)
            for layer in self.linear_layers
        ]
        betas = [act.beta if isinstance(act, LipSwish) else None for act in self.activation_fns]
        projection = None
        if self.context_projection is not None:
            if context is None:
                raise ValueError(f"the residual function of {self.name!r} needs context=.")
            image = self.linear_layers[0].operator_rank == 4
            projection = self.context_projection.project(context, image)
        elif context is not None:
            raise ValueError(f"the residual function of {self.name!r} takes no context.")
        return kernels, biases, betas, projection

    def function(
        self,
        parameters: _Parameters,
        index: int | tf.Tensor,
        training: bool,
        batch: tf.Tensor | None = None,
    ) -> Callable[[tf.Tensor], tf.Tensor]:
        """``g`` of block ``index``: a pure function ``[batch, ...] -> [batch, ...]``.

        With dropout (training only), one mask per example of a batch of ``batch``
        examples, drawn at the first evaluation (``batch=None``: that evaluation's
        batch); an evaluation on ``k`` copies of each example (example-major, as the
        exact log-det makes them) applies each example's mask to all of its copies,
        so ``g`` stays one function.

        Args:
          parameters: from :meth:`parameters`.
          index: block index (int or scalar int32 tensor).
          training: whether dropout applies.
          batch: the number of examples (scalar int32 tensor) or None.
        """
        stacked = self.stack is not None
        kernels, biases, betas = (
            [Stackable.slice_of(t, index, stacked) for t in group] for group in parameters[:3]
        )
        projection = Stackable.slice_of(parameters[3], index, stacked)
        use_dropout = bool(training) and self.dropout > 0
        masks = {}

        def activate(
            j: int, h: tf.Tensor, act: Callable[[tf.Tensor], tf.Tensor]
        ) -> tuple[tf.Tensor, Callable[[], tf.Tensor]]:
            """``phi(h)`` before layer ``j`` (with its dropout mask) and the diagonal of its
            Jacobian.
            """
            if isinstance(act, LipSwish):
                out, slope = lipswish(h, betas[j]), lambda: lipswish_derivative(h, betas[j])
            else:
                out, slope = act(h), lambda: derivative(act, h)
            if not (use_dropout and j > 0):
                return out, slope
            if j not in masks:
                rows = tf.shape(h)[:1] if batch is None else tf.reshape(batch, [1])
                shape = tf.concat([rows, tf.shape(h)[1:]], 0)
                keep = tf.random.uniform(shape, dtype=h.dtype) >= self.dropout
                masks[j] = tf.cast(keep, h.dtype) / (1.0 - self.dropout)
            # Copy c of example e sits at row e * k + c: its example's mask.
            mask = rows_of_examples(masks[j], tf.shape(h)[0])
            return out * mask, lambda: slope() * mask

        def g(x: tf.Tensor) -> tf.Tensor:
            h = x
            for j, (layer, act) in enumerate(zip(self.linear_layers, self.activation_fns)):
                if act is not None:
                    h = activate(j, h, act)[0]
                h = layer.apply_operator(h, kernels[j])
                if biases[j] is not None:
                    h = h + biases[j]
                if j == 0 and projection is not None:  # the context path (module docstring)
                    h = self.context_projection.apply(
                        h, rows_of_examples(projection, tf.shape(h)[0])
                    )
            return h

        if self.linear_layers and self.linear_layers[0].operator_rank == 2:

            def value_and_jacobian(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                """``(g(x), M)`` with ``g(x + dx) ~= g(x) + dx M``, ``M`` ``[batch, d, d]``:
                ``M = D_0 W_1 D_1 W_2 ... W_L`` with ``D_j`` the activation derivatives
                (the chain rule for rows ``h_j = phi(h_{j-1}) W_j + b_j``; ``det(I + M)`` is
                ``det(I + J_g)``)."""
                h, jacobian = x, None
                for j, (act, kernel) in enumerate(zip(self.activation_fns, kernels)):
                    if act is not None:
                        h, slope = activate(j, h, act)
                        scale = slope()
                        jacobian = (
                            tf.linalg.diag(scale)
                            if jacobian is None
                            else jacobian * scale[:, None, :]
                        )
                    if jacobian is None:
                        shape = tf.concat([tf.shape(x)[:1], tf.shape(kernel)], 0)
                        jacobian = tf.broadcast_to(kernel, shape)
                    else:
                        jacobian = tf.matmul(jacobian, kernel)
                    h = tf.matmul(h, kernel)
                    if biases[j] is not None:
                        h = h + biases[j]
                    if j == 0 and projection is not None:
                        # The context path at fixed c: h_1 = s(c) * h + t(c), so the
                        # x-Jacobian's columns scale by s(c) (FiLM) or stay (additive).
                        rows = rows_of_examples(projection, tf.shape(h)[0])
                        scale = self.context_projection.scale(rows)
                        if scale is not None:
                            jacobian = jacobian * scale[:, None, :]
                        h = self.context_projection.apply(h, rows)
                return h, jacobian

            g.value_and_jacobian = value_and_jacobian
        return g

    def lipschitz_bounds(self, norms: Sequence[float | list[float]] | None = None) -> list[float]:
        """Certified ``Lip(g_i) <= prod_j ||W~_j||`` of every block (activations are 1-Lipschitz).

        For a conditional ``g`` it bounds ``Lip_x g_i(., c)`` for every context ``c``
        (the context path does not count; see the module docstring).

        Args:
          norms: the exact operator norms of the linear layers, one entry per layer
            (a float, or a list per stack slice), if already computed; by default
            each layer's ``operator_norm()``.

        Returns a list of one Python float per block.
        """
        count = self.stack or 1
        bounds = [1.0] * count
        for j, layer in enumerate(self.linear_layers):
            layer_norms = layer.operator_norm() if norms is None else norms[j]
            layer_norms = layer_norms if isinstance(layer_norms, list) else [layer_norms]
            bounds = [b * n for b, n in zip(bounds, layer_norms)]
        return bounds
