"""The spectral-normalized 2-D convolution: the norm of the convolution *as applied*
(section 2.1).
"""

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

__all__ = ["SpectralConv2D"]


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

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: str = "same",
        coeff: float | None = 0.97,
        **kwargs: Any,
    ) -> None:
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
    def pointwise(self) -> bool:
        """A 1x1 stride-1 convolution: its operator norm is that of the ``C_in x C_out`` matrix."""
        return self.kernel_size == (1, 1) and self.strides == (1, 1)

    def _vector_shapes(self, input_shape):
        h, w, c = (int(d) for d in input_shape[1:])
        if self.pointwise:  # the power iteration runs on the channel matrix (exact, and no
            return (1, self.filters), (1, c)  # degenerate spatial copies of every singular value)
        return (1,) + self._spatial_output(input_shape) + (self.filters,), (1, h, w, c)

    def spec(self) -> tuple[tuple[int, int], str, tuple[int, ...], bool]:
        """``(strides, padding, (H, W, C) of the built input, pointwise)``."""
        return (
            self.strides,
            self.padding.upper(),
            tuple(int(d) for d in self.built_input_shape[1:]),
            self.pointwise,
        )

    @staticmethod
    def operator(spec: tuple[Any, ...], x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        strides, padding = spec[:2]
        return tf.nn.conv2d(x, kernel, strides=strides, padding=padding)

    @staticmethod
    def adjoint(
        spec: tuple[Any, ...],
        u: tf.Tensor,
        kernel: tf.Tensor,
        input_shape: Sequence[int | None] | None = None,
    ) -> tf.Tensor:
        """``conv2d_transpose`` onto inputs of ``input_shape`` (default: the built one)."""
        strides, padding, built = spec[:3]
        h, w, c = tuple(input_shape or built)[-3:]
        output_shape = tf.stack([tf.shape(u)[0], h, w, c])
        return tf.nn.conv2d_transpose(u, kernel, output_shape, strides=strides, padding=padding)

    @staticmethod
    def matrix(
        spec: tuple[Any, ...], kernel: tf.Tensor | np.ndarray
    ) -> tf.Tensor | np.ndarray | None:
        return kernel[..., 0, 0, :, :] if spec[3] else None

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (input_shape[0],) + self._spatial_output(input_shape) + (self.filters,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
        )
        return config
