"""keras_iresnet.models: classifier, flow and hybrid; the contraction at every step (issue 12)."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import certify, data, logdet, models, recipes, runs

# The documented guarantee of the spectral layers with their defaults (power_vectors=8,
# power_tol=1e-4): effective operator norm <= coeff * (1 + TOL) after every training step.
TOL = 1e-3


def worst_excess(model):
    """max over spectral layers (and stack slices) of exact_norm / coeff - 1."""
    worst = -1.0
    for layer in certify.spectral_layers(model):
        norms = np.atleast_1d(layer.operator_norm())
        worst = max(worst, float(np.max(norms / layer.coeff - 1.0)))
    return worst


class ExactNormsEveryEpoch(keras.callbacks.Callback):
    """Records the worst exact-norm excess after every epoch."""

    def __init__(self):
        super().__init__()
        self.excess = []

    def on_epoch_end(self, epoch, logs=None):
        self.excess.append(worst_excess(self.model))


def digits_density_split(n_train=512):
    return runs.load_split(recipes.get("digits-density"), n_train=n_train, n_test=128)


# -- defaults, documentation ---------------------------------------------------------
def test_class_defaults_are_the_recipes():
    flow = models.IResNetFlow((2,))
    two_d = recipes.get("2d").model
    assert flow.architecture["blocks"] == two_d["blocks"]
    assert flow.architecture["block"] == models.block_config(two_d["block"])
    image = models.IResNetFlow((8, 8, 1), blocks=(1, 1), block={"hidden": 4})
    assert image.architecture["logit"] == recipes.get("mnist").model["logit"]
    assert isinstance(image.base, kir.DiagonalGaussian)
    classifier = models.IResNetClassifier((8, 8, 1), 10)
    assert classifier.stages == tuple(recipes.get("digits-classifier").model["stages"])
    assert classifier.block == models.block_config(recipes.get("digits-classifier").model["block"])


@pytest.mark.parametrize(
    "obj",
    [
        models.IResNetFlow,
        models.IResNetClassifier,
        models.IResNetHybrid,
        models.iresnet_flow,
        models.iresnet_classifier,
        models.iresnet_hybrid,
    ],
)
def test_help_lists_the_arguments(obj):
    text = obj.__doc__ or ""
    target = obj if isinstance(obj, type) else None
    if target is None:  # the builders point to their class, which documents every argument
        assert "See :class:" in text
        return
    assert "Args:" in text
    for name in ("input_shape", "block"):
        assert name in text


def test_block_arguments_complete_the_recipe_block():
    flow = models.iresnet_flow((2,), blocks=3, hidden=8, coeff=0.8)
    stack = flow.trunk.chain[0]
    assert (stack.num_blocks, stack.hidden, stack.coeff) == (3, 8, 0.8)
    assert stack.actnorm_mode == "channel"  # kept from the 2-D recipe's block
    with pytest.raises(ValueError, match="unknown residual-block arguments"):
        models.iresnet_flow((2,), block={"hiden": 8})
    with pytest.raises(ValueError, match="input_shape"):
        models.iresnet_flow((2, 2))
    with pytest.raises(ValueError, match="blocks must be an int"):
        models.iresnet_flow((2,), blocks=(2, 2))


# -- 2-D flow ------------------------------------------------------------------------
def test_2d_flow_trains_integrates_to_one_and_round_trips(tmp_path):
    model = models.iresnet_flow((2,), blocks=6, hidden=16)
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
    report = certify.certify(model)
    assert report["all_contractions"] and all(layer["within_coeff"] for layer in report["layers"])
    path = tmp_path / "flow.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.log_prob(test[:8]).numpy(), model.log_prob(test[:8]).numpy(), rtol=1e-6
    )
    samples = model.sample(16, seed=3)
    np.testing.assert_allclose(
        model.invert(model.features(samples)).numpy(), samples.numpy(), atol=1e-4
    )


# -- issue 12: the contraction holds after every training step --------------------------
def test_2d_flow_is_a_contraction_after_every_epoch_under_aggressive_training():
    """The issue's 2-D flow (6 blocks x 64 at c = 0.9), Adam 1e-2, through keras.Model.fit itself."""
    model = models.iresnet_flow((2,), blocks=6, hidden=64, coeff=0.9)
    model.compile(keras.optimizers.Adam(1e-2))
    check = ExactNormsEveryEpoch()
    keras.Model.fit(
        model, data.sample_2d("moons", 4096), epochs=5, batch_size=256, verbose=0, callbacks=[check]
    )
    assert max(check.excess) <= TOL, check.excess


