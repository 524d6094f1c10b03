"""Everything a recipe needs to run: data split, pipelines, model, optimizer, callbacks, training.

The command line, the tuner, the notebooks, the benchmarks and the tests all go
through these functions, so a recipe (:mod:`keras_iresnet.experiments.recipes`)
means the same thing everywhere; what a run of the command line reports into its
folder is :mod:`keras_iresnet.experiments.reports`, the folders themselves
:mod:`keras_iresnet.experiments.folders`::

    from keras_iresnet import recipes, runs
    recipe = recipes.get("2d")
    split = runs.load_split(recipe)                  # arrays + preprocessing record
    model = runs.build_model(recipe, split)          # the recipe's model
    runs.compile_model(model, recipe)                # optimizer, warm-up, metrics
    history = model.fit(**runs.fit_arguments(recipe, split))  # or: runs.train(recipe)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import callbacks as callbacks_lib
from keras_iresnet import data as data_lib
from keras_iresnet import distributed, models, validation
from keras_iresnet.experiments.folders import (  # re-exported: runs.RunFolder etc. still work
    RunFolder,
    RunFolderError,
    folder_callbacks,
    strict_json,
    write_json,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence
    from typing import Any

    from keras_iresnet.experiments.recipes import Recipe
    from keras_iresnet.models.base import IResNetModel

__all__ = [
    "Split",
    "load_split",
    "datasets",
    "training_batches",
    "validation_split",
    "build_model",
    "make_optimizer",
    "peak_learning_rate",
    "compile_model",
    "make_callbacks",
    "fit_arguments",
    "model_inputs",
    "train",
    "RunFolder",
    "RunFolderError",
    "folder_callbacks",
    "fit_multiworker",
    "write_json",
    "strict_json",
]


@dataclasses.dataclass
class Split:
    """A data split and how it was preprocessed (enough to rebuild the pipelines).

    Fields:
      data: data set name.
      task: the task it is prepared for.
      x_train, x_test: arrays (2-D points float32; images uint8 ``[n, H, W, C]``).
      y_train, y_test: labels or None.
      stats: ``(mean, std)`` of the training images (classification standardization) or None.
      seed: the seed of the 2-D draws / shuffling.
      source: how to load it again (``{"path": ..., "data_dir": ...}``).
    """

    data: str
    task: str
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray | None = None
    y_test: np.ndarray | None = None
    stats: tuple | None = None
    seed: int = 0
    source: dict = dataclasses.field(default_factory=dict)

    @property
    def is_2d(self) -> bool:
        return self.x_train.ndim == 2

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int | None:
        if self.y_train is None:
            return None
        return int(max(np.max(self.y_train), np.max(self.y_test)) + 1)

    def record(self) -> dict[str, Any]:
        """JSON-serializable description (what ``iresnet evaluate`` etc. reload)."""
        return {
            "data": self.data,
            "task": self.task,
            "n_train": int(len(self.x_train)),
            "n_test": int(len(self.x_test)),
            "stats": None if self.stats is None else [float(s) for s in self.stats],
            "seed": int(self.seed),
            "source": dict(self.source),
        }


def load_split(
    recipe: Recipe,
    data: str | None = None,
    path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Split:
    """The recipe's data split (``data``, ``n_train``, ``n_test`` override the recipe's).

    2-D densities: ``n_train`` points drawn with ``seed`` and ``n_test`` with
    ``seed + 1``. Images: the first ``n_train`` images train, the last ``n_test``
    test (no overlap). Raises ``ValueError`` for non-finite data.
    """
    name = data or recipe.data
    n_train = recipe.n_train if n_train is None else n_train
    n_test = recipe.n_test if n_test is None else n_test
    if name in data_lib.DENSITIES_2D:
        if recipe.context:
            raise ValueError(
                f"recipe {recipe.name!r} conditions on the {recipe.context}; data {name!r} has "
                "none."
            )
        if recipe.task != "density":
            raise ValueError(
                f"data {name!r} is a 2-D density without labels; it fits task 'density' only."
            )
        split = Split(
            name,
            recipe.task,
            data_lib.sample_2d(name, n_train or 10000, seed),
            data_lib.sample_2d(name, n_test, seed + 1),
            seed=seed,
        )
        return split
    images, labels = data_lib.load_images(name, path=path, data_dir=data_dir, download=download)
    if recipe.task != "density" and labels is None:
        raise ValueError(f"data {name!r} has no labels; use task 'density'.")
    if recipe.context == "label" and labels is None:
        raise ValueError(
            f"recipe {recipe.name!r} conditions on the label; data {name!r} has no labels."
        )
    total = len(images)
    n_test = validation.positive_int("n_test", int(n_test))
    n_train = (
        total - n_test if n_train is None else validation.positive_int("n_train", int(n_train))
    )
    if n_train + n_test > total:
        raise ValueError(
            f"data {name!r} has {total} examples; n_train + n_test = {n_train + n_test} is "
            "too many."
        )
    split = Split(
        name,
        recipe.task,
        images[:n_train],
        images[total - n_test :],
        None if labels is None else labels[:n_train],
        None if labels is None else labels[total - n_test :],
        seed=seed,
        source={"path": None if path is None else str(path), "data_dir": data_dir},
    )
    if recipe.task == "classify":
        split.stats = data_lib.standardization_stats(split.x_train)
    return split


def datasets(
    recipe: Recipe,
    split: Split,
    batch_size: int | None = None,
    seed: int | None = None,
    drop_remainder: bool | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """``(train, test)`` ``tf.data`` pipelines with the task's preprocessing.

    2-D: shuffled float batches. Images: :func:`keras_iresnet.data.image_dataset`
    (dequantized for density and hybrid, standardized with the training
    statistics for classification; ``(x, one-hot label)`` pairs for a recipe with
    ``context="label"``); the test split is not shuffled.

    Args:
      recipe, split: the recipe and its data split (:func:`load_split`).
      batch_size: training batch size (default: the recipe's).
      seed: shuffling and dequantization seed (default: the split's).
      drop_remainder: training batches all of one static size (the last partial
        batch of each epoch is dropped; the shuffle changes which examples every
        epoch). Default (``None``): whenever the training split holds at least one
        full batch. Then ``fit`` traces its training step once instead of twice (the
        second trace, for the last partial batch, took 11 s of a 44 s one-epoch
        hybrid run on 2 CPU cores), and XLA (``jit_compile=True``), which compiles
        the step for one batch size, needs it.
    """
    batch = batch_size or recipe.batch_size
    if drop_remainder is None:
        drop_remainder = training_batches(len(split.x_train), batch)[1]
    seed = split.seed if seed is None else seed
    if split.is_2d:
        train = tf.data.Dataset.from_tensor_slices(split.x_train)
        train = train.shuffle(len(split.x_train), seed=seed, reshuffle_each_iteration=True)
        train = train.batch(batch, drop_remainder=drop_remainder)
        return train.prefetch(tf.data.AUTOTUNE), tf.data.Dataset.from_tensor_slices(
            split.x_test
        ).batch(batch)
    context = dict(context=recipe.context, num_classes=split.num_classes) if recipe.context else {}
    train = data_lib.image_dataset(
        split.x_train,
        split.y_train,
        split.task,
        batch,
        seed=seed,
        stats=split.stats,
        drop_remainder=drop_remainder,
        **context,
    )
    test = data_lib.image_dataset(
        split.x_test,
        split.y_test,
        split.task,
        max(batch, 256),
        shuffle=False,
        stats=split.stats,
        seed=seed + 1,
        **context,
    )
    return train, test


def validation_split(split: Split, fraction: float = 0.1) -> Split:
    """A :class:`Split` for model selection: the last ``fraction`` of the training
    examples held out.

    Its ``x_train`` are the first training examples and its ``x_test`` the
    held-out rest of the *training* split (it keeps the training statistics);
    the real test split is not in it, so a search that selects on it (tuning,
    early stopping) leaves the test split for one final evaluation.

    Args:
      split: a :class:`Split`.
      fraction: held-out share of the training examples, ``0 < fraction < 1``.
    """
    fraction = validation.open_unit("fraction", fraction)
    n = len(split.x_train)
    held = max(1, int(round(n * fraction)))
    if held >= n:
        raise ValueError(
            f"validation_split: {n} training examples are too few to hold out {fraction:.0%}."
        )
    cut = n - held
    labels = split.y_train
    return dataclasses.replace(
        split,
        x_train=split.x_train[:cut],
        x_test=split.x_train[cut:],
        y_train=None if labels is None else labels[:cut],
        y_test=None if labels is None else labels[cut:],
    )


def build_model(
    recipe: Recipe,
    split: Split | None = None,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    **overrides: Any,
) -> IResNetModel:
    """The recipe's model (``overrides`` replace model arguments, e.g. ``blocks=``, ``block=``).

    Block arguments given directly (``hidden=``, ``coeff=``) complete the recipe's block.
    A recipe with ``context="label"`` gets ``context_shape=(num_classes,)``.
    """
    input_shape = input_shape or split.input_shape
    arguments = {**dict(recipe.model), **overrides}
    if recipe.context == "label":
        if num_classes is None and split is None:
            raise ValueError(
                f"recipe {recipe.name!r} conditions on the label: give num_classes= or the split."
            )
        arguments.setdefault("context_shape", (num_classes or split.num_classes,))
    if recipe.task == "classify":
        return models.iresnet_classifier(input_shape, num_classes or split.num_classes, **arguments)
    if recipe.task == "hybrid":
        return models.iresnet_hybrid(input_shape, num_classes or split.num_classes, **arguments)
    return models.iresnet_flow(input_shape, **arguments)


def make_optimizer(
    recipe: Recipe, learning_rate: float | None = None
) -> keras.optimizers.Optimizer:
    """The recipe's Keras optimizer: the one place a recipe plus overrides becomes an optimizer.

    Args:
      recipe: a :class:`keras_iresnet.recipes.Recipe`.
      learning_rate: replaces the recipe's peak learning rate (``None``: the
        recipe's). The recipe's warm-up is kept: with ``warmup_steps`` the rate
        rises linearly from 0 to this value (Keras' ``CosineDecay`` with
        ``warmup_target``, constant afterwards).

    Returns:
      A ``keras.optimizers.Optimizer``.
    """
    config = dict(recipe.optimizer)
    name = config.pop("name")
    recipe_rate = config.pop("learning_rate")
    rate = validation.positive_float(
        "learning_rate", recipe_rate if learning_rate is None else learning_rate
    )
    if recipe.warmup_steps:
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=1,
            alpha=1.0,
            warmup_target=rate,
            warmup_steps=recipe.warmup_steps,
        )
    return keras.optimizers.get({"class_name": name, "config": {**config, "learning_rate": rate}})


def peak_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate an optimizer of :func:`make_optimizer` reaches (after any
    warm-up), a float.
    """
    rate = optimizer.get_config()["learning_rate"]
    if isinstance(rate, dict):  # a serialized schedule: the warm-up's target
        config = rate.get("config", {})
        return float(config.get("warmup_target") or config["initial_learning_rate"])
    return float(rate)


def compile_model(
    model: keras.Model,
    recipe: Recipe,
    learning_rate: float | None = None,
    jit_compile: bool | str = "auto",
) -> keras.Model:
    """``model.compile`` with the recipe's optimizer (and loss/metrics for classifiers)."""
    optimizer = make_optimizer(recipe, learning_rate)
    if recipe.task == "classify":
        model.compile(
            optimizer,
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )
    else:
        model.compile(optimizer, jit_compile=jit_compile)
    return model


def make_callbacks(recipe: Recipe, split: Split | None = None) -> list[keras.callbacks.Callback]:
    """The recipe's callbacks: EMA swapping (if the optimizer keeps an EMA), ActNorm init batch."""
    result = []
    if recipe.optimizer.get("use_ema"):
        result.append(callbacks_lib.SwapEMAWeights(swap_on_epoch=True))
    if recipe.init_examples and split is not None:
        train, _ = datasets(recipe, split, batch_size=recipe.init_examples)
        result.append(callbacks_lib.DataDependentInit(model_inputs(recipe, next(iter(train)))))
    return result


def model_inputs(
    recipe: Recipe, batch: tf.Tensor | tuple[tf.Tensor, ...]
) -> tf.Tensor | tuple[tf.Tensor, ...]:
    """What the recipe's model takes from one batch of its pipelines: ``x``, or ``(x, c)`` for
    a conditional recipe (the labels of classifiers and hybrids are targets, not inputs)."""
    if recipe.context:
        return tuple(batch)
    return batch[0] if isinstance(batch, tuple) else batch


def training_batches(examples: int, batch: int) -> tuple[int, bool]:
    """``(batches per epoch, drop_remainder)`` of ``examples`` training examples in batches of
    ``batch``: each epoch's last partial batch is dropped whenever a full batch exists (see
    :func:`datasets`); a set smaller than one batch keeps its one partial batch."""
    drop = examples >= batch
    return (examples // batch if drop else -(-examples // batch)), drop


def fit_arguments(
    recipe: Recipe,
    split: Split,
    epochs: int | None = None,
    batch_size: int | None = None,
    drop_remainder: bool | None = None,
) -> dict[str, Any]:
    """``(train, epochs, validation_data, callbacks)`` keyword-ready for ``model.fit``.

    ``drop_remainder``: see :func:`datasets` (default: drop each epoch's last partial
    batch whenever there is a full one).
    """
    train, test = datasets(recipe, split, batch_size, drop_remainder=drop_remainder)
    return dict(
        x=train,
        epochs=recipe.epochs if epochs is None else validation.positive_int("epochs", epochs),
        validation_data=test,
        callbacks=make_callbacks(recipe, split),
    )


def train(
    recipe: Recipe,
    split: Split | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    verbose: int | str = 1,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    seed: int = 0,
    model: IResNetModel | None = None,
    **model_overrides: Any,
) -> tuple[IResNetModel, keras.callbacks.History, Split]:
    """Build, compile and fit the recipe's model: returns ``(model, history, split)``."""
    keras.utils.set_random_seed(seed)
    split = split or load_split(recipe, seed=seed)
    model = model or build_model(recipe, split, **model_overrides)
    compile_model(model, recipe, learning_rate)
    arguments = fit_arguments(recipe, split, epochs, batch_size)
    arguments["callbacks"] = arguments["callbacks"] + list(callbacks or [])
    history = model.fit(verbose=verbose, **arguments)
    return model, history, split


def steps_per_epoch(recipe: Recipe, split: Split, batch_size: int | None = None) -> int:
    """Training steps per epoch of :func:`datasets` (see :func:`training_batches`)."""
    return training_batches(len(split.x_train), batch_size or recipe.batch_size)[0]


def fit_multiworker(
    model: keras.Model,
    arguments: dict[str, Any],
    callbacks: Sequence[keras.callbacks.Callback] | None,
    verbose: int = 1,
) -> keras.callbacks.History:
    """Train under ``MultiWorkerMirroredStrategy``, where Keras 3's ``fit`` fails.

    Runs :func:`keras_iresnet.distributed.fit_distributed` on the pipelines of
    :func:`fit_arguments` (sharded by data across the workers) with validation
    after every epoch.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return distributed.fit_distributed(
        model,
        arguments["x"].with_options(options),
        epochs=arguments["epochs"],
        callbacks=callbacks,
        verbose=verbose,
        validation_data=arguments["validation_data"].with_options(options),
    )
