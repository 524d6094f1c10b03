"""keras_iresnet.inverse: InverseSettings, Algorithm 1 and Anderson acceleration on explicit
contractions, the convergence report, and merge_infos."""

import dataclasses
import warnings

import numpy as np
import pytest
import tensorflow as tf

from keras_iresnet import inverse
from keras_iresnet.inverse import (
    InverseConvergenceWarning,
    InverseInfo,
    InverseNotConvergedError,
    InverseSettings,
    merge_infos,
    solve_inverse,
)


def unit_norm_matrix(d, seed, symmetric=False):
    """A ``d x d`` float64 matrix with spectral norm 1 (symmetric PSD: its top eigenvalue is 1)."""
    a = np.random.default_rng(seed).normal(size=(d, d))
    if symmetric:
        a = a @ a.T
    return a / np.linalg.svd(a, compute_uv=False)[0]


def tanh_contraction(lipschitz, d=6, seed=0):
    """``g(x) = L * tanh(x W)`` with ``||W|| = 1``: ``Lip(g) <= L``."""
    w = tf.constant(unit_norm_matrix(d, seed), tf.float32)
    return lambda x: lipschitz * tf.tanh(tf.matmul(x, w))


def linear_contraction(lipschitz, d=16, seed=4, dtype=tf.float32):
    """``g(x) = L x W`` with symmetric PSD ``W``, ``||W|| = 1``: the spectral radius equals the
    norm, so the Banach rate of equation (1) is attained, not just a bound."""
    w = tf.constant(lipschitz * unit_norm_matrix(d, seed, symmetric=True), dtype)
    return lambda x: tf.matmul(x, w)


def norms(t):
    return np.linalg.norm(np.reshape(np.asarray(t, np.float64), (t.shape[0], -1)), axis=1)


# -- InverseSettings ------------------------------------------------------------------------


