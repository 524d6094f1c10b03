"""keras_iresnet.models.flow: the density flow -- it learns, integrates to one, inverts and
samples, reports bits/dim by the documented formula, and its data-space layers reach the
closed form of independent pixels."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import certify, data, logdet, models
from keras_iresnet.testing import logit_gaussian_bits_per_dim


# -- 2-D (one model, trained once in conftest.trained_2d_flow) --------------------------------
def test_2d_flow_learns_integrates_to_one_and_round_trips(trained_2d_flow, tmp_path):
    run = trained_2d_flow
    model = run.model
    assert run.after < run.before - 0.2, (run.before, run.after)
    grid = np.linspace(-5, 5, 201, dtype="float32")
    points = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    mass = np.exp(model.log_prob(points).numpy()).sum() * (grid[1] - grid[0]) ** 2
    assert mass == pytest.approx(1.0, abs=0.02)
    report = certify.certify(model)
    assert report["all_contractions"] and all(layer["within_coeff"] for layer in report["layers"])
    path = tmp_path / "flow.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    test = run.valid[:8]
    np.testing.assert_allclose(
        loaded.log_prob(test).numpy(), model.log_prob(test).numpy(), rtol=1e-6
    )
    samples = model.sample(16, seed=3)
    np.testing.assert_allclose(
        model.invert(model.features(samples)).numpy(), samples.numpy(), atol=1e-4
    )


# -- image density: data-space layers and accounting -----------------------------------------
def test_bits_per_dim_scaling_for_8bit_images():
    model = models.iresnet_flow((8, 8, 1), blocks=(1,), hidden=8)
    log_prob = tf.constant([-100.0])
    expected = (100.0 + 64 * np.log(256.0)) / (64 * np.log(2.0))
    assert float(model.bits_per_dim(log_prob)[0]) == pytest.approx(expected)
    vectors = models.iresnet_flow((2,), blocks=1, hidden=4)  # continuous data: -ln p / (D ln 2)
    assert float(vectors.bits_per_dim(log_prob)[0]) == pytest.approx(100.0 / (2 * np.log(2.0)))
    assert model.sample(3).shape == (3, 8, 8, 1)


def test_logit_and_learned_diagonal_base_fit_the_closed_form():
    """A flow of only Logit + learned diagonal base, fitted to digits, gives the per-pixel
    Gaussian bits/dim."""
    images, _ = data.digits_arrays()
    rng = np.random.default_rng(0)
    dequantized = ((images.astype("float64") + rng.uniform(size=images.shape)) / 256.0).astype(
        "float32"
    )
    train, test = dequantized[:1400], dequantized[1400:]
    expected = logit_gaussian_bits_per_dim(train.astype("float64"), test.astype("float64"), 1e-6)
    model = models.IResNetFlow((8, 8, 1), trunk=kir.Logit(1e-6), base="diagonal")
    steps = 400
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.2, steps)))
    full_batches = tf.data.Dataset.from_tensors(train).repeat()
    model.fit(full_batches, epochs=1, steps_per_epoch=steps, verbose=0)
    got = model.evaluate(test, verbose=0, return_dict=True)["bits_per_dim"]
    # Full-batch Adam on the per-pixel Gaussian likelihood (64 means, 64 log-stds) converges to
    # the MLE; measured 5e-6 bits/dim from the numpy closed form (float32 sums over 64 pixels).
    assert got == pytest.approx(expected, abs=1e-4), (got, expected)


def test_factor_out_model_samples_and_inverts():
    model = models.iresnet_flow(
        (8, 8, 1), blocks=(1, 1), hidden=8, factor_out=True, logit=1e-6, initial_squeeze=True
    )
    assert model.latent_shape == (64,)
    with pytest.raises(ValueError, match="must leave at least one channel"):
        models.iresnet_flow(
            (8, 8, 1), blocks=(1, 1), hidden=8, factor_out=True, initial_squeeze=False
        )
    x = next(iter(data.image_dataset(data.digits_arrays()[0][:16], task="density", batch_size=16)))
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(x, epochs=1, verbose=0)
    z = model.features(x)
    np.testing.assert_allclose(model.invert(z).numpy(), x.numpy(), atol=1e-5)
    samples = model.sample(4, temperature=0.7, seed=1)
    assert samples.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(
        model.invert(model.features(samples)).numpy(), samples.numpy(), atol=1e-5
    )


def test_eval_estimator_and_standard_error(tmp_path):
    estimator = logdet.PowerSeries(n_terms=8, n_samples=2)
    model = models.iresnet_flow((8, 8, 1), blocks=(1,), hidden=8, eval_logdet=estimator)
    model.compile(keras.optimizers.Adam(1e-3))
    x = next(iter(data.image_dataset(data.digits_arrays()[0][:64], task="density", batch_size=64)))
    results = model.evaluate(x, verbose=0, return_dict=True)
    per_example = model.bits_per_dim(model.log_prob(x)).numpy()
    # The standard error over the examples: std / sqrt(n) of the per-example bits/dim (the
    # evaluation draws its own probes, so the two estimates agree within a few errors).
    assert results["bits_per_dim_stderr"] == pytest.approx(
        per_example.std(ddof=1) / np.sqrt(64), rel=0.2
    )
    assert abs(results["bits_per_dim"] - per_example.mean()) < 5 * results["bits_per_dim_stderr"]
    path = tmp_path / "eval.keras"
    model.save(path)
    assert keras.models.load_model(path).eval_logdet == estimator
