"""keras_iresnet.logdet: the log-det estimators (section 3) against the exact log-det of the full
Jacobian, and their serialization through Keras' registry."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import certify, logdet
from keras_iresnet.testing import full_jacobian_log_det, saturated_block


def exact_series(g, x, n_terms):
    """``PS(J_g, n)`` of equation (5) with exact traces (float64 numpy), per example."""
    d = int(np.prod(x.shape[1:]))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = g(x)
    jac = np.reshape(tape.batch_jacobian(y, x).numpy().astype(np.float64), (-1, d, d))
    total = np.zeros(jac.shape[0])
    power = np.broadcast_to(np.eye(d), jac.shape).copy()
    for k in range(1, n_terms + 1):
        power = power @ jac
        total += (-1) ** (k + 1) * np.trace(power, axis1=1, axis2=2) / k
    return total


def reference_log_det(g, x):
    """``log|det(I + J_g(x))|`` from d vector-Jacobian products of a recorded tape and ``slogdet``:
    reverse mode and a general determinant, independent of Exact's forward mode and closed forms.
    Differentiable by an outer tape (second order through the VJPs)."""
    d = int(np.prod(x.shape[1:]))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        gx = tf.reshape(g(x), [-1, d])
        outputs = [gx[:, i] for i in range(d)]
    rows = [tf.reshape(tape.gradient(out, x), [-1, d]) for out in outputs]  # e_i^T J
    del tape
    jac = tf.stack(rows, axis=1)
    return tf.linalg.slogdet(tf.eye(d, dtype=x.dtype) + jac)[1]


SHAPES = [(1,), (2,), (3,), (16,), (64,), (6, 6, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_estimator_matches_full_jacobian(shape):
    block = saturated_block(shape, logdet="exact")
    x = tf.random.stateless_normal((3,) + shape, seed=[1, 0])
    y, log_det = block.forward_and_log_det(x)
    # float32 Jacobians: log-dets of order 1-10 agree to ~1e-5; 1e-4 leaves room for d = 72.
    np.testing.assert_allclose(
        log_det.numpy(), full_jacobian_log_det(block, x), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(y.numpy(), block(x).numpy(), rtol=1e-6, atol=1e-6)
    assert np.max(np.abs(log_det.numpy())) > 1e-3  # not trivially 0 (far above the tolerance)


@pytest.mark.parametrize("shape", [(1,), (2,), (5,), (3, 3, 1)])
def test_forward_mode_exact_value_and_parameter_gradients_match_a_reverse_mode_reference(shape):
    block = saturated_block(shape, hidden=8, activation="softplus")
    x = tf.random.stateless_normal((4,) + shape, seed=[2, 0])
    variables = kir.bridge.tf_variables(block, trainable_only=True)
    weights = tf.random.stateless_normal([4], seed=[2, 1])  # a loss that weighs the examples

    def value_and_gradients(estimate):
        with tf.GradientTape() as tape:
            log_det = estimate(block.residual_function(), x)
            loss = tf.reduce_sum(weights * log_det)
        # The last bias does not enter the Jacobian: a zero gradient, not None.
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return log_det.numpy(), [g.numpy() for g in grads]

    value, gradients = value_and_gradients(lambda g, t: logdet.Exact()(g, t)[1])
    ref_value, ref_gradients = value_and_gradients(reference_log_det)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-6)
    assert len(gradients) == len(variables) == 6  # 3 kernels and 3 biases
    for grad, ref in zip(gradients, ref_gradients):
        # Two float32 routes to the same derivative: agree to ~1e-5 of the gradient's scale.
        np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    assert max(np.abs(g).max() for g in gradients) > 1e-3


@pytest.mark.parametrize("d", [1, 2])
def test_closed_form_small_determinants_equal_slogdet(d):
    rng = np.random.default_rng(d)
    matrices = rng.normal(size=(64, d, d)).astype(np.float32)  # both signs of the determinant
    closed = logdet._log_abs_det(tf.constant(matrices)).numpy()
    np.testing.assert_allclose(
        closed, np.linalg.slogdet(matrices.astype(np.float64))[1], rtol=1e-5, atol=1e-5
    )
    assert np.any(np.linalg.det(matrices) < 0)
    # And its gradient is the inverse transpose (d log|det A| / dA = A^{-T}).
    a = tf.constant(matrices[:4] + 3 * np.eye(d, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(a)
        value = tf.reduce_sum(logdet._log_abs_det(a))
    np.testing.assert_allclose(
        tape.gradient(value, a).numpy(),
        np.swapaxes(np.linalg.inv(a.numpy()), 1, 2),
        rtol=1e-4,
        atol=1e-5,
    )


def test_log_abs_det_takes_the_qr_path_under_xla():
    """XLA has no slogdet: inside jit_compile the determinant is sum log|diag R| of a QR."""
    from keras_iresnet._tf import in_xla_context

    seen = []

    def run(matrices):
        seen.append(in_xla_context())
        with tf.GradientTape() as tape:
            tape.watch(matrices)
            value = logdet._log_abs_det(matrices)
            total = tf.reduce_sum(value)
        return value, tape.gradient(total, matrices)

    matrices = np.random.default_rng(5).normal(size=(16, 4, 4)) + 2 * np.eye(4)
    matrices[0, 0] *= -1  # a negative determinant too
    assert np.linalg.det(matrices[0]) < 0
    value, grad = tf.function(run, jit_compile=True)(tf.constant(matrices, tf.float32))
    assert seen == [True]
    np.testing.assert_allclose(value.numpy(), np.linalg.slogdet(matrices)[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        grad.numpy(), np.swapaxes(np.linalg.inv(matrices), 1, 2), rtol=1e-3, atol=1e-4
    )
    eager_value, _ = run(tf.constant(matrices, tf.float32))
    assert seen[-1] is False  # eagerly: slogdet
    np.testing.assert_allclose(eager_value.numpy(), value.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2,), (3,), (8,)])
def test_exact_under_xla(shape):
    """jit_compile: closed form for d <= 2, QR for d > 2 (XLA has no slogdet); value and
    gradient."""
    block = saturated_block(shape, hidden=8)
    x = tf.random.stateless_normal((3,) + shape, seed=[3, 0])
    variables = kir.bridge.tf_variables(block, trainable_only=True)

    def run(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            _, log_det = logdet.Exact()(block.residual_function(), t)
            loss = tf.reduce_sum(log_det)
        return log_det, tape.gradient(
            loss, [t] + list(variables), unconnected_gradients=tf.UnconnectedGradients.ZERO
        )

    eager_value, eager_grads = run(x)
    xla_value, xla_grads = tf.function(run, jit_compile=True)(x)
    np.testing.assert_allclose(
        xla_value.numpy(), full_jacobian_log_det(block, x), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(xla_value.numpy(), eager_value.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(xla_grads, eager_grads):
        np.testing.assert_allclose(
            a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5 * np.abs(b.numpy()).max()
        )


@pytest.mark.parametrize("shape", [(2,), (16,), (64,), (6, 6, 2)])
def test_power_series_bias_inside_theorem3_and_shrinks(shape):
    block = saturated_block(shape)
    lip = block.lipschitz_bound()
    assert lip < 1
    x = tf.random.stateless_normal((1,) + shape, seed=[4, 0])
    g = block.residual_function()
    exact = full_jacobian_log_det(block, x)[0]
    d = int(np.prod(shape))
    errors = []
    for n in (1, 2, 5, 10):
        error = abs(exact_series(g, x, n)[0] - exact)
        assert error <= logdet.truncation_bound(lip, d, n) + 1e-6
        errors.append(error)
    assert errors[-1] < errors[0]
    assert errors[-1] < 1e-2 * max(1.0, abs(exact))


@pytest.mark.parametrize("shape", [(16,), (6, 6, 2)])
@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
@pytest.mark.parametrize("neumann_gradient", [True, False])
def test_hutchinson_mean_converges_to_the_series(shape, probe, neumann_gradient):
    """Averaged over many probes the estimator equals PS(J_g, n) (Hutchinson is unbiased)."""
    block = saturated_block(shape)
    g = block.residual_function()
    x = tf.repeat(
        tf.random.stateless_normal((1,) + shape, seed=[5, 0]), 4000, axis=0
    )  # one point, 4000 probes
    estimator = logdet.PowerSeries(n_terms=5, probe=probe, neumann_gradient=neumann_gradient)
    _, draws = estimator(g, x, seed=tf.constant([3, 4]))
    draws = draws.numpy().astype(np.float64)
    target = exact_series(g, x[:1], 5)[0]
    standard_error = draws.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - target) < 4 * standard_error + 1e-4


def test_power_series_n_samples_averages_and_seed_is_deterministic():
    block = saturated_block((8,), hidden=8)
    g = block.residual_function()
    x = tf.random.stateless_normal((2, 8), seed=[6, 0])
    seed = tf.constant([1, 2])
    one = logdet.PowerSeries(n_terms=4)
    np.testing.assert_array_equal(one(g, x, seed=seed)[1].numpy(), one(g, x, seed=seed)[1].numpy())
    assert not np.array_equal(
        one(g, x, seed=seed)[1].numpy(), one(g, x, seed=tf.constant([1, 3]))[1].numpy()
    )
    # n_samples probes per call: the spread around the series shrinks like 1 / sqrt(n_samples)
    # (one point repeated 400 times: every row draws its own probes).
    point = tf.repeat(x[:1], 400, axis=0)
    target = exact_series(g, x[:1], 4)[0]
    spread = [
        np.std(logdet.PowerSeries(n_terms=4, n_samples=n)(g, point, seed=seed)[1].numpy() - target)
        for n in (1, 16)
    ]
    assert spread[1] == pytest.approx(spread[0] / 4, rel=0.25), spread


def linear_block_near_the_bound(d=16, coeff=0.9):
    """g(x) = W x + b with symmetric PSD W, ||W|| = coeff: the series converges slowly."""
    block = kir.InvertibleResidualBlock(coeff=coeff, kernel_sizes=(1,))
    block.build((None, d))
    (layer,) = block.linear_layers
    a = tf.random.stateless_normal([d, d], seed=[8, 0])
    layer.kernel.assign(tf.matmul(a, a, transpose_b=True))
    certify.refine(block, max_iterations=5000, rtol=1e-7)
    return block


def test_russian_roulette_is_unbiased():
    block = linear_block_near_the_bound()
    g = block.residual_function()
    x = tf.repeat(tf.random.stateless_normal((1, 16), seed=[9, 0]), 256, axis=0)
    exact = full_jacobian_log_det(block, x[:1])[0]
    estimator = logdet.RussianRoulette(n_exact_terms=2, p=0.5)

    @tf.function
    def draw(seed):
        return tf.reduce_mean(estimator(g, x, seed=seed)[1])

    means = np.array([float(draw(tf.constant([7, i]))) for i in range(400)])
    standard_error = means.std() / np.sqrt(means.size)
    assert abs(means.mean() - exact) < 3 * standard_error, (means.mean(), exact, standard_error)
    # The same test rejects the truncated series with the same expected number of
    # terms (3): it is biased by more than 3 standard errors here.
    biased = exact_series(g, x[:1], 3)[0]
    assert abs(biased - exact) > 3 * standard_error, (biased, exact, standard_error)


def _parameter_gradients(block, x, estimator, seed=None):
    g_vars = kir.bridge.tf_variables(block, trainable_only=True)
    with tf.GradientTape() as tape:
        g = block.residual_function()
        _, log_det = estimator(g, x, seed=seed)
        loss = tf.reduce_mean(log_det)
    grads = tape.gradient(loss, g_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [t.numpy() for t in grads]


def _flat(grads):
    return np.concatenate([t.ravel() for t in grads])


@pytest.mark.parametrize(
    "estimator",
    [
        logdet.PowerSeries(n_terms=20, neumann_gradient=False),
        logdet.PowerSeries(n_terms=20, neumann_gradient=True),
        logdet.RussianRoulette(n_exact_terms=10, p=0.5),
    ],
    ids=["power_series_backprop", "power_series_neumann", "russian_roulette"],
)
def test_parameter_gradients_match_exact(estimator):
    """Gradients agree with the exact log-det's within Monte Carlo error plus the bias.

    Theorem 4: the gradient bias of n terms is O(Lip^n); with Lip(g) <= 0.9^3 and
    n = 20 it is below 1%. The Monte Carlo error is measured from 4 independent
    seeds (each 1000 probes per point).
    """
    block = saturated_block((16,), hidden=16)
    x = tf.repeat(tf.random.stateless_normal((4, 16), seed=[10, 0]), 1000, axis=0)
    exact = _flat(_parameter_gradients(block, x[::1000], logdet.Exact()))
    runs = np.stack(
        [
            _flat(_parameter_gradients(block, x, estimator, seed=tf.constant([1, i])))
            for i in range(4)
        ]
    )
    mean = runs.mean(axis=0)
    standard_error = np.linalg.norm(runs.std(axis=0, ddof=1)) / 2.0
    error = np.linalg.norm(mean - exact)
    assert error < 3 * standard_error + 0.01 * np.linalg.norm(exact), (error, standard_error)
    assert standard_error < 0.1 * np.linalg.norm(exact)


def test_input_gradients_flow_through_estimators():
    """d log det / dx of every estimator: Exact's equals the reference's; the stochastic ones
    are non-zero and finite."""
    block = saturated_block((8,), hidden=16)
    x = tf.random.stateless_normal((2, 8), seed=[11, 0])

    def input_gradient(estimate):
        with tf.GradientTape() as tape:
            tape.watch(x)
            log_det = estimate(block.residual_function(), x)
        return tape.gradient(log_det, x).numpy()

    reference = input_gradient(reference_log_det)
    exact = input_gradient(lambda g, t: logdet.Exact()(g, t)[1])
    np.testing.assert_allclose(exact, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())
    assert np.abs(reference).max() > 1e-3
    for estimator in [logdet.PowerSeries(), logdet.RussianRoulette()]:
        grad = input_gradient(
            lambda g, t, estimator=estimator: estimator(g, t, seed=tf.constant([0, 1]))[1]
        )
        assert np.all(np.isfinite(grad)) and float(np.abs(grad).sum()) > 0


def test_truncation_bound_values():
    assert logdet.truncation_bound(0.5, 1, 0) == pytest.approx(np.log(2.0))
    assert logdet.truncation_bound(0.5, 10, 3) == pytest.approx(
        10 * (np.log(2.0) - 0.5 - 0.125 - 1 / 24)
    )
    assert logdet.truncation_bound(0.9, 2, 50) < logdet.truncation_bound(0.9, 2, 5)
    assert logdet.truncation_bound(0.0, 5, 1) == 0.0
    with pytest.raises(ValueError, match="lipschitz"):
        logdet.truncation_bound(1.0, 2, 3)
    with pytest.raises(ValueError, match="n_terms"):
        logdet.truncation_bound(0.5, 2, -1)


def test_auto_chooses_by_dimension():
    auto = logdet.get("auto")
    assert isinstance(auto.choose(tf.zeros([1, 16])), logdet.Exact)
    assert isinstance(auto.choose(tf.zeros([1, 4, 4, 1])), logdet.Exact)
    assert isinstance(auto.choose(tf.zeros([1, 17])), logdet.PowerSeries)
    custom = logdet.Auto(max_exact_dim=2, series=logdet.RussianRoulette(3, 0.3))
    assert isinstance(custom.choose(tf.zeros([1, 2])), logdet.Exact)
    assert custom.choose(tf.zeros([1, 3])) == logdet.RussianRoulette(3, 0.3)
    # Auto's value on a small event is Exact's.
    block = saturated_block((3,), hidden=8)
    x = tf.random.stateless_normal((2, 3), seed=[12, 0])
    g = block.residual_function()
    np.testing.assert_array_equal(auto(g, x)[1].numpy(), logdet.Exact()(g, x)[1].numpy())


def test_estimators_hash_by_config_and_auto_works_in_an_eager_log_prob():
    """Estimators are dict keys (the eager log_prob caches its function per estimator); Auto's
    config nests its series, which must not make it unhashable."""
    assert hash(logdet.Auto()) == hash(logdet.get("auto"))
    assert hash(logdet.PowerSeries(5)) == hash(logdet.PowerSeries(n_terms=5))
    assert logdet.PowerSeries(5) != logdet.PowerSeries(6)
    assert len({logdet.Auto(), logdet.Auto(max_exact_dim=2), logdet.Auto()}) == 2
    flow = kir.models.IResNetFlow((2,), blocks=1, block={"hidden": 4})
    x = tf.random.stateless_normal((3, 2), seed=[4, 0])
    np.testing.assert_allclose(
        flow.log_prob(x, logdet="auto").numpy(), flow.log_prob(x, logdet="exact").numpy()
    )


def test_estimator_argument_errors():
    with pytest.raises(ValueError, match="exceed max_dim"):
        logdet.Exact(max_dim=4)(lambda t: t, tf.zeros([1, 5]))
    with pytest.raises(ValueError, match="logdet must be"):
        logdet.get("lanczos")
    with pytest.raises(ValueError, match="logdet must be"):
        logdet.get(keras.saving.serialize_keras_object(keras.layers.Dense(2)))
    with pytest.raises(ValueError, match="probe"):
        logdet.PowerSeries(probe="uniform")
    with pytest.raises(ValueError, match="n_terms"):
        logdet.PowerSeries(n_terms=0)
    with pytest.raises(ValueError, match="max_dim"):
        logdet.Exact(max_dim=0)
    with pytest.raises(ValueError, match=r"\bp must"):
        logdet.RussianRoulette(p=1.0)
    with pytest.raises(ValueError, match="max_terms must exceed n_exact_terms"):
        logdet.RussianRoulette(n_exact_terms=5, max_terms=5)
    with pytest.raises(ValueError, match="static event shape"):
        logdet.event_size(tf.TensorSpec([None, None]))


# -- serialization through Keras' registry ------------------------------------------------------

ESTIMATORS = [
    logdet.Exact(9),
    logdet.PowerSeries(7, 2, "rademacher", neumann_gradient=False),
    logdet.RussianRoulette(3, 0.3, n_samples=2, probe="rademacher", max_terms=20),
    logdet.Auto(max_exact_dim=4, series=logdet.RussianRoulette(1, 0.7)),
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_keras_registry_round_trip(estimator):
    config = keras.saving.serialize_keras_object(estimator)
    assert config["registered_name"] == f"keras_iresnet>{type(estimator).__name__}"
    assert logdet.serialize(estimator) == config
    for restored in (logdet.get(config), keras.saving.deserialize_keras_object(config)):
        assert type(restored) is type(estimator)
        assert restored == estimator and restored.get_config() == estimator.get_config()
    assert logdet.get(estimator) is estimator


def test_short_names_and_their_dict_form_still_load():
    for name, cls in logdet.NAMES.items():
        assert type(logdet.get(name)) is cls
    restored = logdet.get(
        {"class_name": "power_series", "config": {"n_terms": 3, "probe": "rademacher"}}
    )
    assert restored == logdet.PowerSeries(n_terms=3, probe="rademacher")
    assert logdet.get({"class_name": "exact"}) == logdet.Exact()
    assert logdet.get(
        {"class_name": "auto", "config": {"series": "russian_roulette"}}
    ) == logdet.Auto(series=logdet.RussianRoulette())


@keras.saving.register_keras_serializable(package="my_tests")
class ScaledExact(logdet.LogDetEstimator):
    """A user's estimator: ``scale`` times the exact log-det (distinguishable from every
    built-in)."""

    def __init__(self, scale=1.0):
        self.scale = float(scale)

    def __call__(self, g, x, seed=None):
        gx, log_det = logdet.Exact()(g, x, seed=seed)
        return gx, self.scale * log_det

    def get_config(self):
        return {"scale": self.scale}


def test_user_defined_estimator_survives_keras_save_and_load(tmp_path):
    estimator = ScaledExact(2.0)
    assert logdet.get(logdet.serialize(estimator)) == estimator
    block = kir.InvertibleResidualBlock(hidden=8, coeff=0.8, logdet=estimator)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, block(inputs))
    x = tf.random.stateless_normal((4, 3), seed=[13, 0])
    _, log_det = block.forward_and_log_det(x)
    _, exact = block.forward_and_log_det(x, logdet="exact")
    np.testing.assert_allclose(log_det.numpy(), 2.0 * exact.numpy(), rtol=1e-6)
    path = tmp_path / "user_estimator.keras"
    model.save(path)
    loaded = keras.models.load_model(path).layers[-1]
    assert type(loaded.estimator) is ScaledExact and loaded.estimator.scale == 2.0
    np.testing.assert_allclose(loaded.forward_and_log_det(x)[1].numpy(), log_det.numpy(), rtol=1e-6)
