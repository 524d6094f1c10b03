"""Conditional residual flows p(x | c): layers, models, TFP, certificate, recipe and command line.

The ground truths are independent of the code under test: ``slogdet`` of the full
x-Jacobian, exact operator norms (SVD of explicit matrices), the closed-form linear
Gaussian posterior (:class:`keras_iresnet.data.GaussianLinear`, checked here against
a regression on simulated pairs), and a classifier trained on the real digits.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from keras.src.testing import TestCase

import keras_iresnet as kir
from keras_iresnet import certify, data, logdet, models, recipes, runs, testing
from keras_iresnet.cli import main as cli_main
from tests.conftest import DIGITS_DENSITY_EPOCHS

tfb, tfd = tfp.bijectors, tfp.distributions


def normal(shape, seed=0, scale=1.0):
    return scale * tf.random.stateless_normal(shape, seed=[seed, 7])


def stack(context_shape=(2,), mode="additive", **kwargs):
    config = dict(
        num_blocks=2,
        hidden=8,
        kernel_sizes=(1, 1, 1),
        coeff=0.9,
        logdet="exact",
        atol=1e-7,
        rtol=1e-7,
        context_shape=context_shape,
        context_mode=mode,
    )
    config.update(kwargs)
    return kir.InvertibleResidualStack(**config)


def conv_stack(context_shape, mode="additive", num_blocks=2):
    return stack(context_shape, mode, num_blocks=num_blocks, kernel_sizes=(3, 1, 3))


def error(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# -- the contract harness on every conditional layer ------------------------------------------
def _image_chain():
    """Image context through a squeeze: (4, 4, 1) before it, (2, 2, 4) after."""
    return kir.InvertibleSequential(
        [
            conv_stack((4, 4, 1), "film"),
            kir.Squeeze(),
            kir.ActNorm(),
            conv_stack((2, 2, 4), num_blocks=1),
        ]
    )


def _factor_out():
    """Two conditional stages (a vector context), half the channels leaving after the first."""
    return kir.FactorOut(
        [
            kir.InvertibleSequential([kir.Squeeze(), conv_stack((3,), num_blocks=1)]),
            kir.InvertibleSequential([kir.Squeeze(), conv_stack((3,), "film", num_blocks=1)]),
        ]
    )


HARNESS_CASES = [
    ("dense_additive", lambda: stack((2,)), (3,), (2,)),
    ("dense_film", lambda: stack((2,), "film"), (3,), (2,)),
    ("conv_vector_context", lambda: conv_stack((3,)), (4, 4, 2), (3,)),
    ("conv_image_context_film", lambda: conv_stack((4, 4, 1), "film"), (4, 4, 2), (4, 4, 1)),
    ("sequential_image_context_through_squeeze", _image_chain, (4, 4, 2), (4, 4, 1)),
    ("factor_out", _factor_out, (4, 4, 1), (3,)),
]


@pytest.mark.parametrize(
    "make,input_shape,context_shape",
    [c[1:] for c in HARNESS_CASES],
    ids=[c[0] for c in HARNESS_CASES],
)
def test_contract_harness_with_a_context(make, input_shape, context_shape, tmp_path, request):
    """Every check at a fixed context, plus: different contexts, broadcast, wrong context, the
    cached eager solve at a second context, one trace for two contexts, a missing context."""
    strategy = (
        request.getfixturevalue("mirrored_strategy")
        if request.node.callspec.id == "dense_additive"
        else None
    )
    report = testing.check_invertible_layer(
        make(),
        input_shape,
        context_shape=context_shape,
        tmp_dir=str(tmp_path),
        strategy=strategy,
        atol=1e-5,
    )
    # Every conditional check ran (none skipped for this layer), with the distributed step
    # where a strategy was given; and the contexts move the outputs well beyond the
    # harness's own 1e-3 floor.
    ran = {
        "log_det_vs_slogdet",
        "bijector_round_trip",
        "keras_file_round_trip",
        "XLA_inverse_c2",
        "broadcast_context",
        "inverse_second_context",
        "wrong_context_inverse",
    }
    assert ran <= set(report), ran - set(report)
    assert ("distributed_step" in report) == (strategy is not None)
    assert report["two_contexts_differ"] > 1e-2


def test_harness_refuses_a_missing_context_shape():
    layer = kir.InvertibleSequential([stack((2,))])  # a container has no context_shape of its own
    with pytest.raises(ValueError, match="context_shape"):
        testing.check_invertible_layer(layer, (3,))


# -- Keras' own layer checks -------------------------------------------------------------------
KERAS_CASES = [
    (
        "InvertibleResidualStack",
        kir.InvertibleResidualStack,
        {"num_blocks": 2, "hidden": 4, "coeff": 0.9, "context_shape": (2,), "actnorm": True},
        {"input_shape": ((2, 3), (2, 2)), "expected_output_shape": (2, 3)},
    ),
    (
        "InvertibleResidualBlock_film",
        kir.InvertibleResidualBlock,
        {"hidden": 4, "coeff": 0.9, "context_shape": (2,), "context_mode": "film"},
        {"input_shape": ((2, 3), (2, 2)), "expected_output_shape": (2, 3)},
    ),
    (
        "InvertibleResidualStack_image_context",
        kir.InvertibleResidualStack,
        {"num_blocks": 2, "hidden": 4, "coeff": 0.9, "context_shape": (4, 4, 1)},
        {"input_shape": ((2, 4, 4, 2), (2, 4, 4, 1)), "expected_output_shape": (2, 4, 4, 2)},
    ),
    (
        "ConditionalDiagonalGaussian",
        kir.ConditionalDiagonalGaussian,
        {"context_shape": (2,)},
        {"input_shape": ((2, 3), (2, 2)), "expected_output_shape": (2,)},
    ),
    (
        "ContextProjection",
        kir.layers.residual_function.ContextProjection,
        {"context_shape": (2,), "width": 3, "mode": "film", "stack": 2},
        {"input_shape": (2, 2), "expected_output_shape": (2, 2, 6)},
    ),
    # Containers of given layers: their sublayers keep their own dtype policy (as in
    # tests/test_layers.py), so Keras' mixed-precision check does not apply to them.
    (
        "InvertibleSequential",
        lambda **kw: kir.InvertibleSequential(
            [kir.ActNorm(), stack((2,), num_blocks=1, kernel_sizes=(1, 1))], **kw
        ),
        {},
        {
            "input_shape": ((2, 3), (2, 2)),
            "expected_output_shape": (2, 3),
            "run_mixed_precision_check": False,
        },
    ),
    (
        "FactorOut",
        lambda **kw: _factor_out_for_keras(**kw),
        {},
        {
            "input_shape": ((2, 4, 4, 1), (2, 3)),
            "expected_output_shape": (2, 16),
            "run_mixed_precision_check": False,
        },
    ),
]


def _factor_out_for_keras(**kwargs):
    layer = _factor_out()
    return kir.FactorOut(layer.stages, **kwargs)


@pytest.mark.parametrize(
    "layer_cls,init_kwargs,kwargs", [c[1:] for c in KERAS_CASES], ids=[c[0] for c in KERAS_CASES]
)
def test_keras_run_layer_test(layer_cls, init_kwargs, kwargs):
    """Serialization, build, symbolic and eager calls on the pair ``[x, c]`` (Keras' multi-input
    idiom), a compiled fit step and mixed precision."""
    TestCase().run_layer_test(layer_cls, init_kwargs, **kwargs)


# -- numerical ground truths at fixed random contexts --------------------------------------------
@pytest.mark.parametrize("mode", ["additive", "film"])
@pytest.mark.parametrize("image", [False, True], ids=["dense", "conv"])
def test_round_trip_and_log_det_at_random_contexts(mode, image):
    """inverse(forward(x, c), c) == x to 1e-5 and log-det == slogdet of the full x-Jacobian."""
    shape, context_shape = ((2, 2, 2), (3,)) if image else ((3,), (2,))
    layer = conv_stack(context_shape, mode) if image else stack(context_shape, mode, num_blocks=3)
    x = normal((4,) + shape, 1)
    for seed in range(3):
        c = normal((4,) + context_shape, 10 + seed, scale=2.0)
        y, log_det = layer.forward_and_log_det(x, context=c)
        assert error(layer.inverse(y, context=c), x) <= 1e-5
        truth = testing.full_jacobian_log_det(
            lambda t, c=c: layer.forward_and_log_det(t, context=c)[0], x
        )
        assert error(log_det, truth) <= 1e-4


@pytest.mark.parametrize("mode", ["additive", "film"])
@pytest.mark.parametrize("image", [False, True], ids=["dense", "conv"])
def test_lipschitz_in_x_is_bounded_for_every_context(mode, image):
    """With the normalization active and the (unnormalized) context kernel x1000, the exact
    operator norms of the x-path (SVD of each linear layer's explicit matrix, float64) stay
    <= coeff, and ||J_x g(x, c)|| <= the certified bound at random contexts."""
    shape = (3, 3, 2) if image else (3,)
    if image:
        layer = stack((2,), mode, num_blocks=2, hidden=4, kernel_sizes=(3, 1, 3))
    else:
        layer = stack((2,), mode, num_blocks=2, hidden=16)
    layer.build((None,) + shape)
    testing.saturate(layer, 5.0, max_iterations=3000, rtol=1e-7)
    layer.context_projection.kernel.assign(layer.context_projection.kernel * 1000.0)
    in_shape = shape
    for sub in layer.linear_layers:
        kernels = sub.normalized_kernel()
        for slice_index in range(layer.num_blocks):
            kernel = tf.cast(kernels[slice_index], tf.float64)
            matrix = testing.explicit_matrix(
                lambda t, k=kernel, sub=sub: sub.apply_operator(t, k), in_shape
            )
            norm = testing.top_singular_value(matrix)
            assert norm <= 0.9 * (1 + 1e-3), (sub.name, slice_index, norm)
            if not image:  # the layer's own exact norm (SVD of the kernel) agrees
                assert norm == pytest.approx(sub.operator_norm()[slice_index], rel=1e-4)
        in_shape = tuple(sub.compute_output_shape((None,) + in_shape)[1:])
    bounds = layer.lipschitz_bounds()
    assert max(bounds) <= 0.9**3 * (1 + 3e-3)
    worst = 0.0
    dims = int(np.prod(shape))
    for seed in range(5):
        c = normal((16, 2), 20 + seed, scale=3.0)
        x = normal((16,) + shape, 30 + seed, scale=3.0)
        for index in range(2):
            g = layer.residual_function(index=index, context=c)
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = g(x)
            jacobian = tf.reshape(tape.batch_jacobian(out, x), (16, dims, dims))
            norm = float(tf.reduce_max(tf.linalg.svd(jacobian, compute_uv=False)))
            assert norm <= bounds[index] + 1e-6
            worst = max(worst, norm)
    assert worst > 0.1 * max(bounds)  # the bound is tested where g is not flat


def test_film_scale_is_bounded_by_one_and_starts_near_one():
    layer = stack((2,), "film", num_blocks=3)
    layer.build((None, 3))
    projection = layer.context_projection
    c = normal((256, 2), 3, scale=50.0)
    scales = tf.sigmoid(projection.project(c, image=False)[..., : projection.width])
    assert float(tf.reduce_max(scales)) <= 1.0 and float(tf.reduce_min(scales)) >= 0.0
    start = tf.sigmoid(projection.project(tf.zeros((1, 2)), image=False)[..., : projection.width])
    np.testing.assert_allclose(start.numpy(), 1 / (1 + np.exp(-3.0)), rtol=1e-6)


@pytest.mark.parametrize(
    "estimator",
    [
        logdet.PowerSeries(n_terms=10, n_samples=8),
        logdet.RussianRoulette(n_exact_terms=6, p=0.5, n_samples=8),
    ],
    ids=["power_series", "russian_roulette"],
)
def test_estimators_see_g_at_the_context(estimator):
    """The estimators are unchanged: at each context their mean is the exact log-det of
    x -> x + g(x, c), not that of another context."""
    layer = stack((2,), num_blocks=1, hidden=16, seed=3)
    layer.build((None, 3))
    testing.saturate(layer, 5.0)
    x = normal((16, 3), 4)
    estimate = tf.function(lambda t, c: layer.forward_and_log_det(t, context=c, logdet=estimator))
    exact = {}
    for seed in (1, 2):
        c = normal((16, 2), seed, scale=3.0)
        exact[seed] = layer.forward_and_log_det(x, context=c)[1]
        estimates = np.mean([estimate(x, c)[1] for _ in range(16)], 0)  # fresh probes each call
        assert error(estimates, exact[seed]) <= 0.06
    assert error(exact[1], exact[2]) > 0.1  # the contexts change the log-det


def test_missing_and_unexpected_contexts_raise_value_errors():
    layer = stack((2,))
    x = normal((3, 3))
    with pytest.raises(ValueError, match="is conditional"):
        layer.forward_and_log_det(x)
    with pytest.raises(ValueError, match="context of shape"):
        layer(x, context=normal((3, 5)))
    with pytest.raises(ValueError, match="rows for a batch"):
        layer(x, context=normal((2, 2)))
    with pytest.raises(ValueError, match="not conditional"):
        kir.InvertibleSequential([kir.ActNorm()]).inverse(x, context=normal((3, 2)))
    with pytest.raises(ValueError, match="context_mode"):
        stack((2,), "multiplicative")
    with pytest.raises(ValueError, match="context_shape"):
        stack((2, 2))
    with pytest.raises(ValueError, match="height and width"):
        conv_stack((3, 3, 1)).build((None, 4, 4, 2))
    with pytest.raises(ValueError, match="image inputs"):
        stack((4, 4, 1)).build((None, 3))


def test_eager_inverse_cache_takes_the_context_as_an_argument():
    """The eager solve is traced once and serves every context (the design note's pitfall 2)."""
    layer = stack((2,))
    x, c1, c2 = normal((5, 3)), normal((5, 2), 1, 2.0), normal((5, 2), 2, 2.0)
    y1, y2 = layer(x, context=c1), layer(x, context=c2)
    assert error(layer.inverse(y1, context=c1), x) <= 1e-5
    assert error(layer.inverse(y2, context=c2), x) <= 1e-5
    assert len(layer._compiled_solvers) == 1
    [solver] = layer._compiled_solvers.values()
    assert solver.experimental_get_tracing_count() == 1


def test_unconditional_layers_keep_their_signatures():
    """A user's unconditional layer, _inverse(y, settings), still works in a conditional chain."""

    class Shift(kir.InvertibleLayer):
        def forward_and_log_det(self, inputs, training=None, logdet=None):
            return inputs + 1.0, self._zero_log_det(inputs)

        def _inverse(self, y, settings):
            return y - 1.0

    chain = kir.InvertibleSequential([Shift(), stack((2,)), Shift()])
    x, c = normal((4, 3)), normal((4, 2), 1)
    y, _ = chain.forward_and_log_det(x, context=c)
    assert error(chain.inverse(y, context=c), x) <= 1e-5
    plain = kir.InvertibleResidualStack(num_blocks=2, hidden=4, coeff=0.9)
    assert not plain.conditional and "context_shape" not in plain.get_config()
    assert error(plain.inverse(plain(x)), x) <= 1e-4


# -- the models ------------------------------------------------------------------------------
GL = data.GaussianLinear()


def small_flow(base="conditional_diagonal", blocks=2, **kwargs):
    keras.utils.set_random_seed(0)
    return models.IResNetFlow(
        (GL.theta_dim,),
        blocks=blocks,
        block={"hidden": 8, "coeff": 0.9, "logdet": "exact", "actnorm": True},
        base=base,
        context_shape=(GL.x_dim,),
        **kwargs,
    )


def test_gaussian_linear_posterior_matches_a_regression_on_simulations():
    """The closed form A x, S (Bishop 2.116) against least squares of theta on x (10^5 draws)."""
    theta, x = GL.simulate(100_000, seed=3)
    coefficients, *_ = np.linalg.lstsq(x.astype(np.float64), theta.astype(np.float64), rcond=None)
    np.testing.assert_allclose(coefficients.T, GL.posterior_matrix, atol=0.01)
    residual = theta - x @ coefficients
    np.testing.assert_allclose(np.cov(residual.T), GL.posterior_covariance, atol=0.01)
    mean, cov = GL.posterior(x[:5])
    log_p = GL.posterior_log_prob(theta[:5], x[:5])
    import scipy.stats

    truth = [scipy.stats.multivariate_normal(m, cov).logpdf(t) for m, t in zip(mean, theta[:5])]
    np.testing.assert_allclose(log_p, truth, rtol=1e-10)
    assert GL.conditional_entropy < GL.prior_entropy


def test_identity_trunk_and_conditional_base_is_the_linear_gaussian():
    """blocks=0: ln p(x | c) = ln N(x; M c + m, diag(exp(2 (L c + l)))) exactly."""
    flow = models.IResNetFlow((2,), blocks=0, context_shape=(1,), base="conditional_diagonal")
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(1, 4)).astype("float32") * 0.5
    bias = rng.normal(size=(4,)).astype("float32") * 0.5
    flow.base.kernel.assign(kernel)
    flow.base.bias.assign(bias)
    c = rng.normal(size=(7, 1)).astype("float32")
    x = rng.normal(size=(7, 2)).astype("float32")
    mean = c @ kernel[:, :2] + bias[:2]
    log_std = c @ kernel[:, 2:] + bias[2:]
    truth = np.sum(
        -0.5 * ((x - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi), axis=1
    )
    assert error(flow.log_prob(x, context=c), truth) <= 1e-5
    assert (
        error(flow.distribution.log_prob(x, bijector_kwargs={"conditional_input": c}), truth)
        <= 1e-5
    )


def test_fit_takes_pairs_dicts_and_datasets_of_pairs_alike():
    theta, x = GL.simulate(64, seed=1)
    losses = []
    for inputs in ((theta, x), {"x": theta, "context": x}, None):
        flow = small_flow(blocks=1)
        flow.compile(keras.optimizers.Adam(1e-3))
        if inputs is None:
            dataset = tf.data.Dataset.from_tensor_slices((theta, x)).batch(64)
            history = flow.fit(dataset, epochs=1, verbose=0)
        else:
            history = flow.fit(inputs, batch_size=64, epochs=1, verbose=0, shuffle=False)
        losses.append(history.history["loss"][0])
    np.testing.assert_allclose(losses, losses[0], rtol=1e-5)


def test_predict_evaluate_log_prob_and_sample():
    theta, x = GL.simulate(32, seed=2)
    flow = small_flow()
    flow.compile("adam")
    log_p = flow.log_prob(theta, context=x)
    assert error(flow.predict((theta, x), verbose=0), log_p) <= 1e-5
    by_pairs = flow.evaluate((theta, x), verbose=0, return_dict=True)
    dataset = tf.data.Dataset.from_tensor_slices((theta, x)).batch(16)
    by_dataset = flow.evaluate(dataset, verbose=0, return_dict=True)
    assert by_pairs["bits_per_dim"] == pytest.approx(by_dataset["bits_per_dim"], rel=1e-5)
    expected_bpd = -float(np.mean(log_p)) / (GL.theta_dim * np.log(2.0))
    assert by_pairs["bits_per_dim"] == pytest.approx(expected_bpd, rel=1e-4)
    # one context broadcast over the batch equals the tiled context
    tiled = np.repeat(x[:1], 32, axis=0)
    assert error(flow.log_prob(theta, context=x[0]), flow.log_prob(theta, context=tiled)) <= 1e-5
    # the eager log_prob graph takes the context as an argument: a second context is honoured
    assert error(flow.log_prob(theta, context=tiled), flow(dict(x=theta, context=tiled))) <= 1e-5
    assert flow.sample(context=x[:5]).shape == (5, GL.theta_dim)
    assert flow.sample(6, context=x[0]).shape == (6, GL.theta_dim)
    with pytest.raises(ValueError, match="rows for n=4"):
        flow.sample(4, context=x[:5])
    with pytest.raises(ValueError, match="is conditional"):
        flow.log_prob(theta)
    with pytest.raises(ValueError, match="is conditional"):
        flow.sample(3)
    with pytest.raises(ValueError, match="keys"):
        flow({"x": theta, "c": x})
    unconditional = models.IResNetFlow((2,), blocks=1, block={"hidden": 4})
    with pytest.raises(ValueError, match="not conditional"):
        unconditional.log_prob(theta, context=x)


def test_conditional_model_arguments_are_checked():
    with pytest.raises(ValueError, match="conditional_diagonal"):
        models.IResNetFlow((2,), blocks=1, base="conditional_diagonal")
    with pytest.raises(ValueError, match="neither the trunk nor the base"):
        models.IResNetFlow((2,), blocks=0, context_shape=(3,))
    with pytest.raises(ValueError, match="not conditional"):
        models.IResNetHybrid((8, 8, 1), 10, context_shape=(10,))
    with pytest.raises(ValueError, match="context_shape"):
        models.IResNetFlow((2,), trunk=stack((3,)))


def test_save_load_keeps_the_conditional_density(tmp_path):
    theta, x = GL.simulate(16, seed=4)
    flow = small_flow()
    flow.compile(keras.optimizers.Adam(1e-2))
    flow.fit((theta, x), batch_size=16, epochs=2, verbose=0)
    path = tmp_path / "flow.keras"
    flow.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.context_shape == (GL.x_dim,)
    assert error(loaded.log_prob(theta, context=x), flow.log_prob(theta, context=x)) <= 1e-5
    assert error(loaded.get_weights()[0], flow.get_weights()[0]) == 0.0


def test_fit_under_mirrored_strategy(mirrored_strategy):
    theta, x = GL.simulate(64, seed=5)
    with mirrored_strategy.scope():
        flow = small_flow(blocks=1)
        flow.compile(keras.optimizers.Adam(1e-2))
    kernel = [v for v in flow.trainable_variables if "context" in v.path][0]
    before = kernel.numpy().copy()
    history = flow.fit((theta, x), batch_size=32, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    replicas = [v.numpy() for v in mirrored_strategy.experimental_local_results(kernel.value)]
    assert len(replicas) == 2
    np.testing.assert_array_equal(replicas[0], replicas[1])
    assert error(replicas[0], before) > 0  # the context kernel trained


def test_fit_with_jit_compile():
    """The XLA training step on pairs matches the default step (same first-step loss)."""
    theta, x = GL.simulate(64, seed=6)
    dataset = tf.data.Dataset.from_tensor_slices((theta, x)).batch(64, drop_remainder=True)
    losses = []
    for jit in (True, False):
        flow = small_flow(blocks=1)
        flow.compile(keras.optimizers.Adam(1e-2), jit_compile=jit)
        losses.append(flow.fit(dataset, epochs=1, verbose=0).history["loss"][0])
    assert np.isfinite(losses[0]) and losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_image_flow_with_an_image_context_and_factor_out():
    """The trunk carries an image context through squeezes and factor-out to every scale."""
    flow = models.IResNetFlow(
        (4, 4, 1),
        blocks=(1, 1),
        block={"hidden": 4, "coeff": 0.9, "logdet": "exact"},
        factor_out=True,
        fc_blocks=1,
        fc_block={"hidden": 4, "logdet": "exact"},
        context_shape=(4, 4, 2),
        base="conditional_diagonal",
        logit=False,
    )
    shapes = [s.context_shape for s in certify.residual_stacks(flow)]
    assert shapes == [(2, 2, 8), (1, 1, 32), (32,)]
    x, c = normal((3, 4, 4, 1)), normal((3, 4, 4, 2), 1)
    flow.base.kernel.assign(normal(flow.base.kernel.shape, 2, scale=0.1))  # a base that reads c
    z, _ = flow.trunk.forward_and_log_det(x, context=c)
    assert error(flow.trunk.inverse(z, context=c), x) <= 1e-4
    log_p = flow.log_prob(x, context=c)
    assert np.all(np.isfinite(log_p))
    # TFP: the conditional base reads the context as given, not as the trunk's squeezes leave it
    tfp_log_p = flow.distribution.log_prob(x, bijector_kwargs={"conditional_input": c})
    assert error(tfp_log_p, log_p) <= 1e-4


# -- TFP --------------------------------------------------------------------------------------
def test_tfp_conditional_input_matches_the_model_and_runs_the_network_once():
    theta, x = GL.simulate(8, seed=7)
    flow = small_flow()
    dist = flow.distribution
    c = tf.constant(x)
    expected = flow.log_prob(theta, context=x)
    calls = []
    layer = dist.bijector.layer
    original = layer.forward_and_log_det

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    layer.forward_and_log_det = counting
    got = dist.log_prob(theta, bijector_kwargs={"conditional_input": c})
    assert error(got, expected) <= 1e-5
    assert len(calls) == 1  # TFP's cache keys the log-det on the same kwargs
    assert dist.sample(8, seed=1, bijector_kwargs={"conditional_input": c}).shape == (8, 2)
    assert dist.sample(5, seed=1, bijector_kwargs={"conditional_input": c[0]}).shape == (5, 2)
    grid = tf.reshape(tf.constant(GL.simulate(6, seed=8)[1]), (2, 3, GL.x_dim))
    samples = dist.sample((2, 3), seed=2, bijector_kwargs={"conditional_input": grid})
    assert samples.shape == (2, 3, 2)
    assert np.all(np.isfinite(dist.log_prob(samples, bijector_kwargs={"conditional_input": grid})))


def test_density_model_chain_routes_by_name_and_refuses_missing_contexts():
    layer = stack((3,))
    layer.build((None, 2))
    dist = kir.density_model(layer, event_shape=[2], name="cond_flow")
    assert dist.bijector.context_shape == (3,)
    x, c = normal((4, 2)), normal((4, 3), 1)
    plain = dist.log_prob(x, bijector_kwargs={"conditional_input": c})
    chained = tfd.TransformedDistribution(
        dist.distribution, tfb.Chain([tfb.Shift(1.0), dist.bijector])
    )
    routed = chained.log_prob(x + 1.0, bijector_kwargs={"cond_flow": {"conditional_input": c}})
    assert error(routed, plain) <= 1e-5
    with pytest.raises(ValueError, match="conditional_input"):
        chained.log_prob(x + 1.0, bijector_kwargs={"conditional_input": c})  # dropped by Chain
    with pytest.raises(ValueError, match="conditional_input"):
        dist.log_prob(x)
    unconditional = kir.density_model(
        kir.InvertibleResidualStack(num_blocks=1, hidden=4), event_shape=[2]
    )
    with pytest.raises(ValueError, match="not conditional"):
        unconditional.log_prob(x, bijector_kwargs={"conditional_input": c})
    with pytest.raises(ValueError, match="context_shape"):
        kir.density_model(kir.InvertibleSequential([layer]), event_shape=[2])


# -- certificate ------------------------------------------------------------------------------
def test_certify_reports_x_bounds_and_an_inverse_check_at_random_contexts():
    flow = small_flow()
    report = certify.certify(flow)
    assert report["all_contractions"]
    assert all(block["conditional"] for block in report["blocks"])
    stack_layer = certify.residual_stacks(flow)[0]
    bounds = [b["lipschitz_bound"] for b in report["blocks"]]
    assert bounds == pytest.approx(stack_layer.lipschitz_bounds(), rel=1e-6)
    check = report["inverse_check"]
    assert check["contexts"] == 8 and check["passed"] and check["max_relative_error"] < 1e-4
    assert "inverse_check" not in certify.certify(models.IResNetFlow((2,), blocks=1))


# -- data, recipe, command line ----------------------------------------------------------------
def test_label_context_pipeline_and_the_recipe_model():
    images, labels = data.digits_arrays()
    dataset = data.image_dataset(
        images[:20], labels[:20], batch_size=20, shuffle=False, context="label"
    )
    x, c = next(iter(dataset))
    np.testing.assert_array_equal(np.argmax(c, 1), labels[:20])
    assert c.shape == (20, 10) and float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) < 1
    recipe = recipes.get("digits-conditional")
    assert recipe.context == "label" and recipe.task == "density"
    model = runs.build_model(recipe, input_shape=(8, 8, 1), num_classes=10)
    assert model.context_shape == (10,) and model.conditional
    assert all(s.context_shape == (10,) for s in certify.residual_stacks(model))
    assert recipes.for_task("density", "digits").name == "digits-density"
    split = runs.load_split(recipe)
    inputs = runs.model_inputs(recipe, next(iter(runs.datasets(recipe, split)[0])))
    assert isinstance(inputs, tuple) and inputs[1].shape[-1] == 10


@pytest.fixture(scope="module")
def saved_flows(tmp_path_factory):
    """A class-conditional 2-D flow (one-hot context over 3 classes) and an unconditional one."""
    folder = tmp_path_factory.mktemp("cli")
    conditional = models.IResNetFlow(
        (2,), blocks=1, block={"hidden": 4}, context_shape=(3,), base="conditional_diagonal"
    )
    conditional.save(folder / "conditional.keras")
    models.IResNetFlow((2,), blocks=1, block={"hidden": 4}).save(folder / "plain.keras")
    return folder


def test_cli_sample_per_class_and_the_label_refusal(saved_flows, capsys):
    conditional, plain = saved_flows / "conditional.keras", saved_flows / "plain.keras"
    out = saved_flows / "grid.png"
    assert cli_main(["sample", "--model", str(conditional), "--out", str(out), "--n", "30"]) == 0
    assert out.is_file() and "a row per class" in capsys.readouterr().out
    one = saved_flows / "three.png"
    assert cli_main(["sample", "--model", str(conditional), "--label", "2", "--out", str(one)]) == 0
    assert one.is_file()
    assert cli_main(["sample", "--model", str(plain), "--label", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--label applies to class-conditional models" in err
    assert cli_main(["sample", "--model", str(conditional), "--label", "3"]) == 2
    assert "not a class of this model" in capsys.readouterr().err


def test_cli_certify_prints_the_inverse_check(saved_flows, capsys):
    assert cli_main(["certify", "--model", str(saved_flows / "conditional.keras")]) == 0
    out = capsys.readouterr().out
    assert "Lip_x(g(., c)) for every c" in out and "random contexts" in out
    assert json.loads(out.strip().splitlines()[-1])["inverse_check"]["passed"]


# -- trained: the closed-form conditional target and the simulation-based-inference example -------
@pytest.fixture(scope="module")
def posterior_flows():
    """p(theta | x) of GaussianLinear (the target x | c ~ N(A c, S)) and an unconditional flow
    of theta on the same pairs: the notebook 05 settings (CPU): 4 blocks of width 32, exact
    log-det, 8,192 pairs, 12 epochs of batch 256 (384 Adam steps)."""
    keras.utils.set_random_seed(0)
    theta, x = GL.simulate(8192, seed=10)
    held_theta, held_x = GL.simulate(4000, seed=11)
    result = {"held": (held_theta, held_x)}
    for name, context_shape, base in (
        ("conditional", (GL.x_dim,), "conditional_diagonal"),
        ("unconditional", None, "diagonal"),
    ):
        flow = models.IResNetFlow(
            (GL.theta_dim,),
            blocks=4,
            block={"hidden": 32, "coeff": 0.9, "logdet": "exact", "actnorm": True},
            base=base,
            context_shape=context_shape,
        )
        flow.compile(keras.optimizers.Adam(3e-3))
        inputs = (theta, x) if context_shape else theta
        flow.fit(inputs, batch_size=256, epochs=12, verbose=0)
        result[name] = flow
    return result


@pytest.mark.slow
def test_conditional_flow_reaches_the_true_conditional_nll(posterior_flows):
    """The target theta | x ~ N(A x, S) (x the context). On 4,000 held-out pairs, the flow's
    NLL minus the true NLL *on the same pairs* estimates E_x KL(p(.|x) || q(.|x)) >= 0.

    Tolerance: 0.05 nats, about 3 % of the conditional entropy (1.59 nats); the paired
    difference has a standard error (printed, about 0.002 nats here) far below it, so the
    test measures the model, not the sample. It may not be below -4 standard errors
    either (no model beats the truth). The unconditional flow on the same theta cannot
    beat the prior's entropy and must be worse by more than a nat."""
    held_theta, held_x = posterior_flows["held"]
    log_q = posterior_flows["conditional"].log_prob(held_theta, context=held_x).numpy()
    log_p = GL.posterior_log_prob(held_theta, held_x)
    difference = log_p - log_q
    gap = float(np.mean(difference))
    stderr = float(np.std(difference) / np.sqrt(len(difference)))
    nll = -float(np.mean(log_q))
    unconditional = -float(np.mean(posterior_flows["unconditional"].log_prob(held_theta)))
    print(
        f"conditional NLL {nll:.4f}, true NLL on the same pairs {-np.mean(log_p):.4f}, "
        f"gap {gap:.4f} +- {stderr:.4f} nats; entropy {GL.conditional_entropy:.4f}; "
        f"unconditional NLL {unconditional:.4f} (prior entropy {GL.prior_entropy:.4f})"
    )
    assert gap <= 0.05, (gap, stderr)
    assert gap >= -4 * stderr, (gap, stderr)
    assert unconditional > GL.prior_entropy - 0.05
    assert nll < unconditional - 1.0


@pytest.mark.slow
def test_sbi_posterior_at_an_observation_and_calibration(posterior_flows):
    """At x_obs: sample mean and covariance vs the closed form, KL(q || p) < 0.05 nats; over 200
    simulated (theta*, x) pairs the central 90 % intervals cover theta* about 90 % of the time."""
    flow = posterior_flows["conditional"]
    x_obs = np.array([1.0, -0.5, 0.8], dtype="float32")
    samples = flow.sample(4000, context=x_obs, seed=3).numpy()
    mean, cov = GL.posterior(x_obs)
    np.testing.assert_allclose(samples.mean(0), mean[0], atol=0.1)  # 0.16 sd; measured 0.039
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=0.04)
    log_q = flow.log_prob(samples, context=x_obs).numpy()
    kl = float(np.mean(log_q - GL.posterior_log_prob(samples, x_obs[None])))
    assert kl < 0.05, kl
    truth, xs = GL.simulate(200, seed=12)
    draws = flow.sample(context=np.repeat(xs, 200, axis=0), seed=4).numpy().reshape(200, 200, -1)
    low, high = np.percentile(draws, 5, axis=1), np.percentile(draws, 95, axis=1)
    coverage = float(np.mean((truth >= low) & (truth <= high)))
    assert 0.84 <= coverage <= 0.96, coverage


# -- trained: the digits-conditional recipe ------------------------------------------------------
#: Epochs of the digits runs here (the recipes train 30), those of the shared digits-density
#: training. At 10 epochs the samples were recognised 75 % of the time (T=0.7; notes in
#: models/presets.py), below the 80 % asked; at 15 (measured here, 2 loaded cores): 95.0 %
#: recognised, held-out 4.216 (conditional) against 4.313 bits/dim (digits-density).
DIGITS_EPOCHS = DIGITS_DENSITY_EPOCHS


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory, digits_density_run, digits_classifiers):
    """``iresnet train --recipe digits-conditional`` and, for comparison, the digits-density
    recipe (the shared training), both for DIGITS_EPOCHS; the shared digits-classifier (seed 0,
    no vanilla twin). Held-out bits/dim with a 20-term power series, 4 probes (as
    benchmarks/README.md)."""
    out = tmp_path_factory.mktemp("digits") / "run"
    code = cli_main(
        [
            "train",
            "--recipe",
            "digits-conditional",
            "--epochs",
            str(DIGITS_EPOCHS),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    conditional = keras.models.load_model(out / "model.keras")
    density_recipe = recipes.get("digits-density")
    unconditional, split = digits_density_run
    conditional_recipe = recipes.get("digits-conditional")
    trained = {"run": out}
    for name, model, recipe in (
        ("conditional", conditional, conditional_recipe),
        ("unconditional", unconditional, density_recipe),
    ):
        model.eval_logdet = logdet.PowerSeries(n_terms=20, n_samples=4)
        model.compile(model.optimizer or "adam")
        test = runs.datasets(recipe, split)[1]
        trained[name] = (model, model.evaluate(test, verbose=0, return_dict=True)["bits_per_dim"])
    trained["classifier"] = (digits_classifiers[0, False], digits_classifiers["split"].stats)
    return trained


@pytest.mark.slow
def test_digits_conditional_samples_are_recognisable(digits_runs):
    """>= 80 % of 200 samples (20 per class, temperature 0.7) get their class from the
    digits-classifier recipe's classifier (92 % accurate on the real test digits)."""
    model, _ = digits_runs["conditional"]
    classifier, (mean, std) = digits_runs["classifier"]
    labels = np.repeat(np.arange(10), 20)
    samples = model.sample(context=np.eye(10, dtype="float32")[labels], temperature=0.7, seed=1)
    inputs = (np.clip(samples.numpy(), 0.0, 1.0) - mean) / std
    predicted = np.argmax(classifier.predict(inputs, verbose=0), axis=1)
    accuracy = float(np.mean(predicted == labels))
    print(f"samples labelled as their class: {accuracy:.3f}")
    assert accuracy >= 0.8


@pytest.mark.slow
def test_digits_conditional_bits_per_dim_below_the_unconditional_recipe(digits_runs):
    """Held-out -log2 p(x | label) per dim below the digits-density recipe's -log2 p(x) per dim,
    both trained the same epochs on the same split."""
    conditional = digits_runs["conditional"][1]
    unconditional = digits_runs["unconditional"][1]
    print(f"held-out bits/dim: conditional {conditional:.4f}, unconditional {unconditional:.4f}")
    assert conditional < unconditional, (conditional, unconditional)


@pytest.mark.slow
def test_cli_run_of_digits_conditional(digits_runs, capsys):
    """The run folder of ``iresnet train --recipe digits-conditional``: the inverse check at
    random contexts in metrics.json, and sample (per class and --label), evaluate, invert."""
    out = digits_runs["run"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inverse_check_random_contexts"]["passed"]
    assert metrics["reconstruction_error"]["max"] < 1e-4
    assert (out / "figure.png").is_file()
    assert cli_main(["sample", "--run", str(out), "--label", "3", "--n", "16"]) == 0
    assert (out / "samples_n16_t1_seed0_label3.png").is_file()
    assert cli_main(["sample", "--run", str(out), "--n", "40"]) == 0
    assert "a row per class" in capsys.readouterr().out
    assert cli_main(["evaluate", "--run", str(out), "--n", "64"]) == 0
    assert "bits_per_dim" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli_main(["invert", "--run", str(out), "--n", "16"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["max_relative_error"] < 1e-4
    assert cli_main(["certify", "--run", str(out)]) == 0
