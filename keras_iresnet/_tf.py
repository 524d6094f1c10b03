"""TensorFlow and Keras helpers used across the package (bottom of the import graph).

Every touch of a private TensorFlow or Keras interface lives here, each with the
reason it is needed: :func:`graph_function` (TensorFlow's retracing-warning
switch), :func:`in_xla_context` (TensorFlow's control-flow utilities),
:func:`track_loss` (Keras' own ``loss`` metric), :func:`sublayers` (Keras' list
of sublayers in creation order), :func:`tfp_greedy_cache` (TFP's cache for
bijectors that compute a transform and its log-det together). :func:`check` is
the one way a condition on a tensor is enforced in eager mode, in a graph and
under XLA.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import keras

__all__ = [
    "graph_function",
    "in_xla_context",
    "no_autograph",
    "track_loss",
    "sublayers",
    "check",
    "all_finite",
    "tfp_greedy_cache",
]

#: Our code paths are plain TensorFlow (``tf.while_loop``, no Python control flow
#: on tensors), so AutoGraph has nothing to convert in them; inside Keras' own
#: ``tf.function`` it would still re-parse every closure we create per call
#: (about a third of the tracing time of a deep flow). This decorator opts out.
no_autograph = tf.autograph.experimental.do_not_convert


def graph_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``tf.function(fn, autograph=False)`` without TensorFlow's retracing warning.

    Each layer owns such functions (traced once per layer and input signature),
    so many layers legitimately trace once each; TensorFlow would otherwise warn
    about "excessive retracing" because their code is shared.
    """
    compiled = tf.function(fn, autograph=False)
    with contextlib.suppress(AttributeError):
        compiled._omit_frequent_tracing_warning = True  # noqa: SLF001 - no public switch
    return compiled


def in_xla_context() -> bool:
    """Whether ops are being built inside an XLA (``jit_compile=True``) function."""
    try:
        from tensorflow.python.ops import control_flow_util

        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except Exception:  # pragma: no cover - private API moved
        return False


def track_loss(model: keras.Model, loss: tf.Tensor, batch_size: tf.Tensor | int) -> None:
    """Record a training step's loss in Keras' own ``loss`` metric, as ``Model.train_step`` does.

    ``loss`` is the per-replica loss (already divided by the number of replicas);
    Keras' tracker takes the unscaled value, weighted by the batch size.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    unscaled = loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss
    model._loss_tracker.update_state(unscaled, sample_weight=batch_size)  # noqa: SLF001 - Keras' own tracker


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """A Keras layer's direct sublayers in creation order (Keras' own list; its
    ``_flatten_layers`` reverses nested ones)."""
    return list(layer._layers)  # noqa: SLF001 - Keras keeps the creation order only here


def check(
    condition: tf.Tensor | bool,
    message: str,
    value: Any = None,
    error: type[Exception] = ValueError,
    details: Callable[[], str] | None = None,
) -> Any:
    """Require a scalar bool tensor ``condition``; the one check for eager, graph and XLA code.

    - eager: raises ``error(message)`` (with ``details()`` appended, if given) when false;
    - graph: an assertion that fails with ``message`` (a ``tf.errors.InvalidArgumentError``
      whose text contains it) before ``value`` is used;
    - XLA: nothing (XLA has no assertion op; callers document what checks instead).

    Args:
      condition: scalar bool tensor (or Python bool).
      message: the sentence a user reads.
      value: a tensor (or nested structure) to return with the check attached.
      error: the exception class raised in eager mode.
      details: optional callable giving eager-only details (e.g. the offending values).

    Returns:
      ``value`` (graph mode: behind the assertion), or the assertion op when
      ``value`` is None (graph mode).
    """
    if tf.executing_eagerly():
        if not bool(condition):
            raise error(message if details is None else f"{message[:-1]} {details()}.")
        return value
    if in_xla_context():
        return value
    assertion = tf.debugging.Assert(condition, [message])
    if value is None:
        return assertion
    with tf.control_dependencies([assertion]):
        return tf.nest.map_structure(tf.identity, value)


def all_finite(*tensors: tf.Tensor | None) -> tf.Tensor:
    """A scalar bool: every entry of every tensor is finite (None entries skipped)."""
    flags = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None]
    return tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)


def tfp_greedy_cache(forward_name: str, inverse_name: str) -> Any:
    """TFP's bijector cache that stores what a transform computed beside its output.

    ``BijectorCacheWithGreedyAttrs`` (TFP's FFJORD uses it) caches the dict of
    extra results that ``forward_name`` / ``inverse_name`` return with the output,
    so a log-det computed together with the transform is never recomputed. TFP
    has no public name for it. Returns None where the TFP version lacks it (the
    bijector then computes the log-det again).
    """
    try:
        from tensorflow_probability.python.internal import cache_util
    except ImportError:  # pragma: no cover - depends on the TFP version
        return None
    return cache_util.BijectorCacheWithGreedyAttrs(
        forward_name=forward_name, inverse_name=inverse_name
    )
