"""Invertible blocks, building layers and the fixed-point inverse (issue 3)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import spectral
from keras_iresnet.inverse import InverseConvergenceWarning, InverseNotConvergedError
from tests.helpers import full_jacobian_logdet


def rel_error(a, b):
    return float(tf.norm(tf.reshape(a - b, [-1])) / tf.norm(tf.reshape(b, [-1])))


def image_flow(coeff, n_blocks=8, hidden=16, **block_kwargs):
    """28x28x1 -> InjectivePad(3) -> Squeeze -> 14x14x16 -> n_blocks blocks."""
    blocks = [
        kir.InvertibleResidualBlock(hidden=hidden, coeff=coeff, **block_kwargs) for _ in range(n_blocks)
    ]
    return kir.InvertibleSequential([kir.InjectivePad(3), kir.Squeeze()] + blocks)


def vector_flow(coeff, n_blocks=8, hidden=32, **block_kwargs):
    return kir.InvertibleSequential(
        [kir.InvertibleResidualBlock(hidden=hidden, coeff=coeff, **block_kwargs) for _ in range(n_blocks)]
    )


def saturate(layer, scale=5.0):
    """Blow up every kernel so that the normalization is active at coeff (the trained regime)."""
    for sub in spectral.spectral_layers(layer):
        sub.kernel.assign(sub.kernel * scale)
    spectral.refine(layer)


@pytest.mark.parametrize("coeff", [0.5, 0.7, 0.9])
def test_reconstruction_images_random_network(coeff):
    flow = image_flow(coeff)
    x = tf.random.uniform([4, 28, 28, 1])
    flow(x)
    saturate(flow)
    x_rec = flow.inverse(flow(x), strict=True)
    assert rel_error(x_rec, x) < 1e-5


@pytest.mark.parametrize("coeff", [0.5, 0.7, 0.9])
def test_reconstruction_vectors_random_network(coeff):
    flow = vector_flow(coeff)
    x = tf.random.normal([16, 6])
    flow(x)
    saturate(flow)
    x_rec = flow.inverse(flow(x), strict=True)
    assert rel_error(x_rec, x) < 1e-5


def test_sequential_inverse_passes_solver_settings_to_blocks():
    flow = image_flow(0.9, n_blocks=2)
    x = tf.random.uniform([2, 28, 28, 1])
    flow(x)
    saturate(flow)
    y = flow(x)
    with pytest.raises(InverseNotConvergedError):
        flow.inverse(y, strict=True, max_iterations=1)
    x_rec = flow.inverse(y, strict=True, solver="anderson", rtol=1e-7, atol=0.0)
    assert rel_error(x_rec, x) < 1e-6
    with pytest.raises(TypeError, match="unexpected inverse arguments"):
        flow.inverse(y, tolerance=1e-3)


def _mean_iterations(coeff, solver="fixed_point"):
    """Iterations to invert a linear residual map whose Jacobian has eigenvalue Lip(g) = coeff.

    With a symmetric positive semi-definite kernel the spectral radius equals the
    norm, so the Banach rate of equation (1) is attained, not just a bound.
    """
    block = kir.InvertibleResidualBlock(hidden=32, coeff=coeff, kernel_sizes=(1,), max_iterations=1000)
    x = tf.random.normal([32, 16])
    block(x)
    (layer,) = block.linear_layers
    a = tf.random.normal([16, 16], seed=4)
    layer.kernel.assign(tf.matmul(a, a, transpose_b=True))
    spectral.refine(block, max_iterations=5000, tol=1e-7)
    _, info = block.inverse(block(x), return_info=True, strict=True, solver=solver, rtol=1e-6)
    return float(tf.reduce_mean(tf.cast(info.iterations, tf.float32)))


def test_banach_rate_fewer_iterations_at_smaller_coeff():
    """Equation (1): the error shrinks like Lip(g)^n; iterations roughly halve from c=0.9 to 0.7."""
    it_07, it_09 = _mean_iterations(0.7), _mean_iterations(0.9)
    assert it_07 < 0.6 * it_09, (it_07, it_09)
    # The iteration count tracks log(tol)/log(c) (here within a factor of two).
    for coeff, iterations in [(0.7, it_07), (0.9, it_09)]:
        predicted = np.log(1e-6) / np.log(coeff)
        assert 0.5 * predicted < iterations < 2 * predicted, (coeff, iterations, predicted)


def test_anderson_needs_fewer_evaluations_at_09():
    anderson, plain = _mean_iterations(0.9, "anderson"), _mean_iterations(0.9, "fixed_point")
    assert anderson < 0.5 * plain, (anderson, plain)


def test_vanilla_block_with_large_weights_fails_to_invert_and_says_so():
    block = kir.InvertibleResidualBlock(hidden=32, coeff=None, kernel_sizes=(1, 1), max_iterations=30)
    x = tf.random.normal([8, 4])
    block(x)
    for layer in block.linear_layers:
        layer.kernel.assign(layer.kernel * 6.0)
    y = block(x)
    with pytest.warns(InverseConvergenceWarning, match="did not converge"):
        x_rec, info = block.inverse(y, return_info=True)
    assert not bool(tf.reduce_all(info.converged))
    assert rel_error(x_rec, x) > 1e-2
    with pytest.raises(InverseNotConvergedError, match="worst relative fixed-point residual"):
        block.inverse(y, strict=True)


def test_inverse_rejects_non_finite():
    block = kir.InvertibleResidualBlock(hidden=8, coeff=0.9)
    y = tf.constant([[1.0, float("nan")]])
    with pytest.raises(ValueError, match="NaN or Inf"):
        block.inverse(y)


def test_inverse_in_tf_function_and_xla_and_graph_strict():
    block = kir.InvertibleResidualBlock(hidden=16, coeff=0.9, kernel_sizes=(3, 1, 3))
    x = tf.random.normal([3, 8, 8, 2])
    y = block(x)

    @tf.function(jit_compile=True)
    def invert_xla(y):
        return block.inverse(y, return_info=True)

    @tf.function
    def invert_graph(y):
        return block.inverse(y, strict=True)

    x_xla, info = invert_xla(y)
    assert rel_error(x_xla, x) < 1e-5
    assert bool(tf.reduce_all(info.converged))
    assert rel_error(invert_graph(y), x) < 1e-5
    with pytest.raises(ValueError, match="NaN or Inf"):
        block.inverse(y * float("inf"))

    @tf.function
    def bad(y):
        return block.inverse(y, strict=True, max_iterations=1)

    with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
        bad(y)


def test_inverse_before_any_forward_pass_and_after_loading(tmp_path):
    blocks = [kir.InvertibleResidualBlock(hidden=16, coeff=0.9) for _ in range(2)]
    flow = kir.InvertibleSequential([kir.Squeeze()] + blocks)
    z = tf.random.normal([2, 14, 14, 16])
    x = flow.inverse(z, strict=True)  # builds from the output shape
    assert x.shape == (2, 28, 28, 4)
    assert rel_error(flow(x), z) < 1e-5

    inputs = keras.Input((6,))
    model = keras.Model(inputs, vector_flow(0.9, n_blocks=3)(inputs))
    path = tmp_path / "flow.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    loaded_flow = loaded.layers[-1]
    zv = tf.random.normal([5, 6])
    xv = loaded_flow.inverse(zv, strict=True)
    assert rel_error(loaded_flow(xv), zv) < 1e-5


def _trained_classifier(coeff, learning_rate, epochs, power_iterations=1, callbacks=(), n_blocks=4):
    flow = image_flow(coeff, n_blocks=n_blocks, hidden=16, power_iterations=power_iterations)
    inputs = keras.Input((28, 28, 1))
    features = flow(inputs)
    logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, logits)
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(128, 28, 28, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) * 20).astype("int32") % 10
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model, flow, x


@pytest.mark.slow
def test_trained_network_still_inverts_and_is_certified():
    """Official repo issue #3: reconstruction error of order 1 after training. Not here."""
    model, flow, x = _trained_classifier(
        0.9, 1e-3, epochs=3, callbacks=[kir.callbacks.RefineSpectralNorm()], n_blocks=8
    )
    x = tf.constant(x[:16])
    x_rec = flow.inverse(flow(x, training=False), strict=True)
    assert rel_error(x_rec, x) < 1e-5
    for block in flow.chain[2:]:
        for layer in block.linear_layers:
            assert spectral.operator_norm(layer) <= 0.9 * (1 + 1e-3)
        assert block.lipschitz_bound() < 1.0


