"""Keras models: the i-ResNet classifier, density flow and hybrid (sections 5.1, 5.3, 6).

All three are ``keras.Model`` subclasses built from a few architecture arguments
plus one *block configuration* (``block=``, the arguments of
:class:`keras_iresnet.InvertibleResidualStack`), so ``get_config`` and ``.keras``
files round-trip. Their defaults are the measured architectures of
:mod:`keras_iresnet.models.presets`; what their training step adds (data and
divergence checks, spectral tracking after every update) is in
:mod:`keras_iresnet.models.base`.

- :mod:`~keras_iresnet.models.presets`: the measured architectures;
- :mod:`~keras_iresnet.models.trunks`: block configuration and the trunks;
- :mod:`~keras_iresnet.models.base`: the shared training machinery;
- :mod:`~keras_iresnet.models.classifier`, :mod:`~keras_iresnet.models.flow`,
  :mod:`~keras_iresnet.models.hybrid`: the models and their builders.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

#: Public name -> the submodule defining it. Loaded on first use (PEP 562), so the presets
#: (and the recipe catalogue built on them) load without TensorFlow.
_NAMES = {
    "IResNetClassifier": "classifier",
    "iresnet_classifier": "classifier",
    "IResNetFlow": "flow",
    "iresnet_flow": "flow",
    "IResNetHybrid": "hybrid",
    "iresnet_hybrid": "hybrid",
    "IResNetModel": "base",
    "LN2": "trunks",
    "block_config": "trunks",
    "classifier_trunk": "trunks",
    "flow_trunk": "trunks",
}

__all__ = [
    "IResNetClassifier",
    "IResNetFlow",
    "IResNetHybrid",
    "IResNetModel",
    "LN2",
    "block_config",
    "classifier_trunk",
    "flow_trunk",
    "iresnet_classifier",
    "iresnet_flow",
    "iresnet_hybrid",
    "presets",
]


def __getattr__(name: str) -> Any:
    if name == "presets":
        value = importlib.import_module("keras_iresnet.models.presets")
    elif name in _NAMES:
        value = getattr(importlib.import_module(f"keras_iresnet.models.{_NAMES[name]}"), name)
    else:
        raise AttributeError(f"module 'keras_iresnet.models' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
