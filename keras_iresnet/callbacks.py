"""Keras callbacks of keras_iresnet.

- :class:`RefineSpectralNorm` -- at the end of ``fit``, a final safety check of
  the spectral estimates (the models add it);
- :class:`StopOnNonFiniteLoss` -- stop ``fit`` with a clear error when the loss
  turns NaN or Inf (the models add it);
- :class:`SwapEMAWeights` -- Keras' ``SwapEMAWeights`` that also re-tracks the
  spectral layers' power iteration for the weights swapped in;
- :class:`DataDependentInit` -- initialize every ActNorm on one large batch
  before the first step;
- :class:`TimeBudget` -- stop ``fit`` once a wall-clock budget is spent (build and
  tracing included), for comparisons at equal seconds.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING

import keras
import numpy as np

from keras_iresnet.certify import refine
from keras_iresnet.divergence import FAILURE_CAUSES, NO_FAILURE, NonFiniteLossError
from keras_iresnet.layers.walk import normalized_layers

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import tensorflow as tf

__all__ = [
    "TimeBudget",
    "RefineSpectralNorm",
    "StopOnNonFiniteLoss",
    "SwapEMAWeights",
    "DataDependentInit",
    "NonFiniteLossError",
]


class RefineSpectralNorm(keras.callbacks.Callback):
    """At the end of ``fit``: run every spectral layer's power iteration to convergence.

    The layers keep their estimates accurate at every step (a warm-started
    iteration to ``power_tol``, re-tracked after each optimizer update), so this
    normally changes the effective weights by less than that tolerance: it is a
    final check, not a correction. It records the largest relative change of
    any estimate in ``largest_change`` and warns if it exceeds ``warn_above``
    (e.g. with ``power_tol=None`` and one iteration per step, the paper's rule,
    the estimate can lag behind large updates; then this refinement does change
    the model). It also runs after weights were swapped in (EMA) at the end.

    Args:
      warn_above: relative change of sigma~ above which it warns.
      every_epoch: also check after every epoch.
    """

    def __init__(self, warn_above: float = 1e-3, every_epoch: bool = False) -> None:
        super().__init__()
        self.warn_above = warn_above
        self.every_epoch = every_epoch
        self.largest_change = 0.0

    def _refine(self):
        layers = normalized_layers(self.model)
        before = [np.atleast_1d(layer.sigma_estimate().numpy()) for layer in layers]
        refine(self.model)
        signed = []  # per layer: the relative change of largest size, with its sign
        for layer, old in zip(layers, before):
            change = (np.atleast_1d(layer.sigma_estimate().numpy()) - old) / np.maximum(old, 1e-12)
            signed.append(float(change[np.argmax(np.abs(change))]))
        largest = max(signed, key=abs, default=0.0)
        self.largest_change = abs(largest)
        if self.largest_change > self.warn_above:
            effect = (
                "the layers ran up to that much above coeff"
                if largest > 0
                else "the layers were normalized more than needed"
            )
            warnings.warn(
                f"RefineSpectralNorm: a spectral estimate {'rose' if largest > 0 else 'fell'} "
                f"by {abs(largest):.2e} (relative) when refined at the end of fit, so "
                f"{effect} before it and the model changed now: the per-step iteration lagged "
                "behind the updates (raise power_iterations or lower the learning rate; "
                "`keras_iresnet.certify.certify` or `iresnet certify` gives the exact bounds).",
                stacklevel=2,
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.every_epoch:
            self._refine()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._refine()


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise :class:`NonFiniteLossError` at the first batch whose loss is NaN or Inf, or whose
    step the models' divergence guard found failing.

    (Outside XLA the models' training step already fails at that batch with a
    clear message; under XLA, which has no assertion op, the step records what failed
    -- non-finite data, loss or gradients, an exploding update -- and this callback
    reports it right after the step, with its cause, so ``fit`` restores the weights and
    says the same sentence.)
    """

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        guard = getattr(self.model, "_divergence_guard", None)
        # Only an XLA step records failures (a graph step raises): no read per batch otherwise.
        xla = bool(getattr(self.model, "jit_compile", False))
        failure = NO_FAILURE if guard is None or not xla else int(guard.failure.numpy())
        if failure != NO_FAILURE:
            self.model.stop_training = True
            cause = FAILURE_CAUSES[failure]
            raise NonFiniteLossError(f"fit: training step {batch} failed ({cause}).", cause)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"fit: the loss is {float(loss)} at batch {batch}: the data contain NaN/Inf "
                "values or training diverged (lower the learning rate or clip gradients)."
            )


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """``keras.callbacks.SwapEMAWeights`` for i-ResNets: evaluate and save the EMA weights.

    Keras keeps an exponential moving average of the weights when the optimizer
    has ``use_ema=True``; this callback swaps the averages into the model for
    validation (and, with ``swap_on_epoch=True``, at each epoch's end, so
    checkpoints hold them), and after the last epoch the model keeps them.
    Swapping changes the kernels, so every spectral layer's power iteration is
    re-run for the weights swapped in (Residual Flows does the same,
    ``update_lipschitz`` after ``ema.swap()``).

    Keras finalizes the averages correctly only when ``fit`` runs its last epoch:
    when training stops early (``model.stop_training``, ``EarlyStopping``, a time
    budget) with ``swap_on_epoch=True``, Keras' ``finalize_variable_values`` puts the
    *raw* weights back. This callback keeps the EMA weights it swapped in at the
    last epoch's end and restores them at the end of training, so the model always
    ends with the averages.
    """

    _ema_at_epoch_end = None

    def _swap_variables(self):
        super()._swap_variables()
        refine(self.model)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._ema_at_epoch_end = None
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self.swap_on_epoch and self._ema_weights_in_model and epoch != self.params["epochs"] - 1:
            # Keras only finalizes at the planned last epoch; keep these in case fit stops here.
            self._ema_at_epoch_end = [
                variable.numpy() for variable in self.model.trainable_variables
            ]

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._ema_at_epoch_end is not None:
            for variable, value in zip(self.model.trainable_variables, self._ema_at_epoch_end):
                variable.assign(value)
            self._ema_at_epoch_end = None
            refine(self.model)
        super().on_train_end(logs)


