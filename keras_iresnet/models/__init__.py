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

from keras_iresnet.models import presets
from keras_iresnet.models.base import IResNetModel
from keras_iresnet.models.classifier import IResNetClassifier, iresnet_classifier
from keras_iresnet.models.flow import IResNetFlow, iresnet_flow
from keras_iresnet.models.hybrid import IResNetHybrid, iresnet_hybrid
from keras_iresnet.models.trunks import LN2, block_config, classifier_trunk, flow_trunk

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
