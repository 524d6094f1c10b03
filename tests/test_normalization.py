"""keras_iresnet.layers.normalization: ActNorm's data-dependent initialization (per channel and
per position), its variance floor and its log-det."""

import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir


def random(shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 3])


def test_actnorm_initializes_per_channel():
    layer = kir.ActNorm()
    x = random([64, 4, 4, 3], 10) * tf.constant([5.0, 0.5, 2.0]) + tf.constant([2.0, -1.0, 0.0])
    y = layer(x, training=True)
    assert layer.bias.shape == (3,) and float(layer.initialized) == 1.0
    np.testing.assert_allclose(tf.reduce_mean(y, [0, 1, 2]).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(tf.math.reduce_std(y, [0, 1, 2]).numpy(), 1, atol=1e-3)
    before = layer.bias.numpy().copy()
    layer(x * 2, training=True)  # only the first batch initializes
    np.testing.assert_array_equal(before, layer.bias.numpy())
    # log|det| = positions * sum(log_scale).
    _, log_det = layer.forward_and_log_det(x)
    np.testing.assert_allclose(log_det.numpy(), 16 * layer.log_scale.numpy().sum(), rtol=1e-6)


def test_actnorm_initializes_per_position():
    layer = kir.ActNorm(per_position=True)
    scales = tf.reshape(tf.range(1.0, 13.0), [2, 2, 3])
    x = random([256, 2, 2, 3], 11) * scales + 3.0
    y = layer(x, training=True)
    assert layer.bias.shape == (2, 2, 3)
    np.testing.assert_allclose(tf.reduce_mean(y, 0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(tf.math.reduce_std(y, 0).numpy(), 1, atol=1e-3)
    _, log_det = layer.forward_and_log_det(x)
    np.testing.assert_allclose(log_det.numpy(), layer.log_scale.numpy().sum(), rtol=1e-6)


def test_actnorm_variance_floor():
    layer = kir.ActNorm(per_position=True, variance_floor=0.2)
    x = tf.concat(
        [random([64, 1], 12) * 0.01 + 0.5, random([64, 1], 13) * 3.0], axis=1
    )  # a near-constant dimension
    layer(x, training=True)
    variance = tf.math.reduce_variance(x, axis=0).numpy()
    assert variance[0] < 0.2 < variance[1]
    expected = -np.log(np.sqrt(np.maximum(variance, 0.2)) + 1e-6)
    np.testing.assert_allclose(layer.log_scale.numpy(), expected, rtol=1e-5)
    assert float(layer.log_scale[0]) == pytest.approx(
        -0.5 * np.log(0.2), rel=1e-5
    )  # not log(1/0.01)
    with pytest.raises(ValueError, match="variance_floor"):
        kir.ActNorm(variance_floor=-1.0)


def test_actnorm_uninitialized_is_identity_and_stacked_is_not_callable():
    layer = kir.ActNorm()
    x = random([2, 3], 14)
    y, log_det = layer.forward_and_log_det(x)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_array_equal(log_det.numpy(), [0.0, 0.0])
    stacked = kir.ActNorm(stack=2)
    stacked.build((None, 3))
    with pytest.raises(ValueError, match="holds 2 parameter sets"):
        stacked(x)
    with pytest.raises(ValueError, match="expects inputs"):
        kir.ActNorm()(tf.zeros([2, 3, 4]))
