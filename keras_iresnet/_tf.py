"""Two TensorFlow helpers used across the package (bottom of the import graph)."""

import tensorflow as tf

__all__ = ["graph_function", "in_xla_context", "no_autograph", "track_loss"]

#: Our code paths are plain TensorFlow (``tf.while_loop``, no Python control flow
#: on tensors), so AutoGraph has nothing to convert in them; inside Keras' own
#: ``tf.function`` it would still re-parse every closure we create per call
#: (about a third of the tracing time of a deep flow). This decorator opts out.
no_autograph = tf.autograph.experimental.do_not_convert


def graph_function(fn):
    """``tf.function(fn, autograph=False)`` without TensorFlow's retracing warning.

    Each layer owns such functions (traced once per layer and input signature),
    so many layers legitimately trace once each; TensorFlow would otherwise warn
    about "excessive retracing" because their code is shared.
    """
    compiled = tf.function(fn, autograph=False)
    try:
        compiled._omit_frequent_tracing_warning = True  # noqa: SLF001 - no public switch
    except AttributeError:  # pragma: no cover
        pass
    return compiled


def in_xla_context():
    """Whether ops are being built inside an XLA (``jit_compile=True``) function."""
    try:
        from tensorflow.python.ops import control_flow_util

        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except Exception:  # pragma: no cover - private API moved
        return False


def track_loss(model, loss, batch_size):
    """Record a training step's loss in Keras' own ``loss`` metric, as ``Model.train_step`` does.

    ``loss`` is the per-replica loss (already divided by the number of replicas);
    Keras' tracker takes the unscaled value, weighted by the batch size.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    unscaled = loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss
    model._loss_tracker.update_state(unscaled, sample_weight=batch_size)  # noqa: SLF001 - Keras' own tracker