@pytest.mark.slow
def test_lagging_estimate_is_refined_before_inference():
    """1 power iteration per step with a large learning rate lets the estimate lag.

    The guarantee we give: after RefineSpectralNorm (run at the end of fit; the
    keras_iresnet models add it themselves) or spectral.refine(model), every
    normalized layer's *certified* norm is <= coeff * (1 + 1e-3).
    """
    model, flow, _ = _trained_classifier(0.9, 0.05, epochs=2)
    layers = spectral.spectral_layers(flow)
    lagging = max(spectral.operator_norm(layer) for layer in layers)
    spectral.refine(model)
    refined = max(spectral.operator_norm(layer) for layer in layers)
    assert refined <= 0.9 * (1 + 1e-3)
    assert refined <= lagging + 1e-6
    # Record the lag the refinement removes (it exists with this learning rate).
    assert lagging > 0.9 * (1 + 1e-3), lagging


def test_lemma2_bi_lipschitz():
    block = kir.InvertibleResidualBlock(hidden=16, coeff=0.8, kernel_sizes=(3, 1, 3))
    a = tf.random.normal([16, 6, 6, 2])
    b = a + 0.3 * tf.random.normal([16, 6, 6, 2])
    block(a)
    saturate(block)
    lip = block.lipschitz_bound()
    assert lip < 0.8**3 * (1 + 1e-2)

    def norms(t):
        return tf.norm(tf.reshape(t, [16, -1]), axis=1).numpy()

    d_in = norms(a - b)
    d_out = norms(block(a) - block(b))
    assert np.all(d_out <= (1 + lip) * d_in * (1 + 1e-5))
    assert np.all(d_out >= (1 - lip) * d_in * (1 - 1e-5))  # i.e. Lip(F^-1) <= 1/(1-L)
    ya, yb = block(a), block(b)
    assert np.all(norms(block.inverse(ya) - block.inverse(yb)) <= norms(ya - yb) / (1 - lip) * (1 + 1e-4))


