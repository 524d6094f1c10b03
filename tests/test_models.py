"""keras_iresnet.models (base, trunks, presets): what the three models share -- the training
step with the spectral update policy (the contraction holds after every training step), XLA,
the block configuration and the presets behind the defaults, saving, one-sentence errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import certify, data, models, recipes, runs
from keras_iresnet.models import presets

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


# -- defaults, documentation ---------------------------------------------------------
def test_class_defaults_are_the_presets():
    flow = models.IResNetFlow((2,))
    two_d = presets.get("two_d_flow")
    assert flow.architecture["blocks"] == two_d["blocks"]
    assert flow.architecture["block"] == models.block_config(two_d["block"])
    image = models.IResNetFlow((8, 8, 1), blocks=(1, 1), block={"hidden": 4})
    assert image.architecture["logit"] == presets.get("mnist_flow")["logit"]
    assert isinstance(image.base, kir.DiagonalGaussian)
    classifier = models.IResNetClassifier((8, 8, 1), 10)
    digits = presets.get("digits_classifier")
    assert classifier.stages == tuple(digits["stages"])
    assert classifier.block == models.block_config(digits["block"])
    # The recipes name the presets (the library never imports the recipes).
    assert recipes.get("2d").model == two_d
    assert recipes.get("digits-classifier").model == digits


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
    if not isinstance(
        obj, type
    ):  # the builders point to their class, which documents every argument
        assert "See :class:" in text
        return
    assert "Args:" in text
    for name in ("input_shape", "block"):
        assert name in text


def test_block_arguments_complete_the_preset_block():
    flow = models.iresnet_flow((2,), blocks=3, hidden=8, coeff=0.8)
    stack = flow.trunk.chain[0]
    assert (stack.num_blocks, stack.hidden, stack.coeff) == (3, 8, 0.8)
    assert stack.actnorm_mode == "channel"  # kept from the 2-D preset's block
    with pytest.raises(ValueError, match="unknown residual-block arguments"):
        models.iresnet_flow((2,), block={"hiden": 8})
    with pytest.raises(ValueError, match="input_shape"):
        models.iresnet_flow((2, 2))
    with pytest.raises(ValueError, match="blocks must be an int"):
        models.iresnet_flow((2,), blocks=(2, 2))


def test_model_errors_are_clear():
    with pytest.raises(ValueError, match="trunk= replaces"):
        models.IResNetFlow((2,), trunk=kir.Logit(), blocks=3)
    with pytest.raises(ValueError, match="divisible"):
        models.iresnet_flow((6, 6, 1), blocks=(1, 1, 1))
    with pytest.raises(ValueError, match="num_classes"):
        models.iresnet_classifier((8, 8, 1), 0)


# -- the spectral update policy: the contraction holds after every training step --------------
@pytest.mark.parametrize(
    "build,shape",
    [
        (lambda: models.iresnet_flow((2,), blocks=2, hidden=8), (2,)),
        (lambda: models.iresnet_classifier((8, 8, 1), 10, stages=(1, 1), hidden=8), (8, 8, 1)),
        (lambda: models.iresnet_hybrid((8, 8, 1), 10, blocks=(1, 1), hidden=8), (8, 8, 1)),
    ],
    ids=["flow", "classifier", "hybrid"],
)
def test_the_models_track_every_spectral_layer_after_the_update(build, shape):
    """The models set update_policy="after_update" on every normalized layer: a training call
    uses the vectors as they are (the training step tracks them after its update)."""
    model = build()
    layers = certify.spectral_layers(model)
    assert layers and {layer.update_policy for layer in layers} == {"after_update"}
    before = [layer.power_v.numpy().copy() for layer in layers]
    model(tf.random.stateless_uniform((2,) + shape, seed=[5, 5]), training=True)
    assert all(int(layer.power_iterations_run) == 0 for layer in layers)
    for layer, vectors in zip(layers, before):
        np.testing.assert_array_equal(layer.power_v.numpy(), vectors)


def test_2d_flow_is_a_contraction_after_every_epoch_under_aggressive_training(trained_2d_flow):
    """6 blocks x 64 at c = 0.9, Adam 1e-2, through keras.Model.fit itself (the guarantee comes
    from the training step, not from fit's extras)."""
    assert max(trained_2d_flow.excess) <= TOL, trained_2d_flow.excess
    assert all(int(layer.power_iterations_run) > 0 for layer in trained_2d_flow.layers)


def test_refinement_at_the_end_of_fit_changes_nothing(trained_2d_flow):
    """What fit reports in its last epoch is what evaluate returns after fit (exact 2-D log-det:
    1e-4), and the final refinement moved no estimate by more than TOL."""
    run = trained_2d_flow
    assert abs(run.history["val_bits_per_dim"][-1] - run.after) <= 1e-4, (run.history, run.after)
    assert run.refine.largest_change <= TOL


@pytest.mark.slow
def test_image_flow_is_a_contraction_after_every_epoch_under_aggressive_training():
    recipe = recipes.get("digits-density")
    split = runs.load_split(recipe, n_train=512, n_test=128)
    model = runs.build_model(recipe, split)
    model.compile(keras.optimizers.Adam(1e-2))
    check = ExactNormsEveryEpoch()
    train, _ = runs.datasets(recipe, split)
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


# -- XLA ------------------------------------------------------------------------------------
def test_jit_compile_gives_the_same_vectors_and_loss():
    """The XLA step (closed-form 2x2 log-det, no slogdet) on batches of one static size is the
    plain step: the same loss and the same tracked vectors."""
    x = data.sample_2d("moons", 256)
    keras.utils.set_random_seed(0)
    plain = models.iresnet_flow((2,), blocks=3, hidden=16, coeff=0.9)
    xla = models.iresnet_flow((2,), blocks=3, hidden=16, coeff=0.9)
    xla.set_weights(plain.get_weights())
    plain.compile(keras.optimizers.SGD(1e-2))
    xla.compile(keras.optimizers.SGD(1e-2), jit_compile=True)
    loss_plain = plain.fit(x, epochs=1, batch_size=64, verbose=0, shuffle=False).history["loss"][0]
    static = tf.data.Dataset.from_tensor_slices(x).batch(64, drop_remainder=True)
    loss_xla = xla.fit(static, epochs=1, verbose=0).history["loss"][0]
    assert loss_xla == pytest.approx(loss_plain, rel=1e-4)
    for a, b in zip(certify.spectral_layers(plain), certify.spectral_layers(xla)):
        # vectors are defined up to sign: compare the projectors onto the top vector
        va, vb = a.power_v.numpy()[..., 0, :], b.power_v.numpy()[..., 0, :]
        np.testing.assert_allclose(np.abs(np.sum(va * vb, axis=-1)), 1.0, atol=1e-4)


def test_jit_compile_refuses_batches_of_varying_size_with_one_sentence():
    model = models.iresnet_flow((2,), blocks=2, hidden=8, actnorm=False)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    x = data.sample_2d("moons", 300)
    with pytest.raises(ValueError, match="drop_remainder=True"):
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(128), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="batch_size=128"):
        model.fit(x, epochs=1, batch_size=128, verbose=0)
    # (test_jit_compile_gives_the_same_vectors_and_loss trains on drop_remainder batches.)


