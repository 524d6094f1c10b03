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

- :func:`subspace_iteration` -- block power iteration with ``k`` vectors and
  Rayleigh-Ritz for the top singular value of any linear operator given the
  operator and its adjoint, optionally for a stack of independent operators at
  once, stopped by a tolerance on the predicted error of sigma~ (robust when the
  top singular values are close).
- :func:`conv_singular_values` -- all singular values of a stride-1 circular 2-D
  convolution via the FFT of the kernel and per-frequency SVDs.
- :func:`dense_singular_vectors` -- exact top singular vectors of (stacked)
  dense kernels by SVD (numpy), used to start dense layers at convergence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import ArrayLike

__all__ = [
    "l2_normalize",
    "subspace_iteration",
    "conv_singular_values",
    "dense_singular_vectors",
]

_EPS = 1e-12


def _norms(t, batch_dims):
    """Euclidean norm over all axes but the first ``batch_dims``: shape ``t.shape[:batch_dims]``."""
    return tf.norm(tf.reshape(t, tf.concat([tf.shape(t)[:batch_dims], [-1]], 0)), axis=-1)


def l2_normalize(t: tf.Tensor, batch_dims: int = 0) -> tf.Tensor:
    """Divide ``t`` by its Euclidean norm over all axes but the first ``batch_dims``. Shape kept."""
    norm = _norms(t, batch_dims)
    return t / tf.reshape(
        norm + _EPS, tf.concat([tf.shape(norm), tf.ones([tf.rank(t) - batch_dims], tf.int32)], 0)
    )


_MAX_RATE = 0.999


def _predicted_error(change, change_new, rate, precision):
    """The stopping rule of both iterations: ``(rate, predicted remaining relative error)``.

    The error decays geometrically at a rate ``rho`` that is estimated as the
    ratio of successive changes; the first changes mostly measure how fast the
    *fast* components of the start die out, so the rule keeps the larger of the
    last two rate estimates and predicts the remaining error as
    ``change * rho / (1 - rho)``. Where no previous change exists (``change`` is
    inf: the first iteration of a call) the estimate is ``rate`` itself, which
    :func:`subspace_iteration` starts at 0.999 ("unknown") in every call.
    A change at float precision stops.
    """
    current = tf.where(
        tf.math.is_inf(change), rate, tf.clip_by_value(change_new / (change + _EPS), 0.0, _MAX_RATE)
    )
    rho = tf.maximum(current, rate)
    remaining = tf.where(tf.math.is_inf(change_new), change_new, change_new * rho / (1.0 - rho))
    remaining = tf.where(change_new <= precision, tf.zeros_like(change_new), remaining)
    return current, remaining


def _flatten_vectors(vectors, batch_dims):
    """``[*batch, k, ...] -> [*batch, k, d]``."""
    shape = tf.shape(vectors)
    return tf.reshape(vectors, tf.concat([shape[: batch_dims + 1], [-1]], 0))


def _orthonormal_rows(flat):
    """Orthonormalize the ``k`` rows of ``[*batch, k, d]`` (thin QR), keeping their span.

    The rows are divided by their largest entry first (the span is unchanged), so
    the QR's norms cannot overflow for rows as large as ``A^T A V`` of a huge kernel.
    """
    scale = tf.reduce_max(tf.abs(flat), axis=[-2, -1], keepdims=True)
    flat = flat / tf.where(scale > 0, scale, tf.ones_like(scale))
    q, _ = tf.linalg.qr(tf.linalg.matrix_transpose(flat))
    return tf.linalg.matrix_transpose(q)


