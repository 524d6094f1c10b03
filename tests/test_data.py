"""keras_iresnet.data: 2-D densities, digits and their pipelines, the MNIST file, TFDS."""

import numpy as np
import pytest
import tensorflow as tf

from keras_iresnet import data


@pytest.mark.parametrize("name", data.DENSITIES_2D)
def test_2d_densities_are_seeded_centred_and_inside_the_plotting_square(name):
    """Every 2-D density is centred with a spread of order 1 and lies in [-5, 5]^2 (the square
    the figures draw and the tests integrate densities over)."""
    points = data.sample_2d(name, 2000, seed=3)
    assert points.shape == (2000, 2) and points.dtype == np.float32
    np.testing.assert_array_equal(points, data.sample_2d(name, 2000, seed=3))
    assert not np.array_equal(points, data.sample_2d(name, 2000, seed=4))
    # 2000 points: the mean's standard error is below 0.04; 0.15 is about 4 of them.
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=0.15)
    assert np.all((points.std(axis=0) > 0.8) & (points.std(axis=0) < 2.0)), points.std(axis=0)
    assert np.abs(points).max() < 5.0


def test_2d_density_errors():
    with pytest.raises(ValueError, match="name must be one of"):
        data.sample_2d("banana", 10)
    with pytest.raises(ValueError, match="n must be"):
        data.sample_2d("moons", 0)


def test_digits_and_the_image_pipelines():
    images, labels = data.digits_arrays()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8 and images.max() == 255
    assert labels.max() == 9
    batch = next(iter(data.image_dataset(images, None, "density", 32)))
    assert (
        batch.shape == (32, 8, 8, 1)
        and float(tf.reduce_min(batch)) >= 0
        and float(tf.reduce_max(batch)) < 1
    )
    # uniform dequantization: (pixel + u) / 256 lies in [pixel / 256, (pixel + 1) / 256)
    ordered = next(iter(data.image_dataset(images[:64], None, "density", 64, shuffle=False)))
    pixels = images[:64].astype("float32")
    assert np.all(ordered.numpy() >= pixels / 256) and np.all(ordered.numpy() < (pixels + 1) / 256)
    x, y = next(iter(data.image_dataset(images[:64], labels[:64], "hybrid", 64, shuffle=False)))
    np.testing.assert_array_equal(y.numpy(), labels[:64])
    with pytest.raises(ValueError, match="needs labels"):
        data.image_dataset(images[:10], None, "classify")
    with pytest.raises(ValueError, match="task must be"):
        data.image_dataset(images[:10], None, "segment")
    assert data.data_sets_for("classify") == ("digits",)
    assert "moons" in data.data_sets_for("density") and "mnist-file" in data.data_sets_for(
        "density"
    )


def test_mnist_file_errors_without_the_file(tmp_path):
    """Checks that need no MNIST file: a clear message for every way the file can be wrong."""
    with pytest.raises(FileNotFoundError, match="not found"):
        data.mnist_file_arrays(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="is a folder"):
        data.mnist_file_arrays(tmp_path)
    np.savez(tmp_path / "nokey.npz", other=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="no array 'data'"):
        data.mnist_file_arrays(tmp_path / "nokey.npz")
    bad = np.zeros((2, 28, 28), np.float32)
    bad[0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", data=bad)
    with pytest.raises(ValueError, match="NaN or Inf"):
        data.mnist_file_arrays(tmp_path / "nan.npz")
    np.savez(tmp_path / "range.npz", data=np.full((2, 28, 28), 300.0))
    with pytest.raises(ValueError, match="8-bit"):
        data.mnist_file_arrays(tmp_path / "range.npz")
    (tmp_path / "truncated.npz").write_bytes(b"PK\x03\x04 not an archive")
    with pytest.raises(ValueError, match="not a readable"):
        data.mnist_file_arrays(tmp_path / "truncated.npz")
    np.savez(tmp_path / "good.npz", data=np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256)
    images, labels = data.mnist_file_arrays(tmp_path / "good.npz")
    assert images.shape == (2, 28, 28, 1) and images.dtype == np.uint8 and labels is None


def test_mnist_file(mnist_images):
    """The real file (only where ../shared/data exists; skipped with the reason elsewhere)."""
    file_images, none = data.mnist_file_arrays()
    assert file_images.shape == (10000, 28, 28, 1) and none is None
    np.testing.assert_array_equal(file_images[..., 0], mnist_images)


def test_tfds_loading_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        images, labels = data.tfds_arrays("mnist", download=True)
    assert images.shape == (12, 28, 28, 1) and labels.shape == (12,)


def test_tfds_offline_names_the_data_dir_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_and_prepare") as error:
        data.tfds_arrays("mnist", data_dir=str(tmp_path))
    assert f"data_dir={str(tmp_path)!r}" in str(error.value) and "3.0" not in str(error.value)
    with pytest.raises(ValueError, match="unknown TFDS data set"):
        data.tfds_arrays("no_such_dataset_xyz", data_dir=str(tmp_path))


def test_the_tfds_download_path_runs_up_to_the_network(tmp_path, monkeypatch):
    """--download imports everything TFDS needs to download (a missing dependency failed before any
    network access); the network itself is replaced by a failing stub here."""
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network in this test")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", offline)
    with pytest.raises(ConnectionError, match="could not download 'mnist'") as error:
        data.tfds_arrays("mnist", data_dir=str(tmp_path), download=True)
    assert "\n" not in str(error.value)


def test_a_text_file_as_the_images_file_is_named(tmp_path):
    text = tmp_path / "images.txt"
    text.write_text("0 1 2")
    with pytest.raises(ValueError, match="not a readable .npz") as error:
        data.mnist_file_arrays(text)
    assert str(text) in str(error.value) and "pickle" not in str(error.value)
