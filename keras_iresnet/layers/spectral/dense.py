"""The spectral-normalized dense layer (equation (2)): the matrix is the operator."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.layers.spectral.base import SpectralLayerBase

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    import numpy as np

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

    def __init__(self, units: int, coeff: float | None = 0.97, **kwargs: Any) -> None:
        super().__init__(coeff=coeff, **kwargs)
        self.units = validation.positive_int("units", units)

    def _kernel_shape(self, input_shape):
        return (int(input_shape[-1]), self.units)

    def _vector_shapes(self, input_shape):
        return (1, self.units), (1, int(input_shape[-1]))

    def spec(self) -> tuple[()]:
        return ()

    @staticmethod
    def operator(spec: tuple[Any, ...], x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, kernel)

    @staticmethod
    def adjoint(
        spec: tuple[Any, ...],
        u: tf.Tensor,
        kernel: tf.Tensor,
        input_shape: Sequence[int | None] | None = None,
    ) -> tf.Tensor:
        return tf.matmul(u, kernel, transpose_b=True)

    @staticmethod
    def matrix(spec: tuple[Any, ...], kernel: tf.Tensor | np.ndarray) -> tf.Tensor | np.ndarray:
        return kernel

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["units"] = self.units
        return config
