"""Models, data and the command line (issue 5, first part)."""
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_iresnet import certify, cli, data, models


def test_2d_flow_trains_and_integrates_to_one(tmp_path):
    model = models.iresnet_flow((2,), blocks_per_scale=3, hidden=32, coeff=0.9)
    model.compile(keras.optimizers.Adam(3e-3))
    train, test = data.sample_2d("8gaussians", 4000, 0), data.sample_2d("8gaussians", 1000, 1)
    before = model.evaluate(test, verbose=0, return_dict=True)["bits_per_dim"]
    model.fit(train, epochs=4, batch_size=200, verbose=0)
    after = model.evaluate(test, verbose=0, return_dict=True)["bits_per_dim"]
    assert after < before - 0.2, (before, after)
    grid = np.linspace(-5, 5, 201, dtype="float32")
    points = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    mass = np.exp(model.log_prob(points).numpy()).sum() * (grid[1] - grid[0]) ** 2
    assert mass == pytest.approx(1.0, abs=0.02)
    # The refinement callback ran at the end of fit: all layers certified <= coeff.
    report = certify.certify(model)
    assert report["all_contractions"]
    assert all(layer["within_coeff"] for layer in report["layers"])
    path = tmp_path / "flow.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.log_prob(test[:8]).numpy(), model.log_prob(test[:8]).numpy(), rtol=1e-6)


def test_bits_per_dim_scaling_for_8bit_images():
    model = models.iresnet_flow((8, 8, 1), scales=1, blocks_per_scale=1, hidden=8, logdet="power_series")
    log_prob = tf.constant([-100.0])
    expected = (100.0 + 64 * np.log(256.0)) / (64 * np.log(2.0))
    assert float(model.bits_per_dim(log_prob)[0]) == pytest.approx(expected)
    assert model.sample(3).shape == (3, 8, 8, 1)


# The paper's classification layout (section 5.1; the official code's `init_ds 2`,
# `inj_pad`): invertible downsampling first, zero-padding to 16 channels, then
# stages of blocks; trained with the paper's optimizer (SGD, momentum 0.9, lr 0.1).
DIGITS_LAYOUT = dict(stages=(2, 2), hidden=32, initial_squeeze=True, pad_channels=12)
DIGITS_SEEDS = (0, 1, 2)


