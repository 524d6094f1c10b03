"""Datasets: generated 2-D densities, bundled digits, the MNIST test-images file, TFDS.

Everything returns ``tf.data.Dataset`` objects (or numpy arrays via the
``*_arrays`` helpers) with the paper's preprocessing:

- density estimation on 8-bit images: uniform dequantization
  ``x = (pixel + u) / 256``, ``u ~ U[0, 1)`` (fresh noise each epoch), values in
  ``[0, 1)``; the model then reports bits/dim including the ``log 256`` scaling
  (see :mod:`keras_iresnet.models`);
- classification: pixels scaled to ``[0, 1]`` and standardized with the
  training mean and standard deviation;
- class-conditional density (``context="label"``): dequantized images paired
  with the one-hot label, ``(x, c)``.

:class:`GaussianLinear` is a small simulator whose posterior is known in closed
form, the ground truth of conditional flows ``p(theta | x)`` (simulation-based
inference) in the tests, the benchmark and the examples.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "DENSITIES_2D",
    "sample_2d",
    "density_2d_dataset",
    "digits_arrays",
    "data_sets_for",
    "standardization_stats",
    "mnist_file_arrays",
    "tfds_arrays",
    "load_images",
    "image_dataset",
    "one_hot_labels",
    "GaussianLinear",
    "DEFAULT_MNIST_FILE",
]

DENSITIES_2D = ("moons", "circles", "8gaussians", "pinwheel", "checkerboard", "2spirals")
_MNIST_RELATIVE = pathlib.Path("shared") / "data" / "mnist_test_images.npz"
# A source checkout keeps the shared data beside the repository: <repo>/../shared/data.
DEFAULT_MNIST_FILE = pathlib.Path(__file__).resolve().parents[1].parent / _MNIST_RELATIVE


IMAGE_DATA = ("digits", "mnist-file")


def data_sets_for(task: str) -> tuple[str, ...]:
    """The embedded / file data set names valid for ``task`` (TFDS data ``tfds:NAME``
    come on top).
    """
    if task == "density":
        return DENSITIES_2D + IMAGE_DATA
    if task in ("classify", "hybrid"):
        return ("digits",)
    raise ValueError(f"task must be 'density', 'classify' or 'hybrid'; got task={task!r}.")


def _default_mnist_file():
    if os.environ.get("IRESNET_MNIST_FILE"):
        return pathlib.Path(os.environ["IRESNET_MNIST_FILE"])
    for candidate in (DEFAULT_MNIST_FILE, pathlib.Path.cwd().parent / _MNIST_RELATIVE):
        if candidate.exists():
            return candidate
    return DEFAULT_MNIST_FILE


def sample_2d(name: str, n: int, seed: int | None = 0) -> np.ndarray:
    """``n`` samples ``[n, 2]`` (float32) of a toy 2-D density (FFJORD / Residual Flows set)."""
    if name not in DENSITIES_2D:
        raise ValueError(f"name must be one of {DENSITIES_2D}; got name={name!r}.")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1; got n={n!r}.")
    rng = np.random.default_rng(seed)
    n = int(n)
    if name == "moons":
        t = rng.uniform(0, np.pi, n)
        upper = rng.uniform(size=n) < 0.5
        x = np.where(upper, np.cos(t), 1 - np.cos(t))
        y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
        data = np.stack([x, y], 1) + 0.05 * rng.normal(size=(n, 2))
        data = (data - [0.5, 0.25]) * 2.0
    elif name == "circles":
        radius = np.where(rng.uniform(size=n) < 0.5, 1.0, 2.0)
        t = rng.uniform(0, 2 * np.pi, n)
        data = np.stack([radius * np.cos(t), radius * np.sin(t)], 1) + 0.08 * rng.normal(
            size=(n, 2)
        )
    elif name == "8gaussians":
        angles = rng.integers(0, 8, n) * (np.pi / 4)
        centers = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
        data = centers + 0.2 * rng.normal(size=(n, 2))
    elif name == "pinwheel":
        arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
        features = rng.normal(size=(n, 2)) * [radial_std, tangential_std] + [1.0, 0.0]
        labels = rng.integers(0, arms, n)
        angles = labels * (2 * np.pi / arms) + rate * np.exp(features[:, 0])
        rot = np.stack(
            [np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1
        ).reshape(-1, 2, 2)
        data = 2 * np.einsum("ti,tij->tj", features, rot)
    elif name == "checkerboard":
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) - rng.integers(0, 2, n) * 2 + (np.floor(x1) % 2)
        data = np.stack([x1, x2], 1)
    else:  # 2spirals
        t = np.sqrt(rng.uniform(size=n)) * 540 * (2 * np.pi) / 360
        sign = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
        data = sign[:, None] * np.stack([-np.cos(t) * t, np.sin(t) * t], 1) / 3.0
        data = data + 0.1 * rng.normal(size=(n, 2))
    return data.astype("float32")


def density_2d_dataset(
    name: str, n: int, batch_size: int = 256, seed: int | None = 0, shuffle: bool = True
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of batches ``[batch, 2]`` of :func:`sample_2d`."""
    data = sample_2d(name, n, seed)
    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: ``(images uint8-range [n, 8, 8, 1], labels [n])``.

    The values (0..16) are rescaled to the 8-bit range 0..255 so that the same
    dequantization and bits/dim conventions apply as for MNIST.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype("uint8")[..., None]
    return images, bunch.target.astype("int32")


