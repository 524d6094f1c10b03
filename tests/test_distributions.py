"""keras_iresnet.layers.distributions: the base distributions against scipy, their samples,
and the same densities as TFP objects (keras_iresnet.bijector.base_distribution)."""

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import keras_iresnet as kir


def test_diagonal_gaussian_log_prob_sample_and_distribution():
    base = kir.DiagonalGaussian()
    base.build((None, 2, 3))
    rng = np.random.default_rng(7)
    loc, log_scale = rng.normal(size=(2, 3)), 0.3 * rng.normal(size=(2, 3))
    base.loc.assign(loc)
    base.log_scale.assign(log_scale)
    z = rng.normal(size=(5, 2, 3)).astype(np.float32)
    truth = scipy.stats.norm.logpdf(z, loc=loc, scale=np.exp(log_scale)).reshape(5, -1).sum(axis=1)
    np.testing.assert_allclose(base.log_prob(z).numpy(), truth, rtol=1e-5)
    np.testing.assert_allclose(base(z).numpy(), truth, rtol=1e-5)
    # TFP distribution on the same variables.
    dist = kir.bijector.base_distribution(base)
    np.testing.assert_allclose(dist.log_prob(z).numpy(), truth, rtol=1e-5)
    assert dist.event_shape == (2, 3)
    backing = kir.bridge.tf_variables(base)
    assert {id(v) for v in dist.trainable_variables} == {id(v) for v in backing} and len(
        backing
    ) == 2
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(dist.log_prob(z))
    grads = tape.gradient(loss, backing)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(base.log_prob(z))
    keras_grads = tape.gradient(loss, [base.loc, base.log_scale])
    for a, b in zip(grads, keras_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # Samples: shape, and mu + T sigma eps (4000 draws: the std within 5 standard errors).
    samples = base.sample(4000, temperature=0.5, seed=3).numpy()
    assert samples.shape == (4000, 2, 3)
    np.testing.assert_allclose(
        samples.mean(axis=0), loc, atol=5 * 0.5 * np.exp(log_scale).max() / np.sqrt(4000)
    )
    np.testing.assert_allclose(
        samples.std(axis=0), 0.5 * np.exp(log_scale), rtol=5 / np.sqrt(2 * 4000)
    )
    with pytest.raises(ValueError, match="temperature"):
        base.sample(2, temperature=0.0)
    with pytest.raises(ValueError, match=r"\bn must"):
        base.sample(0)


def test_standard_normal_and_get_base():
    base = kir.StandardNormal()
    base.build((None, 4))
    z = np.random.default_rng(8).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        base.log_prob(z).numpy(), scipy.stats.norm.logpdf(z).sum(axis=1), rtol=1e-6
    )
    np.testing.assert_allclose(
        kir.bijector.base_distribution(base).log_prob(z).numpy(),
        base.log_prob(z).numpy(),
        rtol=1e-6,
    )
    assert not base.weights
    samples = base.sample(2000, temperature=2.0, seed=1).numpy()
    assert samples.shape == (2000, 4)
    np.testing.assert_allclose(samples.std(), 2.0, rtol=5 / np.sqrt(2 * 8000))
    assert isinstance(kir.layers.get_base("standard"), kir.StandardNormal)
    assert isinstance(kir.layers.get_base("diagonal"), kir.DiagonalGaussian)
    assert kir.layers.get_base(base) is base
    assert isinstance(
        kir.layers.get_base(keras.saving.serialize_keras_object(kir.DiagonalGaussian())),
        kir.DiagonalGaussian,
    )
    with pytest.raises(ValueError, match="base must be"):
        kir.layers.get_base("laplace")
