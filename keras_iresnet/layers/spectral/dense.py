"""The spectral-normalized dense layer (equation (2)): the matrix is the operator."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.layers.spectral.base import SpectralLayerBase

__all__ = ["SpectralDense"]


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
