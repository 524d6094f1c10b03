"""A contract harness for invertible layers: the checks every layer of this package passes.

Run your own invertible layer through it the same way::

    from keras_iresnet import testing
    report = testing.check_invertible_layer(MyLayer(...), input_shape=(4,), tmp_dir="/tmp")

:func:`check_invertible_layer` checks, on a fresh random batch:

1. ``forward_and_log_det`` returns ``y`` (the same as ``call``) and a finite
   ``log_det`` of shape ``[batch]``;
2. the round trip ``inverse(forward(x)) == x`` and, for bijective layers,
   ``forward(inverse(y)) == y``; ``inverse(..., return_info=True)`` returns a pair,
   and unknown inverse settings raise; also through the TFP bijector with its
   cache defeated (fresh tensors), so the solve really runs;
3. the log-det against ``slogdet`` of the full Jacobian (float64), for bijective
   layers with events of at most ``max_jacobian_dim`` dimensions (residual
   layers are evaluated with the exact estimator through ``logdet=``);
4. ``from_config(get_config())`` rebuilds a layer with the same outputs (same weights);
5. a ``.keras`` save / load round trip keeps outputs and weights;
6. ``forward_and_log_det`` and ``inverse`` give the same values in a
   ``tf.function`` and under XLA (``jit_compile=True``);
7. one gradient step of ``-mean(log_det)`` under a ``tf.distribute.MirroredStrategy``
   (if given) is finite and leaves every replica's variables identical.

Each check raises ``AssertionError`` with what differed; the function returns a
dict of the measured errors.

The module also holds the independent ground truths and set-ups that the tests
and the benchmarks share: :func:`explicit_matrix` (a linear map's matrix from its
Jacobian), :func:`top_singular_value`, :func:`full_jacobian_log_det`,
:func:`saturate` / :func:`saturated_block` (normalization active at ``coeff``, the
trained regime), :func:`logit_gaussian_bits_per_dim` (the closed-form baseline of image
density: independent pixels) and :func:`free_ports` (local multi-worker clusters).
"""

from __future__ import annotations

import os
import socket
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import logdet as logdet_lib
from keras_iresnet.bijector import IResNetBijector
from keras_iresnet.certify import refine
from keras_iresnet.layers import InvertibleLayer, InvertibleResidualBlock
from keras_iresnet.layers.walk import spectral_layers

__all__ = [
    "check_invertible_layer",
    "full_jacobian_log_det",
    "clone_layer",
    "explicit_matrix",
    "top_singular_value",
    "saturate",
    "saturated_block",
    "logit_gaussian_bits_per_dim",
    "free_ports",
]


def clone_layer(layer):
    """A fresh, unbuilt layer from ``layer``'s configuration (Keras' serialization path)."""
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))


def full_jacobian_log_det(fn, x):
    """``log|det(d fn / dx)|`` per example from the full Jacobian (float64 numpy ``[batch]``)."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = fn(x)
    jacobian = tape.batch_jacobian(y, x, experimental_use_pfor=False)
    del tape
    batch = int(x.shape[0])
    d_in = int(np.prod(x.shape[1:]))
    d_out = int(np.prod(y.shape[1:]))
    matrix = np.reshape(jacobian.numpy().astype(np.float64), (batch, d_out, d_in))
    return np.linalg.slogdet(matrix)[1]


def explicit_matrix(fn, input_shape, dtype=tf.float64):
    """The matrix ``[out_dim, in_dim]`` of a linear map ``fn`` on inputs of ``input_shape``
    (batch 1), from its Jacobian (numpy)."""
    x = tf.zeros((1,) + tuple(input_shape), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    jacobian = tape.jacobian(y, x)
    return np.reshape(jacobian.numpy(), (int(np.prod(y.shape[1:])), int(np.prod(input_shape))))


def top_singular_value(matrix):
    """``||matrix||_2`` by numpy's SVD (float)."""
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


def saturate(layer, scale=5.0, **refine_kwargs):
    """Scale every spectral kernel inside ``layer`` by ``scale`` so that the normalization is
    active at ``coeff`` (the trained regime), then run every estimate to convergence."""
    for sub in spectral_layers(layer):
        sub.kernel.assign(sub.kernel * scale)
    refine(layer, **refine_kwargs)
    return layer


