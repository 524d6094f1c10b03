"""keras_iresnet.layers.logit: the logit transform of dequantized data, its log-det and its
input check."""

import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet.testing import full_jacobian_log_det


def test_logit_log_det_formula_and_inverse():
    alpha = 0.05
    layer = kir.Logit(alpha=alpha)
    x = tf.random.stateless_uniform([4, 2, 2, 1], seed=[6, 6])
    y, log_det = layer.forward_and_log_det(x)
    s = alpha + (1 - 2 * alpha) * x.numpy().astype(np.float64)
    np.testing.assert_allclose(y.numpy(), np.log(s / (1 - s)), rtol=1e-5, atol=1e-6)
    # d/dx logit(s(x)) = (1 - 2 alpha) / (s (1 - s)), elementwise.
    formula = np.sum(np.log((1 - 2 * alpha) / (s * (1 - s))).reshape(4, -1), axis=1)
    np.testing.assert_allclose(log_det.numpy(), formula, rtol=1e-5)
    np.testing.assert_allclose(log_det.numpy(), full_jacobian_log_det(layer, x), rtol=1e-5)
    np.testing.assert_allclose(layer.inverse(y).numpy(), x.numpy(), atol=1e-6)


def test_logit_at_the_ends_of_the_unit_interval():
    """alpha keeps 0 and 1 away from the poles: the values and the log-det there are the
    formula's (logit(alpha), logit(1 - alpha), and twice log((1 - 2a) / (a (1 - a)))). In float32
    1 - alpha carries a relative rounding of ~6e-8 / alpha into 1 - s: 6e-5 at alpha = 1e-3."""
    alpha = 1e-3
    y, ends = kir.Logit(alpha=alpha).forward_and_log_det(tf.constant([[0.0, 1.0]]))
    edge = np.log(alpha / (1 - alpha))
    np.testing.assert_allclose(y.numpy(), [[edge, -edge]], rtol=1e-4)
    slope = np.log((1 - 2 * alpha) / (alpha * (1 - alpha)))
    np.testing.assert_allclose(ends.numpy(), [2 * slope], rtol=1e-4)


def test_logit_out_of_range_input_names_the_layer():
    layer = kir.Logit(name="dequantized_logit")
    with pytest.raises(
        ValueError, match=r"Logit 'dequantized_logit' expects inputs in \[0, 1\].*max 1\.5"
    ):
        layer.forward_and_log_det(tf.constant([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="min -0.1"):
        layer(tf.constant([[-0.1, 0.5]]))

    @tf.function
    def graph(t):
        return layer(t)

    with pytest.raises(tf.errors.InvalidArgumentError, match="dequantized_logit"):
        graph(tf.constant([[2.0, 0.5]]))
    # validate_args=False: no check (NaN out).
    y = kir.Logit(validate_args=False)(tf.constant([[2.0]]))
    assert np.isnan(float(y[0, 0]))
    for alpha in (0.0, 0.5, 0.7, -0.1):
        with pytest.raises(ValueError, match="alpha"):
            kir.Logit(alpha=alpha)
