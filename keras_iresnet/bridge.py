"""The one place where Keras 3 variables and TensorFlow/TFP variables meet.

Keras 3 tracks only its own ``keras.Variable`` objects (created with
``add_weight``); a raw ``tf.Variable`` held by a Keras layer is invisible to it
(not trained by ``fit``, not saved in ``.keras`` files). TensorFlow Probability
collects ``tf.Variable`` objects from ``tf.Module`` attributes, and a Keras 3
variable is not one. In keras_iresnet all state lives in Keras layers, and:

- :func:`tf_variables` gives TFP (``Bijector.trainable_variables``,
  ``Distribution.trainable_variables``, ``tf.GradientTape`` loops) the
  ``tf.Variable`` behind each Keras variable;
- :func:`check_no_foreign_variables` refuses, with a clear error, a TFP object
  handed to a Keras model that holds ``tf.Variable`` objects Keras would not track.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    import keras

__all__ = ["tf_variables", "check_no_foreign_variables"]


def _backing_variable(keras_variable):
    """The ``tf.Variable`` (or distributed variable) behind a Keras 3 variable."""
    value = getattr(keras_variable, "_value", None)
    if isinstance(value, tf.Variable):
        return value
    if isinstance(keras_variable, tf.Variable):
        return keras_variable
    raise TypeError(
        "expected a Keras 3 variable of the TensorFlow backend; "
        f"got {type(keras_variable).__name__}."
    )


def tf_variables(
    layer: keras.layers.Layer, trainable_only: bool = False
) -> tuple[tf.Variable, ...]:
    """The ``tf.Variable`` objects behind a built Keras layer's variables, in Keras order.

    Gradients taken with ``tf.GradientTape`` with respect to these are the
    gradients of the Keras variables (the layer reads them in ``call``).
    """
    if not layer.built:
        raise ValueError(
            f"layer {layer.name!r} is not built: build it (call it once or pass event_shape) "
            "before exposing its variables to TensorFlow Probability."
        )
    variables = layer.trainable_variables if trainable_only else layer.variables
    return tuple(_backing_variable(v) for v in variables)


def check_no_foreign_variables(module: object, owner_name: str) -> None:
    """Raise if a ``tf.Module`` (e.g. a TFP distribution) holds variables Keras cannot track.

    Variables that back Keras variables (exposed through :func:`tf_variables`) are fine.
    """
    if not isinstance(module, tf.Module):
        return
    keras_backed = set()
    for sub in (module,) + tuple(module.submodules):
        keras_backed.update(id(v) for v in getattr(sub, "keras_backed_variables", ()))
    foreign = [v for v in module.variables if id(v) not in keras_backed]
    if foreign:
        names = ", ".join(sorted({v.name for v in foreign}))
        raise ValueError(
            f"{owner_name} was given a TensorFlow Probability object holding tf.Variable(s) "
            f"[{names}] that Keras 3 cannot track (they would be neither trained by fit nor "
            "saved). Create trainable parameters in a Keras layer with add_weight, or pass "
            "constant tensors."
        )
