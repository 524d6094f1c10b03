"""The invertible trunks of the models and their block configuration.

- :func:`block_config`: a residual-block configuration (the arguments of
  :class:`keras_iresnet.InvertibleResidualStack`), checked;
- :func:`classifier_trunk`: the paper's classifier layout (section 5.1);
- :func:`flow_trunk`: the density trunk ``x -> z`` (logit, scales, factor-out, FC end blocks).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.layers import (
    ActNorm,
    FactorOut,
    FlattenEvent,
    InjectivePad,
    InvertibleResidualStack,
    InvertibleSequential,
    Logit,
    Squeeze,
)
from keras_iresnet.layers.reshaping import flatten_context

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from keras_iresnet.layers import InvertibleLayer

__all__ = [
    "block_config",
    "with_default_block",
    "classifier_trunk",
    "flow_trunk",
    "blocks_per_scale",
    "check_squeeze",
    "BLOCK_ARGUMENTS",
    "LN2",
]

LN2 = math.log(2.0)
BLOCK_ARGUMENTS = frozenset(
    [
        "hidden",
        "kernel_sizes",
        "coeff",
        "activation",
        "power_iterations",
        "power_tol",
        "power_vectors",
        "dropout",
        "preactivation",
        "actnorm",
        "actnorm_variance_floor",
        "logdet",
        "solver",
        "max_iterations",
        "atol",
        "rtol",
        "strict",
        "seed",
        "context_mode",
        "context_initializer",
    ]
)


# -- architecture ----------------------------------------------------------------
def block_config(
    block: dict[str, Any] | InvertibleResidualStack | None = None, **overrides: Any
) -> dict[str, Any]:
    """A residual-block configuration: a dict of :class:`InvertibleResidualStack` arguments.

    Args:
      block: a dict, a serialized block (``{"class_name": ..., "config": {...}}``)
        or an :class:`InvertibleResidualStack` whose configuration is copied.
      **overrides: arguments that replace those of ``block``.

    Returns a new dict without ``name`` / ``num_blocks`` (the models set those).
    """
    if isinstance(block, InvertibleResidualStack):
        block = block.get_config()
    elif isinstance(block, dict) and "class_name" in block and "config" in block:
        block = dict(block["config"])
    config = dict(block or {})
    config.update(overrides)
    for key in ("name", "num_blocks", "trainable", "dtype"):
        config.pop(key, None)
    unknown = sorted(set(config) - BLOCK_ARGUMENTS)
    if unknown:
        raise ValueError(
            f"block: unknown residual-block arguments {unknown}; "
            f"expected some of {sorted(BLOCK_ARGUMENTS)}."
        )
    return config


def _stack(num_blocks, block, name, context_shape=None):
    return InvertibleResidualStack(
        num_blocks=num_blocks, name=name, context_shape=context_shape, **block
    )


class _ContextShapes:
    """The context's event shape where each layer of a trunk being assembled sees it.

    Follows every layer's :meth:`~keras_iresnet.InvertibleLayer.context_after` on a
    zero probe (an image context is squeezed and flattened with the data), so the
    shape rule has one home: the layers'.
    """

    def __init__(self, context_shape: Sequence[int] | None) -> None:
        self.probe = None if context_shape is None else tf.zeros((1,) + tuple(context_shape))

    @property
    def shape(self) -> tuple[int, ...] | None:
        return None if self.probe is None else tuple(int(d) for d in self.probe.shape[1:])

    def after(self, layer: InvertibleLayer) -> InvertibleLayer:
        if self.probe is not None:
            self.probe = layer.context_after(self.probe)
        return layer

    def flatten(self) -> None:
        """Where the event is flattened (after factor-out): the context follows."""
        self.probe = flatten_context(self.probe)


def _widen(block, index):
    """The block of scale ``index``: hidden width doubled at each scale (as the channels grow)."""
    return {**block, "hidden": int(block.get("hidden", 64)) * 2**index}


def blocks_per_scale(blocks: int | Sequence[int], image: bool) -> tuple[int, ...]:
    if image:
        blocks = (blocks,) if isinstance(blocks, (int, np.integer)) else tuple(blocks)
        if not blocks:
            raise ValueError("blocks must list at least one scale for images, e.g. blocks=(4, 4).")
        return tuple(validation.non_negative_int("blocks", int(b)) for b in blocks)
    if not isinstance(blocks, (int, np.integer)):
        raise ValueError(
            f"blocks must be an int (the number of blocks) for vectors; got blocks={blocks!r}."
        )
    return (validation.non_negative_int("blocks", int(blocks)),)


def classifier_trunk(
    input_shape: Sequence[int],
    stages: Sequence[int],
    block: dict[str, Any],
    initial_squeeze: bool = True,
    pad_to_channels: int | None = 16,
) -> InvertibleSequential:
    """[Squeeze] -> [InjectivePad to ``pad_to_channels``] -> stacks, ``Squeeze`` between stages.

    ``initial_squeeze`` is the official code's ``init_ds 2``: a space-to-depth
    step before the first stage (``[H, W, C] -> [H/2, W/2, 4C]``), so the blocks
    work on more channels at lower resolution. Vectors (``(d,)``) get one stack
    of dense blocks.
    """
    image = len(input_shape) == 3
    layers = []
    if not image:
        return InvertibleSequential([_stack(sum(stages), block, "stage0")], name="trunk")
    channels = input_shape[-1] * (4 if initial_squeeze else 1)
    if initial_squeeze:
        layers.append(Squeeze(name="squeeze_in"))
    if pad_to_channels and pad_to_channels > channels:
        layers.append(InjectivePad(pad_to_channels - channels, name="pad"))
    for index, depth in enumerate(stages):
        if index > 0:
            layers.append(Squeeze(name=f"squeeze{index}"))
        if depth:
            layers.append(_stack(depth, _widen(block, index), f"stage{index}"))
    return InvertibleSequential(layers, name="trunk")


def flow_trunk(
    input_shape: Sequence[int],
    blocks: int | Sequence[int],
    block: dict[str, Any],
    logit: float | None = None,
    initial_squeeze: bool = False,
    factor_out: bool = False,
    fc_blocks: int = 0,
    fc_block: dict[str, Any] | InvertibleResidualStack | None = None,
    context_shape: Sequence[int] | None = None,
) -> InvertibleSequential:
    """The density trunk ``x -> z`` of :class:`IResNetFlow` (see its arguments).

    Images: [Logit] -> [Squeeze] -> scale 0 -> (Squeeze -> scale i)... with the
    hidden width doubled at each scale; with ``factor_out`` half the channels
    leave after every scale but the last (:class:`FactorOut`, latent ``[D]``);
    then ``fc_blocks`` fully connected blocks on the flattened event, each
    followed by an :class:`ActNorm` over all dimensions. Vectors: [ActNorm-free]
    one stack of ``blocks`` dense blocks. With ``context_shape`` every stack is
    conditional, each built for the context as it reaches it (an image context
    squeezed with the data).
    """
    image = len(input_shape) == 3
    per_scale = blocks_per_scale(blocks, image)
    context = _ContextShapes(context_shape)
    layers = [Logit(logit, name="logit")] if logit else []
    if not image:
        if per_scale[0]:
            layers.append(_stack(per_scale[0], block, "blocks", context.shape))
    else:
        if initial_squeeze:
            layers.append(context.after(Squeeze(name="squeeze_in")))
        scales = []
        for index, depth in enumerate(per_scale):
            scale = [context.after(Squeeze(name=f"squeeze{index}"))] if index > 0 else []
            if depth:
                scale.append(_stack(depth, _widen(block, index), f"scale{index}", context.shape))
            scales.append(scale)
        if factor_out and len(scales) > 1:
            layers.append(
                FactorOut(
                    [InvertibleSequential(s, name=f"scale{i}_chain") for i, s in enumerate(scales)],
                    name="multiscale",
                )
            )
            context.flatten()  # (the probe went through the scales' squeezes above)
        else:
            layers.extend(layer for scale in scales for layer in scale)
    if fc_blocks:
        if image and not (factor_out and len(per_scale) > 1):
            layers.append(context.after(FlattenEvent(name="flatten")))
        fc = {**block_config(fc_block or {}), "actnorm": False}
        for index in range(fc_blocks):
            layers.append(_stack(1, fc, f"fc{index}", context.shape))
            layers.append(
                ActNorm(
                    per_position=True,
                    variance_floor=fc.get("actnorm_variance_floor", 0.0),
                    name=f"fc{index}_actnorm",
                )
            )
    return InvertibleSequential(layers, name="trunk")


def check_squeeze(initial_squeeze: bool, shape: Sequence[int], scales: int) -> None:
    """Images: H and W must be divisible by 2 per squeeze (``scales - 1`` plus the initial one)."""
    if len(shape) != 3:
        return
    factor = 2 ** (scales - 1 + int(initial_squeeze))
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(
            f"input_shape={shape!r}: {scales} scale(s)"
            f"{' after an initial squeeze' if initial_squeeze else ''} "
            f"need H and W divisible by {factor}."
        )


def with_default_block(
    kwargs: dict[str, Any], default_block: dict[str, Any] | InvertibleResidualStack | None
) -> dict[str, Any]:
    """Builders' keyword arguments: block arguments given directly (``hidden=``, ``coeff=``)
    complete ``kwargs["block"]`` (default: ``default_block``) instead of replacing it."""
    direct = {k: kwargs.pop(k) for k in list(kwargs) if k in BLOCK_ARGUMENTS}
    if direct:
        base = kwargs.get("block") if kwargs.get("block") is not None else default_block
        kwargs["block"] = block_config(base, **direct)
    return kwargs
