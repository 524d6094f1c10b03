"""keras_iresnet.layers.activations: LipSwish (1-Lipschitz for every beta, the reference's
starting beta) and the activations a residual function accepts."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet.layers.activations import get_activation


def test_lipswish_is_one_lipschitz_and_starts_at_the_reference_beta():
    act = kir.LipSwish()
    x = tf.linspace(-10.0, 10.0, 20001)
    act.build(x.shape)
    assert float(act.beta) == pytest.approx(math.log1p(math.exp(0.5)), rel=1e-6)  # softplus(0.5)
    np.testing.assert_allclose(
        act(x).numpy(), (x * tf.sigmoid(0.974077 * x) / 1.1).numpy(), rtol=1e-5, atol=1e-7
    )
    for beta_raw in [-3.0, 0.0, 2.0, 6.0]:
        act.beta_raw.assign(beta_raw)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = act(x)
        slopes = tape.gradient(y, x)
        assert float(tf.reduce_max(tf.abs(slopes))) <= 1.0
    # The bound is nearly attained (max slope of x sigmoid(x) is ~1.0998): 1.1 is tight.
    assert float(tf.reduce_max(tf.abs(slopes))) > 0.99
    stacked = kir.LipSwish(stack=4, beta_init=2.0)
    stacked.build((None, 3))
    np.testing.assert_allclose(stacked.beta.numpy(), [2.0] * 4, rtol=1e-6)
    with pytest.raises(ValueError, match="holds 4 betas"):
        stacked(tf.zeros([1, 3]))
    with pytest.raises(ValueError, match="beta_init"):
        kir.LipSwish(beta_init=0.0)


def half_tanh(x):
    return 0.5 * tf.tanh(x)


@keras.saving.register_keras_serializable(package="activation_tests")
def registered_half_tanh(x):
    return 0.5 * tf.tanh(x)


def test_get_activation_names_callables_and_errors():
    x = tf.linspace(-3.0, 3.0, 7)
    for name, reference in [
        ("elu", tf.nn.elu),
        ("softplus", tf.nn.softplus),
        ("relu", tf.nn.relu),
        ("tanh", tf.tanh),
    ]:
        np.testing.assert_array_equal(get_activation(name.upper())(x).numpy(), reference(x).numpy())
    first, second = get_activation("lipswish", stack=3), get_activation("lipswish")
    assert isinstance(first, kir.LipSwish) and first.stack == 3 and first is not second
    assert get_activation(half_tanh) is half_tanh
    with pytest.raises(ValueError, match="1-Lipschitz callable"):
        get_activation("sigmoid_x")
    # A saved function comes back from Keras' registry; one that is not registered is named.
    config = keras.saving.serialize_keras_object(registered_half_tanh)
    assert get_activation(config) is registered_half_tanh
    with pytest.raises(ValueError, match="register the function"):
        get_activation(dict(config, config="activation_tests>no_such_function"))