def subspace_iteration(
    operator: Callable[[tf.Tensor], tf.Tensor],
    adjoint: Callable[[tf.Tensor], tf.Tensor],
    vectors: tf.Tensor,
    max_iterations: int | tf.Tensor = 1,
    rtol: float | tf.Tensor | None = None,
    batch_dims: int = 0,
    previous_sigma: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Block power iteration with Rayleigh-Ritz for the largest singular value of ``A``.

    Keeps ``k`` orthonormal vectors ``V`` (the rows of ``vectors``) and iterates
    ``V <- orth(A^T A V)``; after each iteration the Rayleigh-Ritz step
    diagonalizes the ``k x k`` matrix ``G = V^T A^T A V`` and rotates ``V`` onto
    its eigenvectors, sorted by decreasing Ritz value. ``sigma~ = sqrt(lambda_max(G))``
    is a lower bound of ``||A||_2`` whose error decays like
    ``(sigma_{k+1} / sigma_1)^2`` per iteration instead of ``(sigma_2 / sigma_1)^2``:
    when the top singular values are close, or cross as the weights change during
    training, the new top direction is already in the span of ``V`` and is found
    at once, where a single-vector power iteration warm-started from the old top
    vector needs hundreds of iterations (measured on trained convolutions).

    Each iteration applies the operator and its adjoint once to the ``k`` vectors
    (as a batch), one thin QR and one ``k x k`` symmetric eigendecomposition.

    Stopping rule (``rtol``): the top Ritz value increases monotonically and
    converges geometrically, ``sigma - sigma~_k ~ C rho^k``. The change of one
    iteration alone underestimates the remaining error by ``1 / (1 - rho)``, which
    is large when the singular values are close (common for convolutions), so the
    loop estimates ``rho`` from two successive changes (:func:`_predicted_error`)
    and stops once the *predicted remaining error* ``change * rho / (1 - rho)`` is at
    most ``rtol * sigma~`` for every operator (or the change is at float precision).
    It runs in one ``tf.while_loop`` with ``maximum_iterations`` (``tf.function`` and
    XLA compatible).

    Args:
      operator: ``[k, ...] -> [k, ...]`` (input space -> output space, batched over
        the ``k`` vectors; with ``batch_dims=1`` over ``[n, k, ...]``).
      adjoint: the exact adjoint of ``operator``.
      vectors: ``[k, ...]`` (or ``[n, k, ...]``) starting vectors (need not be orthonormal).
      max_iterations: cap on the iterations (>= 1).
      rtol: tolerance of the predicted relative error of sigma~ (None: always ``max_iterations``).
      batch_dims: 0 for one operator, 1 for a stack of operators.
      previous_sigma: the Ritz value sigma~ the previous call on the same (slowly
        changing) operator ended with: the first iteration's change is then
        measured against it (with the unknown-rate bound, 0.999, so it stops only
        at a change below ``rtol / 1000``), and a warm-started iteration whose
        vectors still fit the operator stops after one iteration. (A rate
        measured in an earlier call is not reused: when the weights move, top
        singular values cross and the old rate can be far too optimistic.)

    Returns:
      ``(vectors, sigma, iterations, ritz)``: orthonormal vectors sorted by Ritz value
      (the first is the top right singular vector estimate), sigma~ ``= ||A v_1||``
      (scalar or ``[n]``; a lower bound of ``||A||_2``), the number of iterations
      (int32 scalar) and the final top Ritz value (to pass as ``previous_sigma``
      to the next call).
    """
    shape = tf.shape(vectors)
    dtype = vectors.dtype
    rtol_t = tf.constant(-1.0, dtype) if rtol is None else tf.cast(rtol, dtype)
    precision = tf.constant(8 * np.finfo(dtype.as_numpy_dtype).eps, dtype)
    q = _orthonormal_rows(_flatten_vectors(vectors, batch_dims))
    batch_shape = tf.shape(q)[:batch_dims]
    inf = tf.fill(batch_shape, tf.constant(float("inf"), dtype))
    start_rate = tf.fill(batch_shape, tf.constant(_MAX_RATE, dtype))
    if previous_sigma is None:
        start_sigma = tf.zeros(batch_shape, dtype)
    else:
        start_sigma = tf.cast(tf.reshape(previous_sigma, batch_shape), dtype)

    def cond(
        i: tf.Tensor,
        q: tf.Tensor,
        sigma: tf.Tensor,
        change: tf.Tensor,
        rate: tf.Tensor,
        predicted: tf.Tensor,
    ) -> tf.Tensor:
        return tf.logical_and(i < max_iterations, tf.reduce_any(predicted > rtol_t))

    def body(
        i: tf.Tensor,
        q: tf.Tensor,
        sigma: tf.Tensor,
        change: tf.Tensor,
        rate: tf.Tensor,
        predicted: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        w = _flatten_vectors(adjoint(operator(tf.reshape(q, shape))), batch_dims)  # rows of A^T A Q
        gram = tf.matmul(q, w, transpose_b=True)  # Q^T A^T A Q, [*batch, k, k]
        gram = 0.5 * (gram + tf.linalg.matrix_transpose(gram))
        values, rotation = _symmetric_eigh(gram)  # ascending
        values = tf.reverse(values, [-1])
        rotation = tf.reverse(rotation, [-1])
        sigma_new = tf.sqrt(tf.maximum(values[..., 0], 0.0))
        q_new = _orthonormal_rows(
            tf.matmul(rotation, w, transpose_a=True)
        )  # the span of A^T A Q, Ritz-sorted
        # Without a previous sigma~ the first iteration only gives the first Ritz value.
        first_without_previous = tf.logical_and(tf.equal(i, 0), previous_sigma is None)
        change_new = tf.where(
            first_without_previous, inf, tf.abs(sigma_new - sigma) / (sigma_new + _EPS)
        )
        rate_new, remaining = _predicted_error(change, change_new, rate, precision)
        return i + 1, q_new, sigma_new, change_new, rate_new, remaining

    iterations, q, ritz, _, _, _ = tf.while_loop(
        cond,
        body,
        (tf.constant(0), q, start_sigma, inf, start_rate, inf),
        maximum_iterations=max_iterations,
    )
    vectors = tf.reshape(q, shape)
    top = tf.gather(vectors, [0], axis=batch_dims)  # sigma~ = ||A v_1|| of the returned top vector
    sigma = tf.norm(_flatten_vectors(operator(top), batch_dims)[..., 0, :], axis=-1)
    return vectors, sigma, iterations, ritz


def _symmetric_eigh(gram):
    """``tf.linalg.eigh`` of ``[*batch, k, k]`` symmetric matrices, robust to their scale.

    Each matrix is divided by its largest entry first (the eigenvectors are
    unchanged, the eigenvalues scaled back), so kernels of any magnitude -- a
    diverging optimizer can make them ~1e9 -- do not make LAPACK fail. A matrix
    with non-finite entries gets NaN eigenvalues (and the identity as vectors)
    instead of an error, so a diverged model shows a NaN loss, which training
    reports, rather than an eigensolver failure.
    """
    finite = tf.reduce_all(tf.math.is_finite(gram), axis=[-2, -1], keepdims=True)
    scale = tf.reduce_max(
        tf.abs(tf.where(finite, gram, tf.zeros_like(gram))), axis=[-2, -1], keepdims=True
    )
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    identity = tf.eye(tf.shape(gram)[-1], batch_shape=tf.shape(gram)[:-2], dtype=gram.dtype)
    values, vectors = tf.linalg.eigh(tf.where(finite, gram / scale, identity))
    values = values * scale[..., 0]
    nan = tf.constant(float("nan"), gram.dtype)
    return tf.where(finite[..., 0], values, nan), vectors


def dense_singular_vectors(kernel: ArrayLike, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` input-space singular vectors of dense kernel(s) ``[..., in, out]``
    (numpy SVD).

    For ``y = x @ W`` (rows act on the left), ``W = U S V^T``: the input row
    maximizing ``||x W||`` is ``U[:, 0]^T``. Returns ``(v, sigma)``: ``[..., k, in]``
    (sorted by singular value) and the largest singular values ``[...]``.
    """
    kernel = np.asarray(kernel, np.float64)
    left, values, _ = np.linalg.svd(kernel, full_matrices=False)
    return np.swapaxes(left[..., :, :k], -1, -2), values[..., 0]


def conv_singular_values(kernel: tf.Tensor | np.ndarray, input_shape: Sequence[int]) -> tf.Tensor:
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
        raise ValueError(f"kernel spatial size {(kh, kw)} must not exceed input_shape {(n, m)}.")
    complex_dtype = tf.complex128 if kernel.dtype == tf.float64 else tf.complex64
    k = tf.transpose(kernel, [2, 3, 0, 1])  # [c_in, c_out, kh, kw]
    k = tf.pad(k, [[0, 0], [0, 0], [0, n - kh], [0, m - kw]])
    spectrum = tf.signal.fft2d(tf.cast(k, complex_dtype))  # [c_in, c_out, n, m]
    spectrum = tf.transpose(spectrum, [2, 3, 0, 1])  # [n, m, c_in, c_out]
    values = tf.linalg.svd(spectrum, compute_uv=False)  # [n, m, min(c_in, c_out)]
    values = tf.math.real(tf.reshape(values, [-1]))
    return tf.sort(values, direction="DESCENDING")
