"""Stopping a diverging ``fit`` before its bad update sticks: two checks and a one-step snapshot.

A training step of the keras_iresnet models computes the loss and the
gradients; then

1. before the optimizer update, the loss and every gradient must be finite
   (:meth:`DivergenceGuard.before_update`): a step that fails raises before
   anything is updated;
2. after the update, the weights must not have exploded: an update larger than
   :data:`EXPLODING_UPDATE` times the weights it was applied to (the global
   Euclidean norms; weights smaller than one per entry in root mean square, such
   as zero-initialized ones, count as one per entry) is refused
   (:meth:`DivergenceGuard.after_update`). With
   ``Adam(1e9)`` the loss and the gradients of the first step are finite, and
   it is the update -- every weight moved by about ``1e9`` -- that is bad.

The guard keeps a copy of the weights as they were before the last update that
passed check 1. When either check fails, ``fit`` puts that copy back
(:meth:`DivergenceGuard.restore`) and raises :class:`NonFiniteLossError` with one
sentence: the model is left as it was before the update that caused the
failure (the optimizer's own state, e.g. Adam's moments, is not restored). The
copy costs one assignment per weight and step (the weights, not the
activations: small next to a step).

Under XLA (``jit_compile=True``, and ``"auto"`` for models without convolutions on a
CPU) there is no assertion op: the step applies its update and records what failed in
:attr:`DivergenceGuard.failure` (non-finite data, a non-finite loss or gradient, an
exploding update); :class:`keras_iresnet.callbacks.StopOnNonFiniteLoss` reads it right
after the step and stops ``fit``, and the same restore and the same sentence follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from keras_iresnet._tf import in_xla_context

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import keras

__all__ = [
    "DivergenceGuard",
    "NO_FAILURE",
    "FAILED_DIVERGED",
    "FAILED_EXPLODED",
    "FAILED_DATA",
    "FAILURE_CAUSES",
    "NonFiniteLossError",
    "DIVERGED",
    "EXPLODED",
    "NON_FINITE_DATA",
    "EXPLODING_UPDATE",
]

#: Markers of the graph errors the checks raise (``fit`` turns them into one sentence).
DIVERGED = "keras_iresnet: the loss or a gradient is NaN or Inf"
EXPLODED = "keras_iresnet: the update exploded"
#: The sentence ``fit`` raises for training data with NaN or Inf values.
NON_FINITE_DATA = (
    "fit: the training data contain NaN or Inf values; nothing was trained on them: clean the "
    "data (or check the preprocessing)."
)

#: An update ``dw`` with ``||dw|| > EXPLODING_UPDATE * max(||w||, sqrt(n))`` (all ``n`` weights
#: together) is refused. Sound training moves the weights by a small fraction of their norm per
#: step (about 1e-3 to 1e-1 here); ten times their whole size in one step is a blow-up, not
#: learning. The floor ``sqrt(n)`` (one per weight) keeps zero-initialized weights trainable
#: with large rates: a first Adam step at rate 0.2 moves each weight by 0.2.
EXPLODING_UPDATE = 10.0


#: Codes of :attr:`DivergenceGuard.failure` (what a step under XLA found).
NO_FAILURE, FAILED_DIVERGED, FAILED_EXPLODED, FAILED_DATA = 0, 1, 2, 3

#: The :attr:`NonFiniteLossError.cause` of each failure code.
FAILURE_CAUSES = {FAILED_DIVERGED: "diverged", FAILED_EXPLODED: "exploded", FAILED_DATA: "data"}


class NonFiniteLossError(FloatingPointError):
    """``fit`` met a NaN or Inf loss or gradient, or an exploding update (the weights
    are restored).

    Attributes:
      cause: ``"diverged"`` (a NaN or Inf loss or gradient), ``"exploded"`` (an exploding
        update) or ``"data"`` (NaN or Inf training data), where known.
    """

    def __init__(self, message: str = "", cause: str = "diverged") -> None:
        super().__init__(message)
        self.cause = cause


def _global_norm(tensors):
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float32))) for t in tensors]))


class DivergenceGuard:
    """The snapshot of the weights before the last good update, and the two checks.

    Not a Keras object (nothing is saved with the model): ``fit`` creates one for
    the model's trainable variables, under the model's distribution strategy.

    Args:
      variables: the model's trainable variables (Keras variables), in order.
      strategy: the model's ``tf.distribute`` strategy.
    """

    def __init__(
        self, variables: Iterable[keras.Variable], strategy: tf.distribute.Strategy
    ) -> None:
        self.variables = list(variables)
        with strategy.scope():
            # Every replica holds the same weights, so the first replica's assignment
            # is the copy (ONLY_FIRST_REPLICA: assignable in a replica's step).
            self.snapshots = [
                tf.Variable(
                    tf.convert_to_tensor(v),
                    trainable=False,
                    name="snapshot",
                    synchronization=tf.VariableSynchronization.ON_WRITE,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                )
                for v in self.variables
            ]
            # What a step under XLA found (no assertion op there): a FAILED_* code, read by
            # StopOnNonFiniteLoss after the step; 0 while every check passes.
            self.failure = tf.Variable(
                NO_FAILURE,
                dtype=tf.int32,
                trainable=False,
                name="failure",
                synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            # Steps whose loss and gradients were finite (the failing step is the next one).
            self.finite_steps = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="finite_steps",
                synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

    def guards(self, variables: Iterable[keras.Variable]) -> bool:
        """Whether this guard was made for exactly these variables."""
        return [id(v) for v in self.variables] == [id(v) for v in variables]

    @staticmethod
    def all_finite(loss: tf.Tensor, gradients: Sequence[tf.Tensor | None]) -> tf.Tensor:
        """A scalar bool: the loss and every gradient finite, on every replica of a strategy."""
        flags = [tf.reduce_all(tf.math.is_finite(loss))]
        flags += [tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None]
        bad = tf.cast(tf.logical_not(tf.reduce_all(tf.stack(flags))), tf.int32)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            bad = context.all_reduce(tf.distribute.ReduceOp.SUM, bad)
        return tf.equal(bad, 0)

    @classmethod
    def check_finite(
        cls, loss: tf.Tensor, gradients: Sequence[tf.Tensor | None]
    ) -> list[tf.Operation]:
        """Check 1 alone (no snapshot): ops that fail outside XLA when the step is not finite."""
        if in_xla_context():
            return []
        return [tf.debugging.Assert(cls.all_finite(loss, gradients), [DIVERGED])]

    def before_update(
        self,
        loss: tf.Tensor,
        gradients: Sequence[tf.Tensor | None],
        data_finite: tf.Tensor | None = None,
    ) -> list[tf.Operation | tf.Variable]:
        """Check 1 and the snapshot: ops that must run before the update.

        Keeps the weights as they are now (before this update) if the step is
        finite and leaves the snapshot as it was otherwise; outside XLA, fails
        with :data:`DIVERGED` before anything is updated. Under XLA it records
        :data:`FAILED_DATA` (``data_finite`` false) or :data:`FAILED_DIVERGED` in
        :attr:`failure` instead.
        """
        finite = self.all_finite(loss, gradients)
        xla = in_xla_context()
        data_ok = tf.constant(True) if data_finite is None or not xla else data_finite
        # Under XLA the update of a step with NaN data is applied too: keep the weights from
        # before it (a non-finite loss on finite data is blamed on the previous update, whose
        # weights the snapshot then still holds).
        keep = tf.logical_or(finite, tf.logical_not(data_ok))
        updates = [
            s.assign(tf.where(keep, tf.convert_to_tensor(v), tf.convert_to_tensor(s)))
            for s, v in zip(self.snapshots, self.variables)
        ]
        updates.append(self.finite_steps.assign_add(tf.cast(finite, tf.int64)))
        if xla:
            code = tf.where(finite, NO_FAILURE, tf.where(data_ok, FAILED_DIVERGED, FAILED_DATA))
            updates.append(self.failure.assign(tf.maximum(self.failure, code)))
            return updates
        with tf.control_dependencies(updates):
            return [tf.debugging.Assert(finite, [DIVERGED])]

    def after_update(self) -> list[tf.Operation]:
        """Check 2: fails with :data:`EXPLODED` (under XLA: records :data:`FAILED_EXPLODED`)
        if the update was larger than :data:`EXPLODING_UPDATE` times the weights before it."""
        before = [tf.convert_to_tensor(s) for s in self.snapshots]
        change = _global_norm([tf.convert_to_tensor(v) - b for v, b in zip(self.variables, before)])
        count = sum(int(b.shape.num_elements()) for b in before)
        size = tf.maximum(_global_norm(before), tf.sqrt(float(count)))
        sound = change <= EXPLODING_UPDATE * size
        if in_xla_context():
            code = tf.where(
                tf.logical_or(sound, self.failure > NO_FAILURE), self.failure, FAILED_EXPLODED
            )
            return [self.failure.assign(code)]
        return [tf.debugging.Assert(sound, [EXPLODED])]

    def restore(self) -> None:
        """Put the weights from before the last good update back (eager)."""
        for variable, snapshot in zip(self.variables, self.snapshots):
            variable.assign(tf.convert_to_tensor(snapshot))
