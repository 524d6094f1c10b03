"""A chain of invertible layers."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_iresnet.inverse import merge_infos
from keras_iresnet.layers.base import InvertibleLayer

__all__ = ["InvertibleSequential"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class InvertibleSequential(InvertibleLayer):
    """``f = f_n o ... o f_1``: forward in order, inverse in reverse order, log-dets summed.

    Args:
      layers: list of :class:`InvertibleLayer` (blocks, stacks, ActNorm,
        Squeeze, ..., or other ``InvertibleSequential``).

    ``inverse(y, **settings)`` passes the settings to every layer (the solving
    ones apply them); ``forward_and_log_det(x, logdet=...)`` passes the
    estimator override to every layer.
    """

    def __init__(self, layers, **kwargs):
        super().__init__(**kwargs)
        layers = list(layers)
        for layer in layers:
            if not isinstance(layer, InvertibleLayer):
                raise TypeError(
                    "InvertibleSequential takes InvertibleLayer instances; got "
                    f"{type(layer).__name__}."
                )
        self.chain = layers

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.chain:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.chain:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def compute_inverse_shape(self, output_shape):
        shape = tuple(output_shape)
        for layer in reversed(self.chain):
            shape = tuple(layer.compute_inverse_shape(shape))
        return shape

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        for layer in self.chain:
            x = layer(x, training=training)
        return x

    def forward_and_log_det(self, inputs, training=None, logdet=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        total = self._zero_log_det(x)
        for layer in self.chain:
            x, log_det = layer.forward_and_log_det(x, training=training, logdet=logdet)
            total = total + log_det
        return x, total

    def _inverse(self, y, settings):
        for layer in reversed(self.chain):
            y = layer.inverse(y, **settings)
        return y

    def _inverse_and_info(self, y, settings):
        infos = []
        for layer in reversed(self.chain):
            y, info = layer.inverse(y, return_info=True, **settings)
            infos.append(info)
        return y, merge_infos(infos)

    def get_config(self):
        config = super().get_config()
        config["layers"] = [keras.saving.serialize_keras_object(layer) for layer in self.chain]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layers"] = [keras.saving.deserialize_keras_object(c) for c in config["layers"]]
        return cls(**config)
