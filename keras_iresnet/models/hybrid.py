"""The hybrid model: a shared invertible trunk with a classifier head and a density term
(section 6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet._tf import no_autograph
from keras_iresnet.layers import ClassifierHead
from keras_iresnet.models import presets
from keras_iresnet.models.base import scale_for_replicas
from keras_iresnet.models.flow import IResNetFlow
from keras_iresnet.models.trunks import with_default_block

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["IResNetHybrid", "iresnet_hybrid"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class IResNetHybrid(IResNetFlow):
    """Shared invertible trunk with a classification head and a density term (section 6).

    Loss = cross-entropy + ``density_weight`` * bits/dim (Nalisnick et al. 2019).
    ``fit(x, labels)`` with ``x`` dequantized to ``[0, 1)``; outputs
    ``{"logits", "log_prob"}``; the metrics are ``loss``, ``accuracy``,
    ``bits_per_dim`` (and its standard error). Every argument left None takes
    the value of the preset :data:`keras_iresnet.models.presets.DIGITS_HYBRID`; the
    architecture arguments are those of :class:`IResNetFlow` (without
    ``factor_out``: the head needs the final image).

    Args:
      input_shape: ``(H, W, C)`` (or ``(d,)``).
      num_classes: number of classes.
      density_weight: weight of bits/dim in the loss.
      blocks, block, logit, base, initial_squeeze, fc_blocks, fc_block,
      eval_logdet, data_8bit, trunk: as :class:`IResNetFlow` (``factor_out`` is refused).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        density_weight: float | None = presets.DIGITS_HYBRID["density_weight"],
        **kwargs: Any,
    ) -> None:
        defaults = presets.DIGITS_HYBRID
        for key in (
            "blocks",
            "block",
            "logit",
            "base",
            "initial_squeeze",
            "fc_blocks",
            "eval_logdet",
        ):
            if kwargs.get(key) is None and key in defaults and "trunk" not in kwargs:
                kwargs[key] = defaults[key]
        if kwargs.get("factor_out"):
            raise ValueError(
                "IResNetHybrid cannot factor out: its head classifies the trunk's final image."
            )
        if kwargs.get("context_shape") is not None:
            raise ValueError(
                "IResNetHybrid is not conditional (its labels are targets); use IResNetFlow("
                "..., context_shape=...) for a class-conditional density."
            )
        self.num_classes = validation.positive_int("num_classes", num_classes)
        self.density_weight = validation.non_negative_float(
            "density_weight",
            defaults["density_weight"] if density_weight is None else density_weight,
        )
        self.head = ClassifierHead(self.num_classes, name="head")
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        super().__init__(input_shape, **kwargs)

    def _build_heads(self, feature_shape):
        super()._build_heads(feature_shape)
        if not self.head.built:
            self.head.build(feature_shape)

    @no_autograph
    def call(self, x: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        log_prob, z = self._log_prob_graph(
            x, bool(training), None if training else self.eval_logdet
        )
        return {"logits": self.head(z, training=training), "log_prob": log_prob}

    def _loss(self, x, y, y_pred, sample_weight, training):
        bpd = self.bits_per_dim(y_pred["log_prob"])
        self.bits_per_dim_metric.update_state(bpd)
        self.accuracy_metric.update_state(y, y_pred["logits"])
        loss = self.cross_entropy(y, y_pred["logits"]) + self.density_weight * tf.reduce_mean(bpd)
        return scale_for_replicas(loss)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_classes=self.num_classes, density_weight=self.density_weight)
        return config


def iresnet_hybrid(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> IResNetHybrid:
    """Build an :class:`IResNetHybrid` classifier + density model; block arguments may be
    given directly and complete the default block. See :class:`IResNetHybrid`."""
    kwargs = with_default_block(kwargs, presets.DIGITS_HYBRID["block"])
    return IResNetHybrid(input_shape, num_classes, **kwargs)
