"""keras_iresnet.callbacks: the final spectral check (quiet when the estimates kept up, a warning
and a fix when they lagged), the EMA swap keeps the averages when fit stops early."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_iresnet import callbacks, certify, data, models


class _Snapshot(keras.callbacks.Callback):
    """Keeps the weights the model holds at each epoch's end (after SwapEMAWeights ran)."""

    def on_epoch_end(self, epoch, logs=None):
        self.weights = [v.numpy().copy() for v in self.model.trainable_variables]


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 3:
            self.model.stop_training = True


def test_ema_weights_survive_an_early_stop_and_the_final_check_stays_quiet():
    keras.utils.set_random_seed(0)
    model = models.iresnet_flow((2,), blocks=3, hidden=8)
    model.compile(keras.optimizers.Adam(3e-2, use_ema=True, ema_momentum=0.9))
    snapshot, refine = _Snapshot(), callbacks.RefineSpectralNorm()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # RefineSpectralNorm must not warn
        model.fit(
            data.sample_2d("moons", 2000, seed=0),
            epochs=5,
            batch_size=100,
            verbose=0,
            callbacks=[
                callbacks.SwapEMAWeights(swap_on_epoch=True),
                snapshot,
                _StopAfterFirstEpoch(),
                refine,
            ],
        )
    raw = [v.numpy() for v in model.optimizer._model_variables_moving_average]  # noqa: SLF001 - raw after swap
    assert any(not np.allclose(r, e) for r, e in zip(raw, snapshot.weights)), (
        "EMA equals raw: test cannot fail"
    )
    for variable, expected in zip(model.trainable_variables, snapshot.weights):
        np.testing.assert_array_equal(variable.numpy(), expected)
    assert refine.largest_change <= 1e-3, refine.largest_change


def test_final_check_warns_and_refines_when_an_estimate_was_stale():
    """If the vectors lag (here: set to random ones), RefineSpectralNorm fixes them and says so."""
    model = models.iresnet_flow((2,), blocks=2, hidden=16, coeff=0.9)
    layers = certify.spectral_layers(model)
    for layer in layers:
        layer.kernel.assign(layer.kernel * 3.0)  # the normalization is active
        layer.power_v.assign(tf.random.normal(layer.power_v.shape, seed=4))
    callback = callbacks.RefineSpectralNorm()
    callback.set_model(model)
    with pytest.warns(UserWarning, match="RefineSpectralNorm"):
        callback.on_train_end()
    assert callback.largest_change > 1e-3
    for layer in layers:  # every effective norm is back at coeff (the exact norm, not the estimate)
        assert np.max(layer.operator_norm()) <= 0.9 * (1 + 1e-3)
