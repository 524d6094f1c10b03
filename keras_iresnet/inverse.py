"""Inverting ``y = x + g(x)`` with ``Lip(g) < 1``: Algorithm 1 and an accelerated solver.

Both solvers run inside one ``tf.while_loop`` with ``maximum_iterations`` (so
they work in ``tf.function`` and under XLA ``jit_compile=True``), evaluate ``g``
once per iteration, and stop when every example of the batch has converged:

    ||y - g(x_k) - x_k|| <= atol + rtol * ||y||      (per example, flattened)

The left-hand side is the residual of the fixed-point equation ``x = y - g(x)``;
for Algorithm 1 it equals ``||x_{k+1} - x_k||``, and by the Banach fixed-point
theorem (equation (1)) the error of ``x_{k+1}`` is at most
``Lip(g) / (1 - Lip(g))`` times it. An example that has converged is frozen, so
per-example iteration counts are exact.

Solvers:

- ``"fixed_point"``: Algorithm 1, ``x_{k+1} = y - g(x_k)``, ``x_0 = y``.
- ``"anderson"``: Anderson acceleration (type II, memory ``m``) of the same
  fixed-point map: ``x_{k+1} = sum_i alpha_i f(x_i)`` over the last ``m``
  iterates, with ``alpha`` minimizing ``||sum_i alpha_i (f(x_i) - x_i)||``
  subject to ``sum_i alpha_i = 1`` (a regularized ``m x m`` solve per example).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import warnings
from typing import TYPE_CHECKING

import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet._tf import all_finite, check, graph_function, in_xla_context

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

__all__ = [
    "SOLVERS",
    "InverseSettings",
    "InverseInfo",
    "InverseNotConvergedError",
    "InverseConvergenceWarning",
    "solve_inverse",
    "solve_and_report",
    "report_non_convergence",
    "check_finite",
    "merge_infos",
]

SOLVERS = ("fixed_point", "anderson")


@dataclasses.dataclass(frozen=True)
class InverseSettings:
    """How an inverse is solved: the one place its defaults are written.

    Every invertible layer takes these as keyword arguments of
    ``inverse(y, **settings)`` (layers with a closed-form inverse accept and
    ignore them); a residual block holds its own defaults as one of these.

    Fields:
      solver: ``"fixed_point"`` (Algorithm 1) or ``"anderson"``.
      max_iterations: cap on the evaluations of ``g`` per block (>= 1).
      atol, rtol: stop once ``||y - g(x) - x|| <= atol + rtol * ||y||`` per example.
      strict: raise :class:`InverseNotConvergedError` (eager) or fail an assert
        (graph) instead of warning when the tolerance is not met.
      anderson_memory: iterates mixed by Anderson acceleration.
    """

    solver: str = "fixed_point"
    max_iterations: int = 1000
    atol: float = 1e-6
    rtol: float = 1e-6
    strict: bool = False
    anderson_memory: int = 5

    def __post_init__(self):
        validation.one_of("solver", self.solver, SOLVERS)
        validation.positive_int("max_iterations", self.max_iterations)
        validation.non_negative_float("atol", self.atol)
        validation.non_negative_float("rtol", self.rtol)
        if self.atol == 0 and self.rtol == 0:
            raise ValueError("atol and rtol must not both be 0 (the solve could never stop).")
        if not isinstance(self.strict, bool):
            raise ValueError(f"strict must be True or False; got strict={self.strict!r}.")
        validation.positive_int("anderson_memory", self.anderson_memory)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **overrides: Any) -> InverseSettings:
        """A copy with ``overrides`` applied (``None`` values keep the current setting).

        Raises ``TypeError`` for a name that is not a setting.
        """
        unknown = sorted(set(overrides) - set(self.names()))
        if unknown:
            raise TypeError(
                f"unexpected inverse settings {unknown}; the settings are {self.names()}."
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


InverseInfo = collections.namedtuple("InverseInfo", ["iterations", "residual", "converged"])
InverseInfo.__doc__ = """Convergence report of an inverse, per example (only computed when
asked for).

