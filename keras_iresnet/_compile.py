"""One helper: trace a Python function into a reusable graph function."""
import tensorflow as tf


def graph_function(fn):
    """``tf.function(fn, autograph=False)`` without TensorFlow's retracing warning.

    Each layer owns one such function (traced once per layer and input
    signature), so many layers legitimately trace once each; TensorFlow would
    otherwise warn about "excessive retracing" because their code is shared.
    """
    compiled = tf.function(fn, autograph=False)
    try:
        compiled._omit_frequent_tracing_warning = True  # noqa: SLF001 - no public switch
    except AttributeError:  # pragma: no cover
        pass
    return compiled
