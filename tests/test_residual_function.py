"""keras_iresnet.layers.residual_function: the residual function g of a block or stack -- its
layers (every weight trained), its dropout masks (fixed within one g) and its certified
Lipschitz bound (the product of the exact operator norms)."""

import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet import certify, logdet
from keras_iresnet.testing import explicit_matrix, saturate, top_singular_value


def random(shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 7])


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
    # kernel sizes (3, 1, 3): phi before the 2nd and 3rd layers, and before the 1st with
    # preactivation
    assert len(betas) == ((3 if preactivation else 2) if activation == "lipswish" else 0)
    assert all(tuple(b.shape) == ((num_blocks,) if num_blocks > 1 else ()) for b in betas)


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


def test_residual_function_index():
    stack = kir.InvertibleResidualStack(num_blocks=3, hidden=4, coeff=0.9)
    stack.build((None, 2))
    x = random([2, 2], 18)
    outputs = [stack.residual_function(index=i)(x).numpy() for i in range(3)]
    assert not np.allclose(outputs[0], outputs[1])  # independent slices
    with pytest.raises(ValueError, match="index"):
        stack.residual_function(index=3)


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
                    lambda v, layer=layer, kernel=kernel: layer.apply_operator(
                        v, tf.cast(kernel, tf.float64)
                    ),
                    layer.built_input_shape[1:],
                )
                product *= top_singular_value(matrix)
        assert bound == pytest.approx(product, rel=1e-3)
    assert bounds[0] == pytest.approx(0.8**3, rel=1e-3) and bounds[2] == pytest.approx(
        0.8**3, rel=1e-3
    )
    assert bounds[1] < 0.5 * bounds[0]
