"""Operator-norm estimation for dense and convolutional layers.

Section 2.1 of Behrmann et al. (2019): a power iteration on the *parameter
matrix* of a convolution (Miyato et al., 2018; what
``keras.layers.SpectralNormalization`` does) only bounds the operator norm of the
convolution. Like the paper (following Gouk et al., 2018) we run the power
iteration through the operator itself: ``tf.nn.conv2d`` and its adjoint
``tf.nn.conv2d_transpose`` on the layer's real input shape and padding. The
estimate sigma~ is an under-estimate of ``||W||_2``; after training, the exact
singular values of a circular convolution (Sedghi, Gupta & Long, 2019) certify
the bound, see :func:`conv_singular_values` and :func:`operator_norm`.

Public functions:

- :func:`power_iteration` -- power iteration of any linear operator given the
  operator and its adjoint.
- :func:`conv_singular_values` -- all singular values of a stride-1 circular 2-D
  convolution via the FFT of the kernel and per-frequency SVDs.
- :func:`operator_norm` -- the norm of a spectral layer's effective
  (normalized) operator as it is applied, computed to convergence.
- :func:`refine` -- run more power iterations on every spectral layer of a
  layer or model (tightens the estimate after training).
"""
from __future__ import annotations

import tensorflow as tf

__all__ = [
    "l2_normalize",
    "power_iteration",
    "conv_singular_values",
    "operator_norm",
    "refine",
    "spectral_layers",
]

_EPS = 1e-12


def l2_normalize(t):
    """Divide ``t`` by its Frobenius norm (all axes). Shape is kept."""
    return t / (tf.norm(tf.reshape(t, [-1])) + _EPS)


def power_iteration(operator, adjoint, v, max_iterations=1, tol=None):
    """Power iteration for the largest singular value of a linear operator ``A``.

    Args:
      operator: callable ``v -> A v`` (input space -> output space).
      adjoint: callable ``u -> A^T u`` (output space -> input space). For a
        convolution this is ``tf.nn.conv2d_transpose`` with the same kernel,
        strides and padding, which is the exact adjoint.
      v: initial right singular vector, any shape accepted by ``operator``.
      max_iterations: number of iterations (int or scalar tensor), >= 1.
      tol: if given, stop early once the right vector moves less than ``tol``
        (``||v_new - v||``, unit vectors). The error of sigma decays like the
        square of that change, so ``tol=1e-4`` already gives ~1e-8 relative.

    Returns:
      ``(u, v, sigma)``: unit left vector (output space), unit right vector
      (input space) and ``sigma = ||A v||``, an under-estimate of ``||A||_2``
      that increases monotonically with the iterations.
    """
    v = l2_normalize(v)
    av = operator(v)
    sigma = tf.norm(tf.reshape(av, [-1]))
    tol_t = tf.constant(-1.0, sigma.dtype) if tol is None else tf.cast(tol, sigma.dtype)

    def cond(i, v, av, sigma, change):
        return tf.logical_and(i < max_iterations, change > tol_t)

    def body(i, v, av, sigma, change):
        v_new = l2_normalize(adjoint(av))
        av_new = operator(v_new)
        sigma_new = tf.norm(tf.reshape(av_new, [-1]))
        change = tf.norm(tf.reshape(v_new - v, [-1]))
        return i + 1, v_new, av_new, sigma_new, change

    _, v, av, sigma, _ = tf.while_loop(
        cond,
        body,
        (tf.constant(0), v, av, sigma, tf.constant(float("inf"), sigma.dtype)),
        maximum_iterations=max_iterations,
    )
    u = av / (sigma + _EPS)
    return u, v, sigma


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


def spectral_layers(layer):
    """All spectral-normalized layers inside ``layer`` (itself included), in order."""
    from keras_iresnet.layers.spectral_layers import SpectralLayerBase

    return [
        sub
        for sub in layer._flatten_layers(include_self=True, recursive=True)
        if isinstance(sub, SpectralLayerBase)
    ]


def operator_norm(layer, input_shape=None, max_iterations=5000, tol=1e-6, seed=0):
    """Norm of a spectral layer's *effective* linear operator, as it is applied.

    For ``SpectralDense`` this is the largest singular value of the normalized
    kernel matrix (computed by SVD). For ``SpectralConv2D`` it is the operator
    norm of the convolution with the layer's real strides and (zero) padding on
    ``input_shape`` (``(H, W, C)``; default: the layer's built input shape), by
    power iteration through ``conv2d`` / ``conv2d_transpose`` from a random start
    run until the right singular vector moves less than ``tol``. This converges
    to the true norm from below; the exact circular-padding values of
    :func:`conv_singular_values` are an independent check for stride-1 layers.

    Returns a Python float.
    """
    from keras_iresnet.layers.spectral_layers import SpectralLayerBase

    if not isinstance(layer, SpectralLayerBase):
        raise TypeError(
            f"layer must be a SpectralDense or SpectralConv2D; got {type(layer).__name__}."
        )
    if not layer.built:
        raise ValueError(f"layer {layer.name!r} is not built yet: call it on an input first.")
    kernel = layer.normalized_kernel(training=False)
    if layer.operator_rank == 2:
        return float(tf.linalg.svd(kernel, compute_uv=False)[0])
    if input_shape is None:
        _, _, sigma = layer.compiled_power_iteration(
            kernel,
            tf.random.stateless_normal(layer.power_v.shape, seed=[seed, 17], dtype=kernel.dtype),
            max_iterations,
            tol,
        )
        return float(sigma)
    shape = (1,) + tuple(int(d) for d in input_shape[-3:])
    if shape[-1] != layer.built_input_shape[-1]:
        raise ValueError(
            f"input_shape must have {layer.built_input_shape[-1]} channels for layer "
            f"{layer.name!r}; got input_shape={tuple(input_shape)}."
        )
    _, _, sigma = power_iteration(
        lambda v: layer.apply_operator(v, kernel),
        lambda u: layer.apply_adjoint(u, kernel, input_shape=shape),
        tf.random.stateless_normal(shape, seed=[seed, 17], dtype=kernel.dtype),
        max_iterations=max_iterations,
        tol=tol,
    )
    return float(sigma)


def refine(layer_or_model, max_iterations=1000, tol=1e-5):
    """Tighten the power-iteration estimate of every spectral layer in a model.

    With one power iteration per training step the stored vectors lag behind the
    weights, so sigma~ can under-estimate ``||W||_2`` and the soft normalization
    of equation (2) can let ``||W~||_2`` exceed ``coeff``. Call this after
    training (``IResNet`` models and :class:`keras_iresnet.callbacks.RefineSpectralNorm`
    do it for you at the end of ``fit``) to run the iteration until convergence.

    Returns the number of spectral layers refined.
    """
    layers = spectral_layers(layer_or_model)
    for spectral_layer in layers:
        spectral_layer.refine_power_iteration(max_iterations=max_iterations, tol=tol)
    return len(layers)
