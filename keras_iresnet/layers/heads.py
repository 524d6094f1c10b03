"""The classification head of i-ResNet classifiers and hybrids (section 5.1, Appendix C)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["ClassifierHead"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class ClassifierHead(keras.layers.Layer):
    """BatchNormalization -> ReLU -> global average pooling (images) -> Dense logits.

    The non-invertible part that follows the invertible trunk.

    Args:
      num_classes: number of logits (>= 2).
      momentum: of the batch normalization.

    Shapes: ``[batch, H, W, C]`` or ``[batch, d]`` -> ``[batch, num_classes]``.
    """

    def __init__(self, num_classes: int, momentum: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = validation.positive_int("num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2; got num_classes={num_classes!r}.")
        self.momentum = validation.open_unit("momentum", momentum)
        # The sublayers follow this layer's dtype policy (e.g. dtype="mixed_float16").
        self.norm = keras.layers.BatchNormalization(momentum=self.momentum, dtype=self.dtype_policy)
        self.logits = keras.layers.Dense(self.num_classes, dtype=self.dtype_policy)

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.norm.build(input_shape)
        self.logits.build((None, input_shape[-1]))

    def call(self, features: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        h = tf.nn.relu(self.norm(features, training=training))
        if len(h.shape) == 4:
            h = tf.reduce_mean(h, axis=[1, 2])
        return self.logits(h)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, int]:
        return (input_shape[0], self.num_classes)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_classes=self.num_classes, momentum=self.momentum)
        return config
