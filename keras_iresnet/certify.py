"""After (or during) training: exact Lipschitz bounds, refinement and an inversion-error report.

Section 2.1: the power iteration gives an under-estimate, so the soft
normalization of equation (2) rests on the estimate being accurate; the exact
norms certify ``Lip(g) < 1`` (Theorem 1). This module walks a layer or model:

- :func:`spectral_layers` / :func:`residual_stacks` -- the layers inside (from
  :mod:`keras_iresnet.layers.walk`);
- :func:`refine` -- every spectral layer's power iteration run to convergence;
- :func:`certify` -- exact per-layer norms and per-block bounds; for a conditional
  model also an inverse check at random contexts;
- :func:`reconstruction_report` -- ``||x - F^{-1}(F(x))|| / ||x||`` per example.

For a conditional block ``x + g(x, c)`` the bounds are those of ``Lip_x g(., c)``,
valid for every context ``c``: the context enters through an unnormalized
projection that shifts (or scales by less than 1) the first layer's output, which
does not count (:mod:`keras_iresnet.layers.residual_function` has the argument).
Since the bound holds for every ``c``, so does invertibility; the inverse check
tests it on contexts the model never saw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from keras_iresnet.layers.walk import normalized_layers, residual_stacks, spectral_layers
from keras_iresnet.spectral import conv_singular_values

if TYPE_CHECKING:
    from typing import Any

    import keras

    from keras_iresnet.layers.invertible import InvertibleLayer

__all__ = [
    "spectral_layers",
    "residual_stacks",
    "refine",
    "certify",
    "inverse_check",
    "reconstruction_report",
]

#: The inverse check passes if the relative reconstruction error stays below this.
INVERSE_CHECK_TOLERANCE = 1e-4


def refine(layer_or_model: keras.layers.Layer, **kwargs: Any) -> int:
    """Run the power iteration of every normalized spectral layer to convergence.

    Keyword arguments go to ``SpectralLayerBase.refine`` (``max_iterations``,
    ``rtol``). Returns the number of spectral layers refined.
    """
    layers = normalized_layers(layer_or_model)
    for layer in layers:
        layer.refine(**kwargs)
    return len(layers)


def certify(
    model: keras.layers.Layer, tolerance: float = 1e-3, contexts: int = 8, seed: int = 0
) -> dict[str, Any]:
    """Exact per-layer operator norms and per-block Lipschitz bounds.

    For every spectral layer: the operator norm of its normalized operator as
    applied (zero padding, ``SpectralLayerBase.operator_norm``) and, for stride-1
    convolutions, the largest circular-convolution singular value (FFT + SVD,
    Sedghi et al. 2019). For every block: ``Lip(g) <= prod ||W~_i||`` (for a
    conditional block ``Lip_x g(., c)`` for every ``c``; the context path does not
    count) and whether that proves a contraction.

    Args:
      model: a layer or model.
      tolerance: a layer is ``within_coeff`` if its norm is ``<= coeff * (1 + tolerance)``.
      contexts: a conditional model (or layer): the number of random contexts of
        the inverse check (:func:`inverse_check`); 0 skips it.
      seed: of the inverse check's draws.

    Returns a JSON-serializable dict with ``layers``, ``blocks`` (each with
    ``conditional``), ``all_contractions`` (every block certified ``Lip(g) < 1``)
    and, for a conditional model, ``inverse_check``.
    """
    layers, blocks = [], []
    for stack in residual_stacks(model):
        stack_norms = []
        for layer in stack.linear_layers:
            norms = layer.operator_norm()
            stack_norms.append(norms)
            norms = norms if isinstance(norms, list) else [norms]
            circular = None
            if layer.operator_rank == 4 and layer.strides == (1, 1):
                h, w = layer.built_input_shape[1:3]
                if layer.kernel_size[0] <= h and layer.kernel_size[1] <= w:
                    kernels = layer.normalized_kernel().numpy()
                    kernels = kernels if layer.stack else kernels[None]
                    circular = [float(conv_singular_values(k, (h, w))[0]) for k in kernels]
            for index, norm in enumerate(norms):
                entry = {
                    "name": layer.name if len(norms) == 1 else f"{layer.name}[{index}]",
                    "coeff": layer.coeff,
                    "operator_norm": norm,
                }
                if circular is not None:
                    entry["circular_norm"] = circular[index]
                if layer.coeff is not None:
                    entry["within_coeff"] = bool(norm <= layer.coeff * (1 + tolerance))
                layers.append(entry)
        bounds = stack.lipschitz_bounds(stack_norms)  # the norms above, not computed again
        for index, bound in enumerate(bounds):
            name = stack.name if len(bounds) == 1 else f"{stack.name}[{index}]"
            blocks.append(
                {
                    "name": name,
                    "lipschitz_bound": bound,
                    "contraction": bool(bound < 1.0),
                    "conditional": bool(stack.conditional),
                }
            )
    report = {
        "layers": layers,
        "blocks": blocks,
        "all_contractions": bool(blocks) and all(b["contraction"] for b in blocks),
    }
    if contexts and any(stack.conditional for stack in residual_stacks(model)):
        report["inverse_check"] = inverse_check(model, contexts, seed)
    return report


def inverse_check(model: keras.layers.Layer, count: int = 8, seed: int = 0) -> dict[str, Any]:
    """Every conditional block's inverse at ``count`` random contexts ``c ~ N(0, I)``.

    The certificate holds for every context, so each block's fixed-point solve must
    converge for contexts the model never saw (e.g. not one-hot): for every
    conditional residual stack, ``x ~ N(0, I)`` at its input shape and one random
    context per example, the relative error of ``F^{-1}(F(x, c), c)``. (Per block,
    not through the whole trunk: a ``Logit`` first layer saturates for extreme latents.)

    Args:
      model: a model or layer holding conditional residual stacks.
      count: examples, each with its own context.
      seed: of the draws.

    Returns a dict with ``contexts``, ``stacks`` (how many were checked),
    ``max_relative_error`` (the worst example of any stack; non-finite if a solve
    diverged) and ``passed`` (below :data:`INVERSE_CHECK_TOLERANCE`).
    """
    errors, stacks = [0.0], [s for s in residual_stacks(model) if s.conditional]
    for index, stack in enumerate(stacks):
        if not stack.built:
            raise ValueError(f"{stack.name!r} must be built for the inverse check.")
        shape = (count,) + tuple(stack.built_input_shape[1:])
        x = tf.random.stateless_normal(shape, seed=[seed, 11 + 2 * index])
        c = tf.random.stateless_normal((count,) + stack.context_shape, seed=[seed, 12 + 2 * index])
        errors.extend(reconstruction_report(stack, x, context=c)["errors"])
    worst = float(np.max(errors))  # NaN if any solve diverged
    return {
        "contexts": int(count),
        "stacks": len(stacks),
        "max_relative_error": worst,
        "passed": bool(stacks) and bool(np.isfinite(worst) and worst <= INVERSE_CHECK_TOLERANCE),
    }


def reconstruction_report(
    trunk: InvertibleLayer,
    x: tf.Tensor | np.ndarray,
    context: tf.Tensor | None = None,
    **inverse_settings: Any,
) -> dict[str, Any]:
    """Relative reconstruction error ``||x - F^{-1}(F(x))|| / ||x||`` per example.

    ``context``: the contexts of ``x`` for a conditional model (passed to the trunk
    if the trunk is conditional: a conditional base alone does not enter ``F``).
    Returns a dict with ``mean``, ``max`` and the per-example ``errors``.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    extra = {"context": context} if getattr(trunk, "conditional", False) else {}
    x_rec = trunk.inverse(trunk(x, training=False, **extra), **extra, **inverse_settings)
    diff = tf.reshape(x - x_rec, [tf.shape(x)[0], -1])
    ref = tf.reshape(x, [tf.shape(x)[0], -1])
    errors = (tf.norm(diff, axis=1) / (tf.norm(ref, axis=1) + 1e-30)).numpy()
    return {"mean": float(np.mean(errors)), "max": float(np.max(errors)), "errors": errors.tolist()}
