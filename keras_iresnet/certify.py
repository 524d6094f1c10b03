"""After (or during) training: exact Lipschitz bounds, refinement and an inversion-error report.

Section 2.1: the power iteration gives an under-estimate, so the soft
normalization of equation (2) rests on the estimate being accurate; the exact
norms certify ``Lip(g) < 1`` (Theorem 1). This module walks a layer or model:

- :func:`spectral_layers` / :func:`residual_stacks` -- the layers inside (from
  :mod:`keras_iresnet.layers.walk`);
- :func:`refine` -- every spectral layer's power iteration run to convergence;
- :func:`certify` -- exact per-layer norms and per-block bounds;
- :func:`reconstruction_report` -- ``||x - F^{-1}(F(x))|| / ||x||`` per example.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_iresnet.layers.walk import normalized_layers, residual_stacks, spectral_layers
from keras_iresnet.spectral import conv_singular_values

__all__ = ["spectral_layers", "residual_stacks", "refine", "certify", "reconstruction_report"]


def refine(layer_or_model, **kwargs):
    """Run the power iteration of every normalized spectral layer to convergence.

    Keyword arguments go to ``SpectralLayerBase.refine`` (``max_iterations``,
    ``rtol``). Returns the number of spectral layers refined.
    """
    layers = normalized_layers(layer_or_model)
    for layer in layers:
        layer.refine(**kwargs)
    return len(layers)


def certify(model, tolerance=1e-3):
    """Exact per-layer operator norms and per-block Lipschitz bounds.

    For every spectral layer: the operator norm of its normalized operator as
    applied (zero padding, ``SpectralLayerBase.operator_norm``) and, for stride-1
    convolutions, the largest circular-convolution singular value (FFT + SVD,
    Sedghi et al. 2019). For every block: ``Lip(g) <= prod ||W~_i||`` and whether
    that proves a contraction.

    Args:
      model: a layer or model.
      tolerance: a layer is ``within_coeff`` if its norm is ``<= coeff * (1 + tolerance)``.

    Returns a JSON-serializable dict with ``layers``, ``blocks`` and
    ``all_contractions`` (every block certified ``Lip(g) < 1``).
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
                {"name": name, "lipschitz_bound": bound, "contraction": bool(bound < 1.0)}
            )
    return {
        "layers": layers,
        "blocks": blocks,
        "all_contractions": bool(blocks) and all(b["contraction"] for b in blocks),
    }


def reconstruction_report(trunk, x, **inverse_settings):
    """Relative reconstruction error ``||x - F^{-1}(F(x))|| / ||x||`` per example.

    Returns a dict with ``mean``, ``max`` and the per-example ``errors``.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    x_rec = trunk.inverse(trunk(x, training=False), **inverse_settings)
    diff = tf.reshape(x - x_rec, [tf.shape(x)[0], -1])
    ref = tf.reshape(x, [tf.shape(x)[0], -1])
    errors = (tf.norm(diff, axis=1) / (tf.norm(ref, axis=1) + 1e-30)).numpy()
    return {"mean": float(np.mean(errors)), "max": float(np.max(errors)), "errors": errors.tolist()}
