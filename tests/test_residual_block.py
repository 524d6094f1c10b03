"""Invertible residual blocks and stacks (section 2): reconstruction, the stacked-weight
equivalence with a chain of blocks, exact log-dets, gradients, the inverse contract."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import certify, logdet
from keras_iresnet.inverse import InverseConvergenceWarning, InverseNotConvergedError
from tests.helpers import explicit_matrix, full_jacobian_logdet, top_singular_value


def rel_error(a, b):
    return float(tf.norm(tf.reshape(a - b, [-1])) / tf.norm(tf.reshape(b, [-1])))


def saturate(layer, scale=5.0):
    """Blow up every kernel so that the normalization is active at coeff (the trained regime)."""
    for sub in certify.spectral_layers(layer):
        sub.kernel.assign(sub.kernel * scale)
    certify.refine(layer)


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
    """Slice i of every stacked variable into block i (the variables are created in the same order)."""
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
        log_det.numpy(), full_jacobian_logdet(stack, x), rtol=1e-4, atol=1e-4
    )


# -- gradients, activations, dropout ---------------------------------------------------------------


@pytest.mark.parametrize("num_blocks", [1, 3])
@pytest.mark.parametrize("preactivation", [False, True])
@pytest.mark.parametrize("activation", ["elu", "lipswish"])
def test_every_trainable_weight_gets_a_gradient(num_blocks, activation, preactivation):
    """No dead weights: a LipSwish beta exists only where the activation is applied."""
    cls = kir.InvertibleResidualBlock if num_blocks == 1 else kir.InvertibleResidualStack
    extra = {} if num_blocks == 1 else {"num_blocks": num_blocks}
    layer = cls(
        hidden=8,
        coeff=0.8,
        activation=activation,
        preactivation=preactivation,
        actnorm=True,
        logdet="exact",
        **extra,
    )
    x = random([4, 3], 10)
    layer(x, training=True)
    with tf.GradientTape() as tape:
        y, log_det = layer.forward_and_log_det(x, training=True)
        loss = tf.reduce_sum(y**2) - tf.reduce_sum(log_det)
    grads = tape.gradient(loss, layer.trainable_variables)
    missing = [v.path for v, g in zip(layer.trainable_variables, grads) if g is None]
    assert not missing, missing
    dead = [v.path for v, g in zip(layer.trainable_variables, grads) if not np.any(g.numpy())]
    assert not dead, dead
    if num_blocks > 1:  # every slice of every stacked weight moves
        for v, g in zip(layer.trainable_variables, grads):
            assert all(np.any(g[i].numpy()) for i in range(num_blocks)), v.path
    betas = [v for v in layer.trainable_variables if "beta_raw" in v.path]
    # kernel sizes (3, 1, 3): phi before the 2nd and 3rd layers, and before the 1st with preactivation
    assert len(betas) == ((3 if preactivation else 2) if activation == "lipswish" else 0)
    assert all(tuple(b.shape) == ((num_blocks,) if num_blocks > 1 else ()) for b in betas)


def test_lipswish_is_one_lipschitz_and_starts_at_the_reference_beta():
    act = kir.LipSwish()
    x = tf.linspace(-10.0, 10.0, 20001)
    act.build(x.shape)
    assert float(act.beta) == pytest.approx(math.log1p(math.exp(0.5)), rel=1e-6)  # softplus(0.5)
    np.testing.assert_allclose(
        act(x).numpy(), (x * tf.sigmoid(0.974077 * x) / 1.1).numpy(), rtol=1e-5, atol=1e-7
    )
    for beta_raw in [-3.0, 0.0, 2.0, 6.0]:
        act.beta_raw.assign(beta_raw)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = act(x)
        slopes = tape.gradient(y, x)
        assert float(tf.reduce_max(tf.abs(slopes))) <= 1.0
    # The bound is nearly attained (max slope of x sigmoid(x) is ~1.0998): 1.1 is tight.
    assert float(tf.reduce_max(tf.abs(slopes))) > 0.99
    stacked = kir.LipSwish(stack=4, beta_init=2.0)
    stacked.build((None, 3))
    np.testing.assert_allclose(stacked.beta.numpy(), [2.0] * 4, rtol=1e-6)
    with pytest.raises(ValueError, match="holds 4 betas"):
        stacked(tf.zeros([1, 3]))
    with pytest.raises(ValueError, match="beta_init"):
        kir.LipSwish(beta_init=0.0)


def test_dropout_masks_are_fixed_per_call_and_off_at_inference():
    block = kir.InvertibleResidualBlock(hidden=32, coeff=0.9, dropout=0.5, logdet="exact")
    x = random([4, 3], 11)
    block(x)
    saturate(block)
    # Inference: no dropout, deterministic.
    np.testing.assert_array_equal(block(x).numpy(), block(x).numpy())
    plain = block.residual_function(training=False)
    np.testing.assert_allclose(block(x).numpy(), (x + plain(x)).numpy(), rtol=1e-6)
    # Training: fresh masks per call, fixed within one residual function.
    assert not np.allclose(block(x, training=True).numpy(), block(x, training=True).numpy())
    g = block.residual_function(training=True)
    gx = g(x)
    np.testing.assert_array_equal(g(x).numpy(), gx.numpy())
    assert not np.allclose(gx.numpy(), plain(x).numpy())
    # The exact log-det evaluates g on d copies of each example: every copy must see its
    # example's mask, so it is the log-det of the same function g (compare with VJPs + slogdet).
    _, log_det = logdet.Exact()(g, x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = g(x)
    jac = tape.batch_jacobian(out, x).numpy().astype(np.float64)
    np.testing.assert_allclose(
        log_det.numpy(), np.linalg.slogdet(np.eye(3) + jac)[1], rtol=1e-5, atol=1e-5
    )


def test_training_forward_with_dropout_and_exact_log_det_is_one_function():
    """forward_and_log_det(training=True) with dropout: y and the log-det come from the same g
    (the same masks for the output and for every column of the Jacobian)."""
    block = kir.InvertibleResidualBlock(
        hidden=32, coeff=0.9, dropout=0.5, logdet="exact", power_tol=None, power_iterations=1
    )
    x = random([4, 3], 12)
    block(x)
    saturate(block)
    state = [(v, v.numpy()) for v in block.non_trainable_variables]
    tf.random.set_seed(99)
    y, log_det = block.forward_and_log_det(x, training=True)
    for variable, value in state:  # undo the power-iteration step
        variable.assign(value)
    tf.random.set_seed(99)  # the same dropout draws
    g = block.residual_function(training=True)
    np.testing.assert_allclose(y.numpy(), (x + g(x)).numpy(), rtol=1e-6, atol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = g(x)
    jac = tape.batch_jacobian(out, x).numpy().astype(np.float64)
    np.testing.assert_allclose(
        log_det.numpy(), np.linalg.slogdet(np.eye(3) + jac)[1], rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow  # ~12 s: XLA compiles a training step of a stack (the cost of any such step on CPU)
def test_dropout_training_step_with_exact_log_det_under_xla():
    """Dropout masks inside the stack's while loop, the exact log-det's copies, a gradient step: XLA."""
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


def test_residual_function_index():
    stack = kir.InvertibleResidualStack(num_blocks=3, hidden=4, coeff=0.9)
    stack.build((None, 2))
    x = random([2, 2], 18)
    outputs = [stack.residual_function(index=i)(x).numpy() for i in range(3)]
    assert not np.allclose(outputs[0], outputs[1])  # independent slices
    with pytest.raises(ValueError, match="index"):
        stack.residual_function(index=3)


# -- certified bounds, serialization, arguments -------------------------------------------------


@pytest.mark.parametrize("shape", [(5,), (5, 5, 2)])
def test_lipschitz_bounds_are_products_of_operator_norms(shape):
    stack = kir.InvertibleResidualStack(num_blocks=3, hidden=6, coeff=0.8, kernel_sizes=(3, 1, 3))
    stack.build((None,) + shape)
    saturate(stack, scale=3.0)
    # Slice 1 of the first layer below coeff: its bound is smaller.
    first = stack.linear_layers[0]
    first.kernel.assign(tf.tensor_scatter_nd_update(first.kernel, [[1]], first.kernel[1:2] * 1e-3))
    certify.refine(stack)
    bounds = stack.lipschitz_bounds()
    assert len(bounds) == 3
    for i, bound in enumerate(bounds):
        product = 1.0
        for layer in stack.linear_layers:
            kernel = layer.normalized_kernel()[i]
            if len(shape) == 1:
                product *= np.linalg.svd(kernel.numpy().astype(np.float64), compute_uv=False)[0]
            else:
                matrix = explicit_matrix(
                    lambda v: layer.apply_operator(v, tf.cast(kernel, tf.float64)),
                    layer.built_input_shape[1:],
                )
                product *= top_singular_value(matrix)
        assert bound == pytest.approx(product, rel=1e-3)
    assert bounds[0] == pytest.approx(0.8**3, rel=1e-3) and bounds[2] == pytest.approx(
        0.8**3, rel=1e-3
    )
    assert bounds[1] < 0.5 * bounds[0]


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
