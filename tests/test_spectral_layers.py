"""SpectralDense / SpectralConv2D: the soft normalization of equation (2) through the operator
as applied (section 2.1), checked against explicit operator matrices and numpy's SVD."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet.testing import explicit_matrix, top_singular_value

CONV_CASES = [
    # (input_shape, filters, kernel_size, strides, padding)
    ((6, 6, 3), 5, 3, 1, "same"),
    ((6, 6, 4), 2, 1, 1, "same"),
    ((6, 6, 2), 6, 3, 1, "same"),
    ((5, 7, 3), 4, 3, 1, "same"),
    ((6, 6, 3), 4, 3, 2, "same"),
    ((6, 6, 2), 3, (3, 1), 1, "valid"),
]


def conv_matrix(layer, kernel, input_shape=None):
    """The explicit matrix of the layer's convolution (its strides and padding) with ``kernel``."""
    shape = input_shape or layer.built_input_shape[1:]
    return explicit_matrix(
        lambda v: (
            layer.apply_operator(v, tf.cast(kernel, tf.float64))
            if input_shape is None
            else tf.nn.conv2d(v, tf.cast(kernel, tf.float64), layer.strides, layer.padding.upper())
        ),
        shape,
    )


def random_unit(shape, seed):
    """A random unit vector (the layers store unit vectors)."""
    return kir.spectral.l2_normalize(tf.random.stateless_normal(shape, seed=[seed, seed]))


def built_conv(
    input_shape,
    filters,
    kernel_size,
    strides=1,
    padding="same",
    coeff=0.9,
    seed=3,
    scale=1.0,
    **kwargs,
):
    layer = kir.SpectralConv2D(
        filters, kernel_size, strides=strides, padding=padding, coeff=coeff, **kwargs
    )
    layer.build((None,) + tuple(input_shape))
    layer.kernel.assign(scale * tf.random.stateless_normal(layer.kernel.shape, seed=[seed, 0]))
    return layer


# -- estimates against the truth ------------------------------------------------------------


@pytest.mark.parametrize("input_shape,filters,kernel_size,strides,padding", CONV_CASES)
def test_conv_estimate_matches_explicit_operator(
    input_shape, filters, kernel_size, strides, padding
):
    layer = built_conv(input_shape, filters, kernel_size, strides, padding)
    sigma = layer.refine(max_iterations=5000, rtol=1e-7)
    truth = top_singular_value(conv_matrix(layer, layer.kernel))
    # float32 power iteration stopped at a relative change of 1e-7: within 1e-4 of the truth.
    assert float(sigma) == pytest.approx(truth, rel=1e-4)
    assert float(layer.sigma_estimate()) == pytest.approx(truth, rel=1e-4)
    # The kernels are N(0, 1), far above coeff: the normalized operator as applied has norm coeff,
    # both by the layer's own operator_norm() and by the explicit matrix.
    assert truth > 1.0
    assert layer.operator_norm() == pytest.approx(0.9, rel=1e-3)
    assert top_singular_value(conv_matrix(layer, layer.normalized_kernel())) == pytest.approx(
        0.9, rel=1e-3
    )


def test_dense_starts_at_the_svd_and_normalizes_to_coeff():
    layer = kir.SpectralDense(7, coeff=0.5)
    layer.build((None, 11))
    layer.kernel.assign(3.0 * tf.random.stateless_normal([11, 7], seed=[4, 0]))
    layer.refine()  # dense layers: an exact SVD
    svd = np.linalg.svd(layer.kernel.numpy().astype(np.float64), compute_uv=False)
    assert float(layer.sigma_estimate()) == pytest.approx(svd[0], rel=1e-6)  # float32 rounding
    assert layer.operator_norm() == pytest.approx(0.5, rel=1e-6)
    normalized = layer.normalized_kernel().numpy()
    np.testing.assert_allclose(normalized, layer.kernel.numpy() * 0.5 / svd[0], rtol=1e-5)
    # Built converged: a fresh layer's estimate is its kernel's top singular value at once.
    fresh = kir.SpectralDense(5, coeff=0.9)
    fresh.build((None, 9))
    truth = np.linalg.svd(fresh.kernel.numpy(), compute_uv=False)[0]
    assert float(fresh.sigma_estimate()) == pytest.approx(truth, rel=1e-6)