class DataDependentInit(keras.callbacks.Callback):
    """Before the first step: one training-mode pass on ``x`` initializes every ActNorm.

    The official i-ResNet code initializes on 1,024 images; a larger batch than
    the training batch gives steadier statistics. (Without this callback each
    ActNorm initializes on the first training batch.)

    Args:
      x: a batch of inputs, ``[n, ...]`` (as the model takes them).
    """

    def __init__(self, x: np.ndarray | tf.Tensor | None) -> None:
        super().__init__()
        self.x = x

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.x is not None:
            self.model(self.x, training=True)
            self.x = None


class TimeBudget(keras.callbacks.Callback):
    """Stop ``fit`` at the end of the first batch after ``seconds`` of wall-clock time.

    The clock starts at ``start`` (a ``time.perf_counter()`` value: pass the time
    the model's build began to count building and tracing too) or, by default,
    when training begins. Time spent in validation is not counted (the same
    held-out evaluation then costs every model the same), so the budget is
    training time: build, tracing and steps. ``fit`` stops at most one step
    after the budget ends (the step in flight finishes); Keras then runs the
    epoch's validation, so the logs hold the held-out metrics *at that moment*.

    Attributes after ``fit``: ``elapsed`` (training seconds counted), ``steps``
    (training steps run) and ``stopped`` (whether the budget ended training).

    Args:
      seconds: the budget (> 0).
      start: optional ``clock()`` value where the budget began.
      clock: the clock, a function returning seconds (default ``time.perf_counter``;
        tests pass a fake one).
    """

    def __init__(
        self,
        seconds: float,
        start: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__()
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"seconds must be a finite number > 0; got seconds={seconds!r}.")
        if not callable(clock):
            raise ValueError(f"clock must be a function returning seconds; got clock={clock!r}.")
        self.seconds = float(seconds)
        self.start = start
        self.clock = clock
        self.elapsed = 0.0
        self.steps = 0
        self.stopped = False
        self._excluded = 0.0
        self._test_began = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.start is None:
            self.start = self.clock()
        self._excluded, self.steps, self.stopped = 0.0, 0, False

    def _spent(self):
        return self.clock() - self.start - self._excluded

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._test_began = self.clock()

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._test_began is not None:
            self._excluded += self.clock() - self._test_began
            self._test_began = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps += 1
        self.elapsed = self._spent()
        if self.elapsed >= self.seconds:
            self.stopped = True
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.elapsed = self._spent()
