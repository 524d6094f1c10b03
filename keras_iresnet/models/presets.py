"""The measured architectures: the library's own constants.

Each preset is the ``model`` arguments of one of the model classes (without
``input_shape`` / ``num_classes``, which come from the data). The model classes
take their defaults from here, and the training recipes
(:mod:`keras_iresnet.experiments.recipes`) name a preset plus training settings;
where each was measured is said beside it and in ``benchmarks/README.md``.

Treat them as read-only: :func:`get` returns a deep copy to change.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "TWO_D_BLOCK",
    "IMAGE_BLOCK",
    "TWO_D_FLOW",
    "DIGITS_CLASSIFIER",
    "DIGITS_HYBRID",
    "DIGITS_DENSITY",
    "DIGITS_CONDITIONAL",
    "MNIST_FLOW",
    "RESFLOW_MNIST",
    "IRESNET_CIFAR10",
    "PRESETS",
    "get",
]

#: The 2-D block: width 18, coeff 0.99, ELU, per-channel ActNorm, exact log-det
#: (chosen by the configuration sweep of ``python -m benchmarks.density_2d``).
TWO_D_BLOCK = {"hidden": 18, "coeff": 0.99, "activation": "elu", "actnorm": True, "logdet": "exact"}

#: The CPU image block: Residual Flows' LipSwish pre-activation blocks at coeff 0.98,
#: per-position ActNorm with its variance floor, the 5-term power series for training.
IMAGE_BLOCK = {
    "hidden": 32,
    "coeff": 0.98,
    "activation": "lipswish",
    "preactivation": True,
    "actnorm": "position",
    "actnorm_variance_floor": 0.2,
    "logdet": "power_series",
}

#: 2-D densities: 40 dense blocks of width 18 (the paper's Figure 2 setting, made deep and narrow).
TWO_D_FLOW = {"blocks": 40, "block": TWO_D_BLOCK, "base": "standard"}

#: The paper's classifier layout at digits size: squeeze, pad to 16 channels, 2 + 2 blocks.
DIGITS_CLASSIFIER = {
    "stages": (2, 2),
    "block": {"hidden": 32, "coeff": 0.9, "activation": "elu"},
    "initial_squeeze": True,
    "pad_to_channels": 16,
}

#: Classifier + density on digits: logit, 3 + 3 LipSwish blocks, learned diagonal base.
DIGITS_HYBRID = {
    "blocks": (3, 3),
    "block": IMAGE_BLOCK,
    "logit": 1e-6,
    "base": "diagonal",
    "initial_squeeze": True,
    "density_weight": 0.3,
}

#: Image density on digits: logit, 2 + 2 LipSwish blocks, learned diagonal base.
DIGITS_DENSITY = {
    "blocks": (2, 2),
    "block": IMAGE_BLOCK,
    "logit": 1e-6,
    "base": "diagonal",
    "initial_squeeze": True,
    "factor_out": False,
    "fc_blocks": 0,
}

#: Class-conditional image density on digits, p(x | one-hot label): the digits density
#: architecture with the label added in every block (additive) and a conditional diagonal base.
#: Chosen at 10 epochs (of the recipe's 30; 1,400 / 397 digits, held-out bits/dim with a 20-term
#: power series, 4 probes; samples of 20 per class recognised by the digits-classifier recipe at
#: temperature 0.7): additive 4.323 bits/dim, 75.5 % recognised; FiLM 4.325, 73.5 %; additive
#: with the unconditional learned diagonal base 4.349, 65 %; the unconditional digits-density
#: recipe 4.422. A 3 + 3 stack reached 4.283 and 81.5 % at 10 epochs for about 1.5 times the
#: step; 2 + 2 keeps the digits-density architecture (a like-for-like comparison). At the
#: recipe's 30 epochs: 4.122 bits/dim, 95.5 % recognised at temperature 1, 99.5 % at 0.7.
DIGITS_CONDITIONAL = {
    "blocks": (2, 2),
    "block": {**IMAGE_BLOCK, "context_mode": "additive"},
    "logit": 1e-6,
    "base": "conditional_diagonal",
    "initial_squeeze": True,
    "factor_out": False,
    "fc_blocks": 0,
}

#: CPU-sized MNIST density: logit, squeeze, one scale of 2 LipSwish blocks of width 64 trained
#: with a Russian roulette (2 exact terms), learned diagonal base. Chosen at equal wall-clock
#: (``iresnet tune --task density --data mnist-file --minutes 2 --space budget --trials 6``,
#: the best of 6; paired with the earlier 4 + 4 blocks of width 32 with the 5-term series at
#: 2 minutes on the test split: 2.048 against 2.223 bits/dim; benchmarks/README.md).
MNIST_FLOW = {
    "blocks": (2,),
    "block": {
        **IMAGE_BLOCK,
        "hidden": 64,
        "coeff": 0.976,
        "logdet": {"class_name": "russian_roulette", "config": {"n_exact_terms": 2}},
    },
    "logit": 1e-6,
    "base": "diagonal",
    "initial_squeeze": True,
    "factor_out": False,
    "fc_blocks": 0,
}

_ROULETTE = {
    "class_name": "russian_roulette",
    "config": {"n_exact_terms": 2, "p": 0.5, "n_samples": 1},
}

#: Residual Flows' MNIST settings (``train_img.py``; GPU scale): 3 x 16 blocks of 512,
#: LipSwish pre-activation, Russian roulette, 4 fully connected end blocks.
RESFLOW_MNIST = {
    "blocks": (16, 16, 16),
    "block": {
        "hidden": 512,
        "kernel_sizes": (3, 1, 3),
        "coeff": 0.98,
        "activation": "lipswish",
        "preactivation": True,
        "actnorm": True,
        "actnorm_variance_floor": 0.2,
        "logdet": _ROULETTE,
    },
    "logit": 1e-6,
    "base": "standard",
    "initial_squeeze": False,
    "factor_out": False,
    "fc_blocks": 4,
    "fc_block": {
        "hidden": 128,
        "coeff": 0.98,
        "activation": "lipswish",
        "preactivation": True,
        "logdet": _ROULETTE,
    },
    "eval_logdet": {"class_name": "russian_roulette", "config": {"n_exact_terms": 20, "p": 0.5}},
}

#: The official i-ResNet CIFAR-10 density settings (``dens_est_cifar.sh``; GPU scale).
IRESNET_CIFAR10 = {
    "blocks": (16, 16, 16),
    "block": {
        "hidden": 512,
        "kernel_sizes": (3, 1, 3),
        "coeff": 0.9,
        "activation": "elu",
        "preactivation": True,
        "actnorm": True,
        "logdet": {"class_name": "power_series", "config": {"n_terms": 5, "n_samples": 1}},
    },
    "logit": None,
    "base": "diagonal",
    "initial_squeeze": True,
    "factor_out": True,
    "fc_blocks": 0,
}

#: Every preset by name.
PRESETS = {
    "two_d_flow": TWO_D_FLOW,
    "digits_classifier": DIGITS_CLASSIFIER,
    "digits_hybrid": DIGITS_HYBRID,
    "digits_density": DIGITS_DENSITY,
    "digits_conditional": DIGITS_CONDITIONAL,
    "mnist_flow": MNIST_FLOW,
    "resflow_mnist": RESFLOW_MNIST,
    "iresnet_cifar10": IRESNET_CIFAR10,
}


def get(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name`` (a key of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {tuple(PRESETS)}.")
    return copy.deepcopy(PRESETS[name])