Fields:
  iterations: ``[batch]`` int32, evaluations of ``g`` the example needed
    (summed over the blocks of a stack or a network).
  residual: ``[batch]``, relative residual ``||x + g(x) - y|| / ||y||`` of the
    returned ``x`` (one extra evaluation of ``g``; the worst block's).
  converged: ``[batch]`` bool, whether the tolerance was met (in every block).
"""


def merge_infos(infos: Iterable[InverseInfo | None]) -> InverseInfo | None:
    """One :class:`InverseInfo` for blocks solved one after the other (``None`` entries skipped)."""
    infos = [info for info in infos if info is not None]
    if not infos:
        return None
    iterations, residual, converged = infos[0]
    for info in infos[1:]:
        iterations = iterations + info.iterations
        residual = tf.maximum(residual, info.residual)
        converged = tf.logical_and(converged, info.converged)
    return InverseInfo(iterations=iterations, residual=residual, converged=converged)


class InverseNotConvergedError(RuntimeError):
    """Raised by ``inverse(..., strict=True)`` when the fixed-point solve did not converge."""


class InverseConvergenceWarning(UserWarning):
    """Warned when an inverse stopped at ``max_iterations`` without meeting the tolerance."""


def _flat_norm(t):
    return tf.norm(tf.reshape(t, [tf.shape(t)[0], -1]), axis=1)


def check_finite(y: tf.Tensor) -> tf.Tensor:
    """``y`` behind the check that it is finite (eager: ``ValueError``; graph: an assertion)."""
    return check(
        all_finite(y), "inverse(y): y contains NaN or Inf values; expected finite inputs.", y
    )


def _fixed_point(g, y, tol, max_iterations):
    batch = tf.shape(y)[0]

    def body(
        k: tf.Tensor, x: tf.Tensor, converged: tf.Tensor, iterations: tf.Tensor, residual: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        x_new = y - g(x)
        res = _flat_norm(x_new - x)
        newly = res <= tol
        keep = _expand(converged, y)
        x = tf.where(keep, x, x_new)
        iterations = tf.where(converged, iterations, k + 1)
        residual = tf.where(converged, residual, res)
        return k + 1, x, tf.logical_or(converged, newly), iterations, residual

    def cond(
        k: tf.Tensor, x: tf.Tensor, converged: tf.Tensor, iterations: tf.Tensor, residual: tf.Tensor
    ) -> tf.Tensor:
        return tf.logical_not(tf.reduce_all(converged))

    state = (
        tf.constant(0),
        y,
        tf.zeros([batch], tf.bool),
        tf.zeros([batch], tf.int32),
        tf.fill([batch], tf.constant(float("inf"), y.dtype)),
    )
    _, x, converged, iterations, residual = tf.while_loop(
        cond, body, state, maximum_iterations=max_iterations
    )
    return x, converged, iterations, residual


def _expand(mask, like):
    return tf.reshape(mask, tf.concat([tf.shape(mask), tf.ones([tf.rank(like) - 1], tf.int32)], 0))


def _anderson(g, y, tol, max_iterations, memory, beta=1.0, regularization=1e-10):
    batch = tf.shape(y)[0]
    shape = tf.shape(y)
    y_flat = tf.reshape(y, [batch, -1])
    dim = tf.shape(y_flat)[1]

    def f(x_flat: tf.Tensor) -> tf.Tensor:
        return y_flat - tf.reshape(g(tf.reshape(x_flat, shape)), [batch, -1])

    def body(
        k: tf.Tensor,
        x: tf.Tensor,
        xs: tf.Tensor,
        fs: tf.Tensor,
        converged: tf.Tensor,
        iterations: tf.Tensor,
        residual: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        fx = f(x)
        r = fx - x
        res = tf.norm(r, axis=1)
        newly = res <= tol
        slot = tf.math.floormod(k, memory)
        one_hot = tf.reshape(tf.one_hot(slot, memory, dtype=x.dtype), [1, memory, 1])
        first = tf.cast(tf.equal(k, 0), x.dtype)
        # On the first step fill every slot (duplicates give the same minimizer).
        write = tf.maximum(one_hot, first)
        xs = xs * (1.0 - write) + x[:, None, :] * write
        fs = fs * (1.0 - write) + fx[:, None, :] * write
        # The m x m least-squares problem in float64: near convergence the residuals
        # are ~1e-7 of y and their Gram matrix is ill-conditioned in float32.
        gs = tf.cast(fs - xs, tf.float64)  # [batch, m, dim] residuals
        gram = tf.matmul(gs, gs, transpose_b=True)  # [batch, m, m]
        # Relative Tikhonov regularization with a floor that is a normal float64: an
        # example whose residuals are all exactly 0 (y = 0, or converged) has a zero Gram
        # matrix, and 1e-10 * 1e-300 would be a subnormal that the solve treats as 0.
        scale = tf.maximum(tf.linalg.trace(gram)[:, None, None] / memory, 1e-200)
        gram = gram + regularization * scale * tf.eye(memory, dtype=tf.float64)
        ones = tf.ones([batch, memory, 1], tf.float64)
        a = tf.linalg.solve(gram, ones)[..., 0]
        alpha = tf.cast(a / tf.reduce_sum(a, axis=1, keepdims=True), x.dtype)
        mixed = beta * tf.einsum("bm,bmd->bd", alpha, fs)
        if beta != 1.0:
            mixed += (1.0 - beta) * tf.einsum("bm,bmd->bd", alpha, xs)
        mixed = tf.where(tf.reduce_all(tf.math.is_finite(mixed), axis=1, keepdims=True), mixed, fx)
        # A converging example takes the plain step f(x), at least as good as x.
        x_next = tf.where(newly[:, None], fx, mixed)
        x = tf.where(converged[:, None], x, x_next)
        iterations = tf.where(converged, iterations, k + 1)
        residual = tf.where(converged, residual, res)
        return k + 1, x, xs, fs, tf.logical_or(converged, newly), iterations, residual

    def cond(
        k: tf.Tensor,
        x: tf.Tensor,
        xs: tf.Tensor,
        fs: tf.Tensor,
        converged: tf.Tensor,
        iterations: tf.Tensor,
        residual: tf.Tensor,
    ) -> tf.Tensor:
        return tf.logical_not(tf.reduce_all(converged))

    zeros = tf.zeros(tf.stack([batch, memory, dim]), y.dtype)
    state = (
        tf.constant(0),
        y_flat,
        zeros,
        zeros,
        tf.zeros([batch], tf.bool),
        tf.zeros([batch], tf.int32),
        tf.fill([batch], tf.constant(float("inf"), y.dtype)),
    )
    _, x, _, _, converged, iterations, residual = tf.while_loop(
        cond, body, state, maximum_iterations=max_iterations
    )
    return tf.reshape(x, shape), converged, iterations, residual


def report_non_convergence(
    converged: tf.Tensor, residual_rel: tf.Tensor, strict: bool, max_iterations: int
) -> tf.Operation | None:
    """Never silent: warn (default) or raise (strict) when some example did not converge."""
    if tf.executing_eagerly():
        if not bool(tf.reduce_all(converged)):
            worst = float(tf.reduce_max(residual_rel))
            count = int(tf.reduce_sum(1 - tf.cast(converged, tf.int32)))
            message = (
                f"inverse did not converge for {count} example(s) within max_iterations="
                f"{max_iterations}; worst relative fixed-point residual {worst:.3e}. The residual "
                "function may not be a contraction (Lip(g) >= 1), or the tolerance is below "
                "float precision."
            )
            if strict:
                raise InverseNotConvergedError(message)
            warnings.warn(message, InverseConvergenceWarning, stacklevel=3)
        return tf.no_op()
    if in_xla_context():
        return tf.no_op()  # XLA has no Assert/Print: use return_info=True to inspect.
    all_converged = tf.reduce_all(converged)
    worst = tf.reduce_max(tf.where(converged, tf.zeros_like(residual_rel), residual_rel))
    message = (
        f"inverse did not converge within max_iterations={max_iterations}; worst relative residual:"
    )
    if strict:
        return tf.debugging.Assert(all_converged, [message, worst])
    return tf.cond(
        all_converged,
        tf.no_op,
        lambda: tf.print("WARNING:", message, worst, output_stream=sys.stderr),
    )


def run_solver(
    g: Callable[[tf.Tensor], tf.Tensor], y: tf.Tensor, settings: InverseSettings
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """The solve without any reporting: ``(x, converged, iterations, loop_residual)``.

    ``loop_residual`` is the relative fixed-point residual the loop measured last
    (of the iterate *before* the returned ``x``, an upper bound of the final one
    for a contraction); no extra evaluation of ``g`` is made.
    """
    y = tf.convert_to_tensor(y)
    y_norm = _flat_norm(y)
    tol = settings.atol + settings.rtol * y_norm
    if settings.solver == "fixed_point":
        run = functools.partial(_fixed_point, g, max_iterations=settings.max_iterations)
    else:
        run = functools.partial(
            _anderson, g, max_iterations=settings.max_iterations, memory=settings.anderson_memory
        )
    x, converged, iterations, residual = run(y, tol)
    return x, converged, iterations, residual / (y_norm + 1e-30)


def final_info(
    g: Callable[[tf.Tensor], tf.Tensor],
    x: tf.Tensor,
    y: tf.Tensor,
    converged: tf.Tensor,
    iterations: tf.Tensor,
) -> InverseInfo:
    """The :class:`InverseInfo` of a solve, with the final residual (one evaluation of ``g``)."""
    final = _flat_norm(x + g(x) - y) / (_flat_norm(y) + 1e-30)
    return InverseInfo(iterations=iterations, residual=final, converged=converged)


def solve_and_report(
    solve: Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]],
    y: tf.Tensor,
    settings: InverseSettings,
    return_info: bool = False,
    compiled: dict[tuple[InverseSettings, bool, int], Callable[..., Any]] | None = None,
    report: bool = True,
    arguments: Sequence[tf.Tensor] = (),
) -> tuple[tf.Tensor, InverseInfo | None]:
    """The one solve path of every inverse: check ``y`` -> solve -> report -> info.

    Args:
      solve: graph code ``(y, *arguments) -> (x, converged, iterations, loop_residual,
        final_residual)`` (per-example tensors; ``final_residual`` only meaningful with
        ``return_info``).
      y: ``[batch, ...]`` outputs to invert.
      settings: the :class:`InverseSettings` of this solve.
      return_info: also return an :class:`InverseInfo`.
      compiled: a dict where, in eager mode, the traced ``solve`` is kept per
        ``(settings, return_info, len(arguments))`` (an eager ``tf.while_loop`` is a
        slow Python loop); None traces it afresh.
      report: warn or raise on non-convergence (False leaves it to the caller, who
        can call :func:`report_non_convergence` with the info).
      arguments: further tensors ``solve`` takes after ``y`` (a conditional block's
        context). They are arguments of the traced function, never captured by it,
        so a cached solve serves every value.

    Returns:
      ``(x, info)``: ``info`` is None without ``return_info``. Non-convergence is
      warned about (or raised with ``strict``) here: eagerly in Python, in a graph by
      an op that ``x`` depends on (under XLA: not at all; inspect ``return_info``).
    """
    if tf.executing_eagerly():
        check_finite(y)
        key = (settings, return_info, len(arguments))
        cache = compiled if compiled is not None else {}
        if key not in cache:
            cache[key] = graph_function(solve)
        x, converged, iterations, residual, final = cache[key](y, *arguments)
        if report:
            report_non_convergence(converged, residual, settings.strict, settings.max_iterations)
    else:
        y = check_finite(y)
        x, converged, iterations, residual, final = solve(y, *arguments)
        if report:
            reported = report_non_convergence(
                converged, residual, settings.strict, settings.max_iterations
            )
            with tf.control_dependencies([reported]):
                x = tf.identity(x)
    info = InverseInfo(iterations, final, converged) if return_info else None
    return x, info


def solve_inverse(
    g: Callable[[tf.Tensor], tf.Tensor],
    y: tf.Tensor,
    settings: InverseSettings | None = None,
    return_info: bool = False,
    report: bool = True,
) -> tf.Tensor | tuple[tf.Tensor, InverseInfo | None]:
    """Solve ``x + g(x) = y`` for ``x`` (Algorithm 1, or Anderson acceleration).

    Args:
      g: the residual function, a contraction mapping ``[batch, ...]`` to the same shape.
      y: ``[batch, ...]`` outputs of the block.
      settings: an :class:`InverseSettings` (default: the defaults).
      return_info: also return an :class:`InverseInfo` (costs one more evaluation of ``g``).
      report: warn or raise on non-convergence (False: leave it to the caller).

    Returns:
      ``x`` of the shape of ``y``, or ``(x, InverseInfo)``.
    """
    settings = settings if settings is not None else InverseSettings()
    if not isinstance(settings, InverseSettings):
        raise TypeError(f"settings must be an InverseSettings; got {type(settings).__name__}.")

    def solve(t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        x, converged, iterations, residual = run_solver(g, t, settings)
        final = final_info(g, x, t, converged, iterations).residual if return_info else residual
        return x, converged, iterations, residual, final

    x, info = solve_and_report(solve, tf.convert_to_tensor(y), settings, return_info, report=report)
    return (x, info) if return_info else x