def test_auto_jit_compile_picks_xla_for_dense_models_and_falls_back_for_varying_batches(
    caplog, mirrored_strategy
):
    """On this CPU-only machine "auto" means XLA for a dense flow (measured 2.2x faster) on one
    replica and no XLA for a convolutional one (XLA:CPU convolutions are slower) or under a
    multi-replica strategy; batches of varying size
    then train without XLA, with a log message, instead of the error of jit_compile=True."""
    assert not tf.config.list_physical_devices("GPU")
    dense = models.iresnet_flow((2,), blocks=2, hidden=8, actnorm=False)
    dense.compile(keras.optimizers.Adam(1e-3), jit_compile="auto")
    assert dense.jit_compile is True
    image = models.iresnet_flow((8, 8, 1), blocks=(1,), hidden=4)
    image.compile(keras.optimizers.Adam(1e-3), jit_compile="auto")
    assert image.jit_compile is False
    with mirrored_strategy.scope():  # XLA cannot place mirrored variables on CPU replicas
        mirrored = models.iresnet_flow((2,), blocks=2, hidden=8, actnorm=False)
        mirrored.compile(keras.optimizers.Adam(1e-3), jit_compile="auto")
    assert mirrored.jit_compile is False
    x = data.sample_2d("moons", 300)
    with caplog.at_level("INFO"):
        dense.fit(tf.data.Dataset.from_tensor_slices(x).batch(128), epochs=1, verbose=0)
    assert dense.jit_compile is False
    assert "training without XLA" in caplog.text


# -- saving, resuming, shapes -----------------------------------------------------------------
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


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise RuntimeError("simulated crash")


def test_backup_and_restore_resumes_to_the_same_parameters(tmp_path):
    """Crashed in its second (last) epoch, a fit resumed from the backup of the first ends with
    the parameters of an uninterrupted fit."""
    points = data.sample_2d("8gaussians", 256, seed=0)

    def fresh():
        keras.utils.set_random_seed(0)
        model = models.iresnet_flow((2,), blocks=2, hidden=16, coeff=0.9, logdet="exact")
        model.compile(keras.optimizers.Adam(1e-2))
        return model

    reference = fresh()
    reference.fit(points, epochs=2, batch_size=64, shuffle=False, verbose=0)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = fresh()
    with pytest.raises(RuntimeError, match="simulated crash"):
        interrupted.fit(
            points,
            epochs=2,
            batch_size=64,
            shuffle=False,
            verbose=0,
            callbacks=[backup, _Interrupt(epoch=1, batch=2)],
        )
    resumed = fresh()
    resumed.fit(points, epochs=2, batch_size=64, shuffle=False, verbose=0, callbacks=[backup])
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_inputs_of_the_wrong_shape_get_one_sentence_naming_the_shape():
    model = models.iresnet_flow((2,), blocks=2, hidden=4)
    wrong = tf.zeros([4, 3])
    for method in (model.log_prob, model.invert, model.trunk.chain[0].forward_and_log_det):
        with pytest.raises(ValueError, match=r"shape \[batch, 2\]; got shape \[4, 3\]"):
            method(wrong)