@pytest.mark.slow
def test_image_flow_is_a_contraction_after_every_epoch_under_aggressive_training():
    split = digits_density_split()
    model = runs.build_model(recipes.get("digits-density"), split)
    model.compile(keras.optimizers.Adam(1e-2))
    check = ExactNormsEveryEpoch()
    train, _ = runs.datasets(recipes.get("digits-density"), split)
    keras.Model.fit(model, train, epochs=3, verbose=0, callbacks=[check], shuffle=False)
    assert max(check.excess) <= TOL, check.excess


def test_contraction_under_mirrored_strategy_and_identical_vectors(mirrored_strategy):
    with mirrored_strategy.scope():
        model = models.iresnet_flow((2,), blocks=4, hidden=32, coeff=0.9)
        model.compile(keras.optimizers.Adam(1e-2))
    check = ExactNormsEveryEpoch()
    keras.Model.fit(
        model, data.sample_2d("moons", 2048), epochs=2, batch_size=256, verbose=0, callbacks=[check]
    )
    assert max(check.excess) <= TOL, check.excess
    for layer in certify.spectral_layers(model):
        replicas = [
            v.numpy() for v in mirrored_strategy.experimental_local_results(layer.power_v.value)
        ]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1])


def test_refinement_at_the_end_of_fit_changes_nothing():
    """What fit reports in its last epoch is what evaluate returns after fit (exact 2-D log-det: 1e-4)."""
    model = models.iresnet_flow((2,), blocks=6, hidden=32, coeff=0.9)
    model.compile(keras.optimizers.Adam(1e-2))
    train, valid = data.sample_2d("moons", 4096, 0), data.sample_2d("moons", 1024, 1)
    refine = kir.callbacks.RefineSpectralNorm()
    history = model.fit(
        train, epochs=3, batch_size=256, validation_data=(valid,), verbose=0, callbacks=[refine]
    )
    after = model.evaluate(valid, verbose=0, return_dict=True)["bits_per_dim"]
    assert abs(history.history["val_bits_per_dim"][-1] - after) <= 1e-4, (history.history, after)
    assert refine.largest_change <= TOL


def test_final_check_warns_when_an_estimate_was_stale():
    """If the vectors lag (here: set to random ones), RefineSpectralNorm fixes them and says so."""
    model = models.iresnet_flow((2,), blocks=2, hidden=16, coeff=0.9)
    for layer in certify.spectral_layers(model):
        layer.kernel.assign(layer.kernel * 3.0)  # the normalization is active
        layer.power_v.assign(tf.random.normal(layer.power_v.shape, seed=4))
    callback = kir.callbacks.RefineSpectralNorm()
    callback.set_model(model)
    with pytest.warns(UserWarning, match="RefineSpectralNorm"):
        callback.on_train_end()
    assert callback.largest_change > TOL
    assert worst_excess(model) <= TOL


