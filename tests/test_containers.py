"""keras_iresnet.layers.containers: InvertibleSequential and FactorOut (multi-scale), against the
full Jacobian and the stages run by hand."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet.testing import full_jacobian_log_det, saturate


def random(shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 3])


def two_scale_factor_out():
    """4x4x1 -> Squeeze -> 2x2x4 -> blocks -> half leaves -> Squeeze -> 1x1x8 -> blocks:
    latents [batch, 16]."""
    return kir.FactorOut(
        [
            kir.InvertibleSequential(
                [
                    kir.Squeeze(),
                    kir.InvertibleResidualBlock(hidden=4, coeff=0.9, kernel_sizes=(3, 1)),
                ]
            ),
            kir.InvertibleSequential(
                [
                    kir.Squeeze(),
                    kir.InvertibleResidualBlock(hidden=4, coeff=0.9, kernel_sizes=(1, 1)),
                ]
            ),
        ]
    )


# -- InvertibleSequential --------------------------------------------------------------------------


def test_sequential_log_dets_sum_and_match_full_jacobian():
    flow = kir.InvertibleSequential(
        [
            kir.ActNorm(),
            kir.InvertibleResidualBlock(hidden=8, coeff=0.9, logdet="exact"),
            kir.ActNorm(),
        ]
    )
    x = random([3, 4], 17)
    flow.forward_and_log_det(x * 3.0, training=True)
    y, log_det = flow.forward_and_log_det(x)
    parts = []
    h = x
    for layer in flow.chain:
        h, part = layer.forward_and_log_det(h)
        parts.append(part.numpy())
    np.testing.assert_allclose(log_det.numpy(), np.sum(parts, axis=0), rtol=1e-6)
    np.testing.assert_allclose(
        log_det.numpy(), full_jacobian_log_det(flow, x), rtol=1e-4, atol=1e-4
    )
    x_rec, info = flow.inverse(y, return_info=True, strict=True)
    np.testing.assert_allclose(x_rec.numpy(), x.numpy(), atol=1e-5)
    _, block_info = flow.chain[1].inverse(flow.chain[2].inverse(y), return_info=True)
    np.testing.assert_array_equal(
        info.iterations.numpy(), block_info.iterations.numpy()
    )  # ActNorm adds none
    with pytest.raises(TypeError, match="InvertibleLayer"):
        kir.InvertibleSequential([keras.layers.Dense(3)])


# -- FactorOut -------------------------------------------------------------------------------------


def test_factor_out_latent_pieces_inverse_and_log_det():
    flow = two_scale_factor_out()
    flow.build((None, 4, 4, 1))
    saturate(flow, scale=4.0)
    assert flow.compute_output_shape((None, 4, 4, 1)) == (None, 16)
    assert flow.splits == [(2, (2, 2, 2))] and flow.final_shape == (1, 1, 8)
    x = random([3, 4, 4, 1], 9)
    z, log_det = flow.forward_and_log_det(x)
    assert z.shape == (3, 16)
    # The pieces: first what left after stage 0 (its last 2 of 4 channels), then the last stage.
    h = flow.stages[0](x)
    np.testing.assert_allclose(z[:, :8].numpy(), tf.reshape(h[..., 2:], [3, -1]).numpy(), rtol=1e-6)
    last = flow.stages[1](h[..., :2])
    np.testing.assert_allclose(z[:, 8:].numpy(), tf.reshape(last, [3, -1]).numpy(), rtol=1e-6)
    # Exact log-det (the split is a permutation) against the full 16x16 Jacobian.
    _, exact = flow.forward_and_log_det(x, logdet="exact")
    np.testing.assert_allclose(exact.numpy(), full_jacobian_log_det(flow, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        log_det.numpy(), exact.numpy(), rtol=1e-5
    )  # auto = exact at these sizes
    x_rec, info = flow.inverse(z, return_info=True, strict=True)
    assert float(tf.norm(x_rec - x) / tf.norm(x)) < 1e-5
    assert info.iterations.shape == (3,) and bool(tf.reduce_all(info.converged))


def test_factor_out_call_estimates_no_log_det():
    """call() (Keras' model(x), predict) returns the latent only: no stage runs its log-det."""
    flow = two_scale_factor_out()
    flow.build((None, 4, 4, 1))
    calls = []
    for stage in flow.stages:
        original = stage.forward_and_log_det

        def counting(*args, _original=original, **kwargs):
            calls.append(1)
            return _original(*args, **kwargs)

        stage.forward_and_log_det = counting
    x = random([2, 4, 4, 1], 21)
    z = flow(x)
    assert not calls
    np.testing.assert_allclose(z.numpy(), flow.forward_and_log_det(x)[0].numpy(), rtol=1e-6)
    assert len(calls) == 2


def test_factor_out_bad_arguments():
    with pytest.raises(TypeError, match="stages"):
        kir.FactorOut([])
    with pytest.raises(TypeError, match="stages"):
        kir.FactorOut([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="factor"):
        kir.FactorOut([kir.Squeeze()], factor=1.0)
    with pytest.raises(ValueError, match="must leave at least one channel"):
        kir.FactorOut([kir.ActNorm(), kir.ActNorm()]).build((None, 2, 2, 1))
    with pytest.raises(ValueError, match="must be built"):
        kir.FactorOut([kir.Squeeze()]).inverse(tf.zeros([1, 4]))
    with pytest.raises(ValueError, match="images"):
        kir.FactorOut([kir.ActNorm()]).build((None, 4))
