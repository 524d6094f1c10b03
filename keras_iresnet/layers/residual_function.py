"""The residual function ``g`` of invertible residual blocks, with its Lipschitz bound (section 2.1).

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
"""

from __future__ import annotations

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

__all__ = ["ResidualFunction"]


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
    """

    def __init__(
        self,
        name,
        hidden,
        kernel_sizes,
        coeff,
        activation,
        preactivation,
        dropout,
        spectral,
        stack=None,
    ):
        self.name = name
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

    def build(self, input_shape):
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

    def parameters(self, training):
        """Every block's parameters for this call: ``(kernels, biases, betas)``, stacked if a stack.

        Kernels are normalized once here (``training=True`` advances the spectral
        layers' iteration, per their ``update_policy``).
        """
        kernels = [layer.normalized_kernel(training=training) for layer in self.linear_layers]
        biases = [
            None if layer.bias is None else tf.convert_to_tensor(layer.bias)
            for layer in self.linear_layers
        ]
        betas = [act.beta if isinstance(act, LipSwish) else None for act in self.activation_fns]
        return kernels, biases, betas

    def function(self, parameters, index, training, batch=None):
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
            [Stackable.slice_of(t, index, stacked) for t in group] for group in parameters
        )
        use_dropout = bool(training) and self.dropout > 0
        masks = {}

        def activate(j, h, act):
            """``phi(h)`` before layer ``j`` (with its dropout mask) and the diagonal of its Jacobian."""
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
            # Copy c of example e sits at row e * k + c: gather its example's mask
            # (a gather, not tf.repeat, whose broadcast XLA cannot shape in a loop).
            copies = tf.shape(h)[0] // tf.shape(masks[j])[0]
            mask = tf.gather(masks[j], tf.range(tf.shape(h)[0]) // copies)
            return out * mask, lambda: slope() * mask

        def g(x):
            h = x
            for j, (layer, act) in enumerate(zip(self.linear_layers, self.activation_fns)):
                if act is not None:
                    h = activate(j, h, act)[0]
                h = layer.apply_operator(h, kernels[j])
                if biases[j] is not None:
                    h = h + biases[j]
            return h

        if self.linear_layers and self.linear_layers[0].operator_rank == 2:

            def value_and_jacobian(x):
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
                return h, jacobian

            g.value_and_jacobian = value_and_jacobian
        return g

    def lipschitz_bounds(self, norms=None):
        """Certified ``Lip(g_i) <= prod_j ||W~_j||`` of every block (activations are 1-Lipschitz).

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
