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
   (if given) is finite and leaves every replica's variables identical;
8. for a conditional layer (``context_shape=``): the checks above at a fixed
   context, and what the context changes (see :func:`check_invertible_layer`).

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
from typing import TYPE_CHECKING, TypeVar

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import logdet as logdet_lib
from keras_iresnet.bijector import IResNetBijector
from keras_iresnet.certify import refine
from keras_iresnet.layers import InvertibleLayer, InvertibleResidualBlock
from keras_iresnet.layers.walk import spectral_layers

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from numpy.typing import ArrayLike

_LayerT = TypeVar("_LayerT", bound=keras.layers.Layer)

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


def clone_layer(layer: _LayerT) -> _LayerT:
    """A fresh, unbuilt layer from ``layer``'s configuration (Keras' serialization path)."""
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))


def full_jacobian_log_det(
    fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor | np.ndarray
) -> np.ndarray:
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


def explicit_matrix(
    fn: Callable[[tf.Tensor], tf.Tensor], input_shape: Sequence[int], dtype: tf.DType = tf.float64
) -> np.ndarray:
    """The matrix ``[out_dim, in_dim]`` of a linear map ``fn`` on inputs of ``input_shape``
    (batch 1), from its Jacobian (numpy)."""
    x = tf.zeros((1,) + tuple(input_shape), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    jacobian = tape.jacobian(y, x)
    return np.reshape(jacobian.numpy(), (int(np.prod(y.shape[1:])), int(np.prod(input_shape))))


def top_singular_value(matrix: ArrayLike) -> float:
    """``||matrix||_2`` by numpy's SVD (float)."""
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


def saturate(layer: _LayerT, scale: float = 5.0, **refine_kwargs: Any) -> _LayerT:
    """Scale every spectral kernel inside ``layer`` by ``scale`` so that the normalization is
    active at ``coeff`` (the trained regime), then run every estimate to convergence."""
    for sub in spectral_layers(layer):
        sub.kernel.assign(sub.kernel * scale)
    refine(layer, **refine_kwargs)
    return layer


def saturated_block(
    shape: Sequence[int],
    coeff: float | None = 0.9,
    hidden: int = 32,
    scale: float = 5.0,
    **kwargs: Any,
) -> InvertibleResidualBlock:
    """A built :class:`~keras_iresnet.InvertibleResidualBlock` on events of ``shape``,
    saturated (see :func:`saturate`; estimates to a relative 1e-7)."""
    block = InvertibleResidualBlock(hidden=hidden, coeff=coeff, **kwargs)
    block.build((None,) + tuple(shape))
    return saturate(block, scale, max_iterations=3000, rtol=1e-7)


def logit_gaussian_bits_per_dim(train: ArrayLike, test: ArrayLike, alpha: float) -> float:
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

    def logit(x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
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


def free_ports(n: int) -> list[int]:
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
    layer: InvertibleLayer,
    input_shape: Sequence[int],
    inputs: tf.Tensor | np.ndarray | None = None,
    batch: int = 3,
    bijective: bool = True,
    atol: float = 1e-4,
    log_det_atol: float = 1e-3,
    max_jacobian_dim: int = 256,
    strategy: tf.distribute.Strategy | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    context_shape: Sequence[int] | None = None,
    contexts: Sequence[tf.Tensor | np.ndarray] | None = None,
) -> dict[str, float]:
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
      context_shape: a conditional layer's context event shape (default: the
        layer's ``context_shape``); every check then runs at a fixed context.
      contexts: a conditional layer: two contexts ``(c1, c2)`` of shape
        ``[batch, *context_shape]`` (default: standard normal, times 2).

    A conditional layer also passes: two contexts give different outputs; one
    context without the batch axis equals the tiled context; inverting with the
    wrong context does not give ``x``; an eager inverse at ``c1`` and then at ``c2``
    inverts both (the cached solve takes the context as an argument); compiled
    functions serve both contexts with one trace; a missing context raises
    ``ValueError``; the ``.keras`` check goes through a two-input functional model
    ``keras.Model([x, c], layer(x, context=c))``; the distributed step is fed ``(x, c)``.

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
    conditional = bool(layer.conditional)
    if conditional:
        context_shape = tuple(context_shape or getattr(layer, "context_shape", None) or ())
        if not context_shape:
            raise ValueError(
                "a conditional layer needs context_shape= (its context's event shape)."
            )
        if contexts is None:
            contexts = [
                2.0 * tf.random.stateless_normal((batch,) + context_shape, seed=[seed, 2 + i])
                for i in range(2)
            ]
        c1, c2 = (tf.convert_to_tensor(c, tf.float32) for c in contexts)
    ctx = {"context": c1} if conditional else {}

    # 1. forward and log-det
    y, log_det = layer.forward_and_log_det(x, **ctx)
    if tuple(log_det.shape) != (x.shape[0],):
        raise AssertionError(
            f"log_det must have shape [batch]={(x.shape[0],)}; got {tuple(log_det.shape)}"
        )
    if not np.all(np.isfinite(log_det.numpy())) or not np.all(np.isfinite(y.numpy())):
        raise AssertionError("forward_and_log_det returned non-finite values")
    report["call_vs_forward"] = _assert_close(
        "call(x) vs forward_and_log_det(x)[0]", layer(x, **ctx), y, atol
    )

    # 2. round trips, the contract of inverse, and through the bijector with the cache defeated
    report["inverse_forward"] = _assert_close(
        "inverse(forward(x))", layer.inverse(y, **ctx), x, atol
    )
    pair = layer.inverse(y, return_info=True, **ctx)
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise AssertionError("inverse(y, return_info=True) must return (x, info)")
    try:
        layer.inverse(y, no_such_setting=1, **ctx)
    except TypeError:
        pass
    else:
        raise AssertionError("inverse(y, no_such_setting=1) must raise TypeError")
    if bijective:
        report["forward_inverse"] = _assert_close(
            "forward(inverse(y))", layer(layer.inverse(y, **ctx), **ctx), y, atol
        )
        tfp_ctx = {"conditional_input": tf.identity(c1)} if conditional else {}
        bijector = IResNetBijector(
            layer, event_shape=input_shape, context_shape=context_shape if conditional else None
        )
        fresh = tf.identity(x) + 0.0
        report["bijector_round_trip"] = _assert_close(
            "bijector.forward(bijector.inverse(x))",
            bijector.forward(bijector.inverse(fresh, **tfp_ctx) + 0.0, **tfp_ctx),
            x,
            atol,
        )

    # 3. log-det against slogdet of the full Jacobian (in x, at the fixed context)
    event = int(np.prod(input_shape))
    if bijective and event <= max_jacobian_dim:
        _, exact_log_det = layer.forward_and_log_det(x, logdet=exact, **ctx)
        truth = full_jacobian_log_det(
            lambda t: layer.forward_and_log_det(t, logdet=exact, **ctx)[0], x
        )
        report["log_det_vs_slogdet"] = _assert_close(
            "log_det vs slogdet of the full Jacobian", exact_log_det, truth, log_det_atol, rtol=1e-4
        )

    # 4. config round trip
    clone = clone_layer(layer)
    if not clone.built:
        clone.build((None,) + tuple(input_shape))
    clone.set_weights(layer.get_weights())
    report["config_round_trip"] = _assert_close(
        "from_config(get_config()) outputs", clone(x, **ctx), y, atol
    )

    # 5. .keras save / load (a conditional layer: a two-input functional model)
    if conditional:
        x_in, c_in = keras.Input(tuple(input_shape)), keras.Input(context_shape)
        model = keras.Model([x_in, c_in], layer(x_in, context=c_in))
        model_inputs = [x, c1]
    else:
        model = keras.Sequential([keras.Input(tuple(input_shape)), layer])
        model_inputs = x
    folder = tmp_dir or tempfile.mkdtemp()
    path = os.path.join(folder, f"{layer.name}_contract.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    report["keras_file_round_trip"] = _assert_close(
        ".keras save/load outputs", loaded(model_inputs), model(model_inputs), atol
    )
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        _assert_close(".keras save/load weights", b, a, 0.0)

    # 6. tf.function and XLA (a conditional layer: the context is an argument, one trace)
    for jit in (False, True):
        name = "XLA" if jit else "tf.function"
        if conditional:
            _check_compiled_contexts(layer, x, (c1, c2), jit, exact, atol, log_det_atol, report)
            continue
        forward = tf.function(lambda t: layer.forward_and_log_det(t, logdet=exact), jit_compile=jit)
        compiled_y, compiled_log_det = forward(x)
        report[f"{name}_forward"] = _assert_close(f"{name} forward", compiled_y, y, atol)
        if bijective and event <= max_jacobian_dim:
            report[f"{name}_log_det"] = _assert_close(
                f"{name} log-det", compiled_log_det, exact_log_det, log_det_atol, rtol=1e-4
            )
        inverse = tf.function(lambda t: layer.inverse(t), jit_compile=jit)
        report[f"{name}_inverse"] = _assert_close(f"{name} inverse", inverse(y), x, atol)

    # 7. a distributed training step
    if strategy is not None:
        report["distributed_step"] = _distributed_step(
            layer, input_shape, x, c1 if conditional else None, strategy
        )

    # 8. what a context changes
    if conditional:
        report.update(_check_contexts(layer, x, y, c1, c2, atol))
    return report


def _check_compiled_contexts(layer, x, contexts, jit, exact, atol, log_det_atol, report):
    """Compiled forward and inverse at two contexts: eager values, and one trace each."""
    name = "XLA" if jit else "tf.function"
    forward = tf.function(
        lambda t, c: layer.forward_and_log_det(t, logdet=exact, context=c), jit_compile=jit
    )
    inverse = tf.function(lambda t, c: layer.inverse(t, context=c), jit_compile=jit)
    for index, c in enumerate(contexts):
        eager_y, eager_log_det = layer.forward_and_log_det(x, logdet=exact, context=c)
        compiled_y, compiled_log_det = forward(x, c)
        report[f"{name}_forward_c{index + 1}"] = _assert_close(
            f"{name} forward (context {index + 1})", compiled_y, eager_y, atol
        )
        report[f"{name}_log_det_c{index + 1}"] = _assert_close(
            f"{name} log-det (context {index + 1})",
            compiled_log_det,
            eager_log_det,
            log_det_atol,
            rtol=1e-4,
        )
        report[f"{name}_inverse_c{index + 1}"] = _assert_close(
            f"{name} inverse (context {index + 1})", inverse(eager_y, c), x, atol
        )
    traces = (forward.experimental_get_tracing_count(), inverse.experimental_get_tracing_count())
    if traces != (1, 1):
        raise AssertionError(
            f"{name}: two contexts of one shape must share one trace; got {traces} traces "
            "(forward, inverse)"
        )


def _check_contexts(layer, x, y, c1, c2, atol):
    """Two contexts differ; a broadcast context equals the tiled one; the wrong context does
    not invert; an eager inverse at c1 then c2 inverts both; a missing context raises."""
    report = {}
    y2 = layer(x, context=c2)
    report["two_contexts_differ"] = _max_abs(y2, y)
    if report["two_contexts_differ"] <= 1e-3:
        raise AssertionError(
            "two contexts gave the same outputs (max |y1 - y2| = "
            f"{report['two_contexts_differ']:.2e})"
        )
    one = c1[0]
    tiled = tf.broadcast_to(one[None], tf.shape(c1))
    report["broadcast_context"] = _assert_close(
        "one context [*context_shape] vs the tiled context",
        layer(x, context=one),
        layer(x, context=tiled),
        1e-6,
    )
    report["wrong_context_inverse"] = _max_abs(layer.inverse(y, context=c2), x)
    if report["wrong_context_inverse"] <= 1e-3:
        raise AssertionError("inverting with another context must not give x back")
    report["inverse_second_context"] = _assert_close(
        "eager inverse at a second context (after one at the first)",
        layer.inverse(y2, context=c2),
        x,
        atol,
    )
    for method, call in (
        ("call", lambda: layer(x)),
        ("forward_and_log_det", lambda: layer.forward_and_log_det(x)),
        ("inverse", lambda: layer.inverse(y)),
    ):
        try:
            call()
        except ValueError:
            continue
        raise AssertionError(f"{method} without a context must raise ValueError")
    return report


def _distributed_step(layer, input_shape, x, context, strategy):
    """One SGD step of ``-mean(log_det)`` under ``strategy``: finite, replicas identical."""
    with strategy.scope():
        replica_layer = clone_layer(layer)
        if not replica_layer.built:
            replica_layer.build((None,) + tuple(input_shape))
        optimizer = keras.optimizers.SGD(1e-3)
    replica_layer.set_weights(layer.get_weights())
    variables = replica_layer.trainable_variables

    @tf.function
    def step(*batch):
        def replica_step(t, *c):
            ctx = {"context": c[0]} if c else {}
            with tf.GradientTape() as tape:
                out, ld = replica_layer.forward_and_log_det(t, training=True, **ctx)
                loss = -tf.reduce_mean(ld) + 1e-3 * tf.reduce_mean(tf.square(out))
            pairs = [
                (g, v) for g, v in zip(tape.gradient(loss, variables), variables) if g is not None
            ]
            if pairs:
                optimizer.apply_gradients(pairs)
            return loss

        return strategy.run(replica_step, args=batch)

    losses = strategy.experimental_local_results(step(*((x,) if context is None else (x, context))))
    if not all(np.isfinite(float(v)) for v in losses):
        raise AssertionError("distributed step gave a non-finite loss")
    for variable in replica_layer.variables:
        # (.value: the distributed variable behind the Keras variable, one value per replica)
        values = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
        if len(values) != strategy.num_replicas_in_sync:
            raise AssertionError(f"{variable.path}: not mirrored over the strategy's replicas")
        for other in values[1:]:
            _assert_close(f"replicas of {variable.path}", other, values[0], 0.0)
    return True
