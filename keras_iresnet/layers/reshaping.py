"""Invertible reshaping layers with zero log-det: Squeeze, InjectivePad, FlattenEvent."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.layers.invertible import InvertibleLayer

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from keras_iresnet.logdet import LogDetEstimator

__all__ = ["Squeeze", "InjectivePad", "FlattenEvent", "flatten_context"]


def flatten_context(context: tf.Tensor | None) -> tf.Tensor | None:
    """An image context ``[batch?, H, W, k]`` flattened as the data is flattened (vectors pass)."""
    if context is None or context.shape.rank not in (3, 4):
        return context
    if context.shape.rank == 3:
        return tf.reshape(context, [-1])
    return tf.reshape(context, [tf.shape(context)[0], -1])


@keras.saving.register_keras_serializable(package="keras_iresnet")
class Squeeze(InvertibleLayer):
    """Invertible downsampling (space-to-depth, i-RevNet; Jacobsen et al. 2018).

    ``[batch, H, W, C] -> [batch, H/f, W/f, C*f*f]``; a permutation, so log|det| = 0.
    """

    def __init__(self, factor: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        factor = validation.positive_int("factor", factor)
        if factor < 2:
            raise ValueError(f"factor must be an integer >= 2; got factor={factor!r}.")
        self.factor = factor

    def build(self, input_shape: Sequence[int | None]) -> None:
        if len(input_shape) != 4:
            raise ValueError(
                "Squeeze expects image inputs [batch, H, W, C]; "
                f"got input shape {tuple(input_shape)}."
            )
        for size in input_shape[1:3]:
            if size is not None and size % self.factor:
                raise ValueError(
                    f"Squeeze(factor={self.factor}) needs H and W divisible by {self.factor}; "
                    f"got input shape {tuple(input_shape)}."
                )

    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | LogDetEstimator | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        return tf.nn.space_to_depth(x, self.factor), self._zero_log_det(x)

    def _inverse(self, y, settings):
        return tf.nn.depth_to_space(y, self.factor)

    def context_after(self, context: tf.Tensor | None) -> tf.Tensor | None:
        """An image context ``[batch?, H, W, k]`` is squeezed with the data; vectors pass."""
        if context is None or context.shape.rank not in (3, 4):
            return context
        if context.shape.rank == 3:
            return tf.nn.space_to_depth(context[None], self.factor)[0]
        return tf.nn.space_to_depth(context, self.factor)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        b, h, w, c = input_shape
        f = self.factor
        return (b, None if h is None else h // f, None if w is None else w // f, c * f * f)

    def compute_inverse_shape(self, output_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        b, h, w, c = output_shape
        f = self.factor
        return (b, None if h is None else h * f, None if w is None else w * f, c // (f * f))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["factor"] = self.factor
        return config


@keras.saving.register_keras_serializable(package="keras_iresnet")
class InjectivePad(InvertibleLayer):
    """Append ``pad`` zero channels: ``[..., C] -> [..., C + pad]`` (section 5.1).

    This map is *injective, not bijective*: its inverse drops the appended
    channels (whatever they hold), and ``forward_and_log_det`` returns 0, the
    log-volume change of the map onto its image. Use it in classifiers; a density
    model should not rely on it for a likelihood in the padded space.
    """

    def __init__(self, pad: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pad = validation.positive_int("pad", pad)

    def build(self, input_shape: Sequence[int | None]) -> None:
        validation.input_shape(self, input_shape, (2, 4))

    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | LogDetEstimator | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        paddings = [[0, 0]] * (x.shape.rank - 1) + [[0, self.pad]]
        return tf.pad(x, paddings), self._zero_log_det(x)

    def _inverse(self, y, settings):
        return y[..., : y.shape[-1] - self.pad]

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.pad,)

    def compute_inverse_shape(self, output_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(output_shape[:-1]) + (output_shape[-1] - self.pad,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["pad"] = self.pad
        return config


@keras.saving.register_keras_serializable(package="keras_iresnet")
class FlattenEvent(InvertibleLayer):
    """``[batch, H, W, C] -> [batch, H*W*C]`` and back: a permutation, log|det| = 0.

    Puts fully connected blocks after convolutional ones (Residual Flows' end
    blocks act on the flattened event).
    """

    def build(self, input_shape: Sequence[int | None]) -> None:
        input_shape = validation.input_shape(self, input_shape, (2, 4))
        self.event_shape = tuple(int(d) for d in input_shape[1:])

    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | LogDetEstimator | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        return tf.reshape(
            x, [tf.shape(x)[0], int(math.prod(self.event_shape))]
        ), self._zero_log_det(x)

    def _inverse(self, y, settings):
        if not self.built:
            raise ValueError(
                f"FlattenEvent {self.name!r} must be built (it needs the event shape to invert)."
            )
        return tf.reshape(y, tf.concat([tf.shape(y)[:1], self.event_shape], 0))

    def _ensure_built_from_output(self, output_shape):
        if not self.built:
            raise ValueError(
                f"FlattenEvent {self.name!r} must be built before its inverse "
                "(event shape unknown)."
            )

    def context_after(self, context: tf.Tensor | None) -> tf.Tensor | None:
        """An image context ``[batch?, H, W, k]`` is flattened with the data; vectors pass."""
        return flatten_context(context)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        size = math.prod(input_shape[1:]) if all(d is not None for d in input_shape[1:]) else None
        return (input_shape[0], size)

    def compute_inverse_shape(self, output_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (output_shape[0],) + self.event_shape
