"""1-Lipschitz activations for residual functions ``g`` (section 2.1).

``Lip(g) <= prod_i ||W_i||_2 * Lip(phi)``, so every activation used inside an
invertible residual block must be 1-Lipschitz. The names accepted by
:func:`get_activation` are: ``"elu"``, ``"softplus"``, ``"relu"``, ``"tanh"``,
``"lipswish"`` (a fresh :class:`LipSwish` layer with its own learnable beta), or
any callable that the caller guarantees to be 1-Lipschitz. The paper recommends
activations with continuous derivatives (ELU, softplus) for density models
(section 3.2), since the log-det depends on the derivative.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.layers.invertible import Stackable

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "LipSwish",
    "lipswish",
    "lipswish_derivative",
    "derivative",
    "get_activation",
    "LIPSCHITZ_ONE_ACTIVATIONS",
]

LIPSCHITZ_ONE_ACTIVATIONS = ("elu", "softplus", "relu", "tanh", "lipswish")

#: The effective beta the reference starts from: its raw parameter is 0.5 and it
#: applies softplus (Residual Flows, ``resflows/layers/base/activations.py``).
REFERENCE_BETA = math.log1p(math.exp(0.5))  # 0.974077...


def lipswish(x: tf.Tensor, beta: tf.Tensor | float) -> tf.Tensor:
    """``x * sigmoid(beta * x) / 1.1`` (Chen et al. 2019, eq. 14), 1-Lipschitz for every
    ``beta > 0``.
    """
    return x * tf.sigmoid(beta * x) / 1.1


@keras.saving.register_keras_serializable(package="keras_iresnet")
class LipSwish(Stackable, keras.layers.Layer):
    """LipSwish (Chen et al., 2019, Residual Flows): ``x * sigmoid(beta * x) / 1.1``.

    ``beta = softplus(beta_raw) > 0`` is learnable and starts at the reference
    implementation's effective value ``softplus(0.5) ~= 0.974``.
    ``max_x d/dx [x sigmoid(beta x)] ~= 1.0998`` for every beta > 0, so dividing
    by 1.1 makes it 1-Lipschitz.

    Args:
      beta_init: the starting (effective) beta, > 0.
      stack: hold this many independent betas ``[stack]`` (for residual
        stacks, which apply slice ``i`` in block ``i``), or None.

    Shapes: any; elementwise.
    """

    def __init__(
        self, beta_init: float = REFERENCE_BETA, stack: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.beta_init = validation.positive_float("beta_init", beta_init)
        self.set_stack(stack)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        raw = math.log(math.expm1(self.beta_init))
        self.beta_raw = self.add_weight(
            name="beta_raw",
            shape=self.stacked_shape(()),
            initializer=keras.initializers.Constant(raw),
        )

    @property
    def beta(self) -> tf.Tensor:
        """``softplus(beta_raw)``: a scalar, or ``[stack]``."""
        return tf.nn.softplus(tf.convert_to_tensor(self.beta_raw))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        self.refuse_if_stacked("betas")
        return lipswish(inputs, self.beta)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(beta_init=self.beta_init, stack=self.stack)
        return config


def lipswish_derivative(x: tf.Tensor, beta: tf.Tensor | float) -> tf.Tensor:
    """``d/dx lipswish(x, beta) = (s + beta x s (1 - s)) / 1.1`` with ``s = sigmoid(beta x)``."""
    s = tf.sigmoid(beta * x)
    return (s + beta * x * s * (1.0 - s)) / 1.1


#: Closed-form derivatives of the named activations (elementwise).
DERIVATIVES = {
    tf.nn.elu: lambda a: tf.where(a > 0, tf.ones_like(a), tf.exp(tf.minimum(a, 0.0))),
    tf.nn.softplus: tf.sigmoid,
    tf.nn.relu: lambda a: tf.cast(a > 0, a.dtype),
    tf.tanh: lambda a: 1.0 - tf.square(tf.tanh(a)),
}


def derivative(activation: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    """``phi'(x)`` of an elementwise activation ``phi`` (a name's closed form, else
    forward mode).
    """
    closed = DERIVATIVES.get(activation)
    if closed is not None:
        return closed(x)
    with tf.autodiff.ForwardAccumulator(x, tf.ones_like(x)) as accumulator:
        y = activation(x)
    return accumulator.jvp(y, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def get_activation(
    identifier: str | dict[str, Any] | Callable[[tf.Tensor], tf.Tensor], stack: int | None = None
) -> Callable[[tf.Tensor], tf.Tensor]:
    """Resolve an activation name or callable to a callable ``x -> phi(x)``.

    ``"lipswish"`` gives a fresh :class:`LipSwish` layer (with ``stack`` betas). A
    callable you pass must be 1-Lipschitz (that is your guarantee); to save and load
    models that use it, register it with ``@keras.saving.register_keras_serializable``
    (a serialized function, a dict, is restored from Keras' registry).
    """
    if isinstance(identifier, dict):  # a registered function or layer, as Keras serializes it
        try:
            identifier = keras.saving.deserialize_keras_object(identifier)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"activation {identifier!r} could not be restored ({error}); register the "
                "function with @keras.saving.register_keras_serializable(package=...) before "
                "loading."
            ) from None
    if callable(identifier):
        return identifier
    if not isinstance(identifier, str) or identifier.lower() not in LIPSCHITZ_ONE_ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {LIPSCHITZ_ONE_ACTIVATIONS} or a 1-Lipschitz callable; "
            f"got activation={identifier!r}."
        )
    name = identifier.lower()
    if name == "lipswish":
        return LipSwish(stack=stack)
    return {"elu": tf.nn.elu, "softplus": tf.nn.softplus, "relu": tf.nn.relu, "tanh": tf.tanh}[name]