def standardization_stats(images: ArrayLike) -> tuple[float, float]:
    """``(mean, std)`` of 8-bit ``images`` scaled to ``[0, 1]``: the ``stats`` of
    :func:`image_dataset`.

    Compute them on the training split only and pass them to both splits.
    """
    scaled = np.asarray(images).astype("float32") / 255.0
    return float(scaled.mean()), float(scaled.std())


def mnist_file_arrays(path: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, None]:
    """The MNIST test images file: ``(images uint8 [10000, 28, 28, 1], None)`` (no labels).

    ``path`` defaults to ``$IRESNET_MNIST_FILE``, else ``../shared/data/mnist_test_images.npz``
    beside the source checkout or the working directory.
    """
    path = pathlib.Path(path) if path else _default_mnist_file()
    if path.is_dir():
        raise ValueError(f"MNIST images file: {path} is a folder; pass the .npz file itself.")
    if not path.exists():
        raise FileNotFoundError(
            f"MNIST images file not found at {path}. Pass path= (or --data-path) pointing to "
            "an .npz with a uint8 array 'data' of shape [N, 28, 28], or use data='digits' / "
            "'tfds:mnist'."
        )
    try:
        archive = np.load(path)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        # (numpy's ValueError for a text or pickle file advises unsafe loading: not for a data file)
        raise ValueError(
            f"MNIST images file {path} is not a readable .npz archive (expected an .npz with a "
            "uint8 array 'data' of shape [N, 28, 28])."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"MNIST images file {path} is a single .npy array, not an .npz archive with an "
            "array 'data'."
        )
    with archive:
        if "data" not in archive:
            raise ValueError(
                f"MNIST images file {path} has no array 'data' (found {list(archive.keys())})."
            )
        images = archive["data"]
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            f"{path}: 'data' must have shape [N, H, W] or [N, H, W, C]; got {images.shape}."
        )
    if images.dtype != np.uint8:
        values = images.astype("float64")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{path}: 'data' contains NaN or Inf values; expected 8-bit images.")
        if values.min() < 0 or values.max() > 255 or np.any(values != np.round(values)):
            raise ValueError(
                f"{path}: 'data' must hold 8-bit pixel values (integers 0..255); "
                f"got {images.dtype}."
            )
    return images.astype("uint8"), None


