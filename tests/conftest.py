"""Test set-up: TensorFlow backend and two logical CPU devices for MirroredStrategy tests."""

import contextlib
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
# RuntimeError: devices already initialized by another conftest/plugin.
with contextlib.suppress(RuntimeError):
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

ROOT = pathlib.Path(__file__).resolve().parents[1]
MNIST_FILE = ROOT.parent / "shared" / "data" / "mnist_test_images.npz"


@pytest.fixture(autouse=True)
def _seed():
    tf.random.set_seed(1234)
    np.random.seed(1234)
    import keras

    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def mnist_images():
    """The 10k MNIST test images of ../shared/data (skips where the folder is absent)."""
    if not MNIST_FILE.exists():
        pytest.skip(
            f"MNIST test images not found at {MNIST_FILE} (only in the developers' checkout)"
        )
    return np.load(MNIST_FILE)["data"]


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One 2-replica MirroredStrategy on the two logical CPUs, shared by all tests.

    Separate strategy objects in one process can hand out colliding collective
    instance keys (seen as "Shape mismatch in the collective instance"), so the
    tests share this one.
    """
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy


@pytest.fixture(scope="session")
def trained_2d_flow():
    """One 2-D flow trained aggressively once for the tests that look at a trained model.

    6 blocks x 64 at coeff 0.9, Adam 1e-2, 5 epochs of 16 steps on moons, through
    ``keras.Model.fit`` itself (none of the models' ``fit`` extras), with the exact norms
    recorded after every epoch and ``RefineSpectralNorm`` at the end. Fields: ``model``,
    ``layers`` (its spectral layers), ``excess`` (per epoch: max exact norm / coeff - 1),
    ``refine`` (the callback), ``history``, ``valid`` (the validation points), ``before`` and
    ``after`` (validation bits/dim before and after training).
    """
    import types

    import keras

    from keras_iresnet import callbacks, certify, data, models
    from tests.test_models import ExactNormsEveryEpoch

    keras.utils.set_random_seed(1234)
    model = models.iresnet_flow((2,), blocks=6, hidden=64, coeff=0.9)
    model.compile(keras.optimizers.Adam(1e-2))
    train, valid = data.sample_2d("moons", 4096, 0), data.sample_2d("moons", 1024, 1)
    before = model.evaluate(valid, verbose=0, return_dict=True)["bits_per_dim"]
    check, refine = ExactNormsEveryEpoch(), callbacks.RefineSpectralNorm()
    history = keras.Model.fit(
        model,
        train,
        epochs=5,
        batch_size=256,
        validation_data=(valid,),
        verbose=0,
        callbacks=[check, refine],
    )
    after = model.evaluate(valid, verbose=0, return_dict=True)["bits_per_dim"]
    return types.SimpleNamespace(
        model=model,
        layers=certify.spectral_layers(model),
        excess=check.excess,
        refine=refine,
        history=history.history,
        valid=valid,
        before=before,
        after=after,
    )


#: Epochs of the shared digits-density training (the recipe trains 30): enough for the
#: conditional recipe's comparison (same epochs) and the EMA / closed-form checks.
DIGITS_DENSITY_EPOCHS = 15

#: Seeds and epochs of the shared digits-classifier trainings (i-ResNet and vanilla twin).
DIGITS_CLASSIFIER_SEEDS = (0, 1, 2)
DIGITS_CLASSIFIER_EPOCHS = 6


@pytest.fixture(scope="session")
def digits_density_run():
    """The digits-density recipe trained once for DIGITS_DENSITY_EPOCHS (seed 0):
    ``(model, split)``. Users may re-compile the model with another evaluation estimator
    (the same optimizer object, so the EMA slots stay)."""
    from keras_iresnet import recipes, runs

    model, _, split = runs.train(
        recipes.get("digits-density"), epochs=DIGITS_DENSITY_EPOCHS, verbose=0
    )
    return model, split


@pytest.fixture(scope="session")
def digits_classifiers():
    """The digits-classifier recipe trained once per seed of DIGITS_CLASSIFIER_SEEDS for
    DIGITS_CLASSIFIER_EPOCHS, with and without normalization (the vanilla twin), on one split:
    ``{"split": split, "test": test pipeline, (seed, vanilla): model}``."""
    from keras_iresnet import recipes, runs

    recipe = recipes.get("digits-classifier")
    split = runs.load_split(recipe)
    trained = {"split": split, "test": runs.datasets(recipe, split)[1]}
    for seed in DIGITS_CLASSIFIER_SEEDS:
        for vanilla in (False, True):
            trained[seed, vanilla], _, _ = runs.train(
                recipe,
                split=split,
                epochs=DIGITS_CLASSIFIER_EPOCHS,
                verbose=0,
                seed=seed,
                vanilla=vanilla,
            )
    return trained
