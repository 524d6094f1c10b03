"""keras_iresnet.bridge: the tf.Variables behind Keras variables for TFP, and the refusal of TFP
objects holding variables Keras cannot track."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_iresnet as kir
from tests.test_bijector import flow_2d

tfd = tfp.distributions


def test_trainable_variables_bridge_keras_and_tfp_both_ways():
    flow = flow_2d(n_blocks=1)
    dist = kir.density_model(flow)
    backing = kir.bridge.tf_variables(flow, trainable_only=True)
    assert len(backing) == len(flow.trainable_variables) > 0
    ids = {id(v) for v in dist.trainable_variables}
    assert {id(v) for v in backing} <= ids
    # No variable of the bijector is its own: every one backs a Keras variable.
    assert {id(v) for v in dist.bijector.variables} == {
        id(v) for v in kir.bridge.tf_variables(flow)
    }
    # The other way: a TFP object holding a raw tf.Variable is refused, clearly.
    kir.bridge.check_no_foreign_variables(dist, "model")
    foreign = tfd.Normal(tf.Variable(0.0, name="loc"), 1.0)
    with pytest.raises(ValueError, match="Keras 3 cannot track"):
        kir.bridge.check_no_foreign_variables(foreign, "model")


def test_gradients_through_the_backing_variables_are_the_keras_gradients():
    flow = flow_2d(n_blocks=1)
    x = tf.random.stateless_normal([4, 2], seed=[2, 2])
    backing = kir.bridge.tf_variables(flow, trainable_only=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(flow.forward_and_log_det(x)[1])
    through_backing = tape.gradient(loss, backing)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(flow.forward_and_log_det(x)[1])
    through_keras = tape.gradient(loss, flow.trainable_variables)
    assert sum(g is not None for g in through_keras) > 0
    for a, b in zip(through_backing, through_keras):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="not built"):
        kir.bridge.tf_variables(keras.layers.Dense(2))
