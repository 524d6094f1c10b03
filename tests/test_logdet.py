"""Log-det estimators (issue 4) against the exact log-det of the full Jacobian."""
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import logdet, spectral
from tests.helpers import full_jacobian_logdet


def saturated_block(shape, coeff=0.9, hidden=32, seed=0, **kwargs):
    block = kir.InvertibleResidualBlock(hidden=hidden, coeff=coeff, **kwargs)
    block.build((None,) + tuple(shape))
    for layer in spectral.spectral_layers(block):
        layer.kernel.assign(layer.kernel * 5.0)
    spectral.refine(block, max_iterations=3000, tol=1e-7)
    return block


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


SHAPES = [(2,), (16,), (64,), (6, 6, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_estimator_matches_full_jacobian(shape):
    block = saturated_block(shape, logdet="exact")
    x = tf.random.normal((3,) + shape)
    y, log_det = block.forward_and_log_det(x)
    np.testing.assert_allclose(log_det.numpy(), full_jacobian_logdet(block, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y.numpy(), block(x).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_power_series_bias_inside_theorem3_and_shrinks(shape):
    block = saturated_block(shape)
    lip = block.lipschitz_bound()
    assert lip < 1
    x = tf.random.normal((1,) + shape)
    g = block.residual_function()
    exact = full_jacobian_logdet(block, x)[0]
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
def test_hutchinson_mean_converges_to_the_series(shape, probe):
    """Averaged over many probes the estimator equals PS(J_g, n) (Hutchinson is unbiased)."""
    block = saturated_block(shape)
    g = block.residual_function()
    x = tf.repeat(tf.random.normal((1,) + shape), 4000, axis=0)  # one point, 4000 probes
    estimator = logdet.PowerSeries(n_terms=5, probe=probe)
    _, draws = estimator(g, x, seed=tf.constant([3, 4]))
    draws = draws.numpy().astype(np.float64)
    target = exact_series(g, x[:1], 5)[0]
    standard_error = draws.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - target) < 4 * standard_error + 1e-4


def linear_block_near_the_bound(d=16, coeff=0.9):
    """g(x) = W x + b with symmetric PSD W, ||W|| = coeff: the series converges slowly."""
    block = kir.InvertibleResidualBlock(coeff=coeff, kernel_sizes=(1,))
    block.build((None, d))
    (layer,) = block.linear_layers
    a = tf.random.normal([d, d], seed=8)
    layer.kernel.assign(tf.matmul(a, a, transpose_b=True))
    spectral.refine(block, max_iterations=5000, tol=1e-7)
    return block


def test_russian_roulette_is_unbiased():
    block = linear_block_near_the_bound()
    g = block.residual_function()
    x = tf.repeat(tf.random.normal((1, 16)), 256, axis=0)
    exact = full_jacobian_logdet(block, x[:1])[0]
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
    x = tf.repeat(tf.random.normal((4, 16)), 1000, axis=0)
    exact = _flat(_parameter_gradients(block, x[::1000], logdet.Exact()))
    runs = np.stack(
        [_flat(_parameter_gradients(block, x, estimator, seed=tf.constant([1, i]))) for i in range(4)]
    )
    mean = runs.mean(axis=0)
    standard_error = np.linalg.norm(runs.std(axis=0, ddof=1)) / 2.0
    error = np.linalg.norm(mean - exact)
    assert error < 3 * standard_error + 0.01 * np.linalg.norm(exact), (error, standard_error)
    assert standard_error < 0.1 * np.linalg.norm(exact)


def test_input_gradients_flow_through_estimators():
    block = saturated_block((8,), hidden=16)
    x = tf.random.normal((2, 8))
    for estimator in [logdet.Exact(), logdet.PowerSeries(), logdet.RussianRoulette()]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            _, log_det = estimator(block.residual_function(), x, seed=tf.constant([0, 1]))
        grad = tape.gradient(log_det, x)
        assert grad is not None and float(tf.reduce_sum(tf.abs(grad))) > 0


def test_truncation_bound_values():
    assert logdet.truncation_bound(0.5, 1, 0) == pytest.approx(np.log(2.0))
    assert logdet.truncation_bound(0.5, 10, 3) == pytest.approx(10 * (np.log(2.0) - 0.5 - 0.125 - 1 / 24))
    assert logdet.truncation_bound(0.9, 2, 50) < logdet.truncation_bound(0.9, 2, 5)
    with pytest.raises(ValueError, match="lipschitz"):
        logdet.truncation_bound(1.0, 2, 3)


def test_auto_chooses_by_dimension_and_serializes():
    auto = logdet.get("auto")
    assert isinstance(auto.choose(tf.zeros([1, 16])), logdet.Exact)
    assert isinstance(auto.choose(tf.zeros([1, 17])), logdet.PowerSeries)
    for estimator in [logdet.Exact(9), logdet.PowerSeries(7, 2, "rademacher"), logdet.RussianRoulette(3, 0.3)]:
        assert logdet.get(logdet.serialize(estimator)) == estimator
    with pytest.raises(ValueError, match="exceed max_dim"):
        logdet.Exact(max_dim=4)(lambda t: t, tf.zeros([1, 5]))
    with pytest.raises(ValueError, match="logdet must be"):
        logdet.get("lanczos")
    with pytest.raises(ValueError, match="probe"):
        logdet.PowerSeries(probe="uniform")
