"""The invertible-layer protocol shared by every layer, block, network and bijector.

::

    class InvertibleLayer(keras.layers.Layer):
        def call(self, x, training=None):                 # y = f(x)
        def forward_and_log_det(self, x, training=None):  # (y, log|det df/dx|), log_det: [batch]
        def inverse(self, y):                             # x = f^-1(y)

``forward_and_log_det`` and ``inverse`` may be called on an unbuilt layer: the
layer builds itself from the input shape (for ``inverse``, from the input shape
that corresponds to ``y``, see :meth:`InvertibleLayer.compute_inverse_shape`).
"""
from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["InvertibleLayer"]


class InvertibleLayer(keras.layers.Layer):
    """Base class of the invertible layers of keras_iresnet.

    Subclasses implement :meth:`forward_and_log_det` and :meth:`inverse`; the
    default ``call`` returns the first element of ``forward_and_log_det``.
    """

    def call(self, inputs, training=None):
        return self.forward_and_log_det(inputs, training=training)[0]

    def forward_and_log_det(self, inputs, training=None):
        """Return ``(y, log_det)`` with ``log_det`` of shape ``[batch]``."""
        raise NotImplementedError

    def inverse(self, outputs):
        """Return ``x`` with ``f(x) = outputs``."""
        raise NotImplementedError

    def compute_inverse_shape(self, output_shape):
        """Input shape that produces ``output_shape`` (identity unless overridden)."""
        return tuple(output_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    # -- helpers -------------------------------------------------------------
    def _ensure_built(self, input_shape):
        if not self.built:
            self.build(tuple(input_shape))

    def _ensure_built_from_output(self, output_shape):
        if not self.built:
            self.build(self.compute_inverse_shape(tuple(output_shape)))

    @staticmethod
    def _zero_log_det(x):
        return tf.zeros(tf.shape(x)[:1], dtype=x.dtype)
