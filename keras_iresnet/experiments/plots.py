"""Figures for the command line: 2-D densities, sample grids, reconstructions (matplotlib, Agg)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    import tensorflow as tf

    from keras_iresnet.models.base import IResNetModel
    from keras_iresnet.models.flow import IResNetFlow


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def density_2d_figure(
    model: IResNetFlow,
    data: np.ndarray,
    path: str | os.PathLike[str],
    grid_size: int = 200,
    n_samples: int = 2000,
) -> None:
    """Data, learned density heat map and model samples of a 2-D flow, side by side."""
    plt = _pyplot()
    low, high = np.percentile(data, 0.5, axis=0) - 0.5, np.percentile(data, 99.5, axis=0) + 0.5
    xs, ys = np.linspace(low[0], high[0], grid_size), np.linspace(low[1], high[1], grid_size)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype("float32")
    log_p = np.concatenate([model.log_prob(chunk).numpy() for chunk in np.array_split(grid, 10)])
    samples = model.sample(n_samples).numpy()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    axes[0].scatter(data[:, 0], data[:, 1], s=1)
    axes[0].set_title("data")
    axes[1].imshow(
        np.exp(log_p).reshape(grid_size, grid_size),
        origin="lower",
        extent=(low[0], high[0], low[1], high[1]),
        aspect="auto",
    )
    axes[1].set_title("i-ResNet density")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=1, color="C1")
    axes[2].set_title("i-ResNet samples")
    for ax in (axes[0], axes[2]):
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _grid(images, rows):
    images = np.clip(np.asarray(images)[..., 0], 0, 1)
    n, h, w = images.shape
    cols = int(np.ceil(n / rows))
    canvas = np.ones((rows * (h + 1), cols * (w + 1)))
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image
    return canvas


def samples_figure(
    model: IResNetFlow,
    n: int,
    temperature: float,
    path: str | os.PathLike[str],
    seed: int | None = None,
) -> None:
    """A grid of samples of a density model (images) or a scatter plot (2-D)."""
    plt = _pyplot()
    samples = model.sample(n, temperature=temperature, seed=seed).numpy()
    fig = plt.figure(figsize=(5, 5))
    if samples.ndim == 2:
        plt.scatter(samples[:, 0], samples[:, 1], s=2)
    else:
        plt.imshow(_grid(samples, int(np.sqrt(n)) or 1), cmap="gray")
        plt.axis("off")
    plt.title(f"samples (T={temperature})")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def class_samples_figure(
    model: IResNetFlow,
    path: str | os.PathLike[str],
    labels: Sequence[int] | None = None,
    per_class: int = 8,
    temperature: float = 1.0,
    seed: int | None = None,
    rows: int | None = None,
) -> None:
    """Samples of a class-conditional flow (one-hot contexts): one row per class of ``labels``.

    Args:
      model: an :class:`~keras_iresnet.models.IResNetFlow` with ``context_shape=(classes,)``.
      path: the PNG to write.
      labels: the classes to draw (default: every class, a row each).
      per_class: samples per class.
      temperature, seed: of the base's draw.
      rows: rows of the grid (default: one per class; for one class a square grid).
    """
    plt = _pyplot()
    classes = int(model.context_shape[0])
    labels = list(range(classes)) if labels is None else [int(k) for k in labels]
    contexts = np.eye(classes, dtype="float32")[np.repeat(labels, per_class)]
    samples = model.sample(context=contexts, temperature=temperature, seed=seed).numpy()
    if rows is None:
        rows = len(labels) if len(labels) > 1 else max(1, int(np.sqrt(per_class)))
    if len(labels) <= 3:
        title = f"samples of class {', '.join(str(k) for k in labels)}"
    else:
        title = f"samples, one row per class ({labels[0]} to {labels[-1]} from the top)"
    cols = int(np.ceil(len(samples) / rows))
    fig = plt.figure(figsize=(6, max(2.0, 6 * rows / cols)))
    if samples.ndim == 2:
        for k in labels:
            chosen = samples[np.repeat(labels, per_class) == k]
            plt.scatter(chosen[:, 0], chosen[:, 1], s=2, label=str(k))
        plt.legend(markerscale=4)
    else:
        plt.imshow(_grid(samples, rows), cmap="gray")
        plt.axis("off")
    plt.title(f"{title} (T={temperature})")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def reconstruction_figure(
    model: IResNetModel, x: tf.Tensor | np.ndarray, path: str | os.PathLike[str]
) -> None:
    """Inputs (top) and reconstructions from the classifier's features (bottom), Figure 3."""
    plt = _pyplot()
    x = np.asarray(x)
    rec = model.invert(model.features(x)).numpy()
    low, high = x.min(), x.max()
    stack = np.concatenate([x, rec])
    stack = (stack - low) / (high - low + 1e-12)
    fig = plt.figure(figsize=(8, 2.5))
    plt.imshow(_grid(stack, 2), cmap="gray")
    plt.axis("off")
    plt.title("inputs (top) and reconstructions from features (bottom)")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def image_samples_figure(
    model: IResNetFlow,
    path: str | os.PathLike[str],
    reconstruct: tf.Tensor | np.ndarray | None = None,
    n: int = 32,
) -> None:
    """Samples of an image density model, with reconstructions of real images below."""
    plt = _pyplot()
    samples = model.sample(n).numpy()
    panels = [samples]
    if reconstruct is not None:
        rec = model.trunk.inverse(model.trunk(reconstruct)).numpy()
        panels += [np.asarray(reconstruct), rec]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.5 * len(panels)))
    axes = np.atleast_1d(axes)
    titles = ["samples", "test images", "reconstructions F^-1(F(x))"]
    for ax, panel, title in zip(axes, panels, titles):
        ax.imshow(_grid(panel, 2), cmap="gray")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
