"""keras_iresnet.divergence: the checks before and after an update and the one-step snapshot, on
their own and through the models' fit (a diverging or non-finite fit stops before the bad update
sticks, with one sentence)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import certify, data, models
from keras_iresnet.divergence import DivergenceGuard, NonFiniteLossError

# -- the guard on its own -----------------------------------------------------------------------


def _guard(*values):
    variables = [tf.Variable(np.asarray(v, np.float32)) for v in values]
    return variables, DivergenceGuard(variables, tf.distribute.get_strategy())


def test_a_finite_step_is_snapshotted_and_restored():
    (w, b), guard = _guard([1.0, 2.0], [0.5])
    guard.before_update(tf.constant(1.0), [tf.ones(2), None])
    assert int(guard.finite_steps) == 1
    w.assign([1.5, 2.5])  # the update
    guard.after_update()  # a small update passes check 2
    w.assign([7.0, 7.0])
    b.assign([9.0])
    guard.restore()
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(b.numpy(), [0.5])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_or_gradient_fails_before_the_update(bad):
    (w,), guard = _guard([1.0, 2.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        guard.before_update(tf.constant(bad), [tf.ones(2)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        guard.before_update(tf.constant(1.0), [tf.constant([0.0, bad])])
    assert int(guard.finite_steps) == 0
    w.assign([5.0, 5.0])
    guard.restore()  # the snapshot kept the weights from before
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    assert bool(DivergenceGuard.all_finite(tf.constant(1.0), [None, tf.ones(3)]))


def test_an_exploding_update_fails_check_two():
    """An update larger than EXPLODING_UPDATE times the weights is refused; one just below
    passes."""
    factor = kir.divergence.EXPLODING_UPDATE
    (w,), guard = _guard([3.0, 4.0])  # ||w|| = 5
    guard.before_update(tf.constant(1.0), [tf.ones(2)])
    w.assign(w + [0.0, 5.0 * factor * 0.99])
    guard.after_update()
    w.assign([3.0, 4.0 + 5.0 * factor * 1.01])
    with pytest.raises(tf.errors.InvalidArgumentError, match="update exploded"):
        guard.after_update()


# -- through fit ----------------------------------------------------------------------------------
# These fits compile without XLA (jit_compile="auto" would pick XLA for these dense flows on a
# CPU): they test the in-graph checks; the XLA form of the guard is tested at the end.


def _weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def _flow_without_data_init():
    return models.iresnet_flow((2,), blocks=2, hidden=8, actnorm=False)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize(
    "optimizer", [lambda: keras.optimizers.Adam(1e9), lambda: keras.optimizers.SGD(1e9)]
)
def test_a_diverging_fit_stops_before_the_bad_update_with_one_sentence(optimizer, jit):
    """In a graph the checks fail inside the step; under XLA the step records the failure and
    fit stops right after it: the same sentence and the same weights either way."""
    model = _flow_without_data_init()
    model.compile(optimizer(), jit_compile=jit)
    before = _weights(model)
    with pytest.raises(NonFiniteLossError) as error:
        model.fit(data.sample_2d("moons", 512), epochs=2, batch_size=128, verbose=0)
    message = str(error.value)
    assert "\n" not in message and "diverged" in message and "learning rate" in message
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert certify.certify(model)["all_contractions"]


def test_a_non_finite_loss_restores_the_weights_before_the_update_that_caused_it():
    """An update that keeps the weights finite and small but makes the next loss infinite is
    undone."""
    model = _flow_without_data_init()
    model.compile(keras.optimizers.SGD(1e-3), jit_compile=False)
    snapshots = []

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                snapshots.append(_weights(self.model))  # after step 1
            if batch == 1:
                bias = self.model.trunk.chain[0].linear_layers[-1].bias
                bias.assign(bias + np.float32(np.inf))  # what a bad update would leave

    with pytest.raises(NonFiniteLossError, match="step 3"):
        model.fit(
            data.sample_2d("moons", 512),
            epochs=1,
            batch_size=128,
            verbose=0,
            callbacks=[Poison()],
            shuffle=False,
        )
    # Step 3's loss is not finite: the update that caused it is step 2's (here, the poison), so
    # the weights are those from before it, i.e. after step 1.
    for a, b in zip(snapshots[0], _weights(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_nan_data_give_one_sentence_before_any_update(jit):
    model = _flow_without_data_init()
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit)
    x = data.sample_2d("moons", 256)
    x[130, 0] = np.nan
    before = _weights(model)
    with pytest.raises(ValueError) as error:
        model.fit(x, epochs=1, batch_size=128, verbose=0, shuffle=False)
    assert "\n" not in str(error.value) and "NaN or Inf" in str(error.value)
    changed = [not np.array_equal(a, b) for a, b in zip(before, _weights(model))]
    assert any(changed)  # the first batch trained; the second, with the NaN, did not
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize("kind", ["exact_2d", "power_series_image"])
def test_non_finite_data_stops_fit_with_a_clear_error(kind):
    if kind == "exact_2d":
        model = models.iresnet_flow((2,), blocks=2, hidden=8)
        x = data.sample_2d("moons", 256)
        x[100, 1] = np.nan
    else:
        model = models.iresnet_flow((8, 8, 1), blocks=(1,), hidden=4, logit=None)
        x = np.random.default_rng(0).uniform(size=(128, 8, 8, 1)).astype("float32")
        x[5, 2, 2, 0] = np.inf
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=False)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.fit(x, epochs=1, batch_size=64, verbose=0, shuffle=False)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())  # stopped before the bad update


def test_under_xla_a_nan_batch_is_undone_and_named():
    """XLA has no assertion op: the step that saw the NaN applied its (NaN) update and recorded
    the failure; fit stops right after it with the data sentence, and the weights are the
    guard's copy from before that update (those after the batches before it)."""
    model = _flow_without_data_init()
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    x = data.sample_2d("moons", 512)
    x[300, 0] = np.nan  # in the third batch of 128
    snapshots = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            snapshots.append(_weights(self.model))

    with pytest.raises(ValueError, match="NaN or Inf"):
        model.fit(x, epochs=1, batch_size=128, verbose=0, shuffle=False, callbacks=[Record()])
    assert model.jit_compile is True
    assert len(snapshots) == 3
    for a, b in zip(snapshots[1], _weights(model)):  # after batch 1, before batch 2's update
        np.testing.assert_array_equal(a, b)