def test_settings_defaults_names_and_dict():
    settings = InverseSettings()
    assert InverseSettings.names() == (
        "solver",
        "max_iterations",
        "atol",
        "rtol",
        "strict",
        "anderson_memory",
    )
    assert settings.to_dict() == {
        "solver": "fixed_point",
        "max_iterations": 1000,
        "atol": 1e-6,
        "rtol": 1e-6,
        "strict": False,
        "anderson_memory": 5,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.rtol = 1e-3


@pytest.mark.parametrize(
    "field,value",
    [
        ("solver", "newton"),
        ("solver", None),
        ("max_iterations", 0),
        ("max_iterations", 2.5),
        ("max_iterations", True),
        ("atol", -1e-6),
        ("atol", float("nan")),
        ("rtol", float("inf")),
        ("rtol", "1e-6"),
        ("strict", 1),
        ("strict", "yes"),
        ("anderson_memory", 0),
    ],
)
def test_settings_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        InverseSettings(**{field: value})
    if value is not None:  # replace() keeps the current setting for None
        with pytest.raises(ValueError, match=field):
            InverseSettings().replace(**{field: value})


def test_settings_atol_and_rtol_not_both_zero():
    InverseSettings(atol=0.0, rtol=1e-6)
    InverseSettings(atol=1e-6, rtol=0.0)
    with pytest.raises(ValueError, match="atol and rtol"):
        InverseSettings(atol=0.0, rtol=0.0)


def test_settings_replace():
    settings = InverseSettings(solver="anderson", rtol=1e-5)
    assert settings.replace() is settings
    assert settings.replace(rtol=None, strict=None) is settings  # None keeps the current value
    changed = settings.replace(max_iterations=7, strict=True)
    assert changed.max_iterations == 7 and changed.strict is True
    assert changed.solver == "anderson" and changed.rtol == 1e-5
    assert settings.max_iterations == 1000 and settings.strict is False  # the original is unchanged
    with pytest.raises(TypeError, match=r"unexpected inverse settings \['tolerance'\]"):
        settings.replace(tolerance=1e-3)
    with pytest.raises(TypeError, match="anderson_memory"):  # the message lists the settings
        settings.replace(solver="anderson", memory=3)
    # Settings are hashable values (the blocks cache one compiled solve per setting).
    assert settings.replace(rtol=1e-5) == settings and hash(settings.replace(rtol=1e-5)) == hash(
        settings
    )


# -- the solvers ------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["fixed_point", "anderson"])
@pytest.mark.parametrize("lipschitz", [0.5, 0.9])
def test_solvers_invert_a_contraction_to_tolerance(solver, lipschitz):
    g = tanh_contraction(lipschitz)
    x = tf.random.stateless_normal([8, 6], seed=[1, 2])
    y = x + g(x)
    settings = InverseSettings(solver=solver, rtol=1e-6, atol=0.0, max_iterations=500, strict=True)
    x_rec, info = solve_inverse(g, y, settings, return_info=True)
    assert isinstance(info, InverseInfo)
    assert bool(tf.reduce_all(info.converged))
    assert info.iterations.shape == (8,) and info.iterations.dtype == tf.int32
    assert np.all(info.iterations.numpy() >= 1)
    # The final relative residual ||x + g(x) - y|| / ||y|| is within the tolerance (plus the
    # float32 rounding of evaluating it, ~1e-7 relative).
    residual = norms(x_rec + g(x_rec) - y) / norms(y)
    np.testing.assert_allclose(info.residual.numpy(), residual, rtol=1e-3, atol=1e-7)
    assert np.all(residual <= 1e-6 + 2e-7)
    # Banach (equation (1)): the error is at most residual / (1 - L), for the map x -> y - g(x).
    error = norms(x_rec - x) / norms(y)
    assert np.all(error <= (1e-6 + 2e-7) / (1 - lipschitz) + 1e-6), error


def test_loop_residual_bounds_the_final_one():
    """run_solver reports the residual of the iterate before the returned one (no extra g):
    for a contraction that is an upper bound of the final residual."""
    g = tanh_contraction(0.8)
    y = tf.random.stateless_normal([5, 6], seed=[3, 4])
    settings = InverseSettings(rtol=1e-5, atol=0.0)
    x, converged, iterations, loop_residual = inverse.run_solver(g, y, settings)
    final = inverse.final_info(g, x, y, converged, iterations).residual
    assert bool(tf.reduce_all(converged))
    assert np.all(final.numpy() <= loop_residual.numpy() * (1 + 1e-5) + 1e-7)
    assert np.all(loop_residual.numpy() <= 1e-5)


def test_per_example_iteration_counts_are_exact():
    """A converged example is frozen: batched, each example gets exactly what it gets alone."""
    g = tanh_contraction(0.9)
    y = tf.random.stateless_normal([4, 6], seed=[5, 6]) * tf.constant(
        [[0.01], [1.0], [10.0], [100.0]]
    )
    settings = InverseSettings(rtol=0.0, atol=1e-5, max_iterations=500)
    x, info = solve_inverse(g, y, settings, return_info=True)
    for i in range(4):
        x_i, info_i = solve_inverse(g, y[i : i + 1], settings, return_info=True)
        assert int(info.iterations[i]) == int(info_i.iterations[0])
        # Equal up to float32 rounding of a batched vs single-row matmul (~1 ulp per step);
        # an example that kept iterating after converging would move by up to Lip * residual.
        np.testing.assert_allclose(x[i].numpy(), x_i[0].numpy(), rtol=1e-6, atol=1e-9)
    assert len(set(info.iterations.numpy().tolist())) > 1  # the examples really differ


def _mean_iterations(lipschitz, solver="fixed_point"):
    g = linear_contraction(lipschitz)
    y = tf.random.stateless_normal([32, 16], seed=[7, 8])
    settings = InverseSettings(solver=solver, rtol=1e-6, atol=0.0, max_iterations=1000, strict=True)
    _, info = solve_inverse(g, y, settings, return_info=True)
    return float(tf.reduce_mean(tf.cast(info.iterations, tf.float32)))


def test_banach_rate_fewer_iterations_at_smaller_lipschitz():
    """Equation (1): the error shrinks like Lip(g)^n, so the iterations track log(tol) / log(L)."""
    counts = {c: _mean_iterations(c) for c in (0.5, 0.7, 0.9)}
    assert counts[0.5] < counts[0.7] < 0.6 * counts[0.9], counts
    for lipschitz, iterations in counts.items():
        predicted = np.log(1e-6) / np.log(lipschitz)
        assert 0.5 * predicted < iterations < 2 * predicted, (lipschitz, iterations, predicted)


def test_anderson_needs_fewer_evaluations_at_09():
    anderson, plain = _mean_iterations(0.9, "anderson"), _mean_iterations(0.9, "fixed_point")
    assert anderson < 0.5 * plain, (anderson, plain)


# -- reporting ---------------------------------------------------------------------------------


def expansive(x):
    return 2.0 * x  # Lip(g) = 2: x_{k+1} = y - 2 x_k diverges


def test_non_convergence_warns_and_strict_raises():
    y = tf.random.stateless_normal([3, 4], seed=[9, 9])
    settings = InverseSettings(max_iterations=20)
    with pytest.warns(InverseConvergenceWarning, match="did not converge for 3 example"):
        _, info = solve_inverse(expansive, y, settings, return_info=True)
    assert not np.any(info.converged.numpy())
    assert np.all(info.iterations.numpy() == 20)
    with pytest.raises(InverseNotConvergedError, match="worst relative fixed-point residual"):
        solve_inverse(expansive, y, settings.replace(strict=True))
    # Too few iterations for a contraction says so as well.
    with pytest.raises(InverseNotConvergedError, match="max_iterations=1"):
        solve_inverse(
            tanh_contraction(0.9),
            tf.random.normal([2, 6]),
            InverseSettings(max_iterations=1, strict=True),
        )
    # report=False leaves the report to the caller: silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_inverse(expansive, y, settings, report=False)


def test_converged_solve_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_inverse(tanh_contraction(0.5), tf.random.normal([2, 6]), InverseSettings(strict=True))


def test_graph_strict_fails_an_assert_and_xla_solves():
    g = tanh_contraction(0.9)
    y = tf.random.stateless_normal([3, 6], seed=[10, 10])

    @tf.function
    def strict(t):
        return solve_inverse(g, t, InverseSettings(max_iterations=2, strict=True))

    with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
        strict(y)

    @tf.function(jit_compile=True)
    def compiled(t):
        return solve_inverse(g, t, InverseSettings(rtol=1e-6), return_info=True)

    x, info = compiled(y)
    assert bool(tf.reduce_all(info.converged))
    np.testing.assert_allclose((x + g(x)).numpy(), y.numpy(), atol=1e-5)


def test_non_finite_input_raises():
    g = tanh_contraction(0.5, d=2)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="NaN or Inf"):
            solve_inverse(g, tf.constant([[1.0, bad]]))

    @tf.function
    def graph(t):
        return solve_inverse(g, t)

    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        graph(tf.constant([[1.0, float("nan")]]))


