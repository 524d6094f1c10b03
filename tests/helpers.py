"""Independent ground truths for the tests: explicit operator matrices and Jacobians; free ports."""

import socket

import numpy as np
import tensorflow as tf


def explicit_matrix(fn, input_shape, dtype=tf.float64):
    """The matrix of a linear map ``fn`` on inputs of ``input_shape`` (batch 1), by its Jacobian.

    Returns ``[out_dim, in_dim]`` numpy array.
    """
    x = tf.zeros((1,) + tuple(input_shape), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    jac = tape.jacobian(y, x)
    out_dim = int(np.prod(y.shape[1:]))
    in_dim = int(np.prod(input_shape))
    return np.reshape(jac.numpy(), (out_dim, in_dim))


def top_singular_value(matrix):
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


def full_jacobian_logdet(fn, x):
    """``log|det(d fn / dx)|`` per example from the full Jacobian (float64 numpy)."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    jac = tape.batch_jacobian(y, x)
    b = x.shape[0]
    d_out = int(np.prod(y.shape[1:]))
    d_in = int(np.prod(x.shape[1:]))
    jac = np.reshape(jac.numpy().astype(np.float64), (b, d_out, d_in))
    return np.linalg.slogdet(jac)[1]


def free_ports(n):
    """``n`` free TCP ports on 127.0.0.1 (for local multi-worker clusters)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