@pytest.mark.parametrize(
    "layer,shape",
    [
        (kir.Squeeze(), (2, 4, 4, 2)),
        (kir.ActNorm(), (2, 3, 3, 2)),
        (kir.ActNorm(), (2, 5)),
    ],
)
def test_exact_log_det_of_simple_layers(layer, shape):
    x = tf.random.normal(shape, dtype=tf.float32)
    if isinstance(layer, kir.ActNorm):
        layer.forward_and_log_det(x * 3.0 + 1.0, training=True)  # data-dependent init
        assert float(layer.initialized) == 1.0
    y, log_det = layer.forward_and_log_det(x)
    truth = full_jacobian_logdet(lambda t: layer.forward_and_log_det(t)[0], x)
    np.testing.assert_allclose(log_det.numpy(), truth, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.inverse(y).numpy(), x.numpy(), rtol=1e-5, atol=1e-5)


def test_actnorm_initializes_to_zero_mean_unit_variance():
    layer = kir.ActNorm()
    x = tf.random.normal([64, 4, 4, 3]) * 5 + 2
    y = layer(x, training=True)
    np.testing.assert_allclose(tf.reduce_mean(y, [0, 1, 2]).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(tf.math.reduce_std(y, [0, 1, 2]).numpy(), 1, atol=1e-3)
    before = layer.bias.numpy().copy()
    layer(x * 2, training=True)  # only the first batch initializes
    np.testing.assert_array_equal(before, layer.bias.numpy())


def test_injective_pad_is_injective_with_zero_log_volume():
    layer = kir.InjectivePad(2)
    x = tf.random.normal([2, 3, 3, 1])
    y, log_det = layer.forward_and_log_det(x)
    assert y.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(layer.inverse(y).numpy(), x.numpy())
    # log sqrt(det(J^T J)) of the (non-square) Jacobian: the volume change onto the image.
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
    jac = tf.reshape(tape.batch_jacobian(out, x), [2, 27, 9]).numpy()
    gram_logdet = 0.5 * np.linalg.slogdet(np.swapaxes(jac, 1, 2) @ jac)[1]
    np.testing.assert_allclose(log_det.numpy(), gram_logdet, atol=1e-6)


def test_sequential_log_dets_sum_and_match_full_jacobian():
    flow = kir.InvertibleSequential(
        [kir.ActNorm(), kir.InvertibleResidualBlock(hidden=8, coeff=0.9, logdet="exact"), kir.ActNorm()]
    )
    x = tf.random.normal([3, 4])
    flow.forward_and_log_det(x, training=True)
    y, log_det = flow.forward_and_log_det(x)
    truth = full_jacobian_logdet(flow, x)
    np.testing.assert_allclose(log_det.numpy(), truth, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ["elu", "softplus", "relu", "tanh", "lipswish"])
def test_blocks_save_load_round_trip(tmp_path, activation):
    block = kir.InvertibleResidualBlock(
        hidden=8, coeff=0.8, activation=activation, actnorm=True, dropout=0.1, logdet="power_series"
    )
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, kir.Squeeze()(block(inputs)))
    x = tf.random.normal([2, 4, 4, 2])
    model(x, training=True)
    path = tmp_path / "block.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    loaded_block = loaded.layers[1]
    assert loaded_block.get_config() == block.get_config()