def test_jit_compile_gives_the_same_vectors_and_loss():
    x = data.sample_2d("moons", 256)
    keras.utils.set_random_seed(0)
    plain = models.iresnet_flow((2,), blocks=3, hidden=16, coeff=0.9)
    xla = models.iresnet_flow((2,), blocks=3, hidden=16, coeff=0.9)
    xla.set_weights(plain.get_weights())
    plain.compile(keras.optimizers.SGD(1e-2))
    xla.compile(keras.optimizers.SGD(1e-2), jit_compile=True)
    loss_plain = plain.fit(x, epochs=1, batch_size=64, verbose=0, shuffle=False).history["loss"][0]
    loss_xla = xla.fit(x, epochs=1, batch_size=64, verbose=0, shuffle=False).history["loss"][0]
    assert loss_xla == pytest.approx(loss_plain, rel=1e-4)
    for a, b in zip(certify.spectral_layers(plain), certify.spectral_layers(xla)):
        # vectors are defined up to sign: compare the projectors onto the top vector
        va, vb = a.power_v.numpy()[..., 0, :], b.power_v.numpy()[..., 0, :]
        np.testing.assert_allclose(np.abs(np.sum(va * vb, axis=-1)), 1.0, atol=1e-4)


@pytest.mark.parametrize("shape", [(2,), (8, 8, 1)])
def test_flows_train_with_jit_compile(shape):
    """XLA has no slogdet kernel (the exact estimator uses QR there for d > 2)."""
    kwargs = dict(blocks=2, hidden=8) if shape == (2,) else dict(blocks=(1, 1), hidden=8)
    model = models.iresnet_flow(shape, **kwargs)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    if shape == (2,):
        x = data.sample_2d("moons", 256)
    else:
        x = next(
            iter(data.image_dataset(data.digits_arrays()[0][:128], task="density", batch_size=128))
        )
    history = model.fit(x, epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


# -- image density: data-space layers and accounting (issue 13) ---------------------------
def test_bits_per_dim_scaling_for_8bit_images():
    model = models.iresnet_flow((8, 8, 1), blocks=(1,), hidden=8)
    log_prob = tf.constant([-100.0])
    expected = (100.0 + 64 * np.log(256.0)) / (64 * np.log(2.0))
    assert float(model.bits_per_dim(log_prob)[0]) == pytest.approx(expected)
    assert model.sample(3).shape == (3, 8, 8, 1)


def _closed_form_logit_gaussian(train, test, alpha):
    """bits/dim of independent per-pixel Gaussians (MLE on train) in logit space, numpy float64."""

    def logit(x):
        s = alpha + (1 - 2 * alpha) * x
        return np.log(s) - np.log1p(-s), np.log1p(-2 * alpha) - np.log(s) - np.log1p(-s)

    y_train, _ = logit(train.reshape(len(train), -1))
    y_test, log_det = logit(test.reshape(len(test), -1))
    mean, std = y_train.mean(0), y_train.std(0)
    log_p = (
        -0.5 * ((y_test - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi) + log_det
    ).sum(1)
    dims = train[0].size
    return float(np.mean((-log_p + dims * np.log(256)) / (dims * np.log(2))))


def test_logit_and_learned_diagonal_base_fit_the_closed_form():
    """A flow of only Logit + learned diagonal base, fitted to digits, gives the per-pixel Gaussian bits/dim."""
    images, _ = data.digits_arrays()
    rng = np.random.default_rng(0)
    dequantized = ((images.astype("float64") + rng.uniform(size=images.shape)) / 256.0).astype(
        "float32"
    )
    train, test = dequantized[:1400], dequantized[1400:]
    expected = _closed_form_logit_gaussian(train.astype("float64"), test.astype("float64"), 1e-6)
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
    estimator = logdet.PowerSeries(n_terms=20, n_samples=4)
    model = models.iresnet_flow((8, 8, 1), blocks=(1,), hidden=8, eval_logdet=estimator)
    model.compile(keras.optimizers.Adam(1e-3))
    x = next(iter(data.image_dataset(data.digits_arrays()[0][:64], task="density", batch_size=64)))
    results = model.evaluate(x, verbose=0, return_dict=True)
    per_example = model.bits_per_dim(model.log_prob(x)).numpy()
    assert results["bits_per_dim_stderr"] > 0
    assert abs(results["bits_per_dim"] - per_example.mean()) < 5 * results["bits_per_dim_stderr"]
    path = tmp_path / "eval.keras"
    model.save(path)
    assert keras.models.load_model(path).eval_logdet == estimator


# -- hybrid -------------------------------------------------------------------------
def test_hybrid_reports_accuracy_and_round_trips(tmp_path):
    images, labels = data.digits_arrays()
    ds = data.image_dataset(images[:256], labels[:256], "hybrid", 64)
    model = models.iresnet_hybrid((8, 8, 1), 10, blocks=(1, 1), hidden=8, density_weight=0.5)
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(ds, epochs=1, verbose=0)
    assert {"loss", "accuracy", "bits_per_dim", "bits_per_dim_stderr"} <= set(history.history)
    results = model.evaluate(ds, verbose=0, return_dict=True)
    assert 0 <= results["accuracy"] <= 1
    path = tmp_path / "hybrid.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = next(iter(ds))[0]
    np.testing.assert_allclose(
        loaded(x)["logits"].numpy(), model(x)["logits"].numpy(), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="factor out"):
        models.iresnet_hybrid((8, 8, 1), 10, factor_out=True)


# -- non-finite data never trains silently (issue 14) --------------------------------------
@pytest.mark.parametrize("kind", ["exact_2d", "power_series_image"])
def test_non_finite_data_stops_fit_with_a_clear_error(kind):
    if kind == "exact_2d":
        model = models.iresnet_flow((2,), blocks=2, hidden=8)
        x = data.sample_2d("moons", 256)
        x[100, 1] = np.nan
    else:
        model = models.iresnet_flow((8, 8, 1), blocks=(1,), hidden=4, logit=None)
        x = np.random.default_rng(0).uniform(size=(128, 8, 8, 1)).astype("float32")
        x[5, 2, 2, 0] = np.inf
    model.compile(keras.optimizers.Adam(1e-3))
    with pytest.raises(Exception, match="NaN or Inf"):
        model.fit(x, epochs=1, batch_size=64, verbose=0, shuffle=False)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())  # stopped before the bad update


# -- the paper's classifier comparison (slow) -----------------------------------------------
DIGITS_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def digits_results():
    """Test accuracy per seed of the recipe's i-ResNet and its vanilla twin (6 epochs), reconstructions."""
    recipe = recipes.get("digits-classifier")
    split = runs.load_split(recipe)
    _, test = runs.datasets(recipe, split)
    x = next(iter(test))[0][:32]
    results = {"iresnet": {"accuracy": [], "error": []}, "vanilla": {"accuracy": [], "error": []}}
    for seed in DIGITS_SEEDS:
        for vanilla in (False, True):
            model, _, _ = runs.train(
                recipe, split=split, epochs=6, verbose=0, seed=seed, vanilla=vanilla
            )
            entry = results["vanilla" if vanilla else "iresnet"]
            entry["accuracy"].append(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the vanilla inverse is expected not to converge
                entry["error"].append(certify.reconstruction_report(model.trunk, x)["max"])
    return results


@pytest.mark.slow
def test_digits_classifier_learns_and_inverts(digits_results):
    ires = digits_results["iresnet"]
    assert min(ires["accuracy"]) > 0.85, digits_results
    assert max(ires["error"]) < 1e-5, (
        digits_results
    )  # Table 1: i-ResNet reconstructs from its features


@pytest.mark.slow
def test_digits_classifier_within_two_points_of_vanilla(digits_results):
    ires = float(np.mean(digits_results["iresnet"]["accuracy"]))
    vanilla = float(np.mean(digits_results["vanilla"]["accuracy"]))
    assert ires >= vanilla - 0.02, digits_results


def test_model_errors_are_clear():
    with pytest.raises(ValueError, match="trunk= replaces"):
        models.IResNetFlow((2,), trunk=kir.Logit(), blocks=3)
    with pytest.raises(ValueError, match="divisible"):
        models.iresnet_flow((6, 6, 1), blocks=(1, 1, 1))
    with pytest.raises(ValueError, match="num_classes"):
        models.iresnet_classifier((8, 8, 1), 0)
    assert math.isfinite(models.LN2)


# -- what a careless user does ----------------------------------------------------------------
def _weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def _flow_without_data_init():
    return models.iresnet_flow((2,), blocks=2, hidden=8, actnorm=False)


@pytest.mark.parametrize(
    "optimizer", [lambda: keras.optimizers.Adam(1e9), lambda: keras.optimizers.SGD(1e9)]
)
def test_a_diverging_fit_stops_before_the_bad_update_with_one_sentence(optimizer):
    model = _flow_without_data_init()
    model.compile(optimizer())
    before = _weights(model)
    with pytest.raises(kir.divergence.NonFiniteLossError) as error:
        model.fit(data.sample_2d("moons", 512), epochs=2, batch_size=128, verbose=0)
    message = str(error.value)
    assert "\n" not in message and "diverged" in message and "learning rate" in message
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert certify.certify(model)["all_contractions"]


def test_a_non_finite_loss_restores_the_weights_before_the_update_that_caused_it():
    """An update that keeps the weights finite and small but makes the next loss infinite is undone."""
    model = _flow_without_data_init()
    model.compile(keras.optimizers.SGD(1e-3))

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                bias = self.model.trunk.chain[0].linear_layers[-1].bias
                bias.assign(bias + np.float32(np.inf))  # what a bad update would leave

    poison = Poison()
    with pytest.raises(kir.divergence.NonFiniteLossError, match="step 3"):
        model.fit(
            data.sample_2d("moons", 512),
            epochs=1,
            batch_size=128,
            verbose=0,
            callbacks=[poison],
            shuffle=False,
        )
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_nan_data_give_one_sentence_before_any_update():
    model = _flow_without_data_init()
    model.compile(keras.optimizers.Adam(1e-3))
    x = data.sample_2d("moons", 256)
    x[130, 0] = np.nan
    before = _weights(model)
    with pytest.raises(ValueError) as error:
        model.fit(x, epochs=1, batch_size=128, verbose=0, shuffle=False)
    assert "\n" not in str(error.value) and "NaN or Inf" in str(error.value)
    changed = [not np.array_equal(a, b) for a, b in zip(before, _weights(model))]
    assert any(
        changed
    )  # the first batch trained; the second, with the NaN, did not (no NaN weights)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_jit_compile_refuses_batches_of_varying_size_with_one_sentence():
    model = _flow_without_data_init()
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    x = data.sample_2d("moons", 300)
    with pytest.raises(ValueError, match="drop_remainder=True"):
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(128), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="batch_size=128"):
        model.fit(x, epochs=1, batch_size=128, verbose=0)
    history = model.fit(
        tf.data.Dataset.from_tensor_slices(x).batch(128, drop_remainder=True), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    auto = _flow_without_data_init()
    auto.compile(keras.optimizers.Adam(1e-3), jit_compile="auto")
    assert auto.jit_compile is False


@keras.saving.register_keras_serializable(package="keras_iresnet_tests")
def half_tanh(x):
    """A 1-Lipschitz activation of the user's own."""
    return 0.5 * tf.tanh(x)


def test_a_registered_custom_activation_round_trips(tmp_path):
    model = models.iresnet_flow((2,), blocks=2, hidden=8, activation=half_tanh)
    x = data.sample_2d("moons", 16)
    path = tmp_path / "custom.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.trunk.chain[0].activation_fns[1] is half_tanh
    np.testing.assert_allclose(loaded.log_prob(x).numpy(), model.log_prob(x).numpy(), rtol=1e-6)


def test_inputs_of_the_wrong_shape_get_one_sentence_naming_the_shape():
    model = models.iresnet_flow((2,), blocks=2, hidden=4)
    wrong = tf.zeros([4, 3])
    for method in (model.log_prob, model.invert, model.trunk.chain[0].forward_and_log_det):
        with pytest.raises(ValueError, match=r"shape \[batch, 2\]; got shape \[4, 3\]"):
            method(wrong)
