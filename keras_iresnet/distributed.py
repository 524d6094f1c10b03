"""Training and evaluating under ``tf.distribute`` where Keras 3's ``fit`` cannot (multi-worker).

Keras 3's ``model.fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585, tensorflow/tensorflow#72388: ``ValueError: Attempt to
convert a value (PerReplica...)``). :func:`fit_distributed` is a small loop that
runs the model's own ``train_step`` -- the same loss, optimizer, metrics and
loss scaling across replicas as ``fit`` -- in ``strategy.run`` inside a
``tf.function``, with Keras callbacks (progress bar, History,
``ModelCheckpoint``, ``BackupAndRestore``, ...). On one machine use plain
``model.fit`` under ``MirroredStrategy``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet.callbacks import RefineSpectralNorm
from keras_iresnet.models.base import IResNetModel

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["fit_distributed", "evaluate_distributed"]


def fit_distributed(
    model: keras.Model,
    dataset: tf.data.Dataset,
    epochs: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int = 1,
    steps_per_epoch: int | None = None,
    validation_data: tf.data.Dataset | None = None,
) -> keras.callbacks.History:
    """Train a compiled model on a ``tf.data.Dataset`` of *global* batches with ``strategy``.

    Args:
      model: a compiled Keras model created under ``strategy.scope()``.
      dataset: ``tf.data.Dataset`` yielding global batches (``x`` or ``(x, y)``);
        it is distributed with ``strategy.experimental_distribute_dataset``.
      epochs: number of passes over ``dataset``.
      callbacks: Keras callbacks; :class:`RefineSpectralNorm` is added if absent.
      strategy: defaults to ``model.distribute_strategy``.
      verbose: 1 shows a progress bar.
      steps_per_epoch: optional cap on steps per epoch.
      validation_data: optional ``tf.data.Dataset`` of global batches, evaluated
        after every epoch with the model's ``test_step`` (logs ``val_loss``, ...).

    Returns:
      The ``keras.callbacks.History`` of the run.
    """
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            "fit_distributed needs a compiled model (call model.compile(optimizer, ...))."
        )
    strategy = strategy or model.distribute_strategy
    callbacks = list(callbacks or [])
    if not any(isinstance(c, RefineSpectralNorm) for c in callbacks):
        callbacks.append(RefineSpectralNorm())
    distributed = strategy.experimental_distribute_dataset(dataset)
    if not model.optimizer.built:
        # Create the optimizer's slots now: variables created inside the traced
        # step would need cond-based initialization and break under a strategy.
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
    ours = isinstance(model, IResNetModel)
    if ours:  # the divergence guard and its one-sentence errors, as in the models' fit
        model._ensure_divergence_guard()  # noqa: SLF001

    @tf.function
    def train_step(batch: Any) -> None:
        strategy.run(model.train_step, args=(batch,))

    steps = steps_per_epoch
    if steps is None:
        cardinality = int(dataset.cardinality())
        steps = cardinality if cardinality > 0 else None
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose > 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
    )
    model.stop_training = False
    with model._clean_errors("fit") if ours else contextlib.nullcontext():  # noqa: SLF001
        callback_list.on_train_begin()
        initial_epoch = getattr(model, "_initial_epoch", None) or 0
        logs = {}
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for step, batch in enumerate(distributed):
                if steps_per_epoch is not None and step >= steps_per_epoch:
                    break
                callback_list.on_train_batch_begin(step)
                train_step(batch)
                logs = _metrics(model)
                callback_list.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            if validation_data is not None:
                logs = {
                    **logs,
                    **{
                        f"val_{k}": v
                        for k, v in evaluate_distributed(model, validation_data, strategy).items()
                    },
                }
            callback_list.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callback_list.on_train_end(logs)
    return model.history


def evaluate_distributed(
    model: keras.Model, dataset: tf.data.Dataset, strategy: tf.distribute.Strategy | None = None
) -> dict[str, float]:
    """The model's metrics on ``dataset`` (global batches), computed with ``test_step``
    under ``strategy``.

    Keras 3's ``evaluate`` fails under ``MultiWorkerMirroredStrategy`` as ``fit``
    does; this is its loop. Returns ``{metric name: float}``.
    """
    strategy = strategy or model.distribute_strategy

    @tf.function
    def test_step(batch: Any) -> None:
        strategy.run(model.test_step, args=(batch,))

    model.reset_metrics()
    for batch in strategy.experimental_distribute_dataset(dataset):
        test_step(batch)
    return _metrics(model)


def _metrics(model):
    return {name: float(value) for name, value in model.get_metrics_result().items()}
