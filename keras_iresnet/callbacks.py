"""Keras callbacks of keras_iresnet."""
from __future__ import annotations

import keras

from keras_iresnet import spectral

__all__ = ["RefineSpectralNorm"]


class RefineSpectralNorm(keras.callbacks.Callback):
    """Run the power iteration of every spectral layer to convergence at the end of ``fit``.

    With one power iteration per training step (the paper's setting) the stored
    estimate lags behind the weights, so equation (2) may let a layer's norm
    exceed ``coeff`` after large updates. This callback calls
    :func:`keras_iresnet.spectral.refine` at the end of training (and, with
    ``every_epoch=True``, after every epoch, so validation also sees refined
    estimates), which restores ``||W~||_2 <= coeff`` up to the convergence
    tolerance. The keras_iresnet models add it to ``fit`` automatically.
    """

    def __init__(self, max_iterations=1000, tol=1e-5, every_epoch=False):
        super().__init__()
        self.max_iterations = max_iterations
        self.tol = tol
        self.every_epoch = every_epoch

    def _refine(self):
        spectral.refine(self.model, max_iterations=self.max_iterations, tol=self.tol)

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epoch:
            self._refine()

    def on_train_end(self, logs=None):
        self._refine()