def test_settings_must_be_inverse_settings():
    with pytest.raises(TypeError, match="InverseSettings"):
        solve_inverse(tanh_contraction(0.5), tf.zeros([1, 6]), {"rtol": 1e-3})


# -- no extra evaluation of g -------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["fixed_point", "anderson"])
def test_no_extra_evaluation_of_g_unless_return_info(solver):
    """One evaluation of g per iteration of the slowest example, plus one for the info only when
    asked for (counted as executions, eager and in a tf.function)."""
    contraction = tanh_contraction(0.7)
    calls = tf.Variable(0)

    def g(x):
        with tf.control_dependencies([calls.assign_add(1)]):
            return contraction(x)

    y = tf.random.stateless_normal([4, 6], seed=[11, 11])
    settings = InverseSettings(solver=solver, rtol=1e-6)
    _, info = solve_inverse(g, y, settings, return_info=True)
    slowest = int(tf.reduce_max(info.iterations))
    assert int(calls.numpy()) == slowest + 1
    calls.assign(0)
    solve_inverse(g, y, settings)
    assert int(calls.numpy()) == slowest
    calls.assign(0)
    tf.function(lambda t: solve_inverse(g, t, settings))(y)
    assert int(calls.numpy()) == slowest
    calls.assign(0)
    tf.function(lambda t: solve_inverse(g, t, settings, return_info=True))(y)
    assert int(calls.numpy()) == slowest + 1


# -- merge_infos ---------------------------------------------------------------------------------


def test_merge_infos():
    a = InverseInfo(tf.constant([3, 4]), tf.constant([1e-7, 5e-7]), tf.constant([True, True]))
    b = InverseInfo(tf.constant([10, 1]), tf.constant([2e-7, 1e-8]), tf.constant([True, False]))
    merged = merge_infos([a, None, b])
    np.testing.assert_array_equal(merged.iterations.numpy(), [13, 5])
    np.testing.assert_allclose(merged.residual.numpy(), [2e-7, 5e-7])
    np.testing.assert_array_equal(merged.converged.numpy(), [True, False])
    assert merge_infos([None, None]) is None
    assert merge_infos([]) is None
    assert merge_infos([a]) == a