def tfds_arrays(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a TFDS data set (``mnist``, ``fashion_mnist``, ``cifar10``, ...).

    With ``download=False`` (the default) nothing is fetched and GCS is not
    probed (TFDS can otherwise spend about a minute per metadata look-up offline,
    tensorflow/datasets#3962); the data must already be prepared in ``data_dir``.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(f"unknown TFDS data set {name!r}: {str(error).splitlines()[0]}") from None
    root = data_dir or tfds.core.constants.DATA_DIR
    if download:
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        except (OSError, ConnectionError) as error:  # requests' errors derive from OSError
            raise ConnectionError(
                f"TFDS could not download {name!r} into data_dir={root!r}: {type(error).__name__} "
                "(is there a network connection?)"
            ) from None
    elif not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS data set {name!r} is not prepared in data_dir={root!r}. Prepare it with "
            "--download (download=True) on a machine with a network, or run "
            '`python -c "import tensorflow_datasets as tfds; '
            f"tfds.builder('{name}', data_dir='DIR').download_and_prepare()\"` there and pass "
            "DIR as data_dir (--data-dir)."
        )
    ds = builder.as_dataset(split=split, as_supervised=True)
    if limit:
        ds = ds.take(int(limit))
    images, labels = [], []
    for image, label in tfds.as_numpy(ds):
        images.append(image)
        labels.append(label)
    return np.stack(images).astype("uint8"), np.asarray(labels, "int32")


def load_images(
    data: str,
    path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    split: str = "train",
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(images uint8 [n, H, W, C], labels or None)`` for ``digits``, ``mnist-file`` or
    ``tfds:NAME``.
    """
    if data == "digits":
        return digits_arrays()
    if data == "mnist-file":
        return mnist_file_arrays(path)
    if isinstance(data, str) and data.startswith("tfds:"):
        return tfds_arrays(data[5:], split=split, data_dir=data_dir, download=download, limit=limit)
    raise ValueError(
        f"data must be 'digits', 'mnist-file' or 'tfds:NAME' for images; got data={data!r}."
    )


def dequantize(images: tf.Tensor | np.ndarray, seed: int | None = None) -> tf.Tensor:
    """Uniform dequantization of uint8 images to floats in ``[0, 1)``: ``(x + u) / 256``."""
    x = tf.cast(images, tf.float32)
    noise = tf.random.uniform(tf.shape(x), seed=seed)
    return (x + noise) / 256.0


def one_hot_labels(labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Class labels ``[n]`` as float32 one-hot contexts ``[n, num_classes]`` (refuses labels
    outside ``[0, num_classes)``)."""
    labels = np.asarray(labels).astype("int64")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for num_classes={num_classes}; got "
            f"{labels.min()}..{labels.max()}."
        )
    return np.eye(num_classes, dtype="float32")[labels]


def image_dataset(
    images: ArrayLike,
    labels: ArrayLike | None = None,
    task: str = "density",
    batch_size: int = 64,
    shuffle: bool = True,
    seed: int | None = 0,
    stats: tuple[float, float] | None = None,
    drop_remainder: bool = False,
    context: str | None = None,
    num_classes: int | None = None,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` with the paper's preprocessing for ``task``.

    - ``"density"``: elements ``x`` dequantized to ``[0, 1)`` (fresh noise each epoch);
      with ``context="label"``: ``(x_dequantized, one_hot(label))`` pairs, the inputs of a
      class-conditional flow (``num_classes``: default ``max(labels) + 1``).
    - ``"classify"``: elements ``(x, label)`` with ``x`` scaled to ``[0, 1]`` and
      standardized by ``stats=(mean, std)`` (computed from ``images`` if None).
    - ``"hybrid"``: ``(x_dequantized, label)``.

    ``drop_remainder=True`` gives every batch the same static size (XLA needs it for training).
    """
    if task not in ("density", "classify", "hybrid"):
        raise ValueError(f"task must be 'density', 'classify' or 'hybrid'; got task={task!r}.")
    if context not in (None, "label"):
        raise ValueError(f"context must be None or 'label'; got context={context!r}.")
    if context is not None and task != "density":
        raise ValueError(f"context='label' is for task='density'; got task={task!r}.")
    if (task != "density" or context) and labels is None:
        raise ValueError(
            f"task={task!r} needs labels; this data set has none (use task='density')."
        )
    images = np.asarray(images)
    if task == "classify":
        scaled = images.astype("float32") / 255.0
        mean, std = stats if stats is not None else standardization_stats(images)
        ds = tf.data.Dataset.from_tensor_slices(((scaled - mean) / std, labels))
    elif task == "density" and context:
        classes = int(np.max(labels)) + 1 if num_classes is None else int(num_classes)
        ds = tf.data.Dataset.from_tensor_slices((images, one_hot_labels(labels, classes)))
    elif task == "density":
        ds = tf.data.Dataset.from_tensor_slices(images)
    else:
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if task == "density" and not context:
        ds = ds.map(dequantize)
    elif task != "classify":  # hybrid, and density with a label context
        ds = ds.map(lambda x, y: (dequantize(x), y))
    return ds.prefetch(tf.data.AUTOTUNE)


class GaussianLinear:
    """A simulator whose posterior is known in closed form (the linear Gaussian model).

    ``theta ~ N(0, I_k)``, ``x | theta ~ N(B theta, s^2 I_m)``. The posterior is
    Gaussian, ``theta | x ~ N(A x, S)`` with

        S = (I_k + B^T B / s^2)^{-1},      A = S B^T / s^2

    (Bishop 2006, equations 2.113-2.117), so a conditional flow of ``p(theta | x)``
    (data ``theta``, context ``x``) has an exact target of the form
    ``x | c ~ N(A c, S)``: its best held-out NLL is the conditional entropy
    ``0.5 ln det(2 pi e S)`` (:attr:`conditional_entropy`), and the best any model
    without the context can do is the prior's, ``0.5 k ln(2 pi e)``
    (:attr:`prior_entropy`).

    Args:
      matrix: ``B``, ``[m, k]`` (default: a fixed ``3 x 2`` matrix whose posterior
        has correlation -0.67 and standard deviations 0.61 and 0.63).
      noise: ``s > 0``.
    """

    DEFAULT_MATRIX = ((1.0, 0.8), (0.5, 1.0), (0.8, 0.3))

    def __init__(self, matrix: ArrayLike = DEFAULT_MATRIX, noise: float = 0.7) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float64)
        if self.matrix.ndim != 2:
            raise ValueError(f"matrix must be [m, k]; got shape {self.matrix.shape}.")
        if not noise > 0:
            raise ValueError(f"noise must be > 0; got noise={noise!r}.")
        self.noise = float(noise)
        k = self.theta_dim
        self.posterior_covariance = np.linalg.inv(
            np.eye(k) + self.matrix.T @ self.matrix / self.noise**2
        )
        self.posterior_matrix = self.posterior_covariance @ self.matrix.T / self.noise**2

    @property
    def theta_dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def x_dim(self) -> int:
        return int(self.matrix.shape[0])

    def simulate(self, n: int, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(theta [n, k], x [n, m])`` float32 from the joint."""
        rng = np.random.default_rng(seed)
        theta = rng.standard_normal((n, self.theta_dim))
        x = theta @ self.matrix.T + self.noise * rng.standard_normal((n, self.x_dim))
        return theta.astype("float32"), x.astype("float32")

    def posterior(self, x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [n, k], covariance [k, k])`` of ``theta | x`` for ``x`` ``[n, m]`` or ``[m]``."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return x @ self.posterior_matrix.T, self.posterior_covariance

    def posterior_log_prob(self, theta: ArrayLike, x: ArrayLike) -> np.ndarray:
        """``ln p(theta | x)`` per row (float64 ``[n]``)."""
        mean, cov = self.posterior(x)
        diff = np.atleast_2d(np.asarray(theta, np.float64)) - mean
        solved = np.linalg.solve(cov, diff.T).T
        _, logdet = np.linalg.slogdet(2 * np.pi * cov)
        return -0.5 * (np.sum(diff * solved, axis=1) + logdet)

    def posterior_samples(self, x_obs: ArrayLike, n: int, seed: int | None = 0) -> np.ndarray:
        """``n`` exact posterior draws of ``theta | x_obs`` (``[n, k]``)."""
        mean, cov = self.posterior(x_obs)
        rng = np.random.default_rng(seed)
        return rng.multivariate_normal(mean[0], cov, size=n).astype("float32")

    @property
    def conditional_entropy(self) -> float:
        """``E[-ln p(theta | x)] = 0.5 ln det(2 pi e S)`` nats, the best conditional NLL."""
        return 0.5 * float(np.linalg.slogdet(2 * np.pi * np.e * self.posterior_covariance)[1])

    @property
    def prior_entropy(self) -> float:
        """``0.5 k ln(2 pi e)`` nats: the best held-out NLL of a model that ignores ``x``."""
        return 0.5 * self.theta_dim * float(np.log(2 * np.pi * np.e))