def test_normalized_norm_at_most_coeff_and_small_kernels_untouched():
    layer = built_conv((6, 6, 3), 4, 3, coeff=0.7, scale=3.0, seed=5)
    layer.refine(max_iterations=5000, rtol=1e-7)
    assert layer.operator_norm() <= 0.7 * (1 + 1e-3)
    # A kernel whose norm is already below coeff is used as is (soft normalization, eq. 2).
    layer.kernel.assign(layer.kernel * (0.3 / float(layer.sigma_estimate())))
    layer.refine(max_iterations=5000, rtol=1e-7)
    np.testing.assert_array_equal(layer.normalized_kernel().numpy(), layer.kernel.numpy())
    assert layer.operator_norm() == pytest.approx(0.3, rel=1e-3)
    # coeff=None: no normalization at all.
    vanilla = built_conv((6, 6, 3), 4, 3, coeff=None, scale=3.0)
    np.testing.assert_array_equal(
        vanilla.normalized_kernel(training=True).numpy(), vanilla.kernel.numpy()
    )
    assert int(vanilla.track()) == 0


def test_keras_spectral_normalization_bounds_a_different_norm():
    """keras.layers.SpectralNormalization normalizes the reshaped kernel (Miyato), not the conv.

    Its normalized conv does not have operator norm 1; ours lands on coeff.
    """
    kernel = tf.random.stateless_normal((3, 3, 3, 4), seed=[11, 0])
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    wrapped = keras.layers.SpectralNormalization(conv, power_iterations=50)
    x = tf.random.normal([1, 6, 6, 3])
    wrapped(x)
    conv.kernel.assign(kernel)
    for _ in range(20):
        wrapped(x, training=True)
    keras_norm = top_singular_value(
        explicit_matrix(
            lambda v: tf.nn.conv2d(v, tf.cast(conv.kernel, tf.float64), 1, "SAME"), (6, 6, 3)
        )
    )
    ours = kir.SpectralConv2D(4, 3, coeff=0.999999, use_bias=False)
    ours.build((None, 6, 6, 3))
    ours.kernel.assign(kernel)
    ours.refine(max_iterations=5000, rtol=1e-7)
    our_norm = top_singular_value(conv_matrix(ours, ours.normalized_kernel()))
    assert our_norm == pytest.approx(1.0, rel=1e-3)
    assert abs(keras_norm - 1.0) > 0.05, keras_norm


def test_operator_norm_on_another_input_shape():
    """The zero-padded conv's norm depends on the input size; operator_norm takes it."""
    layer = built_conv((6, 6, 2), 3, 3, seed=9)
    layer.refine(max_iterations=5000, rtol=1e-7)
    truth = top_singular_value(conv_matrix(layer, layer.normalized_kernel(), input_shape=(4, 5, 2)))
    assert layer.operator_norm(input_shape=(4, 5, 2), tol=1e-8) == pytest.approx(truth, rel=1e-4)
    with pytest.raises(ValueError, match="channels"):
        layer.operator_norm(input_shape=(4, 5, 3))
    with pytest.raises(ValueError, match="not built"):
        kir.SpectralDense(3).operator_norm()


def test_circular_singular_values_bound_the_zero_padded_norm():
    """An independent check of operator_norm(): the zero-padded conv is a compression of the
    circular one on a larger torus, so its norm is at most the circular norm there."""
    layer = built_conv((6, 6, 2), 3, 3, seed=10)
    layer.refine(max_iterations=5000, rtol=1e-7)
    circular = float(kir.spectral.conv_singular_values(layer.normalized_kernel(), (8, 8))[0])
    assert layer.operator_norm() <= circular * (1 + 1e-5)


