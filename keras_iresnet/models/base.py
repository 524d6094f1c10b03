"""What the three models share: the training step, the divergence guard, ``fit``'s extras.

The training step (:meth:`IResNetModel.train_step`) checks the data, computes the
loss and gradients, checks them before the update (:mod:`keras_iresnet.divergence`),
applies the update and re-tracks every spectral layer's vectors right after it.
The *spectral update policy* is explicit: the models set ``update_policy =
"after_update"`` on all their spectral layers (:meth:`IResNetModel.finish`), so a
training call uses the vectors the last step's tracking left, and the model that
``evaluate``, ``predict`` or an inverse sees after any step is normalized for its
own weights (see :mod:`keras_iresnet.layers.spectral`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import logdet as logdet_lib
from keras_iresnet._tf import all_finite, check, no_autograph, track_loss
from keras_iresnet.callbacks import RefineSpectralNorm, StopOnNonFiniteLoss
from keras_iresnet.certify import refine
from keras_iresnet.divergence import (
    DIVERGED,
    EXPLODED,
    EXPLODING_UPDATE,
    NO_FAILURE,
    NON_FINITE_DATA,
    DivergenceGuard,
    NonFiniteLossError,
)
from keras_iresnet.layers.spectral import SpectralConv2D
from keras_iresnet.layers.walk import normalized_layers

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = [
    "IResNetModel",
    "NON_FINITE_EVAL_DATA",
    "check_static_batches",
    "scale_for_replicas",
    "serialize_logdet",
]

_LOG = logging.getLogger("keras_iresnet")

#: The sentence ``evaluate`` raises for data with NaN or Inf values.
NON_FINITE_EVAL_DATA = (
    "evaluate: the data contain NaN or Inf values; clean the data (or check the preprocessing)."
)


class IResNetModel(keras.Model):
    """The shared machinery of the keras_iresnet models (subclasses set ``trunk`` and heads).

    Subclasses build ``self.trunk`` (an :class:`~keras_iresnet.InvertibleLayer`)
    and their heads in ``__init__``, then call :meth:`finish`.
    """

    _divergence_guard = None

    def finish(self) -> None:
        """Build, and give every spectral layer the models' update policy: ``"after_update"``.

        The training step re-tracks every layer right after the optimizer update,
        so a training call uses the stored vectors as they are.
        """
        self.build((None,) + self.input_shape_)
        for layer in normalized_layers(self.trunk):
            layer.update_policy = "after_update"

    def build(self, input_shape: Sequence[int | None]) -> None:
        # Keras calls build again when loading a model (build_from_config); the
        # sublayers are built once.
        if not self.trunk.built:
            self.trunk.build(tuple(input_shape))
        self._build_heads(self.trunk.compute_output_shape(tuple(input_shape)))

    def _build_heads(self, feature_shape):
        pass

    @no_autograph
    def train_step(self, data: Any) -> dict[str, Any]:
        """One step: data check, loss, gradients, divergence check, update, spectral tracking.

        The update is applied only if the loss and every gradient are finite
        (:mod:`keras_iresnet.divergence`); right after it every spectral layer
        re-tracks its vectors for the updated weights, so the model after any step
        is normalized for *its* weights.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, y = self._inputs_and_targets(x, y)
        data_finite = all_finite(*tf.nest.flatten(x))
        x = check(data_finite, NON_FINITE_DATA, x)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            track_loss(self, loss, tf.shape(tf.nest.flatten(x)[0])[0])
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_weights
        gradients = tape.gradient(scaled, variables)
        guard = self._divergence_guard
        if guard is not None and not guard.guards(variables):
            guard = None  # train_step outside fit, or other variables: check 1 without the snapshot
        checks = (
            guard.before_update(loss, gradients, data_finite)
            if guard
            else DivergenceGuard.check_finite(loss, gradients)
        )
        with tf.control_dependencies(checks):
            gradients = [None if g is None else tf.identity(g) for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, variables))
        with tf.control_dependencies(guard.after_update() if guard else []):
            for layer in normalized_layers(self.trunk):  # the vectors follow the updated weights
                layer.track()
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    @no_autograph
    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, y = self._inputs_and_targets(x, y)
        x = check(all_finite(*tf.nest.flatten(x)), NON_FINITE_EVAL_DATA, x)
        return super().test_step(keras.utils.pack_x_y_sample_weight(x, y, sample_weight))

    @no_autograph
    def predict_step(self, data: Any) -> tf.Tensor | dict[str, tf.Tensor]:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, _ = self._inputs_and_targets(x, y)
        return self(x, training=False)

    def _inputs_and_targets(self, x, y):
        """The model's inputs and targets from what Keras unpacked (a conditional flow
        reads a ``tf.data`` dataset of ``(x, c)`` pairs, unpacked as ``(x, y)``, as inputs)."""
        return x, y

    @no_autograph
    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> tf.Tensor:
        return self._loss(x, y, y_pred, sample_weight, training)

    def _loss(self, x, y, y_pred, sample_weight, training):
        return super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "rmsprop",
        *args: Any,
        jit_compile: bool | str = "auto",
        **kwargs: Any,
    ) -> None:
        """``keras.Model.compile``; ``jit_compile="auto"`` picks XLA only where it measured faster.

        On a machine without a GPU, ``"auto"`` means XLA for models without
        convolutions (on one replica: XLA cannot place the mirrored variables of a
        multi-replica CPU strategy) and no XLA for convolutional ones: XLA:CPU runs this package's
        convolutional training step about 3.5x slower than TensorFlow's own kernels
        (its convolutions are slower than oneDNN's; ``benchmarks`` speed part d),
        while it fuses the many small matrix products of a dense flow (the ``2d``
        recipe's step: 17 ms with XLA, 38 ms without). With a GPU, ``"auto"`` is
        Keras' choice (XLA if every layer supports it). Wherever ``"auto"`` picks
        XLA, a training set whose batches vary in size trains without it (XLA
        compiles one batch shape), with a log message. ``True`` and ``False`` are
        taken as given. What was chosen is ``model.jit_compile``.
        """
        self._jit_auto = jit_compile == "auto"
        if self._jit_auto:
            gpu = bool(tf.config.list_physical_devices("GPU"))
            if gpu:
                jit_compile = "auto"
            else:  # Keras' "auto" never picks XLA on a CPU; ours does for dense models
                jit_compile = (
                    not self._has_convolutions()
                    # XLA cannot place the mirrored variables of several CPU replicas
                    and self.distribute_strategy.num_replicas_in_sync == 1
                    and all(layer.supports_jit for layer in self._flatten_layers())
                )
            if not jit_compile:
                _LOG.info(
                    "jit_compile='auto': no XLA for a convolutional model on this CPU-only "
                    "machine (XLA:CPU convolutions measured slower)."
                )
        return super().compile(optimizer, *args, jit_compile=jit_compile, **kwargs)

    def _has_convolutions(self):
        """Whether any layer of the model (built or not) is a convolution."""
        return any(
            isinstance(layer, (SpectralConv2D, keras.layers.Conv2D))
            for layer in self._flatten_layers(include_self=False, recursive=True)
        )

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compile a loaded model as it was saved (Keras skips models whose ``compile`` is
        overridden).
        """
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        *args: Any,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        validation_split: float = 0.0,
        **kwargs: Any,
    ) -> keras.callbacks.History:
        """``keras.Model.fit`` with the models' callbacks, the divergence guard and clear errors.

        Adds :class:`~keras_iresnet.callbacks.RefineSpectralNorm` and
        :class:`~keras_iresnet.callbacks.StopOnNonFiniteLoss`. Raises
        ``ValueError`` (one sentence) for training data with NaN or Inf values,
        and :class:`~keras_iresnet.divergence.NonFiniteLossError` when the loss or
        a gradient turns NaN or Inf: the weights are then those before the update
        that caused it. Under ``jit_compile=True`` every training batch must have
        the same size (XLA compiles the step for one shape): batch a dataset with
        ``drop_remainder=True``, or pass arrays whose length the batch size divides.
        """
        callbacks = list(callbacks or [])
        if not any(isinstance(c, RefineSpectralNorm) for c in callbacks):
            callbacks.append(RefineSpectralNorm())
        if not any(isinstance(c, StopOnNonFiniteLoss) for c in callbacks):
            callbacks.append(StopOnNonFiniteLoss())
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself; Keras would warn
        if self.compiled and self.jit_compile:
            try:
                check_static_batches(x, batch_size, validation_split)
            except ValueError:
                if not getattr(self, "_jit_auto", False):
                    raise
                _LOG.info(
                    "jit_compile='auto': training batches vary in size; training without XLA."
                )
                self.jit_compile = False
                self.train_function = None
        self._ensure_divergence_guard().failure.assign(NO_FAILURE)
        with self._clean_errors("fit"):
            return super().fit(
                x,
                y,
                batch_size,
                *args,
                callbacks=callbacks,
                validation_split=validation_split,
                **kwargs,
            )

    def evaluate(self, *args: Any, **kwargs: Any) -> float | list[float] | dict[str, float]:
        with self._clean_errors("evaluate"):
            return super().evaluate(*args, **kwargs)

    def _ensure_divergence_guard(self):
        """The snapshot of the trainable weights that a diverging ``fit`` restores."""
        variables = self.trainable_weights
        if self._divergence_guard is None or not self._divergence_guard.guards(variables):
            self._divergence_guard = DivergenceGuard(variables, self.distribute_strategy)
        return self._divergence_guard

    @contextlib.contextmanager
    def _clean_errors(self, method):
        """Turn the graph errors of the data check and the divergence guard into one sentence."""
        try:
            yield
        except tf.errors.InvalidArgumentError as error:
            text = str(error)
            if NON_FINITE_DATA in text or NON_FINITE_EVAL_DATA in text:
                raise ValueError(
                    NON_FINITE_DATA if method == "fit" else NON_FINITE_EVAL_DATA
                ) from None
            if DIVERGED in text or EXPLODED in text:
                raise self._diverged(exploded=EXPLODED in text) from None
            raise
        except NonFiniteLossError as error:  # found after a step under XLA
            if error.cause == "data":  # the step's update is undone, its spectral vectors too
                self._restore_before_failed_update()
                raise ValueError(NON_FINITE_DATA) from None
            raise self._diverged(exploded=error.cause == "exploded") from None

    def _restore_before_failed_update(self):
        """Put back the guard's weights from before the failing update (and converge the
        spectral vectors on them); the guard, or None if this model has none yet."""
        guard = self._divergence_guard
        if guard is not None:
            guard.restore()
            refine(self)
        return guard

    def _diverged(self, exploded=False):
        guard = self._restore_before_failed_update()
        # the steps of this model's fits that passed the check; a failing check is the next
        step = None if guard is None else int(guard.finite_steps.numpy()) + (0 if exploded else 1)
        where = "fit stopped" if step is None else f"fit stopped at training step {step}"
        if exploded:
            cause = (
                f"{where}: its update was larger than {EXPLODING_UPDATE:g} times the weights "
                "(training diverged)"
            )
        else:
            cause = f"{where}: the loss or a gradient became NaN or Inf (training diverged)"
        return NonFiniteLossError(
            f"{cause}, so the weights were restored to those before that update; lower the "
            "learning rate or clip the gradients (e.g. clipnorm=1.0)."
        )

    def features(
        self, x: tf.Tensor | Sequence[tf.Tensor], training: bool | None = None
    ) -> tf.Tensor:
        """The trunk's output ``F(x)``."""
        return self.trunk(x, training=training)

    def invert(self, features: tf.Tensor, **settings: Any) -> tf.Tensor:
        """Inputs from trunk outputs (Algorithm 1 through every block); ``settings``: the
        fields of :class:`keras_iresnet.inverse.InverseSettings`."""
        return self.trunk.inverse(features, **settings)


