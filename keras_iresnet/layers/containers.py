"""Containers of invertible layers: a chain (InvertibleSequential) and multi-scale factor-out.

Both pass ``training``, ``logdet`` and the inverse settings on to every layer
they hold; their log-dets are sums of their parts'. A container is conditional
if one of its layers is: it then takes ``context=`` and passes the context to its
conditional layers, each getting the context as the layers before it left it
(:meth:`~keras_iresnet.layers.InvertibleLayer.context_after`: an image context
follows every ``Squeeze``); the inverse runs the same contexts in reverse.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.inverse import merge_infos
from keras_iresnet.layers.invertible import InvertibleLayer, route_context
from keras_iresnet.layers.reshaping import flatten_context

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

    from keras_iresnet.logdet import LogDetEstimator

__all__ = ["InvertibleSequential", "FactorOut"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class InvertibleSequential(InvertibleLayer):
    """``f = f_n o ... o f_1``: forward in order, inverse in reverse order, log-dets summed.

    Args:
      layers: list of :class:`InvertibleLayer` (blocks, stacks, ActNorm,
        Squeeze, ..., or other ``InvertibleSequential``).

    ``inverse(y, **settings)`` passes the settings to every layer (the solving
    ones apply them); ``forward_and_log_det(x, logdet=...)`` passes the
    estimator override to every layer. With a conditional layer in the chain,
    every method takes ``context=`` (see the module docstring).
    """

    def __init__(self, layers: Iterable[InvertibleLayer], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        layers = list(layers)
        for layer in layers:
            if not isinstance(layer, InvertibleLayer):
                raise TypeError(
                    "InvertibleSequential takes InvertibleLayer instances; got "
                    f"{type(layer).__name__}."
                )
        self.chain = layers

    @property
    def conditional(self) -> bool:
        return any(layer.conditional for layer in self.chain)

    def context_after(self, context: tf.Tensor | None) -> tf.Tensor | None:
        for layer in self.chain:
            context = layer.context_after(context)
        return context

    def _contexts(self, context):
        """The context each layer sees, in forward order."""
        contexts = []
        for layer in self.chain:
            contexts.append(context)
            context = None if context is None else layer.context_after(context)
        return contexts

    def build(self, input_shape: Sequence[int | None] | Sequence[Sequence[int | None]]) -> None:
        shape = self._data_shape(input_shape)
        for layer in self.chain:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def compute_output_shape(
        self, input_shape: Sequence[int | None] | Sequence[Sequence[int | None]]
    ) -> tuple[int | None, ...]:
        shape = self._data_shape(input_shape)
        for layer in self.chain:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def compute_inverse_shape(self, output_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        shape = tuple(output_shape)
        for layer in reversed(self.chain):
            shape = tuple(layer.compute_inverse_shape(shape))
        return shape

    def call(
        self,
        inputs: tf.Tensor | Sequence[tf.Tensor],
        training: bool | None = None,
        context: tf.Tensor | None = None,
    ) -> tf.Tensor:
        inputs, context = self._split_pair(inputs, context)
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        contexts = self._contexts(self._take_context(context, x))
        for layer, c in zip(self.chain, contexts):
            x = layer(x, training=training, **route_context(layer, c))
        return x

    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | LogDetEstimator | None = None,
        context: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        contexts = self._contexts(self._take_context(context, x))
        total = self._zero_log_det(x)
        for layer, c in zip(self.chain, contexts):
            x, log_det = layer.forward_and_log_det(
                x, training=training, logdet=logdet, **route_context(layer, c)
            )
            total = total + log_det
        return x, total

    def _inverse(self, y, settings, context=None):
        return self._inverse_and_info(y, settings, context, with_info=False)[0]

    def _inverse_and_info(self, y, settings, context=None, with_info=True):
        infos = []
        pairs = list(zip(self.chain, self._contexts(context)))
        for layer, c in reversed(pairs):
            if with_info:
                y, info = layer.inverse(y, return_info=True, **route_context(layer, c), **settings)
                infos.append(info)
            else:
                y = layer.inverse(y, **route_context(layer, c), **settings)
        return y, merge_infos(infos) if with_info else None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layers"] = [keras.saving.serialize_keras_object(layer) for layer in self.chain]
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> InvertibleSequential:
        config = dict(config)
        config["layers"] = [keras.saving.deserialize_keras_object(c) for c in config["layers"]]
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_iresnet")
class FactorOut(InvertibleLayer):
    """Scales of a flow with half the channels leaving after each scale but the last.

    ``stages[i]`` maps the image that reaches scale ``i`` (e.g. ``Squeeze`` +
    residual stack); after every stage but the last, the last ``factor``
    fraction of its channels (half by default) leaves the flow as latent
    dimensions, and the rest continues. The output is the flat concatenation
    of everything that left, then the last stage's output: ``[batch, D]`` with
    ``D`` the data dimension, so the base distribution is over all of it and
    ``forward_and_log_det`` stays exact (the split is a permutation).
    ``inverse`` splits the latent back into its pieces and runs the stages in
    reverse, re-attaching each factored part.

    Args:
      stages: list of :class:`InvertibleLayer`, one per scale.
      factor: fraction of the channels that leave after each stage but the last.

    Shapes: ``[batch, H, W, C] -> [batch, H * W * C]``.
    """

    def __init__(
        self, stages: Iterable[InvertibleLayer], factor: float = 0.5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        stages = list(stages)
        if not stages or not all(isinstance(stage, InvertibleLayer) for stage in stages):
            raise TypeError("stages must be a non-empty list of InvertibleLayer instances.")
        self.stages = stages
        self.factor = validation.open_unit("factor", factor)

    @property
    def conditional(self) -> bool:
        return any(stage.conditional for stage in self.stages)

    def _contexts(self, context):
        """The context each stage sees, and the one after the last (image contexts move with the
        stages' squeezes; the flat output sees an image context flattened)."""
        contexts = []
        for stage in self.stages:
            contexts.append(context)
            context = None if context is None else stage.context_after(context)
        return contexts, flatten_context(context)

    def context_after(self, context: tf.Tensor | None) -> tf.Tensor | None:
        return self._contexts(context)[1]

    def build(self, input_shape: Sequence[int | None] | Sequence[Sequence[int | None]]) -> None:
        input_shape = self._data_shape(input_shape)
        validation.input_shape(self, input_shape, (4,))
        shape = tuple(input_shape)
        self.event_shape = tuple(int(d) for d in input_shape[1:])
        self.splits = []  # per stage but the last: (kept channels, the factored shape)
        self.final_shape = None
        for index, stage in enumerate(self.stages):
            if not stage.built:
                stage.build(shape)
            shape = tuple(stage.compute_output_shape(shape))
            if index < len(self.stages) - 1:
                channels = int(shape[-1])
                leave = int(round(channels * self.factor))
                if not 0 < leave < channels:
                    raise ValueError(
                        f"FactorOut: stage {index} outputs {channels} channels; "
                        f"factor={self.factor} must leave at least one channel and keep at least "
                        "one."
                    )
                self.splits.append((channels - leave, tuple(shape[1:-1]) + (leave,)))
                shape = shape[:-1] + (channels - leave,)
        self.final_shape = tuple(int(d) for d in shape[1:])

    def compute_output_shape(
        self, input_shape: Sequence[int | None] | Sequence[Sequence[int | None]]
    ) -> tuple[int | None, ...]:
        input_shape = self._data_shape(input_shape)
        return (input_shape[0], int(math.prod(input_shape[1:])))

    def compute_inverse_shape(self, output_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (output_shape[0],) + self.event_shape

    @staticmethod
    def _flat(t):
        return tf.reshape(t, [tf.shape(t)[0], -1])

    def _run(self, x, training, logdet, with_log_det, context=None):
        total = self._zero_log_det(x) if with_log_det else None
        latents = []
        for index, (stage, c) in enumerate(zip(self.stages, self._contexts(context)[0])):
            if with_log_det:
                x, log_det = stage.forward_and_log_det(
                    x, training=training, logdet=logdet, **route_context(stage, c)
                )
                total = total + log_det
            else:
                x = stage(x, training=training, **route_context(stage, c))
            if index < len(self.splits):
                keep = self.splits[index][0]
                latents.append(self._flat(x[..., keep:]))
                x = x[..., :keep]
        latents.append(self._flat(x))
        return tf.concat(latents, axis=1), total

    def call(
        self,
        inputs: tf.Tensor | Sequence[tf.Tensor],
        training: bool | None = None,
        context: tf.Tensor | None = None,
    ) -> tf.Tensor:
        # The output only: no stage estimates a log-det it would throw away.
        inputs, context = self._split_pair(inputs, context)
        x = tf.convert_to_tensor(inputs)
        return self._run(x, training, None, False, self._take_context(context, x))[0]

    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | LogDetEstimator | None = None,
        context: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        return self._run(x, training, logdet, True, self._take_context(context, x))

    def _ensure_built_from_output(self, output_shape):
        if not self.built:
            raise ValueError(
                f"FactorOut {self.name!r} must be built before its inverse (event shape unknown)."
            )

    def _pieces(self, z):
        sizes = [int(math.prod(shape)) for _, shape in self.splits] + [
            int(math.prod(self.final_shape))
        ]
        return tf.split(z, sizes, axis=1)

    def _run_inverse(self, y, settings, return_info, context=None):
        pieces = self._pieces(y)
        batch = tf.shape(y)[:1]
        x = tf.reshape(pieces[-1], tf.concat([batch, self.final_shape], 0))
        contexts = self._contexts(context)[0]
        infos = []
        for index in reversed(range(len(self.stages))):
            if index < len(self.splits):
                factored = tf.reshape(pieces[index], tf.concat([batch, self.splits[index][1]], 0))
                x = tf.concat([x, factored], axis=-1)
            stage, c = self.stages[index], contexts[index]
            if return_info:
                x, info = stage.inverse(x, return_info=True, **route_context(stage, c), **settings)
                infos.append(info)
            else:
                x = stage.inverse(x, **route_context(stage, c), **settings)
        return x, infos

    def _inverse(self, y, settings, context=None):
        return self._run_inverse(y, settings, False, context)[0]

    def _inverse_and_info(self, y, settings, context=None):
        x, infos = self._run_inverse(y, settings, True, context)
        return x, merge_infos(infos)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            stages=[keras.saving.serialize_keras_object(stage) for stage in self.stages],
            factor=self.factor,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FactorOut:
        config = dict(config)
        config["stages"] = [keras.saving.deserialize_keras_object(c) for c in config["stages"]]
        return cls(**config)