def test_power_vectors_and_pointwise_convolutions():
    """power_vectors orthonormal input-space vectors (at most the operator's dimensions); a 1x1
    stride-1 convolution is normalized by its channel matrix, which has the same norm."""
    layer = built_conv((5, 5, 3), 4, 3, power_vectors=6)
    assert layer.power_v.shape == (6, 5, 5, 3)
    layer.refine()
    v = layer.power_v.numpy().reshape(6, -1)
    np.testing.assert_allclose(v @ v.T, np.eye(6), atol=1e-5)
    small = kir.SpectralDense(2, coeff=0.9, power_vectors=8)
    small.build((None, 3))
    assert small.power_v.shape == (2, 3)  # min(8, out=2, in=3)
    pointwise = built_conv((4, 4, 3), 5, 1, scale=2.0, seed=7)
    pointwise.refine()
    assert pointwise.power_v.shape[1:] == (3,)  # vectors of the channel matrix
    channel = pointwise.kernel.numpy()[0, 0].astype(np.float64)
    assert float(pointwise.sigma_estimate()) == pytest.approx(
        np.linalg.svd(channel, compute_uv=False)[0], rel=1e-6
    )
    explicit = top_singular_value(conv_matrix(pointwise, pointwise.normalized_kernel()))
    assert pointwise.operator_norm() == pytest.approx(explicit, rel=1e-6)
    assert explicit == pytest.approx(0.9, rel=1e-5)
    x = tf.random.normal([2, 4, 4, 3])
    assert pointwise(x, training=True).shape == (2, 4, 4, 5)


# -- stacks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_stacked_layer_slices_equal_unstacked_layers(kind):
    """A stack of n kernels is n independent layers: the same normalized kernels, the same norms."""
    n, coeff = 3, 0.8
    if kind == "dense":
        make = lambda **kw: kir.SpectralDense(5, coeff=coeff, **kw)  # noqa: E731
        input_shape = (None, 6)
    else:
        make = lambda **kw: kir.SpectralConv2D(3, 3, coeff=coeff, **kw)  # noqa: E731
        input_shape = (None, 5, 5, 2)
    stacked = make(stack=n)
    stacked.build(input_shape)
    assert stacked.kernel.shape[0] == n and stacked.bias.shape[0] == n
    # Slice 1 below coeff (used as is), the others above it.
    scales = tf.reshape(tf.constant([3.0, 0.05, 5.0]), [n] + [1] * (len(stacked.kernel.shape) - 1))
    stacked.kernel.assign(stacked.kernel * scales)
    sigmas = stacked.refine(max_iterations=5000, rtol=1e-7)
    assert np.shape(sigmas) == (n,)
    norms = stacked.operator_norm()
    assert isinstance(norms, list) and len(norms) == n
    normalized = stacked.normalized_kernel().numpy()
    for i in range(n):
        single = make()
        single.build(input_shape)
        single.kernel.assign(stacked.kernel[i])
        single.refine(max_iterations=5000, rtol=1e-7)
        assert float(single.sigma_estimate()) == pytest.approx(float(sigmas[i]), rel=1e-4)
        np.testing.assert_allclose(
            normalized[i], single.normalized_kernel().numpy(), rtol=1e-4, atol=1e-7
        )
        assert norms[i] == pytest.approx(single.operator_norm(), rel=1e-4)
    assert (
        norms[1] < coeff
        and norms[0] == pytest.approx(coeff, rel=1e-3)
        and norms[2] == pytest.approx(coeff, rel=1e-3)
    )
    np.testing.assert_array_equal(normalized[1], stacked.kernel[1].numpy())
    with pytest.raises(ValueError, match="holds 3 kernels"):
        stacked(tf.zeros((1,) + input_shape[1:]))


