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
    with pytest.warns(UserWarning, match="RefineSpectralNorm: a spectral estimate (rose|fell) by"):
        callback.on_train_end()
    assert callback.largest_change > 1e-3
    for layer in layers:  # every effective norm is back at coeff (the exact norm, not the estimate)
        assert np.max(layer.operator_norm()) <= 0.9 * (1 + 1e-3)


@pytest.mark.parametrize("scale, direction", [(0.5, "rose"), (2.0, "fell")])
def test_final_check_says_which_way_the_estimate_moved(scale, direction):
    """Converged vectors scaled by 0.5 make sigma~ = ||W v_1|| half the norm (the layers ran
    above coeff: the refined estimate rose); scaled by 2, twice it (over-normalized: fell)."""
    model = models.iresnet_flow((2,), blocks=1, hidden=16, coeff=0.9)
    layers = certify.spectral_layers(model)
    for layer in layers:
        layer.kernel.assign(layer.kernel * 3.0)  # the normalization is active
        layer.refine()
        layer.power_v.assign(layer.power_v * scale)
    callback = callbacks.RefineSpectralNorm()
    callback.set_model(model)
    with pytest.warns(UserWarning, match=f"a spectral estimate {direction} by") as caught:
        callback.on_train_end()
    expected = abs(1 / scale - 1)  # the refined estimate relative to the scaled one
    assert callback.largest_change == pytest.approx(expected, rel=1e-3)
    assert ("ran up to that much above coeff" in str(caught[0].message)) == (direction == "rose")


class _FakeClock:
    """A clock for ``TimeBudget(clock=...)``: each training step advances it by ``step``
    seconds and each validation by ``validation`` seconds (so the tests do not depend on this
    machine)."""

    def __init__(self, step, validation):
        self.now, self.step, self.validation = 1000.0, step, validation

    def __call__(self):
        return self.now


class _AdvanceClock(keras.callbacks.Callback):
    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def on_train_batch_begin(self, batch, logs=None):
        self.clock.now += self.clock.step

    def on_test_end(self, logs=None):  # validation's time passes before its end is seen
        self.clock.now += self.clock.validation


def test_time_budget_stops_within_one_step_and_does_not_count_validation():
    clock = _FakeClock(step=0.3, validation=50.0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.zeros((64, 2), "float32"), np.zeros((64, 1), "float32")
    budget = callbacks.TimeBudget(2.0, clock=clock)
    # The budget callback runs after the clock moved for the step: 0.3 s per step, 8 steps
    # per epoch, 50 s of validation after every epoch (not counted).
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=100,
        validation_data=(x, y),
        verbose=0,
        callbacks=[_AdvanceClock(clock), budget],
    )
    assert budget.stopped
    assert budget.steps == 7  # 7 x 0.3 = 2.1 s >= 2.0 s; after 6 steps 1.8 s < 2.0 s
    assert 2.0 <= budget.elapsed < 2.0 + 0.3 + 1e-9  # within one step of the budget
    assert budget.elapsed == pytest.approx(2.1)  # the validation's 50 s are not counted


def test_time_budget_counts_from_a_given_start_and_refuses_bad_budgets():
    clock = _FakeClock(step=0.5, validation=0.0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((16, 2), "float32")
    budget = callbacks.TimeBudget(1.0, start=clock.now - 0.9, clock=clock)  # 0.9 s spent building
    model.fit(
        x, x[:, :1], batch_size=4, epochs=10, verbose=0, callbacks=[_AdvanceClock(clock), budget]
    )
    assert budget.steps == 1 and budget.stopped  # 0.9 + 0.5 >= 1.0 after the first step
    for bad in (0, -1.0, float("nan"), float("inf"), "10"):
        with pytest.raises(ValueError, match="seconds must be a finite number > 0"):
            callbacks.TimeBudget(bad)
    with pytest.raises(ValueError, match="clock must be a function"):
        callbacks.TimeBudget(1.0, clock=12.0)
