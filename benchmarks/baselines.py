"""The reference models the benchmarks race against, one home for each.

- TFP flows: :func:`realnvp` (affine couplings of Keras MLPs), :func:`realnvp_2d`,
  :func:`realnvp_2d_sized`, :func:`maf` (masked autoregressive), :func:`glow`
  (``tfb.Glow``), :func:`flattened_realnvp` (RealNVP on a flattened image) and
  :class:`LogitGaussian` (the logit preprocessing and learned diagonal Gaussian base
  every model of the image race shares);
- :func:`size_to`: the widest baseline within a parameter budget;
- :func:`logit_gaussian_bits_per_dim`: the closed-form "logit + independent Gaussian
  per pixel" baseline;
- :func:`normflows_residual_flow`: the PyTorch residual flow of ``normflows``
  (``pip install torch normflows``), imported only when called.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import keras_iresnet as kir
from benchmarks.common import count_parameters, dequantize
from keras_iresnet import testing

tfb, tfd = tfp.bijectors, tfp.distributions


# -- TFP flows ------------------------------------------------------------------------------------
def _mlp(inputs, hidden, outputs, layers=2):
    return keras.Sequential(
        [keras.Input((inputs,))]
        + [keras.layers.Dense(hidden, activation="relu") for _ in range(layers)]
        + [keras.layers.Dense(outputs, kernel_initializer="zeros")]
    )


def realnvp(dims, couplings, hidden):
    """RealNVP on vectors: affine couplings of Keras 3 MLPs, reversed order between couplings.

    Returns ``(bijector, tf.Variables)`` (the variables behind the Keras weights, via the bridge).
    """
    masked = dims // 2
    bijectors, variables = [], []
    for _ in range(couplings):
        net = _mlp(masked, hidden, 2 * (dims - masked))
        variables += kir.bridge.tf_variables(net, trainable_only=True)

        def fn(x, output_units, net=net, **kwargs):
            out = net(x)
            return out[..., :output_units], tf.tanh(out[..., output_units:])

        bijectors += [
            tfb.RealNVP(num_masked=masked, shift_and_log_scale_fn=fn),
            tfb.Permute(permutation=list(range(dims))[::-1]),
        ]
    return tfb.Chain(bijectors[::-1]), variables


def realnvp_2d(couplings, hidden):
    """A 2-D RealNVP distribution over a standard normal: ``(distribution, tf.Variables)``."""
    bijector, variables = realnvp(2, couplings, hidden)
    return tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), bijector), variables


def realnvp_2d_sized(parameters, couplings=4):
    """The widest :func:`realnvp_2d` with at most ``parameters`` parameters.

    Returns ``((distribution, tf.Variables), hidden)``.
    """
    hidden = size_to(parameters, lambda h: count_parameters(realnvp(2, couplings, h)[1]), 4, 512)
    return realnvp_2d(couplings, hidden), hidden


def maf(couplings, hidden):
    """2-D masked autoregressive flow with TFP's AutoregressiveNetwork (its own tf.Variables)."""
    bijectors = []
    for _ in range(couplings):
        made = tfb.AutoregressiveNetwork(params=2, hidden_units=[hidden, hidden], activation="relu")
        bijectors += [tfb.MaskedAutoregressiveFlow(made), tfb.Permute([1, 0])]
    dist = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(2)), tfb.Chain(bijectors)
    )
    dist.log_prob(tf.zeros([1, 2]))  # create the variables
    return dist, dist.trainable_variables


def glow(shape, blocks, steps, hidden):
    """``tfb.Glow`` on ``shape``: ``blocks`` x ``steps``, default networks of width ``hidden``."""
    return tfb.Glow(
        output_shape=shape,
        num_glow_blocks=blocks,
        num_steps_per_block=steps,
        coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=hidden),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork,
    )


def flattened_realnvp(shape, couplings, hidden):
    """:func:`realnvp` on the flattened image, reshaped back: ``(bijector, tf.Variables)``."""
    dims = int(np.prod(shape))
    bijector, variables = realnvp(dims, couplings, hidden)
    return tfb.Chain(
        [tfb.Reshape(event_shape_out=list(shape), event_shape_in=[dims]), bijector]
    ), variables


class LogitGaussian:
    """The shared preprocessing and base of every raced model: Logit(alpha) and a learned
    diagonal Gaussian over the flow's latent, as tf.Variables (for the TFP flows)."""

    def __init__(self, alpha, latent_shape):
        self.logit = kir.Logit(alpha, validate_args=False)
        self.base = kir.DiagonalGaussian()
        self.base.build((None,) + tuple(latent_shape))
        self.variables = list(kir.bridge.tf_variables(self.base, trainable_only=True))

    def log_prob(self, bijector, x):
        y, logit_log_det = self.logit.forward_and_log_det(x)
        z = bijector.inverse(y)
        return (
            self.base.log_prob(z)
            + bijector.inverse_log_det_jacobian(y, event_ndims=len(y.shape) - 1)
            + logit_log_det
        )


def size_to(target, build, low, high):
    """The largest width in [low, high] whose model has at most ``target`` parameters (bisection).

    ``build(width)`` returns the parameter count of the model of that width.
    """
    best = low
    while low <= high:
        mid = (low + high) // 2
        if build(mid) <= target:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best


# -- the closed form ----------------------------------------------------------------------------
def logit_gaussian_bits_per_dim(train, test, alpha, seed=0):
    """Held-out bits/dim of the best model without pixel dependencies in logit space.

    ``train``: uint8 images, dequantized here with ``seed``; ``test``: already
    dequantized to ``[0, 1)``. The closed form itself is
    :func:`keras_iresnet.testing.logit_gaussian_bits_per_dim` (the tests use it too).
    """
    return testing.logit_gaussian_bits_per_dim(dequantize(train, seed), test, alpha)


# -- PyTorch ------------------------------------------------------------------------------------
def normflows_residual_flow(shape, blocks, hidden, coeff, n_terms):
    """``normflows``' residual flow with the architecture of our stack (PyTorch, CPU).

    ``blocks`` residual blocks of 3 Lipschitz-constrained linear layers (dense on
    vectors of ``shape == (d,)``; 3-1-3 convolutions on ``shape == (H, W, C)``,
    channels first in PyTorch), width ``hidden``, constant ``coeff``, one power
    iteration per step, ``n_terms`` power-series terms with the memory-saving
    (Neumann) gradient, a standard normal base. Returns the ``nf.NormalizingFlow``.
    """
    import normflows as nf

    if len(shape) == 1:
        nets = [
            nf.nets.LipschitzMLP(
                [shape[0], hidden, hidden, shape[0]], lipschitz_const=coeff, max_lipschitz_iter=1
            )
            for _ in range(blocks)
        ]
        q0 = nf.distributions.DiagGaussian(shape[0], trainable=False)
    else:
        height, width, channels = shape
        nets = [
            nf.nets.LipschitzCNN(
                [channels, hidden, hidden, channels],
                [3, 1, 3],
                lipschitz_const=coeff,
                max_lipschitz_iter=1,
            )
            for _ in range(blocks)
        ]
        q0 = nf.distributions.DiagGaussian((channels, height, width), trainable=False)
    flows = [nf.flows.Residual(net, n_power_series=n_terms, reduce_memory=True) for net in nets]
    return nf.NormalizingFlow(q0=q0, flows=flows)