def _digits_classifiers(epochs=6):
    """Test accuracy per seed of the i-ResNet (c=0.9) and vanilla twins, and reconstruction errors."""
    train, test = data.digits_split("classify")
    x = next(iter(test))[0][:32]
    results = {"iresnet": {"accuracy": [], "error": []}, "vanilla": {"accuracy": [], "error": []}}
    for seed in DIGITS_SEEDS:
        for vanilla in (False, True):
            keras.utils.set_random_seed(seed)
            model = models.iresnet_classifier((8, 8, 1), 10, coeff=0.9, vanilla=vanilla, **DIGITS_LAYOUT)
            model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
            model.fit(train, epochs=epochs, verbose=0)
            entry = results["vanilla" if vanilla else "iresnet"]
            entry["accuracy"].append(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the vanilla inverse is expected not to converge
                entry["error"].append(certify.reconstruction_report(model.trunk, x)["max"])
    return results


@pytest.fixture(scope="module")
def digits_results():
    return _digits_classifiers()


@pytest.mark.slow
def test_digits_classifier_learns_and_inverts(digits_results):
    ires = digits_results["iresnet"]
    assert min(ires["accuracy"]) > 0.85, digits_results
    assert max(ires["error"]) < 1e-5, digits_results  # Table 1: i-ResNet reconstructs from its features


@pytest.mark.slow
def test_digits_classifier_within_two_points_of_vanilla(digits_results):
    """Mean test accuracy over 3 seeds, same layout and training; see the README for the layouts compared."""
    ires = float(np.mean(digits_results["iresnet"]["accuracy"]))
    vanilla = float(np.mean(digits_results["vanilla"]["accuracy"]))
    assert ires >= vanilla - 0.02, digits_results


def test_hybrid_trains_and_round_trips(tmp_path):
    images, labels = data.digits_arrays()
    ds = data.image_dataset(images[:256], labels[:256], "hybrid", 64)
    model = models.iresnet_hybrid((8, 8, 1), 10, stages=(1, 1), hidden=8, density_weight=0.5)
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and "bits_per_dim" in history.history
    path = tmp_path / "hybrid.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = next(iter(ds))[0]
    np.testing.assert_allclose(loaded(x)["logits"].numpy(), model(x)["logits"].numpy(), rtol=1e-5, atol=1e-6)


def test_data_sets_and_errors(tmp_path, mnist_images):
    for name in data.DENSITIES_2D:
        points = data.sample_2d(name, 100, seed=3)
        assert points.shape == (100, 2) and np.all(np.isfinite(points))
        np.testing.assert_array_equal(points, data.sample_2d(name, 100, seed=3))
    with pytest.raises(ValueError, match="name must be one of"):
        data.sample_2d("banana", 10)
    images, labels = data.digits_arrays()
    assert images.shape == (1797, 8, 8, 1) and images.max() == 255 and labels.max() == 9
    batch = next(iter(data.image_dataset(images, None, "density", 32)))
    assert batch.shape == (32, 8, 8, 1) and 0 <= float(tf.reduce_min(batch)) and float(tf.reduce_max(batch)) < 1
    file_images, none = data.mnist_file_arrays()
    assert file_images.shape == (10000, 28, 28, 1) and none is None
    np.testing.assert_array_equal(file_images[..., 0], mnist_images)
    with pytest.raises(FileNotFoundError, match="not found"):
        data.mnist_file_arrays(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="needs labels"):
        data.image_dataset(file_images[:10], None, "classify")


def test_digits_split_uses_training_statistics():
    """Both splits are standardized with the training split's mean and std."""
    images, labels = data.digits_arrays()
    train, test = data.digits_split("classify", n_train=1000, test_batch_size=797)
    mean, std = data.standardization_stats(images[:1000])
    test_x, test_y = next(iter(test))
    np.testing.assert_allclose(test_x.numpy(), (images[1000:] / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(test_y.numpy(), labels[1000:])
    assert abs(float(np.mean(np.concatenate([x.numpy() for x, _ in train])))) < 1e-5
    with pytest.raises(ValueError, match="n_train must be in"):
        data.digits_split(n_train=1797)


def test_tfds_loading_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        images, labels = data.tfds_arrays("mnist", download=True)
    assert images.shape == (12, 28, 28, 1) and labels.shape == (12,)


def test_tfds_offline_fails_fast_with_instructions(tmp_path):
    import time

    start = time.time()
    with pytest.raises(FileNotFoundError, match="download_and_prepare"):
        data.tfds_arrays("mnist", data_dir=str(tmp_path))
    assert time.time() - start < 20


def test_cli_train_evaluate_sample_invert_certify(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--task", "density", "--epochs", "1", "--blocks", "2", "--hidden", "16",
                     "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["all_blocks_certified_contractions"] and (out / "figure.png").stat().st_size > 0
    model = str(out / "model.keras")
    assert cli.main(["evaluate", "--model", model, "--n", "64"]) == 0
    assert "bits_per_dim" in capsys.readouterr().out
    assert cli.main(["sample", "--model", model, "--n", "16"]) == 0
    assert (out / "samples.png").exists()
    assert cli.main(["invert", "--model", model, "--n", "32"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["max_relative_error"] < 1e-5
    assert cli.main(["certify", "--model", model]) == 0


def test_cli_train_classifier_on_digits(tmp_path):
    out = tmp_path / "cls"
    assert cli.main(["train", "--task", "classify", "--epochs", "1", "--blocks", "1", "--hidden", "8",
                     "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reconstruction_error"]["max"] < 1e-5


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["evaluate", "--model", str(tmp_path / "nope.keras")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iresnet: error:") and "\n" not in err
    assert cli.main(["train", "--task", "classify", "--data", "moons", "--out", str(tmp_path)]) == 2
    assert "without labels" in capsys.readouterr().err
    assert cli.main(["train", "--task", "density", "--data", "mnist-file", "--data-path",
                     str(tmp_path / "x.npz"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("shape", [(2,), (8, 8, 1)])
def test_flows_train_with_jit_compile(shape):
    """XLA has no slogdet kernel: the exact estimator switches to QR there."""
    model = models.iresnet_flow(shape, scales=2, blocks_per_scale=1, hidden=8)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    if shape == (2,):
        x = data.sample_2d("moons", 256)
    else:
        x = next(iter(data.image_dataset(data.digits_arrays()[0][:128], task="density", batch_size=128)))
    reference = models.iresnet_flow(shape, scales=2, blocks_per_scale=1, hidden=8)
    reference.set_weights(model.get_weights())
    history = model.fit(x, epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    if shape == (2,):  # exact log-det: the XLA (QR) and slogdet paths agree
        xla_log_prob = tf.function(reference.log_prob, jit_compile=True)(x[:16])
        np.testing.assert_allclose(xla_log_prob.numpy(), reference.log_prob(x[:16]).numpy(), rtol=1e-4, atol=1e-4)