@pytest.mark.parametrize(
    "make,input_shape,fans",
    [
        (lambda **kw: kir.SpectralDense(32, **kw), (None, 64), (64, 32)),
        (lambda **kw: kir.SpectralConv2D(8, 3, **kw), (None, 6, 6, 4), (9 * 4, 9 * 8)),
    ],
    ids=["dense", "conv"],
)
def test_stacked_kernels_are_initialized_per_slice(make, input_shape, fans):
    """Glorot per slice: a stacked kernel has the variance of an unstacked one, and its slices
    differ.

    Glorot uniform has variance 2 / (fan_in + fan_out); from the stacked shape Keras would take
    8x larger fans. The sample variance of n uniform draws has a relative standard error of
    sqrt(0.8 / n) (kurtosis 1.8), the correlation of two independent slices 1 / sqrt(n): the
    bounds below are 5 standard errors.
    """
    expected = 2.0 / sum(fans)
    stacked = make(stack=8)
    stacked.build(input_shape)
    single = make()
    single.build(input_shape)
    kernel = stacked.kernel.numpy()
    n = kernel[0].size

    def tolerance(draws):
        return 5 * np.sqrt(0.8 / draws)

    assert kernel.var() == pytest.approx(expected, rel=tolerance(8 * n))
    assert single.kernel.numpy().var() == pytest.approx(expected, rel=tolerance(n))
    for i in range(8):
        assert kernel[i].var() == pytest.approx(expected, rel=tolerance(n))
    correlations = np.corrcoef(kernel.reshape(8, -1))[np.triu_indices(8, 1)]
    assert np.max(np.abs(correlations)) < 5 / np.sqrt(n), (
        "the slices of a stack must be independent draws"
    )
    # A seeded initializer gives a reproducible stack (and still distinct slices).
    seeded = [
        make(stack=3, kernel_initializer=keras.initializers.GlorotUniform(seed=7)) for _ in range(2)
    ]
    for layer in seeded:
        layer.build(input_shape)
    np.testing.assert_array_equal(seeded[0].kernel.numpy(), seeded[1].kernel.numpy())
    assert not np.allclose(seeded[0].kernel[0].numpy(), seeded[0].kernel[1].numpy())


# -- the power iteration during training --------------------------------------------------------


def test_training_calls_warm_start_and_stop_by_power_tol():
    layer = built_conv((6, 6, 3), 4, 3, power_iterations=500, power_tol=1e-4)
    layer.refine()
    x = tf.random.normal([2, 6, 6, 3])
    assert int(layer.power_iterations_run) == 0  # refine() is not counted
    # Converged vectors: one iteration (its change is measured against the stored sigma~ of the
    # previous call, extrapolated with the stored rate).
    layer(x, training=True)
    assert int(layer.power_iterations_run) == 1
    assert int(layer.track()) == 1
    assert int(layer.power_iterations_run) == 2
    # A small weight update: a warm start needs a few iterations, a cold start many more.
    layer.kernel.assign(
        layer.kernel + 1e-2 * tf.random.stateless_normal(layer.kernel.shape, seed=[1, 1])
    )
    warm = int(layer.track())
    assert 2 <= warm <= 5
    truth = top_singular_value(conv_matrix(layer, layer.kernel))
    estimate = float(layer.sigma_estimate())
    assert (
        truth * (1 - 2e-4) <= estimate <= truth * (1 + 1e-6)
    )  # an under-estimate within 2 power_tol
    layer.power_v.assign(tf.random.stateless_normal(layer.power_v.shape, seed=[2, 2]))
    cold = int(layer.track())
    assert cold > 2 * warm
    assert int(layer.power_iterations_run) == 2 + warm + cold
    assert truth * (1 - 2e-4) <= float(layer.sigma_estimate()) <= truth * (1 + 1e-6)


def test_update_policy_after_update_leaves_training_calls_to_track():
    """ "after_update" (what the models set): a training call uses the stored vectors as they
    are and counts no iteration; track() advances them. "every_call" iterates in the call."""
    layer = built_conv((6, 6, 3), 4, 3, update_policy="after_update")
    assert layer.update_policy == "after_update"
    layer.power_v.assign(random_unit(layer.power_v.shape, 6))
    x = tf.random.normal([2, 6, 6, 3])
    before = layer.power_v.numpy().copy()
    layer(x, training=True)
    np.testing.assert_array_equal(layer.power_v.numpy(), before)
    assert int(layer.power_iterations_run) == 0
    assert int(layer.track()) > 1
    assert not np.array_equal(layer.power_v.numpy(), before)
    every = built_conv((6, 6, 3), 4, 3)
    assert every.update_policy == "every_call"
    every.power_v.assign(random_unit(every.power_v.shape, 6))
    every(x, training=True)
    assert int(every.power_iterations_run) > 1
    clone = kir.SpectralConv2D.from_config(layer.get_config())
    assert clone.update_policy == "after_update"
    with pytest.raises(ValueError, match="update_policy"):
        kir.SpectralDense(3, update_policy="sometimes")


