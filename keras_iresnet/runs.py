"""Everything a recipe needs to run: data split, pipelines, model, optimizer, callbacks, training.

The command line, the tuner, the notebooks, the benchmarks and the tests all go
through these functions, so a recipe (:mod:`keras_iresnet.recipes`) means the
same thing everywhere::

    from keras_iresnet import recipes, runs
    recipe = recipes.get("2d")
    split = runs.load_split(recipe)                  # arrays + preprocessing record
    model = runs.build_model(recipe, split)          # the recipe's model
    runs.compile_model(model, recipe)                # optimizer, warm-up, metrics
    history = model.fit(**runs.fit_arguments(recipe, split))  # or: runs.train(recipe)
"""
from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import callbacks as callbacks_lib
from keras_iresnet import data as data_lib
from keras_iresnet import models, validation

__all__ = [
    "Split",
    "load_split",
    "datasets",
    "build_model",
    "make_optimizer",
    "compile_model",
    "make_callbacks",
    "fit_arguments",
    "train",
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
    def is_2d(self):
        return self.x_train.ndim == 2

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self):
        if self.y_train is None:
            return None
        return int(max(np.max(self.y_train), np.max(self.y_test)) + 1)

    def record(self):
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


def load_split(recipe, data=None, path=None, data_dir=None, download=False, seed=0, n_train=None, n_test=None):
    """The recipe's data split (``data``, ``n_train``, ``n_test`` override the recipe's).

    2-D densities: ``n_train`` points drawn with ``seed`` and ``n_test`` with
    ``seed + 1``. Images: the first ``n_train`` images train, the last ``n_test``
    test (no overlap). Raises ``ValueError`` for non-finite data.
    """
    name = data or recipe.data
    n_train = recipe.n_train if n_train is None else n_train
    n_test = recipe.n_test if n_test is None else n_test
    if name in data_lib.DENSITIES_2D:
        if recipe.task != "density":
            raise ValueError(f"data {name!r} is a 2-D density without labels; it fits task 'density' only.")
        split = Split(name, recipe.task, data_lib.sample_2d(name, n_train or 10000, seed),
                      data_lib.sample_2d(name, n_test, seed + 1), seed=seed)
        return split
    images, labels = data_lib.load_images(name, path=path, data_dir=data_dir, download=download)
    if recipe.task != "density" and labels is None:
        raise ValueError(f"data {name!r} has no labels; use task 'density'.")
    total = len(images)
    n_test = validation.positive_int("n_test", int(n_test))
    n_train = total - n_test if n_train is None else validation.positive_int("n_train", int(n_train))
    if n_train + n_test > total:
        raise ValueError(f"data {name!r} has {total} examples; n_train + n_test = {n_train + n_test} is too many.")
    split = Split(
        name,
        recipe.task,
        images[:n_train],
        images[total - n_test:],
        None if labels is None else labels[:n_train],
        None if labels is None else labels[total - n_test:],
        seed=seed,
        source={"path": None if path is None else str(path), "data_dir": data_dir},
    )
    if recipe.task == "classify":
        split.stats = data_lib.standardization_stats(split.x_train)
    return split


def datasets(recipe, split, batch_size=None, seed=None):
    """``(train, test)`` ``tf.data`` pipelines with the task's preprocessing.

    2-D: shuffled float batches. Images: :func:`keras_iresnet.data.image_dataset`
    (dequantized for density and hybrid, standardized with the training
    statistics for classification); the test split is not shuffled.
    """
    batch = batch_size or recipe.batch_size
    seed = split.seed if seed is None else seed
    if split.is_2d:
        train = tf.data.Dataset.from_tensor_slices(split.x_train)
        train = train.shuffle(len(split.x_train), seed=seed, reshuffle_each_iteration=True).batch(batch)
        return train.prefetch(tf.data.AUTOTUNE), tf.data.Dataset.from_tensor_slices(split.x_test).batch(batch)
    train = data_lib.image_dataset(split.x_train, split.y_train, split.task, batch, seed=seed, stats=split.stats)
    test = data_lib.image_dataset(split.x_test, split.y_test, split.task, max(batch, 256), shuffle=False,
                                  stats=split.stats, seed=seed + 1)
    return train, test


def build_model(recipe, split=None, input_shape=None, num_classes=None, **overrides):
    """The recipe's model (``overrides`` replace model arguments, e.g. ``blocks=``, ``block=``).

    Block arguments given directly (``hidden=``, ``coeff=``) complete the recipe's block.
    """
    input_shape = input_shape or split.input_shape
    arguments = {**dict(recipe.model), **overrides}
    if recipe.task == "classify":
        return models.iresnet_classifier(input_shape, num_classes or split.num_classes, **arguments)
    if recipe.task == "hybrid":
        return models.iresnet_hybrid(input_shape, num_classes or split.num_classes, **arguments)
    return models.iresnet_flow(input_shape, **arguments)


def make_optimizer(recipe, learning_rate=None):
    """The recipe's Keras optimizer, with its warm-up as a ``CosineDecay`` schedule (constant after)."""
    config = dict(recipe.optimizer)
    name = config.pop("name")
    rate = config.pop("learning_rate") if learning_rate is None else learning_rate
    rate = validation.positive_float("learning_rate", rate)
    if recipe.warmup_steps:
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=1, alpha=1.0,
            warmup_target=rate, warmup_steps=recipe.warmup_steps,
        )
    return keras.optimizers.get({"class_name": name, "config": {"learning_rate": rate, **config}})


def compile_model(model, recipe, learning_rate=None, jit_compile="auto"):
    """``model.compile`` with the recipe's optimizer (and loss/metrics for classifiers)."""
    optimizer = make_optimizer(recipe, learning_rate)
    if recipe.task == "classify":
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=jit_compile)
    else:
        model.compile(optimizer, jit_compile=jit_compile)
    return model


def make_callbacks(recipe, split=None):
    """The recipe's callbacks: EMA swapping (if the optimizer keeps an EMA), ActNorm init batch."""
    result = []
    if recipe.optimizer.get("use_ema"):
        result.append(callbacks_lib.SwapEMAWeights(swap_on_epoch=True))
    if recipe.init_examples and split is not None:
        train, _ = datasets(recipe, split, batch_size=recipe.init_examples)
        batch = next(iter(train))
        result.append(callbacks_lib.DataDependentInit(batch[0] if isinstance(batch, tuple) else batch))
    return result


def fit_arguments(recipe, split, epochs=None, batch_size=None):
    """``(train, epochs, validation_data, callbacks)`` keyword-ready for ``model.fit``."""
    train, test = datasets(recipe, split, batch_size)
    return dict(
        x=train,
        epochs=recipe.epochs if epochs is None else validation.positive_int("epochs", epochs),
        validation_data=test,
        callbacks=make_callbacks(recipe, split),
    )


def train(recipe, split=None, epochs=None, batch_size=None, learning_rate=None, verbose=1, callbacks=None,
          seed=0, model=None, **model_overrides):
    """Build, compile and fit the recipe's model: returns ``(model, history, split)``."""
    keras.utils.set_random_seed(seed)
    split = split or load_split(recipe, seed=seed)
    model = model or build_model(recipe, split, **model_overrides)
    compile_model(model, recipe, learning_rate)
    arguments = fit_arguments(recipe, split, epochs, batch_size)
    arguments["callbacks"] = arguments["callbacks"] + list(callbacks or [])
    history = model.fit(verbose=verbose, **arguments)
    return model, history, split


def steps_per_epoch(recipe, split, batch_size=None):
    return math.ceil(len(split.x_train) / (batch_size or recipe.batch_size))
