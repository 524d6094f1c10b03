"""Spectral normalization through the conv operator (issue 2) against explicit operator matrices."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import spectral
from tests.helpers import explicit_matrix, top_singular_value

CONV_CASES = [
    # (input_shape, filters, kernel_size, strides)
    ((6, 6, 3), 5, 3, 1),
    ((6, 6, 4), 2, 1, 1),
    ((6, 6, 2), 6, 3, 1),
    ((5, 7, 3), 4, 3, 1),
    ((6, 6, 3), 4, 3, 2),
]


def _conv_matrix(layer, kernel):
    return explicit_matrix(
        lambda v: layer.apply_operator(v, tf.cast(kernel, tf.float64)), layer.built_input_shape[1:]
    )


@pytest.mark.parametrize("input_shape,filters,kernel_size,strides", CONV_CASES)
def test_conv_power_iteration_matches_explicit_operator(input_shape, filters, kernel_size, strides):
    layer = kir.SpectralConv2D(filters, kernel_size, strides=strides, coeff=0.9)
    layer.build((None,) + input_shape)
    layer.kernel.assign(tf.random.normal(layer.kernel.shape, seed=3))
    layer.refine_power_iteration(max_iterations=5000, tol=1e-7)
    truth = top_singular_value(_conv_matrix(layer, layer.kernel))
    estimate = float(layer.sigma_estimate())
    assert estimate == pytest.approx(truth, rel=1e-4)
    # The normalized operator as applied has norm coeff (the estimate exceeds coeff).
    assert spectral.operator_norm(layer) == pytest.approx(0.9, rel=1e-3)


def test_dense_power_iteration_matches_svd():
    layer = kir.SpectralDense(7, coeff=0.5)
    layer.build((None, 11))
    layer.refine_power_iteration(max_iterations=5000, tol=1e-7)
    truth = np.linalg.svd(layer.kernel.numpy(), compute_uv=False)[0]
    assert float(layer.sigma_estimate()) == pytest.approx(truth, rel=1e-4)
    assert spectral.operator_norm(layer) <= 0.5 * (1 + 1e-3)


def test_one_iteration_per_training_step_converges():
    layer = kir.SpectralConv2D(4, 3, coeff=0.9, build_power_iterations=1)
    x = tf.random.normal([2, 6, 6, 3])
    layer(x)
    truth = top_singular_value(_conv_matrix(layer, layer.kernel))
    first = float(layer.sigma_estimate())
    for _ in range(300):
        layer(x, training=True)
    later = float(layer.sigma_estimate())
    assert first < later <= truth * (1 + 1e-6)
    assert later == pytest.approx(truth, rel=1e-4)


def test_vectors_do_not_move_at_inference():
    layer = kir.SpectralConv2D(4, 3, coeff=0.9, build_power_iterations=1)
    x = tf.random.normal([2, 6, 6, 3])
    layer(x)
    before = layer.power_v.numpy().copy()
    layer(x, training=False)
    np.testing.assert_array_equal(before, layer.power_v.numpy())
    layer(x, training=True)
    assert not np.array_equal(before, layer.power_v.numpy())


def _circular_conv_matrix(kernel, n, m):
    kh, kw = kernel.shape[:2]

    def circular(v):
        v = tf.concat([v, v[:, : kh - 1]], axis=1)
        v = tf.concat([v, v[:, :, : kw - 1]], axis=2)
        return tf.nn.conv2d(v, kernel, 1, "VALID")

    return explicit_matrix(circular, (n, m, kernel.shape[2]))


@pytest.mark.parametrize("shape,n,m", [((3, 3, 2, 3), 6, 6), ((1, 1, 4, 2), 5, 5), ((3, 3, 3, 3), 5, 7)])
def test_fft_singular_values_match_circular_conv_matrix(shape, n, m):
    kernel = tf.random.normal(shape, seed=7, dtype=tf.float64)
    fft_values = spectral.conv_singular_values(kernel, (n, m)).numpy()
    matrix = _circular_conv_matrix(kernel, n, m)
    svd_values = np.linalg.svd(matrix, compute_uv=False)
    svd_values = svd_values[: fft_values.size]
    np.testing.assert_allclose(fft_values, svd_values, rtol=1e-5, atol=1e-12)


def test_normalized_norm_at_most_coeff_and_small_kernels_untouched():
    layer = kir.SpectralConv2D(4, 3, coeff=0.7)
    layer.build((None, 6, 6, 3))
    layer.kernel.assign(3.0 * tf.random.normal(layer.kernel.shape, seed=5))
    layer.refine_power_iteration(5000, tol=1e-7)
    assert spectral.operator_norm(layer) <= 0.7 * (1 + 1e-3)
    # A kernel whose norm is already below coeff is used as is (soft normalization, eq. 2).
    layer.kernel.assign(layer.kernel * (0.3 / float(layer.sigma_estimate())))
    layer.refine_power_iteration(5000, tol=1e-7)
    np.testing.assert_array_equal(layer.normalized_kernel().numpy(), layer.kernel.numpy())


def test_keras_spectral_normalization_bounds_a_different_norm():
    """keras.layers.SpectralNormalization normalizes the reshaped kernel (Miyato), not the conv.

    Its normalized conv does not have operator norm 1: the reshaped-kernel norm is
    only a bound-related quantity (Tsuzuku et al. 2018). Ours lands on coeff.
    """
    kernel = tf.random.normal((3, 3, 3, 4), seed=11)
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    wrapped = keras.layers.SpectralNormalization(conv, power_iterations=50)
    x = tf.random.normal([1, 6, 6, 3])
    wrapped(x)
    conv.kernel.assign(kernel)
    for _ in range(20):
        wrapped(x, training=True)
    keras_norm = top_singular_value(
        explicit_matrix(lambda v: tf.nn.conv2d(v, tf.cast(conv.kernel, tf.float64), 1, "SAME"), (6, 6, 3))
    )
    ours = kir.SpectralConv2D(4, 3, coeff=0.999999, use_bias=False)
    ours.build((None, 6, 6, 3))
    ours.kernel.assign(kernel)
    ours.refine_power_iteration(5000, tol=1e-7)
    our_norm = top_singular_value(_conv_matrix(ours, ours.normalized_kernel()))
    assert our_norm == pytest.approx(1.0, rel=1e-3)
    assert abs(keras_norm - 1.0) > 0.05, keras_norm


def test_get_config_round_trip():
    layer = kir.SpectralConv2D(4, (3, 1), strides=2, padding="valid", coeff=0.8, power_iterations=2)
    clone = kir.SpectralConv2D.from_config(layer.get_config())
    for key in ("filters", "kernel_size", "strides", "padding", "coeff", "power_iterations"):
        assert getattr(clone, key) == getattr(layer, key)
    dense = kir.SpectralDense(3, coeff=0.6)
    assert kir.SpectralDense.from_config(dense.get_config()).coeff == 0.6


def test_keras_save_load_round_trip_restores_outputs_and_vectors(tmp_path):
    inputs = keras.Input((6, 6, 2))
    h = kir.SpectralConv2D(3, 3, coeff=0.9)(inputs)
    h = keras.layers.Flatten()(h)
    outputs = kir.SpectralDense(2, coeff=0.8)(h)
    model = keras.Model(inputs, outputs)
    x = tf.random.normal([4, 6, 6, 2])
    for _ in range(3):
        model(x, training=True)
    path = tmp_path / "spectral.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    for a, b in zip(model.non_trainable_weights, loaded.non_trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert {w.path.split("/")[-1] for w in loaded.non_trainable_weights} == {"power_u", "power_v"}


def test_works_in_tf_function_and_trains():
    layer = kir.SpectralConv2D(3, 3, coeff=0.9)
    x = tf.random.normal([2, 6, 6, 3])
    layer(x)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True) ** 2)
        return tape.gradient(loss, layer.trainable_weights)

    grads = step(x)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


@pytest.mark.parametrize("coeff", [0.0, 1.0, 1.5, -0.2, "0.5", True])
def test_bad_coeff(coeff):
    with pytest.raises(ValueError, match="coeff"):
        kir.SpectralDense(3, coeff=coeff)


def test_bad_power_iterations_and_rank():
    with pytest.raises(ValueError, match="power_iterations"):
        kir.SpectralConv2D(3, 3, power_iterations=0)
    with pytest.raises(ValueError, match="rank 4"):
        kir.SpectralConv2D(3, 3)(tf.zeros([2, 6, 3]))
    with pytest.raises(ValueError, match="rank 2"):
        kir.SpectralDense(3)(tf.zeros([2, 6, 3]))
    with pytest.raises(ValueError, match="padding"):
        kir.SpectralConv2D(3, 3, padding="causal")


def test_operator_norm_on_another_input_shape():
    """The zero-padded conv's norm depends on the input size; operator_norm takes it."""
    layer = kir.SpectralConv2D(3, 3, coeff=0.9)
    layer.build((None, 6, 6, 2))
    layer.kernel.assign(tf.random.normal(layer.kernel.shape, seed=9))
    layer.refine_power_iteration(5000, tol=1e-7)
    kernel = tf.cast(layer.normalized_kernel(), tf.float64)
    truth = top_singular_value(explicit_matrix(lambda v: tf.nn.conv2d(v, kernel, 1, "SAME"), (4, 5, 2)))
    assert spectral.operator_norm(layer, input_shape=(4, 5, 2), tol=1e-8) == pytest.approx(truth, rel=1e-4)
    with pytest.raises(ValueError, match="channels"):
        spectral.operator_norm(layer, input_shape=(4, 5, 3))
