"""Named, measured training recipes: the one place configurations are written.

A recipe is a model (the arguments of a builder in :mod:`keras_iresnet.models`),
an optimizer, a learning-rate warm-up, a batch size, a number of epochs and a
data split. The model classes take their defaults from here, and the command
line (``iresnet train --recipe NAME``), the tuner's search spaces, the notebooks,
the README, the benchmarks and the tests all build from these recipes through
:mod:`keras_iresnet.runs`. Each recipe says what it is sized for and where its
numbers were measured.

Each recipe *names* an architecture of :mod:`keras_iresnet.models.presets` (the
library's constants) and adds training settings; the library never imports
this module.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from keras_iresnet.models import presets

__all__ = ["Recipe", "RECIPES", "get", "names", "for_task"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A complete, named training configuration.

    Fields:
      name: the recipe's name.
      task: ``"density"``, ``"classify"`` or ``"hybrid"``.
      data: the data set it is made for (see :func:`keras_iresnet.data.load`).
      summary: one line for listings.
      model: builder arguments (without ``input_shape`` / ``num_classes``, which
        come from the data).
      optimizer: ``name`` (a ``keras.optimizers`` class, lower case) and its
        arguments, e.g. ``{"name": "adam", "learning_rate": 1e-3, "clipnorm": 1.0,
        "use_ema": True, "ema_momentum": 0.999}``.
      warmup_steps: linear learning-rate warm-up from 0 (Keras' ``CosineDecay``
        with ``warmup_target``, constant afterwards); 0 for none.
      batch_size, epochs: for ``fit``.
      n_train: training examples (2-D: points drawn; images: the first
        ``n_train`` of the data set; None: all but the test examples).
      n_test: held-out examples (2-D: points drawn with another seed; images:
        the last ``n_test`` of the data set).
      init_examples: ActNorm's data-dependent initialization batch (0: the
        first training batch).
      device: ``"cpu"`` (runs in minutes here) or ``"gpu"`` (paper scale, not run here).
      measured: the benchmark command and result behind the recipe.
      context: ``"label"``: a class-conditional density ``p(x | c)`` with the one-hot
        label as the context (the model gets ``context_shape=(num_classes,)``, the
        pipelines yield ``(x, c)`` pairs); None: unconditional.
    """

    name: str
    task: str
    data: str
    summary: str
    model: Mapping[str, Any]
    optimizer: Mapping[str, Any]
    batch_size: int
    epochs: int
    n_test: int
    n_train: int | None = None
    warmup_steps: int = 0
    init_examples: int = 0
    device: str = "cpu"
    measured: str = ""
    context: str | None = None

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (``model`` and ``optimizer`` are merged, not
        replaced).
        """
        for key in ("model", "optimizer"):
            if key in changes:
                changes[key] = {**copy.deepcopy(dict(getattr(self, key))), **changes[key]}
        return dataclasses.replace(self, **changes)


RECIPES = {
    recipe.name: recipe
    for recipe in [
        Recipe(
            name="2d",
            task="density",
            data="moons",
            summary=(
                "2-D densities: 40 dense blocks of width 18 at coeff 0.99, exact log-det (Figure 2)"
            ),
            model=presets.get("two_d_flow"),
            optimizer={"name": "adam", "learning_rate": 3e-3},
            batch_size=256,
            epochs=15,
            n_train=10000,
            n_test=5000,
            measured=(
                "python -m benchmarks.density_2d (configuration sweep in benchmarks/README.md)"
            ),
        ),
        Recipe(
            name="digits-classifier",
            task="classify",
            data="digits",
            summary=(
                "the paper's classifier layout on 8x8 digits: squeeze, pad to 16 channels, "
                "2x2 blocks, SGD"
            ),
            model=presets.get("digits_classifier"),
            optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
            batch_size=64,
            epochs=10,
            n_train=1400,
            n_test=397,
            measured="python -m benchmarks.classification",
        ),
        Recipe(
            name="digits-hybrid",
            task="hybrid",
            data="digits",
            summary=(
                "classifier + density on 8x8 digits: logit, per-pixel ActNorm, learned "
                "diagonal base"
            ),
            model=presets.get("digits_hybrid"),
            optimizer={"name": "adam", "learning_rate": 3e-3, "clipnorm": 1.0},
            batch_size=64,
            epochs=30,
            n_train=1400,
            n_test=397,
            warmup_steps=100,
            measured="python -m benchmarks.density_hybrid (and the sweep in benchmarks/README.md)",
        ),
        Recipe(
            name="digits-density",
            task="density",
            data="digits",
            summary=(
                "image density on 8x8 digits: logit, learned diagonal base, LipSwish blocks, EMA"
            ),
            model=presets.get("digits_density"),
            optimizer={
                "name": "adam",
                "learning_rate": 3e-3,
                "clipnorm": 1.0,
                "use_ema": True,
                "ema_momentum": 0.99,
            },
            batch_size=64,
            epochs=30,
            n_train=1400,
            n_test=397,
            warmup_steps=100,
            init_examples=512,
            measured="python -m benchmarks.density_images",
        ),
        Recipe(
            name="digits-conditional",
            task="density",
            data="digits",
            summary="class-conditional density p(x | label) on 8x8 digits: one-hot label context",
            model=presets.get("digits_conditional"),
            optimizer={
                "name": "adam",
                "learning_rate": 3e-3,
                "clipnorm": 1.0,
                "use_ema": True,
                "ema_momentum": 0.99,
            },
            batch_size=64,
            epochs=30,
            n_train=1400,
            n_test=397,
            warmup_steps=100,
            init_examples=512,
            context="label",
            measured="4.122 held-out bits/dim after 30 epochs, samples 99.5 % recognised by the "
            "digits-classifier recipe (T=0.7); variants compared at 10 epochs: models/presets.py "
            "DIGITS_CONDITIONAL; against TFP: python -m benchmarks.conditional --parts digits",
        ),
        Recipe(
            name="mnist",
            task="density",
            data="mnist-file",
            summary=(
                "CPU-sized MNIST density: logit, learned diagonal base, 2 LipSwish blocks of "
                "width 64, Russian roulette (chosen at equal wall-clock)"
            ),
            model=presets.get("mnist_flow"),
            optimizer={"name": "adam", "learning_rate": 6e-3, "clipnorm": 1.0},
            batch_size=32,
            epochs=5,
            n_train=9000,
            n_test=1000,
            warmup_steps=300,
            init_examples=512,
            measured="iresnet tune --data mnist-file --minutes 2 --space budget (benchmarks/"
            "README.md); python -m benchmarks.density_images",
        ),
        Recipe(
            name="mnist-resflow",
            task="density",
            data="tfds:mnist",
            summary="Residual Flows' MNIST settings (train_img.py defaults; GPU scale)",
            model=presets.get("resflow_mnist"),
            optimizer={
                "name": "adam",
                "learning_rate": 1e-3,
                "beta_2": 0.99,
                "clipnorm": 1.0,
                "use_ema": True,
                "ema_momentum": 0.999,
            },
            batch_size=64,
            epochs=1000,
            n_test=10000,
            warmup_steps=1000,
            device="gpu",
            measured="Chen et al. 2019 report 0.970 bits/dim; not run here (GPU scale)",
        ),
        Recipe(
            name="cifar10-iresnet",
            task="density",
            data="tfds:cifar10",
            summary=(
                "the official i-ResNet CIFAR-10 density settings (dens_est_cifar.sh; GPU scale)"
            ),
            model=presets.get("iresnet_cifar10"),
            optimizer={"name": "adamax", "learning_rate": 3e-3},
            batch_size=128,
            epochs=200,
            n_test=10000,
            warmup_steps=390,
            init_examples=1024,
            device="gpu",
            measured="Behrmann et al. 2019 report 3.45 bits/dim; not run here (GPU scale)",
        ),
    ]
}


def names() -> tuple[str, ...]:
    """The recipe names."""
    return tuple(RECIPES)


def get(name: str) -> Recipe:
    """A deep copy of recipe ``name`` (so callers may change it freely)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; the recipes are {names()}.")
    return copy.deepcopy(RECIPES[name])


def for_task(task: str, data: str) -> Recipe:
    """The recipe for ``task`` on ``data``: an exact match, else the task's CPU recipe of that kind
    (never a conditional one: those are asked for by name)."""
    exact = [r for r in RECIPES.values() if r.task == task and r.data == data and r.context is None]
    if exact:
        return get(exact[0].name)
    two_d = data not in ("digits", "mnist-file") and not str(data).startswith("tfds:")
    fallback = {
        ("density", True): "2d",
        ("density", False): "mnist",
        ("classify", False): "digits-classifier",
        ("hybrid", False): "digits-hybrid",
    }.get((task, two_d))
    if fallback is None:
        raise ValueError(f"no recipe for task {task!r} on data {data!r}.")
    return get(fallback)