def saturated_block(shape, coeff=0.9, hidden=32, scale=5.0, **kwargs):
    """A built :class:`~keras_iresnet.InvertibleResidualBlock` on events of ``shape``,
    saturated (see :func:`saturate`; estimates to a relative 1e-7)."""
    block = InvertibleResidualBlock(hidden=hidden, coeff=coeff, **kwargs)
    block.build((None,) + tuple(shape))
    return saturate(block, scale, max_iterations=3000, rtol=1e-7)


def logit_gaussian_bits_per_dim(train, test, alpha):
    """Held-out bits/dim of the best image density without pixel dependencies (numpy, float64).

    Per pixel, the maximum-likelihood Gaussian of ``logit(alpha + (1 - 2 alpha) x)``
    fitted on ``train``; the density of ``test`` includes the logit's log-det and the
    ``D ln 256`` of 8-bit data (see :mod:`keras_iresnet.models.flow`):
    ``bits/dim = (-ln p(x) + D ln 256) / (D ln 2)``, averaged over ``test``. A flow of
    ``Logit(alpha)`` and a learned diagonal Gaussian base can reach it exactly; a
    flow that models dependencies between pixels must do better.

    Args:
      train, test: dequantized images in ``[0, 1)``, ``[n, ...]`` (e.g.
        ``(pixels + uniform noise) / 256``).
      alpha: the logit's ``alpha``.
    """

    def logit(x):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        s = alpha + (1 - 2 * alpha) * x
        return np.log(s) - np.log1p(-s), np.log1p(-2 * alpha) - np.log(s) - np.log1p(-s)

    y_train, _ = logit(train)
    y_test, log_det = logit(test)
    mean, std = y_train.mean(0), y_train.std(0)
    log_p = (
        -0.5 * ((y_test - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi) + log_det
    ).sum(1)
    dims = y_test.shape[1]
    return float(np.mean((-log_p + dims * np.log(256.0)) / (dims * np.log(2.0))))


def free_ports(n):
    """``n`` free TCP ports on 127.0.0.1 (for local multi-worker clusters)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _assert_close(name, actual, expected, atol, rtol=0.0):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    tolerance = atol + rtol * np.abs(expected)
    if not np.all(np.abs(actual - expected) <= tolerance):
        raise AssertionError(
            f"{name}: max difference {_max_abs(actual, expected):.3e} exceeds "
            f"atol={atol}, rtol={rtol}"
        )
    return _max_abs(actual, expected)


def check_invertible_layer(
    layer,
    input_shape,
    inputs=None,
    batch=3,
    bijective=True,
    atol=1e-4,
    log_det_atol=1e-3,
    max_jacobian_dim=256,
    strategy=None,
    tmp_dir=None,
    seed=0,
):
    """Run the invertible-layer contract on ``layer`` (see the module docstring).

    Args:
      layer: an unbuilt (or built) :class:`keras_iresnet.InvertibleLayer`.
      input_shape: event shape, e.g. ``(4,)`` or ``(8, 8, 2)``.
      inputs: a batch to use (default: ``batch`` standard-normal examples); pass
        one for layers with a restricted domain (e.g. ``Logit`` needs ``[0, 1]``).
      bijective: ``False`` for injective layers (no ``forward(inverse(y))``,
        no square Jacobian).
      atol: absolute tolerance of the round trips and the compiled forms
        (float32 solves stop at a relative residual of 1e-6 per block).
      log_det_atol: absolute tolerance of the log-det against ``slogdet``.
      max_jacobian_dim: largest event for the full-Jacobian check.
      strategy: a ``tf.distribute.MirroredStrategy`` for the distributed step.
      tmp_dir: where the ``.keras`` file goes (default: a temporary folder).
      seed: seed of the random inputs.

    Returns:
      A dict of the measured maximum differences.
    """
    if not isinstance(layer, InvertibleLayer):
        raise TypeError(f"layer must be an InvertibleLayer; got {type(layer).__name__}.")
    shape = (batch,) + tuple(int(d) for d in input_shape)
    x = tf.convert_to_tensor(
        tf.random.stateless_normal(shape, seed=[seed, 1]) if inputs is None else inputs, tf.float32
    )
    if not layer.built:
        layer.build((None,) + tuple(input_shape))
    report = {}
    exact = logdet_lib.Exact()

    # 1. forward and log-det
    y, log_det = layer.forward_and_log_det(x)
    if tuple(log_det.shape) != (x.shape[0],):
        raise AssertionError(
            f"log_det must have shape [batch]={(x.shape[0],)}; got {tuple(log_det.shape)}"
        )
    if not np.all(np.isfinite(log_det.numpy())) or not np.all(np.isfinite(y.numpy())):
        raise AssertionError("forward_and_log_det returned non-finite values")
    report["call_vs_forward"] = _assert_close(
        "call(x) vs forward_and_log_det(x)[0]", layer(x), y, atol
    )

    # 2. round trips, the contract of inverse, and through the bijector with the cache defeated
    report["inverse_forward"] = _assert_close("inverse(forward(x))", layer.inverse(y), x, atol)
    pair = layer.inverse(y, return_info=True)
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise AssertionError("inverse(y, return_info=True) must return (x, info)")
    try:
        layer.inverse(y, no_such_setting=1)
    except TypeError:
        pass
    else:
        raise AssertionError("inverse(y, no_such_setting=1) must raise TypeError")
    if bijective:
        report["forward_inverse"] = _assert_close(
            "forward(inverse(y))", layer(layer.inverse(y)), y, atol
        )
        bijector = IResNetBijector(layer, event_shape=input_shape)
        fresh = tf.identity(x) + 0.0
        report["bijector_round_trip"] = _assert_close(
            "bijector.forward(bijector.inverse(x))",
            bijector.forward(bijector.inverse(fresh) + 0.0),
            x,
            atol,
        )

    # 3. log-det against slogdet of the full Jacobian
    event = int(np.prod(input_shape))
    if bijective and event <= max_jacobian_dim:
        _, exact_log_det = layer.forward_and_log_det(x, logdet=exact)
        truth = full_jacobian_log_det(lambda t: layer.forward_and_log_det(t, logdet=exact)[0], x)
        report["log_det_vs_slogdet"] = _assert_close(
            "log_det vs slogdet of the full Jacobian", exact_log_det, truth, log_det_atol, rtol=1e-4
        )

    # 4. config round trip
    clone = clone_layer(layer)
    if not clone.built:
        clone.build((None,) + tuple(input_shape))
    clone.set_weights(layer.get_weights())
    report["config_round_trip"] = _assert_close(
        "from_config(get_config()) outputs", clone(x), y, atol
    )

    # 5. .keras save / load
    model = keras.Sequential([keras.Input(tuple(input_shape)), layer])
    folder = tmp_dir or tempfile.mkdtemp()
    path = os.path.join(folder, f"{layer.name}_contract.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    report["keras_file_round_trip"] = _assert_close(
        ".keras save/load outputs", loaded(x), model(x), atol
    )
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        _assert_close(".keras save/load weights", b, a, 0.0)

    # 6. tf.function and XLA
    for jit in (False, True):
        forward = tf.function(lambda t: layer.forward_and_log_det(t, logdet=exact), jit_compile=jit)
        compiled_y, compiled_log_det = forward(x)
        name = "XLA" if jit else "tf.function"
        report[f"{name}_forward"] = _assert_close(f"{name} forward", compiled_y, y, atol)
        if bijective and event <= max_jacobian_dim:
            report[f"{name}_log_det"] = _assert_close(
                f"{name} log-det", compiled_log_det, exact_log_det, log_det_atol, rtol=1e-4
            )
        inverse = tf.function(lambda t: layer.inverse(t), jit_compile=jit)
        report[f"{name}_inverse"] = _assert_close(f"{name} inverse", inverse(y), x, atol)

    # 7. a distributed training step
    if strategy is not None:
        with strategy.scope():
            replica_layer = clone_layer(layer)
            if not replica_layer.built:
                replica_layer.build((None,) + tuple(input_shape))
            optimizer = keras.optimizers.SGD(1e-3)
        replica_layer.set_weights(layer.get_weights())
        variables = replica_layer.trainable_variables

        @tf.function
        def step(t):
            def replica_step(t):
                with tf.GradientTape() as tape:
                    out, ld = replica_layer.forward_and_log_det(t, training=True)
                    loss = -tf.reduce_mean(ld) + 1e-3 * tf.reduce_mean(tf.square(out))
                pairs = [
                    (g, v)
                    for g, v in zip(tape.gradient(loss, variables), variables)
                    if g is not None
                ]
                if pairs:
                    optimizer.apply_gradients(pairs)
                return loss

            return strategy.run(replica_step, args=(t,))

        losses = strategy.experimental_local_results(step(x))
        if not all(np.isfinite(float(v)) for v in losses):
            raise AssertionError("distributed step gave a non-finite loss")
        for variable in replica_layer.variables:
            values = [v.numpy() for v in strategy.experimental_local_results(variable)]
            for other in values[1:]:
                _assert_close(f"replicas of {variable.path}", other, values[0], 0.0)
        report["distributed_step"] = True
    return report
