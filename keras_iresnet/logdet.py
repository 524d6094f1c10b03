"""Estimators of ``log det(I + J_g(x))`` for a residual block ``F(x) = x + g(x)`` (section 3).

Every estimator is a callable ``estimator(g, x, seed=None) -> (g(x), log_det)``:

- ``g``: the residual function, ``[batch, ...] -> [batch, ...]``.
- ``x``: ``[batch, ...]``.
- ``seed``: optional ``[2]`` int32 tensor for stateless probe sampling (the
  blocks pass a fresh one per call, different per replica); ``None`` draws
  probes from TensorFlow's global generator.
- ``log_det``: ``[batch]``, differentiable w.r.t. ``x`` and the variables of ``g``.

``g`` may be evaluated on ``k`` *example-major* copies of each example (``Exact``
makes ``k = d``: rows ``[e * k, (e + 1) * k)`` are copies of example ``e``); a block
maps row ``r`` to example ``r // k`` for what is fixed per example -- its dropout
masks and, in a conditional block, the context. An estimator of your own that
tiles batch-major (``tf.tile(x, [k, 1])``) would pair rows with the wrong
examples' masks and contexts: repeat example-major instead.

Estimators (see the table in the README for when to use which):

- :class:`Exact` -- ``log|det(I + J)|`` from the full Jacobian, built by
  forward-mode differentiation (d Jacobian-vector products in one batched pass)
  and a closed-form determinant for d <= 2, ``slogdet`` above (QR under XLA):
  exact, O(d) passes and O(d^3); for small d (2-D and tabular data).
- :class:`PowerSeries` -- the truncated series of equation (5) with Hutchinson's
  trace estimator, every term a vector-Jacobian product (Algorithm 2). Biased;
  the bias is bounded by Theorem 3 (:func:`truncation_bound`).
- :class:`RussianRoulette` -- the unbiased estimator of Residual Flows (Chen et
  al., 2019): a random number of terms ``n = n_exact_terms + N``,
  ``N ~ Geometric(p)``, each term reweighted by ``1 / P(n >= k)``; its gradient
  uses the Neumann series ``d log det(I+J) = tr((I+J)^{-1} dJ) =
  sum_k (-1)^k tr(J^k dJ)`` so backpropagation never goes through the terms
  (memory flat in ``n``).
- :class:`Auto` -- ``Exact`` up to ``max_exact_dim`` dimensions (default 16),
  the power series above.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet._tf import in_xla_context

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "LogDetEstimator",
    "Exact",
    "PowerSeries",
    "RussianRoulette",
    "Auto",
    "get",
    "serialize",
    "truncation_bound",
    "event_size",
]

PROBES = ("gaussian", "rademacher")


def event_size(x: tf.Tensor) -> int:
    """Number of dimensions of one example of ``x`` (static)."""
    size = 1
    for dim in x.shape[1:]:
        if dim is None:
            raise ValueError(f"log-det estimators need a static event shape; got {x.shape}.")
        size *= int(dim)
    return size


def _inner(a, b):
    """Per-example inner product of two ``[batch, ...]`` tensors -> ``[batch]``."""
    return tf.reduce_sum(tf.reshape(a * b, [tf.shape(a)[0], -1]), axis=1)


def _probe(shape, dtype, kind, seed):
    if kind == "gaussian":
        if seed is None:
            return tf.random.normal(shape, dtype=dtype)
        return tf.random.stateless_normal(shape, seed=seed, dtype=dtype)
    if seed is None:
        bits = tf.random.uniform(shape, maxval=2, dtype=tf.int32)
    else:
        bits = tf.random.stateless_uniform(shape, seed=seed, maxval=2, dtype=tf.int32)
    return tf.cast(2 * bits - 1, dtype)


def _vjp_function(tape, target, source):
    """``w -> w^T d target / d source`` from a recorded tape (zeros where unconnected)."""

    def vjp(w: tf.Tensor) -> tf.Tensor:
        return tape.gradient(
            target, source, output_gradients=w, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )

    return vjp


def _fold_seed(seed, salt):
    if seed is None:
        return None
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), salt)


def truncation_bound(lipschitz: float, dim: int, n_terms: int) -> float:
    """Theorem 3: ``|PS(J_g, n) - ln det(I + J_g)| <= -d (ln(1 - L) + sum_{k<=n} L^k / k)``.

    Args:
      lipschitz: ``Lip(g) = L`` with ``0 <= L < 1``.
      dim: event dimension d.
      n_terms: number of series terms n.

    Returns:
      The bound in nats (Python float); divide by ``d * ln 2`` for bits/dim.
    """
    if not 0 <= lipschitz < 1:
        raise ValueError(f"lipschitz must satisfy 0 <= L < 1; got {lipschitz!r}.")
    if n_terms < 0 or dim < 1:
        raise ValueError(f"need n_terms >= 0 and dim >= 1; got n_terms={n_terms}, dim={dim}.")
    partial = sum(lipschitz**k / k for k in range(1, int(n_terms) + 1))
    return max(0.0, -dim * (math.log1p(-lipschitz) + partial))


class LogDetEstimator:
    """Base class: ``estimator(g, x, seed=None) -> (g(x), log_det[batch])``.

    Subclass it for your own estimator: implement ``__call__`` and
    ``get_config`` (constructor arguments), and register the class with
    ``@keras.saving.register_keras_serializable(package="...")`` so blocks that
    use it save to and load from ``.keras`` files (as every estimator here is).
    """

    def __call__(
        self, g: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, seed: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LogDetEstimator:
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):  # configs may nest (Auto holds its series): hash their canonical JSON
        return hash((type(self).__name__, json.dumps(self.get_config(), sort_keys=True)))


def _log_abs_det(matrices):
    """``log|det|`` of ``[batch, d, d]``: closed form for d <= 2, else ``slogdet`` (QR under XLA).

    The closed forms keep the gradient graph small (no matrix inverse), XLA has
    no ``slogdet`` kernel.
    """
    d = int(matrices.shape[-1])
    if d == 1:
        return tf.math.log(tf.abs(matrices[:, 0, 0]))
    if d == 2:
        det = matrices[:, 0, 0] * matrices[:, 1, 1] - matrices[:, 0, 1] * matrices[:, 1, 0]
        return tf.math.log(tf.abs(det))
    if in_xla_context():
        r = tf.linalg.qr(matrices).r
        return tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r))), axis=-1)
    return tf.linalg.slogdet(matrices)[1]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class Exact(LogDetEstimator):
    """``log|det(I + J_g(x))|`` from the full Jacobian: exact, for small event dimension d.

    Where ``g`` offers ``g.value_and_jacobian(x) -> (g(x), J [batch, d, d])`` (the
    dense residual functions of this package do: ``J`` is a product of their weight
    matrices and activation derivatives), that closed form is used. Otherwise the
    Jacobian is built by forward-mode differentiation: ``g`` is evaluated
    once on ``d`` copies of each example, each copy carrying one basis vector as
    its tangent (``tf.autodiff.ForwardAccumulator``), so the d columns
    ``J e_i`` come out of one batched pass. Compared with d vector-Jacobian
    products of a recorded tape, the training gradient then differentiates a
    first-order graph (smaller to trace, no second-order backward pass). The
    determinant is in closed form for d <= 2, else ``slogdet`` (QR under XLA).

    Refuses events with more than ``max_dim`` dimensions (default 256): the cost
    is d evaluations of ``g`` and O(d^3) per example.
    """

    def __init__(self, max_dim: int = 256) -> None:
        self.max_dim = validation.positive_int("max_dim", max_dim)

    def __call__(
        self, g: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, seed: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(x)
        d = event_size(x)
        if d > self.max_dim:
            raise ValueError(
                f"the exact log-det needs the full {d}x{d} Jacobian per example; events of "
                f"dimension {d} exceed max_dim={self.max_dim}. Use logdet='power_series' or "
                "'russian_roulette', or raise max_dim."
            )
        value_and_jacobian = getattr(g, "value_and_jacobian", None)
        if value_and_jacobian is not None:
            # g knows its Jacobian in closed form (a dense residual function: a product of
            # its weight matrices and activation derivatives): no copies, no forward mode.
            gx, jacobian = value_and_jacobian(x)
            return gx, _log_abs_det(tf.eye(d, dtype=x.dtype) + jacobian)
        # All d columns of J at once: g on d copies of each example, copy i carrying
        # the tangent e_i (forward mode, differentiable by the outer tape).
        batch = tf.shape(x)[0]
        # [batch * d, ...], example-major; a broadcast (not tf.repeat, whose gradient
        # inside a while loop needs shapes XLA cannot infer at compile time).
        event = tf.shape(x)[1:]
        copies = tf.reshape(
            tf.broadcast_to(x[:, None], tf.concat([[batch, d], event], 0)),
            tf.concat([[batch * d], event], 0),
        )
        basis = tf.tile(tf.eye(d, dtype=x.dtype), tf.stack([batch, 1]))  # [batch * d, d]
        with tf.autodiff.ForwardAccumulator(
            copies, tf.reshape(basis, tf.shape(copies))
        ) as accumulator:
            g_copies = g(copies)
        columns = accumulator.jvp(g_copies, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # jac_t[b, i, :] = (J_g(x_b) e_i)^T: the transpose of J, with the same determinant.
        jac_t = tf.reshape(columns, [-1, d, d])
        gx = tf.reshape(g_copies, tf.concat([[batch, d], tf.shape(x)[1:]], 0))[:, 0]
        return gx, _log_abs_det(tf.eye(d, dtype=x.dtype) + jac_t)

    def get_config(self) -> dict[str, Any]:
        return {"max_dim": self.max_dim}


@keras.saving.register_keras_serializable(package="keras_iresnet")
class PowerSeries(LogDetEstimator):
    """Truncated power series with Hutchinson's estimator: equation (5), Algorithm 2.

    ``log det(I + J) ~= sum_{k=1}^{n} (-1)^{k+1} / k * v^T J^k v`` with probes
    ``v`` (``E[v] = 0``, ``Cov(v) = I``), averaged over ``n_samples`` probes.
    ``w^T J`` is a vector-Jacobian product of one persistent ``tf.GradientTape``
    (no Jacobian is ever formed). Bias: :func:`truncation_bound`.

    Gradient (``neumann_gradient=True``, the default): the value is the same, but
    the gradient is taken through one differentiable VJP with the Neumann vector
    ``sum_{k<n} (-1)^k J^{kT} v`` instead of backpropagating through all n
    terms. Both are unbiased estimates of the same quantity,
    ``d PS(J_g, n) = sum_{k<n} (-1)^k tr(J^k dJ)`` (by the cyclic property of the
    trace), but the Neumann form costs one VJP instead of n second-order passes,
    and its memory does not grow with n (``benchmarks/logdet.py``). The last
    term ``v^T J^n v`` is read off that final VJP, so a call costs n VJPs in all.
    ``neumann_gradient=False`` backpropagates through the series (the paper's
    Algorithm 2 taken literally).
    """

    def __init__(
        self,
        n_terms: int = 5,
        n_samples: int = 1,
        probe: str = "gaussian",
        neumann_gradient: bool = True,
    ) -> None:
        self.n_terms = validation.positive_int("n_terms", n_terms)
        self.n_samples = validation.positive_int("n_samples", n_samples)
        self.probe = validation.one_of("probe", probe, PROBES)
        self.neumann_gradient = bool(neumann_gradient)

    def __call__(
        self, g: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, seed: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(x)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            gx = g(x)

        vjp = _vjp_function(tape, gx, x)
        total = tf.zeros(tf.shape(x)[:1], x.dtype)
        for s in range(self.n_samples):
            v = _probe(tf.shape(x), x.dtype, self.probe, _fold_seed(seed, s))
            if self.neumann_gradient:
                total += _neumann_series(vjp, v, self.n_terms, lambda k: 1.0)
            else:
                w = v
                for k in range(1, self.n_terms + 1):
                    w = vjp(w)
                    total += ((-1.0) ** (k + 1) / k) * _inner(w, v)
        del tape
        return gx, total / self.n_samples

    def get_config(self) -> dict[str, Any]:
        return {
            "n_terms": self.n_terms,
            "n_samples": self.n_samples,
            "probe": self.probe,
            "neumann_gradient": self.neumann_gradient,
        }


def _neumann_series(vjp, v, n_terms, inv_survival):
    """Value of the (reweighted) series and its Neumann-series gradient surrogate, n VJPs in all.

    Args:
      vjp: ``w -> w^T J`` of the recorded forward tape (persistent): the
        series' VJPs are under ``tf.stop_gradient``, the final one is differentiable.
      v: probe ``[batch, ...]``.
      n_terms: Python int (unrolled) or scalar int32 tensor (``tf.while_loop``; may be 0).
      inv_survival: ``k -> 1 / P(n >= k)`` (1 for a fixed n).

    Returns ``[batch]`` whose value is
    ``sum_{k=1}^{n} (-1)^{k+1}/k * v^T J^k v / P(n >= k)`` and whose gradient is
    ``sum_{j=0}^{n-1} (-1)^j / P(n >= j+1) * v^T J^j (dJ) v`` (Chen et al. 2019,
    Neumann gradient series).

    Cost: n VJPs (n - 1 for ``w_k = (J^T)^k v``, k < n, and the final
    differentiable ``u = J^T neumann``). The last term ``v^T J^n v`` needs no VJP
    of its own: ``<u, v> = sum_{k=1}^{n} (-1)^(k-1) c_k v^T J^k v`` (c_k = 1/P(n >= k))
    already contains it, so the value is
    ``<u, v> / n + sum_{k<n} (-1)^(k-1) c_k (1/k - 1/n) v^T J^k v``.
    """
    dtype = v.dtype
    v = tf.stop_gradient(v)
    n_float = tf.cast(tf.maximum(n_terms, 1), dtype)

    def body(
        k: tf.Tensor, w: tf.Tensor, estimate: tf.Tensor, neumann: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:  # term k >= 1 (k < n)
        w = tf.stop_gradient(vjp(w))
        k_float = tf.cast(k, dtype)
        sign = tf.cast(1 - 2 * tf.math.floormod(k, 2), dtype)  # (-1)^k
        weight = tf.cast(inv_survival(k), dtype) * (1.0 / k_float - 1.0 / n_float)
        estimate = estimate - sign * weight * _inner(w, v)  # (-1)^(k-1) c_k (1/k - 1/n) v^T J^k v
        neumann = neumann + sign * tf.cast(inv_survival(k + 1), dtype) * w
        return k + 1, w, estimate, neumann

    first = tf.cast(inv_survival(1), dtype) * v  # term 0: w_0 = v, no VJP
    if not isinstance(n_terms, int):
        first = first * tf.cast(n_terms > 0, dtype)
    state = (tf.constant(1), v, tf.zeros(tf.shape(v)[:1], dtype), first)
    if isinstance(n_terms, int):
        for _ in range(1, n_terms):
            state = body(*state)
    else:
        # tape.gradient of the (persistent) forward tape works inside the loop body
        state = tf.while_loop(lambda k, *_: k < n_terms, body, state)
    _, _, estimate, neumann = state
    surrogate = _inner(vjp(tf.stop_gradient(neumann)), v)
    estimate = estimate + tf.stop_gradient(surrogate) / n_float
    return tf.stop_gradient(estimate) + surrogate - tf.stop_gradient(surrogate)


@keras.saving.register_keras_serializable(package="keras_iresnet")
class RussianRoulette(LogDetEstimator):
    """Unbiased "Russian roulette" estimator of Residual Flows (Chen et al., 2019).

    Evaluates ``n = n_exact_terms + N`` terms with ``N ~ Geometric(p)`` on
    ``{0, 1, ...}`` (one draw per call), reweighting term ``k`` by
    ``1 / P(n >= k)``, so ``E[estimate] = log det(I + J)`` exactly (up to the
    cap ``max_terms``, reached with probability ``(1-p)^(max_terms - n_exact_terms)``).
    The gradient uses the Neumann series (memory does not grow with n).

    Variance/cost: the expected number of terms is ``n_exact_terms + (1-p)/p``;
    a smaller ``p`` or more exact terms lower the variance at more VJPs per call.
    Every term is a VJP of the one recorded forward tape (the same cost as a
    term of :class:`PowerSeries`), in a ``tf.while_loop`` over the random number
    of terms: n VJPs per call in all, ``n_exact_terms + (1-p)/p`` on average.
    """

    def __init__(
        self,
        n_exact_terms: int = 2,
        p: float = 0.5,
        n_samples: int = 1,
        probe: str = "gaussian",
        max_terms: int = 64,
    ) -> None:
        self.p = validation.open_unit("p", p)
        self.n_exact_terms = validation.non_negative_int("n_exact_terms", n_exact_terms)
        self.n_samples = validation.positive_int("n_samples", n_samples)
        self.probe = validation.one_of("probe", probe, PROBES)
        self.max_terms = validation.positive_int("max_terms", max_terms)
        if self.max_terms <= self.n_exact_terms:
            raise ValueError(
                f"max_terms must exceed n_exact_terms; got max_terms={max_terms}, "
                f"n_exact_terms={n_exact_terms}."
            )

    def _inv_survival(self, k):
        """``1 / P(n >= k)`` for term index k (int32 tensor)."""
        extra = tf.maximum(tf.cast(k, tf.float32) - self.n_exact_terms, 0.0)
        return tf.exp(-extra * math.log1p(-self.p))

    def _sample_n(self, seed):
        shape = []
        if seed is None:
            u = tf.random.uniform(shape, minval=1e-7, maxval=1.0)
        else:
            u = tf.random.stateless_uniform(shape, seed=seed, minval=1e-7, maxval=1.0)
        extra = tf.floor(tf.math.log(u) / math.log1p(-self.p))
        n = self.n_exact_terms + tf.cast(extra, tf.int32)
        return tf.minimum(n, self.max_terms)

    def __call__(
        self, g: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, seed: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(x)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            gx = g(x)

        vjp = _vjp_function(tape, gx, x)
        total = tf.zeros(tf.shape(x)[:1], x.dtype)
        for s in range(self.n_samples):
            v = _probe(tf.shape(x), x.dtype, self.probe, _fold_seed(seed, 2 * s))
            n = self._sample_n(_fold_seed(seed, 2 * s + 1))
            total += _neumann_series(vjp, v, n, self._inv_survival)
        del tape
        return gx, total / self.n_samples

    def get_config(self) -> dict[str, Any]:
        return {
            "n_exact_terms": self.n_exact_terms,
            "p": self.p,
            "n_samples": self.n_samples,
            "probe": self.probe,
            "max_terms": self.max_terms,
        }


@keras.saving.register_keras_serializable(package="keras_iresnet")
class Auto(LogDetEstimator):
    """:class:`Exact` for events of at most ``max_exact_dim`` dimensions, else ``series``."""

    def __init__(
        self,
        max_exact_dim: int = 16,
        series: str | dict[str, Any] | LogDetEstimator | None = None,
    ) -> None:
        self.max_exact_dim = validation.non_negative_int("max_exact_dim", max_exact_dim)
        self.series = get(series) if series is not None else PowerSeries()
        self._exact = Exact(max_dim=max(self.max_exact_dim, 1))

    def choose(self, x: tf.Tensor) -> LogDetEstimator:
        return self._exact if event_size(x) <= self.max_exact_dim else self.series

    def __call__(
        self, g: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, seed: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        return self.choose(x)(g, x, seed=seed)

    def get_config(self) -> dict[str, Any]:
        return {"max_exact_dim": self.max_exact_dim, "series": serialize(self.series)}


#: Short names accepted wherever an estimator is (``logdet="power_series"``).
NAMES = {
    "exact": Exact,
    "power_series": PowerSeries,
    "russian_roulette": RussianRoulette,
    "auto": Auto,
}


def serialize(estimator: str | dict[str, Any] | LogDetEstimator) -> dict[str, Any]:
    """An estimator as Keras serializes objects (``keras.saving.serialize_keras_object``).

    Works for any registered :class:`LogDetEstimator` subclass, the user's included.
    """
    return keras.saving.serialize_keras_object(get(estimator))


def get(identifier: str | dict[str, Any] | LogDetEstimator) -> LogDetEstimator:
    """An estimator from a short name (:data:`NAMES`), a serialized dict, or an instance."""
    if isinstance(identifier, LogDetEstimator):
        return identifier
    if isinstance(identifier, str) and identifier in NAMES:
        return NAMES[identifier]()
    if isinstance(identifier, dict) and identifier.get("class_name") in NAMES:
        # The short-name form {"class_name": "power_series", "config": {...}}.
        return NAMES[identifier["class_name"]].from_config(identifier.get("config", {}))
    if isinstance(identifier, dict) and "class_name" in identifier:
        estimator = keras.saving.deserialize_keras_object(identifier)
        if isinstance(estimator, LogDetEstimator):
            return estimator
    raise ValueError(
        f"logdet must be one of {tuple(NAMES)}, a serialized estimator or a "
        f"LogDetEstimator instance; got logdet={identifier!r}."
    )
