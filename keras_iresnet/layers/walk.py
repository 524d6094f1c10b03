"""Walking a layer or model: its spectral layers and its residual stacks, in creation order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from keras_iresnet._tf import sublayers
from keras_iresnet.layers.residual import InvertibleResidualStack
from keras_iresnet.layers.spectral import SpectralLayerBase

if TYPE_CHECKING:
    import keras

__all__ = ["spectral_layers", "normalized_layers", "residual_stacks"]


def _walk(layer, cls):
    """Depth-first, in the order the sublayers were created (Keras' ``_flatten_layers``
    reverses the sublayers of every nested layer)."""
    found, seen = [], set()

    def visit(sub: keras.layers.Layer) -> None:
        if id(sub) in seen:
            return
        seen.add(id(sub))
        if isinstance(sub, cls):
            found.append(sub)
        for child in sublayers(sub):
            visit(child)

    visit(layer)
    return found


def spectral_layers(layer: keras.layers.Layer) -> list[SpectralLayerBase]:
    """All spectral layers inside ``layer`` (itself included), in order: ``[SpectralLayerBase]``."""
    return _walk(layer, SpectralLayerBase)


def normalized_layers(layer: keras.layers.Layer) -> list[SpectralLayerBase]:
    """The spectral layers inside ``layer`` that normalize (``coeff`` is not None)."""
    return [sub for sub in spectral_layers(layer) if sub.coeff is not None]


def residual_stacks(layer: keras.layers.Layer) -> list[InvertibleResidualStack]:
    """All residual blocks and stacks inside ``layer`` (itself included), in order."""
    return _walk(layer, InvertibleResidualStack)
