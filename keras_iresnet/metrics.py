"""A Keras metric: the mean with its standard error (for bits/dim over examples)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

if TYPE_CHECKING:
    from typing import Any

__all__ = ["MeanWithStandardError"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class MeanWithStandardError(keras.metrics.Metric):
    """Mean of per-example values and its standard error ``std / sqrt(n)``.

    ``result()`` is ``{name: mean, name + "_stderr": standard error}``, so
    ``fit``/``evaluate`` report both (e.g. ``bits_per_dim`` and
    ``bits_per_dim_stderr``). The standard error covers the Monte Carlo noise of
    a stochastic log-det estimator and the spread over the examples.
    Sums are kept in float64.
    """

    def __init__(self, name: str = "mean", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")
        self.total_squares = self.add_variable(
            shape=(), initializer="zeros", dtype="float64", name="total_squares"
        )
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    def update_state(self, values: tf.Tensor, sample_weight: tf.Tensor | None = None) -> None:
        values = tf.cast(tf.reshape(values, [-1]), tf.float64)
        self.total.assign_add(tf.reduce_sum(values))
        self.total_squares.assign_add(tf.reduce_sum(tf.square(values)))
        self.count.assign_add(tf.cast(tf.size(values), tf.float64))

    def result(self) -> dict[str, tf.Tensor]:
        count = tf.maximum(tf.convert_to_tensor(self.count), 1.0)
        mean = self.total / count
        variance = tf.maximum(self.total_squares / count - tf.square(mean), 0.0)
        stderr = tf.sqrt(variance * count / tf.maximum(count - 1.0, 1.0)) / tf.sqrt(count)
        return {
            self.name: tf.cast(mean, tf.float32),
            f"{self.name}_stderr": tf.cast(stderr, tf.float32),
        }
