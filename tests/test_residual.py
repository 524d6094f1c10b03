"""keras_iresnet.layers.residual: invertible residual blocks and stacks (section 2):
reconstruction, Lemma 2, the Banach rate of the inverse, the stacked-weight equivalence with a
chain of blocks, exact log-dets, the inverse contract, serialization."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import certify
from keras_iresnet.inverse import InverseConvergenceWarning, InverseNotConvergedError
from keras_iresnet.testing import full_jacobian_log_det, saturate


def rel_error(a, b):
    return float(tf.norm(tf.reshape(a - b, [-1])) / tf.norm(tf.reshape(b, [-1])))


def image_flow(coeff, num_blocks=6, hidden=8, **kwargs):
    """8x8x1 -> InjectivePad(3) -> Squeeze -> 4x4x16 -> a stack of num_blocks blocks."""
    stack = kir.InvertibleResidualStack(num_blocks=num_blocks, hidden=hidden, coeff=coeff, **kwargs)
    return kir.InvertibleSequential([kir.InjectivePad(3), kir.Squeeze(), stack])


def vector_flow(coeff, num_blocks=8, hidden=16, **kwargs):
    return kir.InvertibleResidualStack(num_blocks=num_blocks, hidden=hidden, coeff=coeff, **kwargs)


def random(shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 7])


# -- reconstruction ---------------------------------------------------------------------------


@pytest.mark.parametrize("coeff", [0.5, 0.7, 0.9])
def test_reconstruction_images_random_network(coeff):
    flow = image_flow(coeff)
    x = tf.random.stateless_uniform([4, 8, 8, 1], seed=[1, 1])
    flow(x)
    saturate(flow)
    y = flow(x)
    assert rel_error(y, flow.chain[1](flow.chain[0](x))) > 1e-2  # the blocks do something
    x_rec = flow.inverse(y, strict=True)
    # rtol 1e-6 per block; the Banach factor 1 / (1 - Lip) <= 3.7 at coeff 0.9 (Lip <= 0.73).
    assert rel_error(x_rec, x) < 1e-5


@pytest.mark.parametrize("coeff", [0.5, 0.7, 0.9])
def test_reconstruction_vectors_random_network(coeff):
    flow = vector_flow(coeff)
    x = random([16, 6], 2)
    flow(x)
    saturate(flow)
    x_rec = flow.inverse(flow(x), strict=True)
    assert rel_error(x_rec, x) < 1e-5


def test_lemma2_bi_lipschitz():
    block = kir.InvertibleResidualBlock(hidden=8, coeff=0.8, kernel_sizes=(3, 1, 3))
    a = random([16, 6, 6, 2], 3)
    b = a + 0.3 * random([16, 6, 6, 2], 4)
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
    assert np.all(
        norms(block.inverse(ya) - block.inverse(yb)) <= norms(ya - yb) / (1 - lip) * (1 + 1e-4)
    )


def _mean_iterations(coeff, solver="fixed_point"):
    """Iterations to invert a linear block whose Jacobian has eigenvalue Lip(g) = coeff."""
    block = kir.InvertibleResidualBlock(
        hidden=32, coeff=coeff, kernel_sizes=(1,), max_iterations=1000
    )
    x = random([32, 16], 5)
    block(x)
    (layer,) = block.linear_layers
    a = random([16, 16], 6)
    layer.kernel.assign(tf.matmul(a, a, transpose_b=True))  # symmetric PSD: spectral radius = norm
    certify.refine(block, max_iterations=5000, rtol=1e-7)
    _, info = block.inverse(
        block(x), return_info=True, strict=True, solver=solver, rtol=1e-6, atol=0.0
    )
    return float(tf.reduce_mean(tf.cast(info.iterations, tf.float32)))


def test_banach_rate_of_a_normalized_block():
    """Equation (1) through a real block: its normalization puts Lip(g) at coeff exactly."""
    it_07, it_09 = _mean_iterations(0.7), _mean_iterations(0.9)
    assert it_07 < 0.6 * it_09, (it_07, it_09)
    for coeff, iterations in [(0.7, it_07), (0.9, it_09)]:
        predicted = np.log(1e-6) / np.log(coeff)
        assert 0.5 * predicted < iterations < 2 * predicted, (coeff, iterations, predicted)
    assert _mean_iterations(0.9, "anderson") < 0.5 * it_09


# -- a stack is a chain of blocks ----------------------------------------------------------------


def copy_stack_into_blocks(stack, blocks):
    """Slice i of every stacked variable into block i (the variables are created in the same
    order)."""
    for i, block in enumerate(blocks):
        assert len(block.variables) == len(stack.variables)
        for stacked, single in zip(stack.variables, block.variables):
            assert stacked.path.split("/")[-1] == single.path.split("/")[-1]
            single.assign(stacked if tuple(stacked.shape) == tuple(single.shape) else stacked[i])


STACK_CASES = [
    ((4,), dict(activation="lipswish", actnorm="position")),
    ((4,), dict(activation="elu", actnorm="channel", preactivation=True)),
    ((4, 4, 2), dict(activation="lipswish", actnorm="channel", kernel_sizes=(3, 1, 3))),
    ((4, 4, 2), dict(activation="softplus", actnorm="position", kernel_sizes=(3, 3))),
]


@pytest.mark.parametrize("shape,kwargs", STACK_CASES)
def test_stack_equals_the_chain_of_blocks(shape, kwargs):
    n = 3
    kwargs = dict(hidden=6, coeff=0.8, logdet="exact", **kwargs)
    stack = kir.InvertibleResidualStack(num_blocks=n, **kwargs)
    stack.build((None,) + shape)
    saturate(stack, scale=3.0)
    blocks = [kir.InvertibleResidualBlock(**kwargs) for _ in range(n)]
    for block in blocks:
        block.build((None,) + shape)
    copy_stack_into_blocks(stack, blocks)
    chain = kir.InvertibleSequential(blocks)
    x = random((5,) + shape, 8) * 2.0 + 0.5

    # A training call: the power iterations advance and the ActNorms initialize, block by block.
    y_stack, ld_stack = stack.forward_and_log_det(x, training=True)
    y_chain, ld_chain = chain.forward_and_log_det(x, training=True)
    np.testing.assert_allclose(y_stack.numpy(), y_chain.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ld_stack.numpy(), ld_chain.numpy(), rtol=1e-6, atol=1e-5)
    assert float(stack.actnorm.initialized) == 1.0
    for i, block in enumerate(blocks):
        # Batch statistics of inputs of order 2: float32 rounding of the means is ~1e-7 absolute.
        np.testing.assert_allclose(
            stack.actnorm.bias[i].numpy(), block.actnorm.bias.numpy(), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            stack.actnorm.log_scale[i].numpy(),
            block.actnorm.log_scale.numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
        # The power iteration advanced in both: the same normalized kernels.
        for stacked, single in zip(stack.linear_layers, block.linear_layers):
            np.testing.assert_allclose(
                stacked.normalized_kernel()[i].numpy(),
                single.normalized_kernel().numpy(),
                rtol=1e-5,
                atol=1e-6,
            )
    assert (
        np.std(stack.actnorm.bias.numpy(), axis=0).max() > 1e-3
    )  # the blocks got their own statistics

    # Inference: forward, exact log-det, inverse.
    y_stack, ld_stack = stack.forward_and_log_det(x)
    y_chain, ld_chain = chain.forward_and_log_det(x)
    np.testing.assert_allclose(y_stack.numpy(), y_chain.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ld_stack.numpy(), ld_chain.numpy(), rtol=1e-6, atol=1e-5)
    x_stack, info_stack = stack.inverse(y_stack, return_info=True, strict=True)
    x_chain, info_chain = chain.inverse(y_stack, return_info=True, strict=True)
    np.testing.assert_allclose(x_stack.numpy(), x_chain.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(info_stack.iterations.numpy(), info_chain.iterations.numpy())
    assert rel_error(x_stack, x) < 1e-5

    # Gradients of a density-like loss: slice i of each stacked gradient is block i's gradient.
    def gradients(layer, variables):
        with tf.GradientTape() as tape:
            y, log_det = layer.forward_and_log_det(x)
            loss = tf.reduce_sum(y**2) - tf.reduce_sum(log_det)
        return tape.gradient(loss, variables)

    stack_grads = gradients(stack, stack.trainable_variables)
    chain_grads = gradients(chain, [block.trainable_variables for block in blocks])
    for j, grad in enumerate(stack_grads):
        for i in range(n):
            expected = chain_grads[i][j].numpy()
            np.testing.assert_allclose(
                grad[i].numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max() + 1e-7
            )


@pytest.mark.parametrize(
    "shape,kwargs",
    [
        ((3,), dict(actnorm="channel", activation="lipswish")),
        ((5,), dict(actnorm="position", activation="elu", preactivation=True)),
        ((4, 4, 2), dict(actnorm="channel", activation="elu", kernel_sizes=(3, 1, 3))),
        ((3, 3, 2), dict(actnorm="position", activation="lipswish", kernel_sizes=(3, 3))),
    ],
)
def test_stack_log_det_matches_full_jacobian(shape, kwargs):
    stack = kir.InvertibleResidualStack(num_blocks=3, hidden=8, coeff=0.9, logdet="exact", **kwargs)
    stack.build((None,) + shape)
    saturate(stack)
    x = random((3,) + shape, 9)
    stack.forward_and_log_det(x * 3.0 + 1.0, training=True)  # data-dependent ActNorm initialization
    assert np.abs(stack.actnorm.log_scale.numpy()).max() > 0.1
    _, log_det = stack.forward_and_log_det(x)
    # float32 Jacobians of a 3-block network: log-dets of order 1-10 agree to ~1e-5.
    np.testing.assert_allclose(
        log_det.numpy(), full_jacobian_log_det(stack, x), rtol=1e-4, atol=1e-4
    )


# -- dropout under XLA ---------------------------------------------------------------------------


@pytest.mark.slow  # XLA compiles a training step of a stack (the cost of any such step on CPU)
def test_dropout_training_step_with_exact_log_det_under_xla():
    """Dropout masks inside the stack's while loop, the exact log-det's copies, a gradient step:
    under XLA."""
    stack = kir.InvertibleResidualStack(
        num_blocks=2,
        hidden=4,
        coeff=0.9,
        dropout=0.3,
        logdet="exact",
        kernel_sizes=(1, 1),
        power_iterations=2,
    )
    x = random([4, 3], 23)
    stack(x)
    optimizer = keras.optimizers.SGD(1e-2)

    @tf.function(jit_compile=True)
    def step(t):
        with tf.GradientTape() as tape:
            y, log_det = stack.forward_and_log_det(t, training=True)
            loss = tf.reduce_mean(y**2) - tf.reduce_mean(log_det)
        grads = tape.gradient(loss, stack.trainable_variables)
        optimizer.apply_gradients(zip(grads, stack.trainable_variables))
        return loss, grads

    before = [v.numpy().copy() for v in stack.trainable_variables]
    loss, grads = step(x)
    assert np.isfinite(float(loss)) and all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, stack.trainable_variables))


# -- the inverse ---------------------------------------------------------------------------------


def test_vanilla_block_with_large_weights_fails_to_invert_and_says_so():
    block = kir.InvertibleResidualBlock(
        hidden=32, coeff=None, kernel_sizes=(1, 1), max_iterations=30
    )
    x = random([8, 4], 13)
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
    with pytest.raises(ValueError, match="NaN or Inf"):
        block.inverse(tf.constant([[1.0, float("nan")]]))


def test_inverse_in_tf_function_and_xla_and_graph_strict():
    stack = kir.InvertibleResidualStack(num_blocks=2, hidden=8, coeff=0.9, kernel_sizes=(3, 1, 3))
    x = random([3, 6, 6, 2], 14)
    stack(x)
    saturate(stack)
    y = stack(x)

    @tf.function(jit_compile=True)
    def invert_xla(y):
        return stack.inverse(y, return_info=True)

    @tf.function
    def invert_graph(y):
        return stack.inverse(y, strict=True)

    x_xla, info = invert_xla(y)
    assert rel_error(x_xla, x) < 1e-5
    assert bool(tf.reduce_all(info.converged))
    assert np.all(info.iterations.numpy() > 2)  # summed over the two blocks
    assert rel_error(invert_graph(y), x) < 1e-5
    with pytest.raises(ValueError, match="NaN or Inf"):
        stack.inverse(y * float("inf"))

    @tf.function
    def bad(y):
        return stack.inverse(y, strict=True, max_iterations=1)

    with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
        bad(y)


def test_inverse_before_any_forward_pass_and_after_loading(tmp_path):
    flow = kir.InvertibleSequential(
        [kir.Squeeze(), kir.InvertibleResidualStack(num_blocks=2, hidden=8, coeff=0.9)]
    )
    z = random([2, 4, 4, 8], 15)
    x = flow.inverse(z, strict=True)  # builds from the output shape
    assert x.shape == (2, 8, 8, 2)
    assert rel_error(flow(x), z) < 1e-5

    inputs = keras.Input((6,))
    stack = vector_flow(0.9, num_blocks=3, hidden=8)
    model = keras.Model(inputs, stack(inputs))
    saturate(stack)
    path = tmp_path / "flow.keras"
    model.save(path)
    loaded = keras.models.load_model(path).layers[-1]
    assert isinstance(loaded, kir.InvertibleResidualStack) and loaded.num_blocks == 3
    zv = random([5, 6], 16)
    xv = loaded.inverse(zv, strict=True)
    assert rel_error(loaded(xv), zv) < 1e-5
    np.testing.assert_allclose(xv.numpy(), stack.inverse(zv).numpy(), rtol=1e-6, atol=1e-6)


def test_inverse_settings_contract():
    stack = kir.InvertibleResidualStack(
        num_blocks=2, hidden=8, coeff=0.9, max_iterations=1, strict=True
    )
    x = random([4, 5], 17)
    stack(x)
    saturate(stack)
    y = stack(x)
    # The layer's own defaults: one iteration, strict.
    assert stack.inverse_defaults.max_iterations == 1 and stack.inverse_defaults.strict
    with pytest.raises(InverseNotConvergedError):
        stack.inverse(y)
    # Per call: any InverseSettings field.
    x_rec = stack.inverse(
        y, solver="anderson", rtol=1e-7, atol=0.0, max_iterations=100, anderson_memory=3
    )
    assert rel_error(x_rec, x) < 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InverseConvergenceWarning)
        stack.inverse(y, strict=False)  # warns, does not raise
    x_rec, info = stack.inverse(y, return_info=True, max_iterations=200)
    assert bool(tf.reduce_all(info.converged)) and np.all(info.residual.numpy() < 1e-5)
    # Unknown names and bad values raise at once.
    with pytest.raises(TypeError, match="unexpected inverse settings"):
        stack.inverse(y, tolerance=1e-3)
    with pytest.raises(ValueError, match="solver"):
        stack.inverse(y, solver="newton")
    with pytest.raises(ValueError, match="max_iterations"):
        stack.inverse(y, max_iterations=0)
    # Through a chain the settings reach every block.
    chain = kir.InvertibleSequential([kir.ActNorm(), stack])
    with pytest.raises(InverseNotConvergedError):
        chain.inverse(y, max_iterations=1)
    assert rel_error(chain.inverse(y, max_iterations=200, rtol=1e-7, atol=0.0), x) < 1e-6
    with pytest.raises(TypeError, match="unexpected inverse settings"):
        chain.inverse(y, tolerance=1e-3)
    # A block is one block.
    with pytest.raises(ValueError, match="InvertibleResidualStack"):
        kir.InvertibleResidualBlock(num_blocks=3)
    assert kir.InvertibleResidualBlock(num_blocks=1).num_blocks == 1


# -- serialization, distribution, arguments -----------------------------------------------------


@pytest.mark.parametrize("activation", ["elu", "softplus", "relu", "tanh", "lipswish"])
def test_save_load_round_trip(tmp_path, activation):
    stack = kir.InvertibleResidualStack(
        num_blocks=2,
        hidden=8,
        coeff=0.8,
        activation=activation,
        actnorm=True,
        dropout=0.1,
        logdet="power_series",
        solver="anderson",
        max_iterations=50,
        seed=3,
    )
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, kir.Squeeze()(stack(inputs)))
    x = random([2, 4, 4, 2], 19)
    model(x, training=True)
    path = tmp_path / "stack.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    loaded_stack = loaded.layers[1]
    assert loaded_stack.get_config() == stack.get_config()
    assert loaded_stack.inverse_defaults == stack.inverse_defaults
    assert float(loaded_stack.actnorm.initialized) == 1.0


def test_stack_trains_with_keras_fit_under_mirrored_strategy(mirrored_strategy):
    """A plain keras.Model around a stack: fit under MirroredStrategy, replicas stay identical."""
    with mirrored_strategy.scope():
        inputs = keras.Input((8, 8, 1))
        stack = kir.InvertibleResidualStack(
            num_blocks=2, hidden=8, coeff=0.9, actnorm=True, activation="lipswish"
        )
        flow = kir.InvertibleSequential([kir.InjectivePad(1), kir.Squeeze(), stack])
        outputs = keras.layers.Dense(3)(keras.layers.Flatten()(flow(inputs)))
        model = keras.Model(inputs, outputs)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    y = np.arange(16) % 3
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert stack.actnorm.initialized.numpy() == 1.0
    assert np.abs(stack.actnorm.log_scale.numpy()).max() > 0  # initialized from data, then trained
    # Power-iteration vectors and ActNorm statistics agree on both replicas.
    for variable in [stack.actnorm.bias, stack.actnorm.log_scale] + [
        layer.power_v for layer in stack.linear_layers
    ]:
        replicas = variable.value.values
        assert len(replicas) == 2
        np.testing.assert_allclose(replicas[0].numpy(), replicas[1].numpy(), rtol=1e-6)
    assert all(int(layer.power_iterations_run.numpy()) > 0 for layer in stack.linear_layers)


def test_bad_block_arguments():
    with pytest.raises(ValueError, match="coeff"):
        kir.InvertibleResidualBlock(coeff=1.2)
    with pytest.raises(ValueError, match="activation"):
        kir.InvertibleResidualBlock(activation="sigmoid_x")
    with pytest.raises(ValueError, match="solver"):
        kir.InvertibleResidualBlock(solver="newton")
    with pytest.raises(ValueError, match="dropout"):
        kir.InvertibleResidualBlock(dropout=1.0)
    with pytest.raises(ValueError, match="num_blocks"):
        kir.InvertibleResidualStack(num_blocks=0)
    with pytest.raises(ValueError, match="hidden"):
        kir.InvertibleResidualStack(hidden=0)
    with pytest.raises(ValueError, match="kernel_sizes"):
        kir.InvertibleResidualStack(kernel_sizes=())
    with pytest.raises(ValueError, match="kernel_sizes"):
        kir.InvertibleResidualStack(kernel_sizes=(3, 0))
    with pytest.raises(ValueError, match="actnorm"):
        kir.InvertibleResidualStack(actnorm="batch")
    with pytest.raises(ValueError, match="power_tol"):
        kir.InvertibleResidualStack(power_tol=0.0)
    with pytest.raises(ValueError, match="logdet"):
        kir.InvertibleResidualStack(logdet="lanczos")
    with pytest.raises(ValueError, match="seed"):
        kir.InvertibleResidualStack(seed=-1)
    with pytest.raises(ValueError, match="rank|input shape"):
        kir.InvertibleResidualBlock()(tf.zeros([2, 3, 4]))
