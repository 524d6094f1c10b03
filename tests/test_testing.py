"""keras_iresnet.testing: the contract harness can fail, and its ground truths are right."""

import numpy as np
import pytest
import tensorflow as tf

from keras_iresnet import testing
from tests.test_invertible import ElementwiseAffine


def test_the_harness_catches_a_wrong_log_det(tmp_path):
    """The contract can fail: a layer whose log-det is off by a constant is refused."""

    class WrongLogDet(ElementwiseAffine):
        def forward_and_log_det(self, inputs, training=None, logdet=None):
            y, log_det = super().forward_and_log_det(inputs, training, logdet)
            return y, log_det + 0.1

    with pytest.raises(AssertionError, match="log_det vs slogdet"):
        testing.check_invertible_layer(WrongLogDet(), (3,), tmp_dir=str(tmp_path))


def test_the_harness_catches_a_wrong_inverse(tmp_path):
    class WrongInverse(ElementwiseAffine):
        def _inverse(self, y, settings):
            return super()._inverse(y, settings) + 1e-2

    with pytest.raises(AssertionError, match=r"inverse\(forward\(x\)\)"):
        testing.check_invertible_layer(WrongInverse(), (3,), tmp_dir=str(tmp_path))


def test_ground_truths_on_a_known_linear_map():
    matrix = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.5]])
    fn = lambda x: tf.matmul(x, tf.constant(matrix.T, x.dtype))  # noqa: E731 - rows: y = A x
    np.testing.assert_allclose(testing.explicit_matrix(fn, (3,)), matrix, rtol=1e-12)
    assert testing.top_singular_value(matrix) == pytest.approx(
        np.sqrt(np.max(np.linalg.eigvalsh(matrix.T @ matrix))), rel=1e-12
    )
    x = tf.random.stateless_normal([4, 3], seed=[1, 1], dtype=tf.float64)
    np.testing.assert_allclose(
        testing.full_jacobian_log_det(fn, x), np.full(4, np.log(3.0)), rtol=1e-12
    )


def test_logit_gaussian_baseline_is_the_per_pixel_gaussian():
    """The closed form equals a direct evaluation of the change of variables for one pixel."""
    rng = np.random.default_rng(0)
    train = rng.uniform(0.2, 0.8, size=(500, 1))
    test = rng.uniform(0.2, 0.8, size=(50, 1))
    alpha = 0.05

    def logit(x):
        s = alpha + (1 - 2 * alpha) * x
        return np.log(s / (1 - s))

    y = logit(train[:, 0])
    mean, std = y.mean(), y.std()
    z = logit(test[:, 0])
    log_p = (
        -0.5 * ((z - mean) / std) ** 2
        - np.log(std * np.sqrt(2 * np.pi))
        + np.log(
            (1 - 2 * alpha)
            / ((alpha + (1 - 2 * alpha) * test[:, 0]) * (1 - alpha - (1 - 2 * alpha) * test[:, 0]))
        )
    )
    expected = np.mean((-log_p + np.log(256.0)) / np.log(2.0))
    assert testing.logit_gaussian_bits_per_dim(train, test, alpha) == pytest.approx(
        expected, rel=1e-12
    )
