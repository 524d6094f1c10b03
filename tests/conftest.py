"""Test set-up: TensorFlow backend and two logical CPU devices for MirroredStrategy tests."""

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # devices already initialized by another conftest/plugin
    pass

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