def test_power_tol_none_runs_exactly_power_iterations():
    layer = built_conv((6, 6, 3), 4, 3, power_iterations=3, power_tol=None)
    x = tf.random.normal([2, 6, 6, 3])
    for call in range(1, 4):
        layer(x, training=True)
        assert int(layer.power_iterations_run) == 3 * call
    assert int(layer.track()) == 3


def test_one_iteration_per_step_converges_from_a_random_start():
    """The paper's regime: one power iteration of one vector per training step, from a random
    start."""
    layer = built_conv((6, 6, 3), 4, 3, power_iterations=1, power_tol=None, power_vectors=1)
    layer.power_v.assign(random_unit(layer.power_v.shape, 3))
    x = tf.random.normal([2, 6, 6, 3])
    truth = top_singular_value(conv_matrix(layer, layer.kernel))
    first = float(layer.sigma_estimate())
    for _ in range(300):
        layer(x, training=True)
    later = float(layer.sigma_estimate())
    assert first < later <= truth * (1 + 1e-5)
    assert later == pytest.approx(truth, rel=1e-4)
    assert int(layer.power_iterations_run) == 300


def test_stacked_track_waits_for_every_slice():
    """One batched power iteration for a stack: it runs until every slice meets power_tol, i.e.
    as long as the slowest unstacked layer would (the others keep improving meanwhile)."""
    layer = kir.SpectralConv2D(3, 3, coeff=0.9, stack=3, power_iterations=200, power_tol=1e-5)
    layer.build((None, 5, 5, 2))
    start = kir.spectral.l2_normalize(
        tf.random.stateless_normal(layer.power_v.shape, seed=[4, 4]), batch_dims=1
    )
    layer.power_v.assign(start)
    iterations = int(layer.track())
    assert iterations == int(layer.power_iterations_run)
    estimates = layer.sigma_estimate().numpy()
    alone = []
    for i in range(3):
        single = kir.SpectralConv2D(3, 3, coeff=0.9, power_iterations=200, power_tol=1e-5)
        single.build((None, 5, 5, 2))
        single.kernel.assign(layer.kernel[i])
        single.power_v.assign(start[i])
        alone.append(int(single.track()))
        # sigma~ grows monotonically with the iterations: at least the unstacked estimate.
        assert estimates[i] >= float(single.sigma_estimate()) * (1 - 1e-6)
        truth = top_singular_value(conv_matrix(layer, layer.kernel[i]))
        assert estimates[i] <= truth * (1 + 1e-5)
    assert iterations == max(alone) > 1
    assert min(alone) < max(alone)  # the slices do converge at different speeds here


def test_vectors_do_not_move_at_inference():
    layer = built_conv((6, 6, 3), 4, 3, power_iterations=1, power_tol=None)
    layer.power_v.assign(random_unit(layer.power_v.shape, 5))
    x = tf.random.normal([2, 6, 6, 3])
    before = layer.power_v.numpy().copy()
    layer(x)
    layer(x, training=False)
    layer.normalized_kernel()
    np.testing.assert_array_equal(before, layer.power_v.numpy())
    assert int(layer.power_iterations_run) == 0
    layer(x, training=True)
    assert not np.array_equal(before, layer.power_v.numpy())


def test_gradient_flows_through_sigma_into_the_kernel():
    """d W~ / d W with the vectors held fixed: W~ = coeff W / ||W v|| (eq. 2), not W / const."""
    layer = kir.SpectralDense(4, coeff=0.5, use_bias=False)
    layer.build((None, 6))
    layer.kernel.assign(3.0 * layer.kernel)
    layer.refine()
    x = tf.random.stateless_normal([3, 6], seed=[6, 6])
    v = tf.constant(layer.power_v.numpy()[:1])  # the top vector: sigma~ = ||v_1 W||
    kernel = tf.Variable(layer.kernel.numpy())
    with tf.GradientTape() as tape:
        reference = tf.reduce_sum(tf.sin(x @ (0.5 * kernel / tf.norm(v @ kernel))))
    expected = tape.gradient(reference, kernel)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(layer(x)))
    (grad,) = tape.gradient(loss, [layer.kernel])
    np.testing.assert_allclose(grad.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)


# -- serialization, graphs, arguments ---------------------------------------------------------


