"""keras-tuner search spaces for i-ResNet classifiers, flows and hybrids.

``IResNetHyperModel`` builds the same models as :mod:`keras_iresnet.models` and
the ``iresnet`` command, from hyperparameters:

- ``coeff`` in [0.5, 0.97] (spectral-normalization coefficient, eq. 2),
- ``blocks`` (residual blocks per stage / scale), ``hidden`` (width),
- ``activation`` (elu, softplus, lipswish),
- ``n_terms`` (power-series terms of the log-det, density tasks on events > 16 dims),
- ``learning_rate`` (log scale).

Its ``objective`` is named for the task -- ``val_accuracy`` (max) for
classification, ``val_bits_per_dim`` (min) for density and hybrid models -- so
``keras_tuner.RandomSearch``, ``BayesianOptimization`` and ``Hyperband`` work
unchanged: ``RandomSearch(hypermodel, objective=hypermodel.objective, ...)``.

keras-tuner imports ``tensorboard``; without it every trial is marked FAILED
while ``search()`` returns normally, so it is a declared dependency.
"""
from __future__ import annotations

import keras
import keras_tuner

from keras_iresnet import logdet as logdet_lib
from keras_iresnet import models

__all__ = ["IResNetHyperModel", "TASKS"]

TASKS = ("classify", "density", "hybrid")


class IResNetHyperModel(keras_tuner.HyperModel):
    """A ``keras_tuner.HyperModel`` for ``task`` in ``("classify", "density", "hybrid")``.

    Args:
      task: which model to build.
      input_shape: ``(d,)`` or ``(H, W, C)``.
      num_classes: for ``classify`` and ``hybrid``.
      coeff_range, blocks_range, hidden_choices, activations, n_terms_range,
      learning_rate_range: the search space (defaults above).
    """

    def __init__(
        self,
        task,
        input_shape,
        num_classes=None,
        coeff_range=(0.5, 0.97),
        blocks_range=(1, 3),
        hidden_choices=(16, 32, 64),
        activations=("elu", "softplus", "lipswish"),
        n_terms_range=(2, 10),
        learning_rate_range=(1e-4, 1e-2),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}; got task={task!r}.")
        if task != "density" and not num_classes:
            raise ValueError(f"task={task!r} needs num_classes.")
        low, high = coeff_range
        if not 0 < low <= high < 1:
            raise ValueError(f"coeff_range must lie in (0, 1); got {coeff_range!r}.")
        self.task = task
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.coeff_range = (float(low), float(high))
        self.blocks_range = tuple(blocks_range)
        self.hidden_choices = list(hidden_choices)
        self.activations = list(activations)
        self.n_terms_range = tuple(n_terms_range)
        self.learning_rate_range = tuple(learning_rate_range)

    @property
    def objective(self):
        """The tuner objective matching the task's validation metric."""
        if self.task == "classify":
            return keras_tuner.Objective("val_accuracy", direction="max")
        return keras_tuner.Objective("val_bits_per_dim", direction="min")

    def build(self, hp):
        coeff = hp.Float("coeff", *self.coeff_range)
        blocks = hp.Int("blocks", *self.blocks_range)
        hidden = hp.Choice("hidden", self.hidden_choices)
        activation = hp.Choice("activation", self.activations)
        learning_rate = hp.Float("learning_rate", *self.learning_rate_range, sampling="log")
        common = dict(coeff=coeff, hidden=hidden, activation=activation)
        event_dims = 1
        for d in self.input_shape:
            event_dims *= int(d)
        estimator = "auto"
        if self.task != "classify" and event_dims > 16:
            estimator = logdet_lib.PowerSeries(n_terms=hp.Int("n_terms", *self.n_terms_range))
        image = len(self.input_shape) == 3
        if self.task == "classify":
            model = models.iresnet_classifier(
                self.input_shape, self.num_classes, stages=(blocks,) * (2 if image else 1), **common
            )
            model.compile(
                keras.optimizers.Adam(learning_rate),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            return model
        if self.task == "density":
            model = models.iresnet_flow(self.input_shape, scales=2 if image else 1, blocks_per_scale=blocks,
                                        logdet=estimator, **common)
        else:
            model = models.iresnet_hybrid(self.input_shape, self.num_classes, stages=(blocks,) * (2 if image else 1),
                                          logdet=estimator, **common)
        model.compile(keras.optimizers.Adam(learning_rate))
        return model
