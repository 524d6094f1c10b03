"""Operator-norm estimation for dense and convolutional operators (pure math, no layers).

Section 2.1 of Behrmann et al. (2019): a power iteration on the *parameter
matrix* of a convolution (Miyato et al., 2018; what
``keras.layers.SpectralNormalization`` does) only bounds the operator norm of the
convolution. Like the paper (following Gouk et al., 2018) we run the power
iteration through the operator itself: ``tf.nn.conv2d`` and its adjoint
``tf.nn.conv2d_transpose`` on the layer's real input shape and padding. The
estimate sigma~ is an under-estimate of ``||W||_2``; the exact singular values of
a circular convolution (Sedghi, Gupta & Long, 2019) are an independent check,
see :func:`conv_singular_values`.

This module knows nothing about layers: the spectral layers
(:mod:`keras_iresnet.layers.spectral_layers`) call it with their operator, and
own the questions about one layer (``operator_norm()``, ``refine()``).

Public functions:

- :func:`power_iteration` -- power iteration of any linear operator given the
  operator and its adjoint, optionally for a stack of independent operators at
  once, stopped by a relative tolerance on sigma~.
- :func:`conv_singular_values` -- all singular values of a stride-1 circular 2-D
  convolution via the FFT of the kernel and per-frequency SVDs.
- :func:`dense_singular_vectors` -- exact top singular vectors of (stacked)
  dense kernels by SVD (numpy), used to start dense layers at convergence.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = [
    "l2_normalize",
    "power_iteration",
    "conv_singular_values",
    "dense_singular_vectors",
]

_EPS = 1e-12


def _norms(t, batch_dims):
    """Euclidean norm over all axes but the first ``batch_dims``: shape ``t.shape[:batch_dims]``."""
    return tf.norm(tf.reshape(t, tf.concat([tf.shape(t)[:batch_dims], [-1]], 0)), axis=-1)


def l2_normalize(t, batch_dims=0):
    """Divide ``t`` by its Euclidean norm over all axes but the first ``batch_dims``. Shape kept."""
    norm = _norms(t, batch_dims)
    return t / tf.reshape(norm + _EPS, tf.concat([tf.shape(norm), tf.ones([tf.rank(t) - batch_dims], tf.int32)], 0))


def power_iteration(operator, adjoint, v, max_iterations=1, rtol=None, batch_dims=0):
    """Power iteration for the largest singular value of a linear operator ``A``.

    One iteration applies the adjoint and the operator once each:
    ``v <- A^T A v / ||A^T A v||``, ``sigma~ = ||A v||``. It runs in one
    ``tf.while_loop`` with ``maximum_iterations`` (works in ``tf.function`` and
    under XLA).

    Args:
      operator: callable ``v -> A v`` (input space -> output space).
      adjoint: callable ``u -> A^T u`` (output space -> input space). For a
        convolution this is ``tf.nn.conv2d_transpose`` with the same kernel,
        strides and padding, which is the exact adjoint.
      v: initial right singular vector(s); ``[n, ...]`` for a stack of ``n``
        operators when ``batch_dims=1`` (then ``operator`` acts on each slice).
      max_iterations: cap on the iterations (int or scalar int32 tensor, >= 1).
      rtol: stop once the relative change of sigma~ of every operator in one
        iteration is at most ``rtol`` (None: always ``max_iterations``).
      batch_dims: 0 for one operator, 1 for a stack.

    Returns:
      ``(u, v, sigma, iterations)``: unit left vector(s), unit right vector(s),
      ``sigma = ||A v||`` (a scalar, or ``[n]``; an under-estimate of ``||A||_2``
      that increases monotonically with the iterations) and the number of
      iterations run (int32 scalar).
    """
    v = l2_normalize(v, batch_dims)
    av = operator(v)
    sigma = _norms(av, batch_dims)
    rtol_t = tf.constant(-1.0, sigma.dtype) if rtol is None else tf.cast(rtol, sigma.dtype)

    def cond(i, v, av, sigma, change):
        return tf.logical_and(i < max_iterations, change > rtol_t)

    def body(i, v, av, sigma, change):
        v_new = l2_normalize(adjoint(av), batch_dims)
        av_new = operator(v_new)
        sigma_new = _norms(av_new, batch_dims)
        change = tf.reduce_max(tf.abs(sigma_new - sigma) / (sigma_new + _EPS))
        return i + 1, v_new, av_new, sigma_new, change

    iterations, v, av, sigma, _ = tf.while_loop(
        cond,
        body,
        (tf.constant(0), v, av, sigma, tf.constant(float("inf"), sigma.dtype)),
        maximum_iterations=max_iterations,
    )
    u = l2_normalize(av, batch_dims)
    return u, v, sigma, iterations


def dense_singular_vectors(kernel):
    """Exact top singular vectors of dense kernel(s) ``[..., in, out]`` (numpy SVD).

    For ``y = x @ W`` the right singular vector lives in the input space ``in``
    and the left one in the output space ``out``. Returns ``(u, v, sigma)`` with
    shapes ``[..., 1, out]``, ``[..., 1, in]`` and ``[...]``.
    """
    kernel = np.asarray(kernel, np.float64)
    left, values, right_t = np.linalg.svd(kernel, full_matrices=False)
    # W = U S V^T and rows act as x @ W: the maximizing input row is U[:, 0]^T and
    # its image, divided by sigma, is V[:, 0]^T.
    v = np.swapaxes(left[..., :, :1], -1, -2)
    u = right_t[..., :1, :]
    return u, v, values[..., 0]


def conv_singular_values(kernel, input_shape):
    """All singular values of a stride-1 2-D convolution with circular padding.

    Sedghi, Gupta & Long (2019), Theorem 6: the circular convolution with kernel
    ``K`` on an ``n x m`` input is block-diagonalized by the 2-D DFT; its singular
    values are the union over the ``n * m`` frequencies of the singular values of
    the ``c_in x c_out`` matrices ``FFT2(K)[p, q, :, :]``. Vectorized: one batched
    ``fft2d`` and one batched ``svd``, no Python loop over frequencies.

    Args:
      kernel: ``[kh, kw, c_in, c_out]`` (the layout of ``tf.nn.conv2d``), with
        ``kh <= n`` and ``kw <= m``.
      input_shape: ``(n, m)`` or ``(n, m, c_in)``: spatial size of the input.

    Returns:
      1-D tensor of ``n * m * min(c_in, c_out)`` singular values, descending,
      float64 if ``kernel`` is float64 else float32.
    """
    kernel = tf.convert_to_tensor(kernel)
    if kernel.shape.rank != 4:
        raise ValueError(
            f"kernel must have rank 4 [kh, kw, c_in, c_out]; got shape {kernel.shape}."
        )
    n, m = int(input_shape[0]), int(input_shape[1])
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    if kh > n or kw > m:
        raise ValueError(
            f"kernel spatial size {(kh, kw)} must not exceed input_shape {(n, m)}."
        )
    complex_dtype = tf.complex128 if kernel.dtype == tf.float64 else tf.complex64
    k = tf.transpose(kernel, [2, 3, 0, 1])  # [c_in, c_out, kh, kw]
    k = tf.pad(k, [[0, 0], [0, 0], [0, n - kh], [0, m - kw]])
    spectrum = tf.signal.fft2d(tf.cast(k, complex_dtype))  # [c_in, c_out, n, m]
    spectrum = tf.transpose(spectrum, [2, 3, 0, 1])  # [n, m, c_in, c_out]
    values = tf.linalg.svd(spectrum, compute_uv=False)  # [n, m, min(c_in, c_out)]
    values = tf.math.real(tf.reshape(values, [-1]))
    return tf.sort(values, direction="DESCENDING")
