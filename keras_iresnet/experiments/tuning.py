"""keras-tuner search spaces centred on the recipes.

``IResNetHyperModel(recipe, input_shape, num_classes)`` builds the recipe's model
(:mod:`keras_iresnet.runs`) with a few hyperparameters varied around the
recipe's values, so the untuned recipe is always a point of the search:

- ``coeff`` (spectral-normalization coefficient, eq. 2) in
  ``[max(0.5, c - 0.15), min(0.99, c + 0.05)]`` around the recipe's ``c``,
- ``blocks`` (per stage / scale, or in total for vectors): the recipe's count, halved to doubled,
- ``hidden`` (width): the recipe's, half and double,
- ``activation``: elu, softplus, lipswish (the recipe's first),
- ``learning_rate`` on a log scale from a tenth to three times the recipe's,
- ``n_terms`` (power-series terms) for density models estimated by the series.

Its ``objective`` is named for the task -- ``val_accuracy`` (max) for
classification and hybrids, ``val_bits_per_dim`` (min) for density models -- so
``keras_tuner.RandomSearch``, ``BayesianOptimization`` and ``Hyperband`` work
unchanged: ``RandomSearch(hypermodel, objective=hypermodel.objective, ...)``.

**Searches at equal wall-clock** (``seconds=``): every trial trains for the same
number of seconds, build and tracing included
(:class:`keras_iresnet.callbacks.TimeBudget`; validation time not counted), and
density models are evaluated with one fixed, accurate estimator
(``eval_logdet``, default: the exact log-det for events of at most 16 dimensions,
else the 20-term power series with 4 probes), so a trial's objective is the
held-out bits/dim its configuration reaches in that time, whatever estimator it
trains with. ``space="budget"`` widens the density search to what moves learning
per second: the training estimator (power-series terms, Russian-roulette exact
terms), width and blocks per scale, the number of scales, factor-out, fully
connected end blocks, ``coeff``, the activation, the learning rate and warm-up,
the batch size and the EMA of the weights (see :meth:`IResNetHyperModel.build`).

keras-tuner imports ``tensorboard``; without it every trial is marked FAILED
while ``search()`` returns normally, so it is a declared dependency.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import keras_tuner
import tensorflow as tf

from keras_iresnet import callbacks as callbacks_lib
from keras_iresnet import logdet as logdet_lib
from keras_iresnet import validation
from keras_iresnet.experiments import recipes as recipes_lib
from keras_iresnet.experiments import runs

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    import keras

__all__ = [
    "IResNetHyperModel",
    "RecipeFirstRandomSearch",
    "TASKS",
    "SPACES",
    "accurate_eval_logdet",
]

TASKS = ("classify", "density", "hybrid")
SPACES = ("recipe", "budget")

#: Training estimators of the budget space: (name, estimator config).
BUDGET_ESTIMATORS = {
    "power_series_2": {"class_name": "power_series", "config": {"n_terms": 2}},
    "power_series_3": {"class_name": "power_series", "config": {"n_terms": 3}},
    "power_series_5": {"class_name": "power_series", "config": {"n_terms": 5}},
    "russian_roulette_1": {"class_name": "russian_roulette", "config": {"n_exact_terms": 1}},
    "russian_roulette_2": {"class_name": "russian_roulette", "config": {"n_exact_terms": 2}},
}


def accurate_eval_logdet(input_shape: Sequence[int]) -> logdet_lib.LogDetEstimator:
    """The fixed estimator a search evaluates density models with: exact for events of at
    most 16 dimensions, else the 20-term power series with 4 Hutchinson probes."""
    if math.prod(input_shape) <= 16:
        return logdet_lib.Exact()
    return logdet_lib.PowerSeries(n_terms=20, n_samples=4)


def _scaled(value, factor):
    return max(1, int(round(value * factor)))


class IResNetHyperModel(keras_tuner.HyperModel):
    """A ``keras_tuner.HyperModel`` around a recipe.

    Args:
      recipe: a :class:`keras_iresnet.experiments.recipes.Recipe`, a recipe name, or a
        task (``"classify"``, ``"density"``, ``"hybrid"``: the task's CPU recipe for
        the input shape: 2-D for ``(2,)``, digits otherwise).
      input_shape: ``(d,)`` or ``(H, W, C)``.
      num_classes: for ``classify`` and ``hybrid``.
      activations: the activation choices.
      seconds: a wall-clock budget per trial (None: trials train for ``epochs``).
      space: ``"recipe"`` (a few values around the recipe's) or ``"budget"``
        (density models: the wide space of the module docstring).
      eval_logdet: the estimator density models are evaluated with (default:
        :func:`accurate_eval_logdet` when ``seconds`` is given, else the recipe's).
    """

    def __init__(
        self,
        recipe: recipes_lib.Recipe | str,
        input_shape: Sequence[int],
        num_classes: int | None = None,
        activations: Sequence[str] = ("elu", "softplus", "lipswish"),
        seconds: float | None = None,
        space: str = "recipe",
        eval_logdet: str | dict[str, Any] | logdet_lib.LogDetEstimator | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(recipe, str) and recipe in TASKS:
            recipe = recipes_lib.for_task(
                recipe, "moons" if len(tuple(input_shape)) == 1 else "digits"
            )
        elif isinstance(recipe, str):
            recipe = recipes_lib.get(recipe)
        if not isinstance(recipe, recipes_lib.Recipe):
            raise ValueError(
                f"recipe must be a Recipe, a recipe name or one of {TASKS}; got {recipe!r}."
            )
        self.recipe = recipe
        self.task = recipe.task
        self.input_shape = validation.shape("input_shape", input_shape)
        if self.task != "density" and not num_classes:
            raise ValueError(f"task={self.task!r} needs num_classes.")
        self.num_classes = num_classes
        block = dict(recipe.model.get("block", {}))
        own = block.get("activation", "elu")
        self.activations = [own] + [a for a in activations if a != own]
        self.coeff = float(block.get("coeff", 0.9))
        self.hidden = int(block.get("hidden", 32))
        key = "stages" if self.task == "classify" else "blocks"
        self.blocks_key = key
        self.blocks = recipe.model.get(key)
        self.learning_rate = float(recipe.optimizer["learning_rate"])
        self.seconds = None if seconds is None else validation.positive_float("seconds", seconds)
        self.space = validation.one_of("space", space, SPACES)
        if self.space == "budget" and self.task != "density":
            raise ValueError(f"space='budget' is for density models; got a {self.task} recipe.")
        if eval_logdet is None and self.seconds is not None and self.task != "classify":
            eval_logdet = accurate_eval_logdet(self.input_shape)
        self.eval_logdet = None if eval_logdet is None else logdet_lib.get(eval_logdet)
        self._trial_start = None
        self._examples = None  # (training set, its number of examples)

    @property
    def objective(self) -> keras_tuner.Objective:
        """The tuner objective matching the task's validation metric."""
        if self.task in ("classify", "hybrid"):
            return keras_tuner.Objective("val_accuracy", direction="max")
        return keras_tuner.Objective("val_bits_per_dim", direction="min")

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """The trial's compiled model (its budget starts here: build and tracing count)."""
        self._trial_start = time.perf_counter()
        if self.space == "budget":
            return self._build_budget(hp)
        coeff = hp.Float(
            "coeff", max(0.5, self.coeff - 0.15), min(0.99, self.coeff + 0.05), default=self.coeff
        )
        hidden = hp.Choice(
            "hidden",
            sorted({_scaled(self.hidden, 0.5), self.hidden, _scaled(self.hidden, 2)}),
            default=self.hidden,
        )
        activation = hp.Choice("activation", self.activations, default=self.activations[0])
        learning_rate = hp.Float(
            "learning_rate",
            self.learning_rate / 10,
            self.learning_rate * 3,
            sampling="log",
            default=self.learning_rate,
        )
        if isinstance(self.blocks, int):
            depth = hp.Int(
                "blocks", _scaled(self.blocks, 0.5), _scaled(self.blocks, 2), default=self.blocks
            )
            blocks = depth
        else:
            per_scale = max(self.blocks)
            depth = hp.Int(
                "blocks", _scaled(per_scale, 0.5), _scaled(per_scale, 2), default=per_scale
            )
            blocks = tuple(depth for _ in self.blocks)
        block = {
            **self.recipe.model.get("block", {}),
            "coeff": coeff,
            "hidden": hidden,
            "activation": activation,
        }
        logdet = block.get("logdet", "auto")
        if (
            self.task != "classify"
            and isinstance(logdet, (str, dict))
            and "power_series" in str(logdet)
        ):
            block["logdet"] = {
                "class_name": "power_series",
                "config": {"n_terms": hp.Int("n_terms", 2, 10, default=5)},
            }
        extra = {} if self.eval_logdet is None else {"eval_logdet": self.eval_logdet}
        model = runs.build_model(
            self.recipe,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            block=block,
            **{self.blocks_key: blocks},
            **extra,
        )
        return runs.compile_model(model, self.recipe, learning_rate)

    def _build_budget(self, hp):
        """The wide density space: what moves learning per second.

        Vectors: blocks (2-60), width, ``coeff``, activation, the training estimator
        (exact or a power series), learning rate, batch size. Images: the training
        estimator (power series of 2, 3 or 5 terms, Russian roulette with 1 or 2 exact
        terms), width of the first scale (doubled per scale), blocks per scale (1-6),
        scales (1 up to what the image size allows), factor-out, fully connected end
        blocks (0-2), ``coeff`` (0.9-0.99), activation (LipSwish, ELU), learning rate
        (1e-4-1e-2, log), warm-up steps (0, 100, 300), batch size (32, 64, 128), EMA.
        """
        image = len(self.input_shape) == 3
        coeff = hp.Float("coeff", 0.9, 0.99, default=min(0.99, max(0.9, self.coeff)))
        learning_rate = hp.Float(
            "learning_rate", 1e-4, 1e-2, sampling="log", default=self.learning_rate
        )
        hp.Choice(
            "batch_size",
            [32, 64, 128] if image else [64, 128, 256, 512],
            default=self.recipe.batch_size,
        )
        warmup = hp.Choice(
            "warmup_steps",
            [0, 100, 300],
            default=self.recipe.warmup_steps if self.recipe.warmup_steps in (0, 100, 300) else 0,
        )
        ema = hp.Boolean("ema", default=bool(self.recipe.optimizer.get("use_ema")))
        if not image:
            activation = hp.Choice("activation", self.activations, default=self.activations[0])
            estimator = hp.Choice("estimator", ["exact", "power_series_5"], default="exact")
            block = {
                **self.recipe.model.get("block", {}),
                "coeff": coeff,
                "activation": activation,
                "hidden": hp.Int("hidden", 8, 64, step=2, default=self.hidden),
                "logdet": "exact" if estimator == "exact" else BUDGET_ESTIMATORS[estimator],
            }
            blocks = hp.Int(
                "blocks", 2, 60, default=self.blocks if isinstance(self.blocks, int) else 10
            )
            model = runs.build_model(
                self.recipe,
                input_shape=self.input_shape,
                block=block,
                blocks=blocks,
                eval_logdet=self.eval_logdet,
            )
        else:
            activation = hp.Choice("activation", ["lipswish", "elu"], default="lipswish")
            estimator = hp.Choice("estimator", list(BUDGET_ESTIMATORS), default="power_series_5")
            size = min(self.input_shape[:2])
            squeeze = bool(self.recipe.model.get("initial_squeeze", True))
            size = size // 2 if squeeze else size
            max_scales = 1
            while size % 2 == 0 and max_scales < 3:
                size //= 2
                max_scales += 1
            scales = hp.Int("scales", 1, max_scales, default=min(2, max_scales))
            depth = hp.Int("blocks", 1, 6, default=2)
            block = {
                **self.recipe.model.get("block", {}),
                "coeff": coeff,
                "activation": activation,
                "hidden": hp.Choice("hidden", [16, 32, 64], default=32),
                "logdet": BUDGET_ESTIMATORS[estimator],
            }
            fc_blocks = hp.Int("fc_blocks", 0, 2, default=0)
            factor_out = hp.Boolean("factor_out", default=False) if scales > 1 else False
            model = runs.build_model(
                self.recipe,
                input_shape=self.input_shape,
                block=block,
                blocks=(depth,) * scales,
                factor_out=factor_out,
                fc_blocks=fc_blocks,
                fc_block={**block, "hidden": 128, "actnorm": False},
                eval_logdet=self.eval_logdet,
            )
        recipe = self.recipe.replace(optimizer={"use_ema": ema}, warmup_steps=warmup)
        return runs.compile_model(model, recipe, learning_rate)

    def fit(
        self,
        hp: keras_tuner.HyperParameters,
        model: keras.Model,
        *args: Any,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        **kwargs: Any,
    ) -> keras.callbacks.History:
        """``model.fit`` for a trial: the budget, the batch size and the EMA callback of the trial.

        With ``seconds``, training stops once the budget (counted from the trial's
        build) is spent; ``epochs`` is then a cap. A ``batch_size`` hyperparameter
        re-batches a ``tf.data`` training set (without partial batches when there is a
        full one, as :func:`keras_iresnet.experiments.runs.datasets`).
        """
        callbacks = list(callbacks or [])
        if "batch_size" in hp.values and args and isinstance(args[0], tf.data.Dataset):
            counting = time.perf_counter()
            args = (self._rebatch(args[0], hp.get("batch_size")),) + tuple(args[1:])
            if self._trial_start is not None:  # counting the examples is not the trial's work
                self._trial_start += time.perf_counter() - counting
        if self.seconds is not None:
            callbacks.append(callbacks_lib.TimeBudget(self.seconds, start=self._trial_start))
        if getattr(model.optimizer, "use_ema", False):
            callbacks.append(callbacks_lib.SwapEMAWeights(swap_on_epoch=True))
        return model.fit(*args, callbacks=callbacks, **kwargs)

    def _rebatch(self, data: tf.data.Dataset, size: int) -> tf.data.Dataset:
        """``data`` in batches of ``size`` (none partial when there is a full one, as
        :func:`keras_iresnet.experiments.runs.training_batches`), with its number of batches
        declared: Keras warns that the input "ran out of data" after the first epoch of a
        dataset of unknown length, which ``rebatch`` makes it. The examples are counted once
        per training set."""
        if self._examples is None or self._examples[0] is not data:
            self._examples = (data, sum(int(tf.shape(tf.nest.flatten(b)[0])[0]) for b in data))
        batches, drop = runs.training_batches(self._examples[1], size)
        return data.rebatch(size, drop_remainder=drop).apply(
            tf.data.experimental.assert_cardinality(batches)
        )


class _RecipeFirstOracle(keras_tuner.oracles.RandomSearchOracle):
    """Random search whose first trial leaves every hyperparameter at its default."""

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if self.trials:
            return super().populate_space(trial_id)
        # No trial yet: every active hyperparameter at its default, which the search spaces set
        # to the recipe's value (keras-tuner would fill a missing value with a random one).
        hps = keras_tuner.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if hps.is_active(hp):
                hps.values[hp.name] = hp.default
        return {"status": "RUNNING", "values": hps.values}


class RecipeFirstRandomSearch(keras_tuner.Tuner):
    """``keras_tuner.RandomSearch`` whose first trial is the recipe itself.

    Every hyperparameter of :class:`IResNetHyperModel` defaults to the recipe's value, so
    trial 0 measures the recipe under the search's own rules (budget, validation split,
    estimator) and the best trial is never worse than the recipe on the objective; the
    other trials are random points, as in ``RandomSearch``.

    Args:
      hypermodel: the :class:`IResNetHyperModel` (or any ``keras_tuner.HyperModel``).
      objective: the tuner objective (``hypermodel.objective``).
      max_trials: trials in all, the recipe's included.
      seed: the random seed of the points after the first.
      **kwargs: ``keras_tuner.Tuner`` arguments (``directory``, ``project_name``,
        ``overwrite``, ...).
    """

    def __init__(
        self,
        hypermodel: keras_tuner.HyperModel,
        objective: keras_tuner.Objective | str | None = None,
        max_trials: int = 10,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        oracle = _RecipeFirstOracle(objective=objective, max_trials=max_trials, seed=seed)
        super().__init__(oracle, hypermodel, **kwargs)
