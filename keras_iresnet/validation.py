"""Argument checks shared by every module: one clear ``ValueError`` naming the argument.

This module sits at the bottom of the package (it imports nothing from it), so
layers, solvers, estimators, models, recipes and the command line all validate
with the same words. Every check returns the normalized value, so a constructor
reads ``self.units = validation.positive_int("units", units)``.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    import keras

_T = TypeVar("_T")

__all__ = [
    "coeff",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "fraction",
    "open_unit",
    "one_of",
    "int_pair",
    "shape",
    "input_shape",
]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def coeff(value: float | None, allow_none: bool = True, name: str = "coeff") -> float | None:
    """The normalization coefficient of equation (2): ``0 < coeff < 1``, or None (no
    normalization).
    """
    if value is None and allow_none:
        return None
    if not _is_real(value):
        raise ValueError(
            f"{name} must be a float with 0 < {name} < 1"
            f"{' (or None to disable normalization)' if allow_none else ''}; got {name}={value!r}."
        )
    if not 0.0 < float(value) < 1.0:
        raise ValueError(
            f"{name} must satisfy 0 < {name} < 1 so that the layer is a contraction "
            f"(Lip(g) < 1, Theorem 1); got {name}={value!r}."
            + (" Use coeff=None to build an unnormalized (vanilla) layer." if allow_none else "")
        )
    return float(value)


def positive_int(name: str, value: int) -> int:
    """An integer ``>= 1`` (bools refused)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {name}={value!r}.")
    return int(value)


def non_negative_int(name: str, value: int) -> int:
    """An integer ``>= 0`` (bools refused)."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0; got {name}={value!r}.")
    return int(value)


def positive_float(name: str, value: float) -> float:
    """A finite real ``> 0``."""
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {name}={value!r}.")
    return float(value)


def non_negative_float(name: str, value: float) -> float:
    """A finite real ``>= 0``."""
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {name}={value!r}.")
    return float(value)


def fraction(name: str, value: float) -> float:
    """A real in ``[0, 1)`` (dropout rates)."""
    if not _is_real(value) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must satisfy 0 <= {name} < 1; got {name}={value!r}.")
    return float(value)


def open_unit(name: str, value: float) -> float:
    """A real in ``(0, 1)`` (probabilities, the logit's alpha, EMA decays)."""
    if not _is_real(value) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must satisfy 0 < {name} < 1; got {name}={value!r}.")
    return float(value)


def one_of(name: str, value: _T, choices: Collection[_T]) -> _T:
    """``value`` if it is one of ``choices`` (strings compared as given)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {name}={value!r}.")
    return value


def int_pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """A positive int or a pair of them -> ``(a, b)``."""
    if _is_int(value):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_int(v) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them; got {name}={value!r}.")
    return tuple(int(v) for v in pair)


def shape(name: str, value: Sequence[int], ranks: Collection[int] = (1, 3)) -> tuple[int, ...]:
    """An event shape of one of ``ranks`` with positive integer sizes -> tuple of ints.

    ``(d,)`` for vectors or ``(H, W, C)`` for images by default.
    """
    try:
        dims = tuple(value)
    except TypeError:
        dims = None
    if dims is None or len(dims) not in ranks or not all(_is_int(d) and d >= 1 for d in dims):
        kinds = {1: "(d,) for vectors", 3: "(H, W, C) for images"}
        expected = " or ".join(kinds.get(r, f"rank {r}") for r in ranks)
        raise ValueError(
            f"{name} must be {expected} with positive integer sizes; got {name}={value!r}."
        )
    return tuple(int(d) for d in dims)


_RANK_KINDS = {2: "(vectors [batch, features])", 4: "(images [batch, height, width, channels])"}


def input_shape(
    layer: keras.layers.Layer, shape: Sequence[int | None], ranks: Collection[int] = (2, 4)
) -> tuple[int | None, ...]:
    """A layer's ``build`` input shape: one of ``ranks`` with a fully known event -> tuple.

    Args:
      layer: the layer (its class and name go into the message).
      shape: the input shape, batch axis first.
      ranks: accepted ranks (2: ``[batch, features]``, 4: ``[batch, H, W, C]``).
    """
    shape = tuple(shape)
    if len(shape) not in ranks or any(d is None for d in shape[1:]):
        expected = " or ".join(f"rank {r} {_RANK_KINDS.get(r, '')}".rstrip() for r in ranks)
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r} expects inputs of {expected} with a fully "
            f"known input shape apart from the batch axis; got input shape {shape}."
        )
    return shape