def test_get_config_round_trip():
    layer = kir.SpectralConv2D(
        4,
        (3, 1),
        strides=2,
        padding="valid",
        coeff=0.8,
        power_iterations=2,
        power_tol=None,
        stack=3,
        use_bias=False,
        kernel_initializer="he_normal",
        power_vectors=3,
    )
    clone = kir.SpectralConv2D.from_config(layer.get_config())
    keys = (
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "coeff",
        "power_iterations",
        "power_tol",
        "power_vectors",
        "stack",
        "use_bias",
    )
    for key in keys:
        assert getattr(clone, key) == getattr(layer, key), key
    assert clone.get_config() == layer.get_config()
    dense = kir.SpectralDense(3, coeff=None, power_tol=1e-3)
    clone = kir.SpectralDense.from_config(dense.get_config())
    assert clone.coeff is None and clone.power_tol == 1e-3 and clone.units == 3


def test_keras_save_load_round_trip_restores_outputs_and_vectors(tmp_path):
    inputs = keras.Input((6, 6, 2))
    h = kir.SpectralConv2D(3, 3, coeff=0.9)(inputs)
    h = keras.layers.Flatten()(h)
    outputs = kir.SpectralDense(2, coeff=0.8)(h)
    model = keras.Model(inputs, outputs)
    x = tf.random.normal([4, 6, 6, 2])
    for layer in model.layers:
        if isinstance(layer, kir.SpectralConv2D):
            layer.kernel.assign(layer.kernel * 4.0)  # normalization active: the vectors matter
    for _ in range(3):
        model(x, training=True)
    path = tmp_path / "spectral.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    for a, b in zip(model.non_trainable_weights, loaded.non_trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    names = {w.path.split("/")[-1] for w in loaded.non_trainable_weights}
    assert names == {"power_v", "power_sigma", "power_iterations_run"}


def test_works_in_tf_function_and_trains():
    layer = kir.SpectralConv2D(3, 3, coeff=0.9, power_tol=1e-4)
    x = tf.random.normal([2, 6, 6, 3])
    layer(x)
    layer.kernel.assign(layer.kernel * 3.0)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True) ** 2)
        return tape.gradient(loss, layer.trainable_weights)

    grads = step(x)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert int(layer.power_iterations_run) >= 1

    @tf.function(jit_compile=True)
    def track():
        return layer.track()

    before = int(layer.power_iterations_run)
    assert int(track()) >= 1
    assert int(layer.power_iterations_run) > before
    # Eager and compiled calls agree at inference.
    np.testing.assert_allclose(
        tf.function(lambda t: layer(t))(x).numpy(), layer(x).numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("coeff", [0.0, 1.0, 1.5, -0.2, "0.5", True])
def test_bad_coeff(coeff):
    with pytest.raises(ValueError, match="coeff"):
        kir.SpectralDense(3, coeff=coeff)
    with pytest.raises(ValueError, match="coeff"):
        kir.SpectralConv2D(3, 3, coeff=coeff)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"power_iterations": 0}, "power_iterations"),
        ({"power_iterations": 1.5}, "power_iterations"),
        ({"power_tol": 0.0}, "power_tol"),
        ({"power_tol": -1e-3}, "power_tol"),
        ({"power_tol": float("nan")}, "power_tol"),
        ({"stack": 0}, "stack"),
        ({"power_vectors": 0}, "power_vectors"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": (3, 3, 3)}, "kernel_size"),
        ({"strides": 0}, "strides"),
        ({"padding": "causal"}, "padding"),
        ({"filters": 0}, "filters"),
    ],
)
def test_bad_conv_arguments(kwargs, name):
    arguments = {"filters": 3, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        kir.SpectralConv2D(**arguments)


def test_bad_dense_arguments_and_inputs():
    with pytest.raises(ValueError, match="units"):
        kir.SpectralDense(0)
    with pytest.raises(ValueError, match="rank 4"):
        kir.SpectralConv2D(3, 3)(tf.zeros([2, 6, 3]))
    with pytest.raises(ValueError, match="rank 2"):
        kir.SpectralDense(3)(tf.zeros([2, 6, 3]))
    with pytest.raises(ValueError, match="fully known input shape"):
        kir.SpectralConv2D(3, 3).build((None, None, 6, 3))