@pytest.mark.parametrize("preactivation", [False, True])
@pytest.mark.parametrize("activation", ["elu", "lipswish"])
def test_every_trainable_block_weight_gets_a_gradient(activation, preactivation):
    """No dead weights: a LipSwish beta exists only where the activation is applied."""
    block = kir.InvertibleResidualBlock(
        hidden=8, coeff=0.8, activation=activation, preactivation=preactivation, actnorm=True, logdet="exact"
    )
    x = tf.random.normal([4, 3], seed=0)
    block(x, training=True)
    with tf.GradientTape() as tape:
        y, log_det = block.forward_and_log_det(x, training=True)
        loss = tf.reduce_sum(y**2) - tf.reduce_sum(log_det)
    grads = tape.gradient(loss, block.trainable_variables)
    missing = [v.path for v, g in zip(block.trainable_variables, grads) if g is None]
    assert not missing, missing
    betas = [v for v in block.trainable_variables if "beta_raw" in v.path]
    # kernel sizes (3, 1, 3): phi before the 2nd and 3rd layers, and before the 1st with preactivation
    assert len(betas) == ((3 if preactivation else 2) if activation == "lipswish" else 0)


def test_lipswish_is_one_lipschitz():
    act = kir.LipSwish()
    x = tf.linspace(-10.0, 10.0, 20001)
    act.build(x.shape)
    for beta_raw in [-3.0, 0.0, 2.0, 6.0]:
        act.beta_raw.assign(beta_raw)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = act(x)
        assert float(tf.reduce_max(tf.abs(tape.gradient(y, x)))) <= 1.0


def test_block_trains_with_fit_and_under_mirrored_strategy(mirrored_strategy):
    with mirrored_strategy.scope():
        inputs = keras.Input((8, 8, 1))
        flow = kir.InvertibleSequential(
            [kir.InjectivePad(1), kir.Squeeze(), kir.InvertibleResidualBlock(hidden=8, coeff=0.9, actnorm=True)]
        )
        outputs = keras.layers.Dense(3)(keras.layers.Flatten()(flow(inputs)))
        model = keras.Model(inputs, outputs)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype("float32")
    y = np.arange(32) % 3
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    block = flow.chain[-1]
    assert block.actnorm.initialized.numpy() == 1.0
    # Power-iteration vectors and ActNorm statistics agree on both replicas.
    for variable in [block.actnorm.bias, block.actnorm.log_scale] + [
        layer.power_v for layer in block.linear_layers
    ]:
        replicas = variable.value.values
        assert len(replicas) == 2
        np.testing.assert_allclose(replicas[0].numpy(), replicas[1].numpy(), rtol=1e-6)


def test_bad_block_arguments():
    with pytest.raises(ValueError, match="coeff"):
        kir.InvertibleResidualBlock(coeff=1.2)
    with pytest.raises(ValueError, match="activation"):
        kir.InvertibleResidualBlock(activation="sigmoid_x")
    with pytest.raises(ValueError, match="solver"):
        kir.InvertibleResidualBlock(solver="newton")
    with pytest.raises(ValueError, match="dropout"):
        kir.InvertibleResidualBlock(dropout=1.0)
    with pytest.raises(ValueError, match="rank|input shape"):
        kir.InvertibleResidualBlock()(tf.zeros([2, 3, 4]))
    with pytest.raises(ValueError, match="divisible"):
        kir.Squeeze()(tf.zeros([1, 5, 4, 1]))
