"""The paper's i-ResNet classifier (section 5.1, Appendix C)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from keras_iresnet import validation
from keras_iresnet._tf import no_autograph
from keras_iresnet.layers import ClassifierHead
from keras_iresnet.models import presets
from keras_iresnet.models.base import IResNetModel
from keras_iresnet.models.trunks import (
    block_config,
    check_squeeze,
    classifier_trunk,
    with_default_block,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    import tensorflow as tf

    from keras_iresnet.layers.residual import InvertibleResidualStack

__all__ = ["IResNetClassifier", "iresnet_classifier"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class IResNetClassifier(IResNetModel):
    """The paper's i-ResNet classifier (section 5.1, Appendix C).

    ``[Squeeze] -> [InjectivePad]``, stages of invertible residual blocks separated
    by ``Squeeze``, then a non-invertible :class:`~keras_iresnet.layers.ClassifierHead`
    (BatchNorm, ReLU, global average pooling, Dense). Defaults: the preset
    :data:`keras_iresnet.models.presets.DIGITS_CLASSIFIER` (the paper's layout at
    digits size; ``None`` for an argument also means the preset's value).

    Args:
      input_shape: ``(H, W, C)`` (or ``(d,)``).
      num_classes: number of classes.
      stages: blocks per stage, e.g. ``(2, 2)``; the hidden width doubles per stage.
      block: the block configuration (see :func:`block_config`), e.g.
        ``{"hidden": 32, "coeff": 0.9}``.
      initial_squeeze: start with a ``Squeeze`` (the official code's ``init_ds 2``).
      pad_to_channels: zero-pad the channels to this many (``InjectivePad``, section 5.1).
      vanilla: the same network without spectral normalization (``coeff=None``),
        for the paper's comparison.

    Inputs ``[batch, H, W, C]`` (or ``[batch, d]``); outputs logits ``[batch, num_classes]``.
    ``features(x)`` gives the trunk output and ``invert(features)`` reconstructs ``x``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        stages: Sequence[int] | None = presets.DIGITS_CLASSIFIER["stages"],
        block: dict[str, Any] | InvertibleResidualStack | None = presets.DIGITS_CLASSIFIER["block"],
        initial_squeeze: bool | None = presets.DIGITS_CLASSIFIER["initial_squeeze"],
        pad_to_channels: int | None = presets.DIGITS_CLASSIFIER["pad_to_channels"],
        vanilla: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        defaults = presets.DIGITS_CLASSIFIER
        self.input_shape_ = validation.shape("input_shape", input_shape)
        self.num_classes = validation.positive_int("num_classes", num_classes)
        self.stages = tuple(
            validation.non_negative_int("stages", int(s))
            for s in (defaults["stages"] if stages is None else stages)
        )
        self.block = block_config(defaults["block"] if block is None else block)
        self.initial_squeeze = bool(
            defaults["initial_squeeze"] if initial_squeeze is None else initial_squeeze
        )
        self.pad_to_channels = validation.non_negative_int(
            "pad_to_channels",
            defaults["pad_to_channels"] if pad_to_channels is None else pad_to_channels,
        )
        self.vanilla = bool(vanilla)
        check_squeeze(self.initial_squeeze, self.input_shape_, len(self.stages))
        block = {**self.block, "coeff": None} if self.vanilla else self.block
        self.trunk = classifier_trunk(
            self.input_shape_, self.stages, block, self.initial_squeeze, self.pad_to_channels
        )
        self.head = ClassifierHead(self.num_classes, name="head")
        self.finish()

    def _build_heads(self, feature_shape):
        if not self.head.built:
            self.head.build(feature_shape)

    @no_autograph
    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.head(self.trunk(x, training=training), training=training)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            input_shape=self.input_shape_,
            num_classes=self.num_classes,
            stages=self.stages,
            block=self.block,
            initial_squeeze=self.initial_squeeze,
            pad_to_channels=self.pad_to_channels,
            vanilla=self.vanilla,
        )
        return config


def iresnet_classifier(
    input_shape: Sequence[int], num_classes: int, **kwargs: Any
) -> IResNetClassifier:
    """Build an :class:`IResNetClassifier`; block arguments (``hidden=``, ``coeff=``, ...)
    may be given directly and complete the default block.

    See :class:`IResNetClassifier` for the arguments.
    """
    kwargs = with_default_block(kwargs, presets.DIGITS_CLASSIFIER["block"])
    return IResNetClassifier(input_shape, num_classes, **kwargs)
