"""keras_iresnet: Invertible Residual Networks (Behrmann et al., ICML 2019) for Keras 3 and TFP.

Importing the package sets exactly one thing globally: if the environment
variable ``KERAS_BACKEND`` is unset, it is set to ``"tensorflow"`` (our layers
use TensorFlow ops directly). Nothing else is changed: no logging levels, no
devices, no random seeds.

The import itself is instant: every name below is loaded on first use
(``kir.InvertibleResidualBlock`` imports the layers, ``kir.models`` the models),
so the command line's ``--help`` imports no TensorFlow. The Keras classes
register themselves with Keras' serialization as soon as Keras is imported
(before or after this package), so ``keras.models.load_model`` finds them after
``import keras_iresnet`` whatever the order of the imports.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os as _os
import sys as _sys

# typing.TYPE_CHECKING without importing anything at runtime (type checkers know the name);
# deleted again so that the module's namespace (dir(keras_iresnet)) is unchanged.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
del TYPE_CHECKING

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

#: Where each public name lives (loaded on first access).
_NAMES = {
    "ActNorm": "keras_iresnet.layers",
    "ClassifierHead": "keras_iresnet.layers",
    "ConditionalDiagonalGaussian": "keras_iresnet.layers",
    "DiagonalGaussian": "keras_iresnet.layers",
    "FactorOut": "keras_iresnet.layers",
    "FlattenEvent": "keras_iresnet.layers",
    "InjectivePad": "keras_iresnet.layers",
    "InvertibleLayer": "keras_iresnet.layers",
    "InvertibleResidualBlock": "keras_iresnet.layers",
    "InvertibleResidualStack": "keras_iresnet.layers",
    "InvertibleSequential": "keras_iresnet.layers",
    "LipSwish": "keras_iresnet.layers",
    "Logit": "keras_iresnet.layers",
    "SpectralConv2D": "keras_iresnet.layers",
    "SpectralDense": "keras_iresnet.layers",
    "Squeeze": "keras_iresnet.layers",
    "StandardNormal": "keras_iresnet.layers",
    "IResNetBijector": "keras_iresnet.bijector",
    "density_model": "keras_iresnet.bijector",
    "InverseSettings": "keras_iresnet.inverse",
}

#: Modules reachable as attributes (``kir.recipes`` is ``keras_iresnet.experiments.recipes``;
#: ``kir.train`` is the distributed-training module's earlier name).
_MODULES = {
    "bijector": "keras_iresnet.bijector",
    "bridge": "keras_iresnet.bridge",
    "callbacks": "keras_iresnet.callbacks",
    "certify": "keras_iresnet.certify",
    "data": "keras_iresnet.data",
    "distributed": "keras_iresnet.distributed",
    "divergence": "keras_iresnet.divergence",
    "experiments": "keras_iresnet.experiments",
    "inverse": "keras_iresnet.inverse",
    "layers": "keras_iresnet.layers",
    "logdet": "keras_iresnet.logdet",
    "metrics": "keras_iresnet.metrics",
    "models": "keras_iresnet.models",
    "plots": "keras_iresnet.experiments.plots",
    "recipes": "keras_iresnet.experiments.recipes",
    "runs": "keras_iresnet.experiments.runs",
    "spectral": "keras_iresnet.spectral",
    "testing": "keras_iresnet.testing",
    "train": "keras_iresnet.distributed",
    "tuning": "keras_iresnet.experiments.tuning",
    "validation": "keras_iresnet.validation",
}

__all__ = sorted(
    set(_NAMES)
    | set(_MODULES)
    - {
        "bijector",
        "distributed",
        "divergence",
        "experiments",
        "layers",
        "plots",
        "testing",
        "tuning",
    }
)


def _check_backend():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            "keras_iresnet needs the TensorFlow backend of Keras 3, but KERAS_BACKEND="
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before importing keras."
        )


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        _check_backend()
        module = importlib.import_module(_MODULES[name])
    elif name in _NAMES:
        _check_backend()
        module = getattr(importlib.import_module(_NAMES[name]), name)
    else:
        raise AttributeError(f"module 'keras_iresnet' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES) | set(_MODULES))


def _register_with_keras():
    """Import the modules that define Keras classes (they register on import)."""
    import keras

    if keras.backend.backend() != "tensorflow":  # checked again when a name is used
        return
    for module in (
        "keras_iresnet.layers",
        "keras_iresnet.models.classifier",
        "keras_iresnet.models.flow",
        "keras_iresnet.models.hybrid",
        "keras_iresnet.metrics",
    ):
        importlib.import_module(module)


_registered = False


def _importing(name):
    """Whether the module ``name`` is being imported right now (partly initialized)."""
    module = _sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and bool(getattr(spec, "_initializing", False))


def _register_when_quiet(finished=None):
    """Register once Keras is loaded and none of this package's modules is half imported.

    Registering imports the layers and models; doing it while one of our modules is
    itself half imported (its ``import keras`` loaded Keras) would run into that
    module's unfinished names, so it waits until the outermost of our imports ends.
    """
    global _registered
    if _registered or "keras" not in _sys.modules:
        return
    if finished != "keras" and _importing("keras"):
        return
    busy = [n for n in list(_sys.modules) if n.startswith("keras_iresnet.") and _importing(n)]
    if any(name != finished for name in busy):
        return
    _registered = True
    # The finder's work is done: take it off the import path before registering.
    _sys.meta_path[:] = [f for f in _sys.meta_path if not isinstance(f, _RegisterAfterImports)]
    _register_with_keras()


class _LoaderThenRegister(importlib.abc.Loader):
    """Runs the real loader, then :func:`_register_when_quiet`."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_when_quiet(finished=module.__name__)

    def __getattr__(self, name):  # resource readers, get_source, is_package, ...
        return getattr(self._loader, name)


class _RegisterAfterImports(importlib.abc.MetaPathFinder):
    """Wraps the loaders of ``keras`` and of this package's modules (found by the other finders).

    The Keras classes of this package are registered as soon as Keras is loaded and the
    import that loaded it has finished -- whichever is imported first, and whichever of our
    modules is imported first.
    """

    _busy = False

    def find_spec(self, fullname, path=None, target=None):
        if _registered or self._busy:
            return None
        if fullname != "keras" and not fullname.startswith("keras_iresnet."):
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _LoaderThenRegister(spec.loader)
        return spec


_sys.meta_path.insert(0, _RegisterAfterImports())
_register_when_quiet()
