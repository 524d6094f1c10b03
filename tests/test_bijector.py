"""keras_iresnet.bijector: the TFP bijector adapter (TFP's bijector contract, written out),
density_model and the base distributions as TFP objects."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_iresnet as kir
from keras_iresnet import certify, data
from keras_iresnet.testing import full_jacobian_log_det

tfb = tfp.bijectors
tfd = tfp.distributions


def flow_2d(n_blocks=3, coeff=0.9, logdet="exact"):
    layers = []
    for _ in range(n_blocks):
        layers += [
            kir.ActNorm(),
            kir.InvertibleResidualBlock(hidden=32, coeff=coeff, logdet=logdet),
        ]
    flow = kir.InvertibleSequential(layers)
    flow.build((None, 2))
    for layer in certify.spectral_layers(flow):
        layer.kernel.assign(layer.kernel * 3.0)
    certify.refine(flow)
    return flow


def test_round_trips_run_the_solver():
    flow = flow_2d()
    bijector = kir.IResNetBijector(flow, inverse_kwargs={"strict": True})
    x = tf.random.normal([16, 2])
    # "+ 0.0" defeats TFP's cache so the fixed-point solve really runs.
    z = bijector.inverse(x + 0.0)
    np.testing.assert_allclose(bijector.forward(z + 0.0).numpy(), x.numpy(), atol=1e-5)
    u = tf.random.normal([16, 2])
    np.testing.assert_allclose(
        bijector.inverse(bijector.forward(u) + 0.0).numpy(), u.numpy(), atol=1e-5
    )


@pytest.mark.parametrize("direction", ["density", "network"])
def test_log_det_jacobians_match_slogdet(direction):
    flow = flow_2d()
    bijector = kir.IResNetBijector(flow, direction=direction)
    u = tf.random.normal([8, 2], dtype=tf.float32)
    v = bijector.forward(u)
    fldj = bijector.forward_log_det_jacobian(u + 0.0, event_ndims=1).numpy()
    # Ground truth from the network's full Jacobian: d forward/du is J_F(u) for the
    # "network" layout and J_F(x)^{-1} at x = forward(u) for the "density" layout.
    if direction == "network":
        truth = full_jacobian_log_det(flow, u)
    else:
        truth = -full_jacobian_log_det(flow, v)
    np.testing.assert_allclose(fldj, truth, rtol=1e-4, atol=1e-4)
    ildj = bijector.inverse_log_det_jacobian(v + 0.0, event_ndims=1).numpy()
    np.testing.assert_allclose(ildj, -fldj, rtol=1e-4, atol=1e-4)


def test_image_bijector_log_det_and_event_ndims():
    flow = kir.InvertibleSequential(
        [kir.Squeeze(), kir.InvertibleResidualBlock(hidden=8, coeff=0.8, logdet="exact")]
    )
    bijector = kir.IResNetBijector(flow, event_shape=[4, 4, 1])
    assert bijector.forward_min_event_ndims == 3
    x = tf.random.normal([2, 4, 4, 1])
    ildj = bijector.inverse_log_det_jacobian(x, event_ndims=3)
    np.testing.assert_allclose(
        ildj.numpy(), full_jacobian_log_det(bijector.inverse, x), rtol=1e-4, atol=1e-4
    )


def test_log_prob_integrates_to_one_and_sampling_works():
    flow = flow_2d()
    dist = kir.density_model(flow)
    grid = np.linspace(-7, 7, 281, dtype="float32")
    xx, yy = np.meshgrid(grid, grid)
    points = np.stack([xx.ravel(), yy.ravel()], 1)
    log_prob = np.concatenate([dist.log_prob(chunk).numpy() for chunk in np.array_split(points, 8)])
    cell = (grid[1] - grid[0]) ** 2
    assert np.exp(log_prob).sum() * cell == pytest.approx(1.0, abs=0.01)
    samples = dist.sample(64, seed=1)
    assert samples.shape == (64, 2) and np.all(np.isfinite(samples.numpy()))


def test_log_prob_reuses_the_network_pass():
    flow = flow_2d()
    bijector = kir.IResNetBijector(flow)
    calls = []
    original = flow.forward_and_log_det

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    flow.forward_and_log_det = counting
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), bijector)
    dist.log_prob(tf.random.normal([4, 2]))
    assert len(calls) == 1


def test_batch_shapes_chain_and_invert():
    flow = flow_2d(n_blocks=1)
    bijector = kir.IResNetBijector(flow)
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros([3, 2])), bijector)
    assert dist.batch_shape == (3,)
    assert dist.log_prob(tf.random.normal([5, 3, 2])).shape == (5, 3)
    assert dist.sample(4, seed=2).shape == (4, 3, 2)
    chain = tfb.Chain([tfb.Shift(1.0), bijector])
    x = tf.random.normal([6, 2])
    np.testing.assert_allclose(chain.inverse(chain.forward(x)).numpy(), x.numpy(), atol=1e-5)
    inverted = tfb.Invert(bijector)
    np.testing.assert_allclose(
        inverted.forward_log_det_jacobian(x, event_ndims=1).numpy(),
        bijector.inverse_log_det_jacobian(x, event_ndims=1).numpy(),
        rtol=1e-5,
    )


def test_unbuilt_layer_needs_event_shape():
    with pytest.raises(ValueError, match="event_shape"):
        kir.IResNetBijector(kir.InvertibleResidualBlock(hidden=4))
    with pytest.raises(TypeError, match="InvertibleLayer"):
        kir.IResNetBijector(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="direction"):
        kir.IResNetBijector(kir.InvertibleResidualBlock(hidden=4), event_shape=[2], direction="up")


def test_plain_tfp_loop_lowers_nll():
    flow = kir.InvertibleSequential(
        [kir.InvertibleResidualBlock(hidden=32, coeff=0.9, logdet="exact") for _ in range(3)]
    )
    dist = kir.density_model(flow, event_shape=[2])
    train = data.sample_2d("moons", 1024, seed=0)
    test = data.sample_2d("moons", 1024, seed=1)
    optimizer = keras.optimizers.Adam(1e-2)
    variables = dist.trainable_variables

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(batch, bijector_kwargs={"training": True}))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    before = -float(tf.reduce_mean(dist.log_prob(test)))
    for _ in range(4):  # epochs
        for batch in np.split(train, 8):
            step(batch)
    after = -float(tf.reduce_mean(dist.log_prob(test)))
    assert after < before - 0.3, (before, after)


def test_closed_form_layer_with_inverse_settings():
    """Settings for inverse reach every layer: closed-form layers accept (and ignore) them."""
    layer = kir.ActNorm()
    bijector = kir.IResNetBijector(layer, event_shape=[3], inverse_kwargs={"strict": True})
    x = tf.random.normal([4, 3])
    layer.forward_and_log_det(x * 2.0 + 1.0, training=True)
    z = bijector.inverse(x + 0.0)
    np.testing.assert_allclose(bijector.forward(z + 0.0).numpy(), x.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        bijector.inverse_log_det_jacobian(x, event_ndims=1).numpy(),
        full_jacobian_log_det(layer, x),
        rtol=1e-5,
    )
    with pytest.raises(TypeError, match="unexpected inverse settings"):
        kir.IResNetBijector(
            kir.ActNorm(), event_shape=[3], inverse_kwargs={"tolerance": 1e-3}
        ).forward(x)


def test_inverse_kwargs_reach_the_solver():
    flow = flow_2d(n_blocks=1)
    bijector = kir.IResNetBijector(flow, inverse_kwargs={"strict": True, "max_iterations": 1})
    with pytest.raises(kir.inverse.InverseNotConvergedError):
        bijector.forward(tf.random.normal([4, 2]))
    exact = kir.IResNetBijector(
        flow, inverse_kwargs={"solver": "anderson", "rtol": 1e-7, "atol": 0.0}
    )
    u = tf.random.normal([4, 2])
    np.testing.assert_allclose(exact.inverse(exact.forward(u) + 0.0).numpy(), u.numpy(), atol=1e-6)


def test_stack_and_factor_out_bijector_latent_shape():
    flow = kir.FactorOut(
        [
            kir.InvertibleSequential(
                [kir.Squeeze(), kir.InvertibleResidualStack(num_blocks=2, hidden=4, coeff=0.8)]
            ),
            kir.InvertibleSequential(
                [
                    kir.Squeeze(),
                    kir.InvertibleResidualBlock(hidden=4, coeff=0.8, kernel_sizes=(1, 1)),
                ]
            ),
        ]
    )
    dist = kir.density_model(flow, event_shape=[4, 4, 1])
    assert dist.bijector.latent_shape == (16,) and dist.event_shape == (4, 4, 1)
    x = tf.random.normal([3, 4, 4, 1])
    log_prob = dist.log_prob(x)
    assert log_prob.shape == (3,)
    z, log_det = flow.forward_and_log_det(x, logdet="exact")
    truth = -0.5 * tf.reduce_sum(z**2, axis=1) - 8 * np.log(2 * np.pi) + log_det
    np.testing.assert_allclose(log_prob.numpy(), truth.numpy(), rtol=1e-5)
    assert dist.sample(2, seed=4).shape == (2, 4, 4, 1)
    # The data (rank 3) and the latent (rank 1) differ in rank: each direction declares its own.
    assert (dist.bijector.forward_min_event_ndims, dist.bijector.inverse_min_event_ndims) == (1, 3)
    network = kir.IResNetBijector(flow, direction="network")
    assert (network.forward_min_event_ndims, network.inverse_min_event_ndims) == (3, 1)
    fldj = network.forward_log_det_jacobian(x, event_ndims=3)
    np.testing.assert_allclose(fldj.numpy(), flow.forward_and_log_det(x)[1].numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        network.inverse(network.forward(x) + 0.0).numpy(), x.numpy(), atol=1e-5
    )
