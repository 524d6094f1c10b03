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

keras-tuner imports ``tensorboard``; without it every trial is marked FAILED
while ``search()`` returns normally, so it is a declared dependency.
"""

from __future__ import annotations

import keras_tuner

from keras_iresnet import validation
from keras_iresnet.experiments import recipes as recipes_lib
from keras_iresnet.experiments import runs

__all__ = ["IResNetHyperModel", "TASKS"]

TASKS = ("classify", "density", "hybrid")


def _scaled(value, factor):
    return max(1, int(round(value * factor)))


class IResNetHyperModel(keras_tuner.HyperModel):
    """A ``keras_tuner.HyperModel`` around a recipe.

    Args:
      recipe: a :class:`keras_iresnet.recipes.Recipe`, a recipe name, or a task
        (``"classify"``, ``"density"``, ``"hybrid"``: the task's CPU recipe for
        the input shape: 2-D for ``(2,)``, digits otherwise).
      input_shape: ``(d,)`` or ``(H, W, C)``.
      num_classes: for ``classify`` and ``hybrid``.
      activations: the activation choices.
    """

    def __init__(
        self,
        recipe,
        input_shape,
        num_classes=None,
        activations=("elu", "softplus", "lipswish"),
        **kwargs,
    ):
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

    @property
    def objective(self):
        """The tuner objective matching the task's validation metric."""
        if self.task in ("classify", "hybrid"):
            return keras_tuner.Objective("val_accuracy", direction="max")
        return keras_tuner.Objective("val_bits_per_dim", direction="min")

    def build(self, hp):
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
        model = runs.build_model(
            self.recipe,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            block=block,
            **{self.blocks_key: blocks},
        )
        return runs.compile_model(model, self.recipe, learning_rate)