def check_static_batches(x: Any, batch_size: int | None, validation_split: float) -> None:
    """Under XLA the training batches must have one static size; refuse data that would not."""
    if isinstance(x, tf.data.Dataset):
        first = tf.nest.flatten(x.element_spec)[0]
        if first.shape.rank and first.shape[0] is None:
            raise ValueError(
                "fit with jit_compile=True needs training batches of one static size (XLA "
                "compiles this model's training step for one batch shape); batch the dataset "
                "with drop_remainder=True."
            )
        return
    if isinstance(x, (np.ndarray, tf.Tensor)):
        n = int(x.shape[0])
        if validation_split:
            n = int(math.floor(n * (1.0 - validation_split)))
        size = batch_size or 32
        if n % size:
            raise ValueError(
                "fit with jit_compile=True needs training batches of one static size (XLA "
                f"compiles this model's training step for one batch shape); {n} training examples "
                f"do not split into batches of batch_size={size}: choose a batch size that divides "
                f"{n}, or pass a tf.data.Dataset batched with drop_remainder=True."
            )


def serialize_logdet(
    value: str | dict[str, Any] | logdet_lib.LogDetEstimator | None,
) -> dict[str, Any] | None:
    """An estimator as a model config stores it (None stays None)."""
    return None if value is None else logdet_lib.serialize(value)


def scale_for_replicas(loss: tf.Tensor) -> tf.Tensor:
    """Divide a per-replica mean loss by the number of replicas (gradients are summed across them).

    Keras applies this to compiled losses; a ``compute_loss`` override must do it too.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss
