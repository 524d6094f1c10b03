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

import keras
import tensorflow as tf

__all__ = ["LipSwish", "get_activation", "LIPSCHITZ_ONE_ACTIVATIONS"]

LIPSCHITZ_ONE_ACTIVATIONS = ("elu", "softplus", "relu", "tanh", "lipswish")


@keras.saving.register_keras_serializable(package="keras_iresnet")
class LipSwish(keras.layers.Layer):
    """LipSwish (Chen et al., 2019, Residual Flows): ``x * sigmoid(beta * x) / 1.1``.

    ``beta = softplus(beta_raw) > 0`` is learnable (initialized to 0.5 like the
    reference implementation). ``max_x d/dx [x sigmoid(beta x)] ~= 1.0998`` for
    every beta > 0, so dividing by 1.1 makes it 1-Lipschitz.

    Shapes: any; elementwise.
    """

    def __init__(self, beta_init=0.5, **kwargs):
        super().__init__(**kwargs)
        if not beta_init > 0:
            raise ValueError(f"beta_init must be > 0; got beta_init={beta_init!r}.")
        self.beta_init = float(beta_init)

    def build(self, input_shape):
        raw = float(tf.math.log(tf.math.expm1(tf.constant(self.beta_init, tf.float64))))
        self.beta_raw = self.add_weight(
            name="beta_raw", shape=(), initializer=keras.initializers.Constant(raw)
        )

    @property
    def beta(self):
        return tf.nn.softplus(tf.convert_to_tensor(self.beta_raw))

    def call(self, inputs):
        return inputs * tf.sigmoid(self.beta * inputs) / 1.1

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["beta_init"] = self.beta_init
        return config


def get_activation(identifier):
    """Resolve an activation name or callable to a callable ``x -> phi(x)``."""
    if callable(identifier):
        return identifier
    if not isinstance(identifier, str) or identifier.lower() not in LIPSCHITZ_ONE_ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {LIPSCHITZ_ONE_ACTIVATIONS} or a 1-Lipschitz callable; "
            f"got activation={identifier!r}."
        )
    name = identifier.lower()
    if name == "lipswish":
        return LipSwish()
    return {"elu": tf.nn.elu, "softplus": tf.nn.softplus, "relu": tf.nn.relu, "tanh": tf.tanh}[name]
