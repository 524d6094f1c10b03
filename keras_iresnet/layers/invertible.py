"""The invertible-layer contract shared by every layer, block, network and bijector.

::

    class InvertibleLayer(keras.layers.Layer):
        def call(self, x, training=None):                              # y = f(x)
        def forward_and_log_det(self, x, training=None, logdet=None):  # (y, log|det df/dx|) [batch]
        def inverse(self, y, return_info=False, **settings)            # x = f^-1(y)

Conditional layers (``conditional`` is True: a residual stack built with
``context_shape=``, and every container holding one) map ``x -> f(x, c)`` and
take the context ``c`` as a keyword beside ``x`` in the same three methods::

        def call(self, x, training=None, context=None)                  # also call([x, c])
        def forward_and_log_det(self, x, training=None, logdet=None, context=None)
        def inverse(self, y, return_info=False, context=None, **settings)   # x with f(x, c) = y

``c`` is ``[batch, *context_shape]``, or ``[*context_shape]`` for one context for
the whole batch (broadcast); ``context_shape`` is ``(k,)`` (a vector) or
``(H, W, k)`` (an image). For every fixed ``c``, ``f(., c)`` is invertible and the
log-det is that of the Jacobian in ``x``. A conditional layer called without a
context raises ``ValueError``, and so does an unconditional layer given one (a
context is never silently ignored). Containers pass the context to the layers
that are conditional, and :meth:`InvertibleLayer.context_after` gives the context
that a layer's *output* sees: the identity, except that an image-shaped context
follows ``Squeeze`` (space-to-depth) and ``FlattenEvent`` (flattened), so a block
after a squeeze gets it at its own resolution. Unconditional layers -- yours
included -- keep their signatures: ``_inverse(y, settings)``.

``logdet`` (an estimator of :mod:`keras_iresnet.logdet`) replaces the estimator
of every layer that *estimates* its log-det (residual blocks) for this call, e.g.
a more accurate one for evaluation; layers with exact log-dets ignore it.

``inverse`` is the same on every layer: ``settings`` are the fields of
:class:`keras_iresnet.inverse.InverseSettings` (``solver``, ``max_iterations``,
``atol``, ``rtol``, ``strict``, ``anderson_memory``); layers that solve (residual
blocks) apply them, layers with a closed-form inverse accept and ignore them, and
an unknown name or a bad value raises at once. ``return_info=True`` returns
``(x, info)`` with an :class:`~keras_iresnet.inverse.InverseInfo` (``None`` for
closed-form layers); without it no report is computed.

To write your own invertible layer, subclass :class:`InvertibleLayer` and
implement ``forward_and_log_det`` and ``_inverse(y, settings)`` (and
``compute_output_shape`` / ``compute_inverse_shape`` if the shape changes);
``keras_iresnet.testing.check_invertible_layer`` then checks it the way every
layer of this package is checked. A conditional layer of your own sets
``conditional = True``, takes ``context=`` in ``call`` and ``forward_and_log_det``
and implements ``_inverse(y, settings, context)`` (the context arrives as a
tensor, checked by :meth:`InvertibleLayer._shape_context`).

``forward_and_log_det`` and ``inverse`` may be called on an unbuilt layer: the
layer builds itself from the input shape (for ``inverse``, from the input shape
that corresponds to ``y``, see :meth:`InvertibleLayer.compute_inverse_shape`).
A built layer checks the shape it is given against the one it was built for.

:class:`Stackable` is the one implementation of *stacked* parameters: a layer
built with ``stack=n`` holds ``n`` independent parameter sets ``[n, ...]``, and a
residual stack applies slice ``i`` in block ``i`` (spectral layers, ActNorm,
LipSwish use it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet import validation
from keras_iresnet.inverse import InverseSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from keras_iresnet.inverse import InverseInfo
    from keras_iresnet.logdet import LogDetEstimator

__all__ = ["InvertibleLayer", "Stackable", "broadcast_context", "route_context", "CONTEXT_RANKS"]

#: Event ranks of a context: a vector ``(k,)`` or an image ``(H, W, k)``.
CONTEXT_RANKS = (1, 3)

_DEFAULT_SETTINGS = InverseSettings()


class InvertibleLayer(keras.layers.Layer):
    """Base class of the invertible layers of keras_iresnet.

    Subclasses implement :meth:`forward_and_log_det` and :meth:`_inverse`
    (solving layers also :meth:`_inverse_and_info`); the default ``call``
    returns the first element of ``forward_and_log_det``.
    """

    #: Whether the layer maps ``x -> f(x, c)`` and needs a context (see the module docstring).
    conditional = False

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.forward_and_log_det(inputs, training=training)[0]

    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | LogDetEstimator | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Return ``(y, log_det)`` with ``log_det`` of shape ``[batch]`` (``logdet``: see the
        module docstring).
        """
        raise NotImplementedError

    def inverse(
        self,
        outputs: tf.Tensor,
        return_info: bool = False,
        context: tf.Tensor | None = None,
        **settings: Any,
    ) -> tf.Tensor | tuple[tf.Tensor, InverseInfo | None]:
        """``x`` with ``f(x) = outputs`` (``[batch, ...]``); see the module docstring.

        Args:
          outputs: ``y``, ``[batch, ...]``.
          return_info: also return an :class:`~keras_iresnet.inverse.InverseInfo`
            (``None`` where nothing was solved).
          context: conditional layers: the context ``c`` held fixed while solving
            ``f(x, c) = y`` for ``x`` (``[batch, *context_shape]`` or one
            ``[*context_shape]`` for all); unconditional layers refuse one.
          **settings: fields of :class:`~keras_iresnet.inverse.InverseSettings`
            for this call (``None`` keeps a layer's own default).
        """
        _DEFAULT_SETTINGS.replace(**settings)  # names and values checked once, here
        y = tf.convert_to_tensor(outputs)
        self._ensure_built_from_output(y.shape)
        c = self._take_context(context, y)
        extra = {} if c is None else {"context": c}
        if return_info:
            return self._inverse_and_info(y, settings, **extra)
        return self._inverse(y, settings, **extra)

    def _inverse(self, y, settings):
        """``f^{-1}(y)``; ``settings`` is a dict of validated overrides (often empty).

        Conditional layers take a third argument, the context tensor."""
        raise NotImplementedError

    def _inverse_and_info(self, y, settings, **context):
        """``(f^{-1}(y), info)``; layers that solve override this (default: no info)."""
        return self._inverse(y, settings, **context), None

    # -- the context -------------------------------------------------------------
    def context_after(self, context: tf.Tensor | None) -> tf.Tensor | None:
        """The context that this layer's output sees (``None`` stays ``None``).

        The identity; layers that move positions (``Squeeze``, ``FlattenEvent``)
        move an image-shaped context with them, and containers compose their layers'.
        """
        return context

    def _take_context(self, context, x):
        """The context of one call: None for an unconditional layer, else a checked tensor.

        Refuses a context given to an unconditional layer and a missing one of a
        conditional layer, each with one sentence; casts it to ``x``'s dtype and
        hands it to :meth:`_shape_context`.
        """
        if not self.conditional:
            if context is not None:
                raise ValueError(
                    f"{type(self).__name__} {self.name!r} is not conditional: it takes no "
                    "context (got one); build it with context_shape= to condition it."
                )
            return None
        if context is None:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} is conditional: pass the context, "
                "context=c (shape [batch, *context_shape], or one [*context_shape] for all)."
            )
        c = tf.convert_to_tensor(context)
        return self._shape_context(tf.cast(c, x.dtype), x)

    def _shape_context(self, context, x):
        """Check (and broadcast) a context for inputs ``x``; containers leave it to their layers."""
        if context.shape.rank not in CONTEXT_RANKS + tuple(r + 1 for r in CONTEXT_RANKS):
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: context must be a vector or image context, "
                f"[batch, k] or [batch, H, W, k] (or one without the batch axis); got shape "
                f"{list(context.shape)}."
            )
        return context

    def _split_pair(self, inputs, context):
        """Keras' multi-input idiom: a conditional layer also takes ``call([x, c])``."""
        if self.conditional and context is None and isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(
                    f"{type(self).__name__} {self.name!r} takes x, or the pair [x, c]; got "
                    f"{len(inputs)} inputs."
                )
            return inputs[0], inputs[1]
        return inputs, context

    def _data_shape(self, input_shape):
        """The shape of ``x`` from a build or output-shape argument (the first of a pair)."""
        if self.conditional and isinstance(input_shape, (list, tuple)) and input_shape:
            first = input_shape[0]
            if isinstance(first, (list, tuple)) or hasattr(first, "as_list"):
                return tuple(first)
        return tuple(input_shape)

    def compute_inverse_shape(self, output_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        """Input shape that produces ``output_shape`` (identity unless overridden)."""
        return tuple(output_shape)

    def compute_output_shape(
        self, input_shape: Sequence[int | None] | Sequence[Sequence[int | None]]
    ) -> tuple[int | None, ...]:
        return self._data_shape(input_shape)

    # -- helpers -------------------------------------------------------------
    def _ensure_built(self, input_shape):
        """Build from ``input_shape``, or check it against the shape the layer was built for."""
        if not self.built:
            self.build(tuple(input_shape))
        else:
            self._check_event_shape("inputs", input_shape, self._built_input_shape())

    def _ensure_built_from_output(self, output_shape):
        if not self.built:
            self.build(self.compute_inverse_shape(tuple(output_shape)))
        else:
            built = self._built_input_shape()
            expected = None if built is None else tuple(self.compute_output_shape(built))
            self._check_event_shape(
                "inverse inputs (outputs of the forward map)", output_shape, expected
            )

    @property
    def built_input_shape(self) -> tuple[int | None, ...] | None:
        """The input shape ``(batch, ...)`` of ``x`` the layer was built for (None: unbuilt)."""
        return self._built_input_shape()

    def _built_input_shape(self):
        shape = (self.get_build_config() or {}).get("input_shape")
        return None if shape is None else self._data_shape(shape)

    def _check_event_shape(self, what, shape, expected):
        """One sentence naming the layer and the shape it takes, instead of an op's shape error."""
        if expected is None or shape is None:
            return
        got, want = tuple(shape)[1:], tuple(expected)[1:]
        if len(got) != len(want) or any(
            g is not None and w is not None and int(g) != int(w) for g, w in zip(got, want)
        ):
            dims = ", ".join(str(d) for d in want)
            raise ValueError(
                f"{type(self).__name__} {self.name!r} takes {what} of shape [batch, {dims}]; "
                f"got shape {list(shape)}."
            )

    @staticmethod
    def _zero_log_det(x):
        return tf.zeros(tf.shape(x)[:1], dtype=x.dtype)


def broadcast_context(
    layer: keras.layers.Layer, context: tf.Tensor, context_shape: Sequence[int], x: tf.Tensor
) -> tf.Tensor:
    """``context`` as ``[batch, *context_shape]`` for inputs ``x`` (one home for the shape rule).

    A context without the batch axis (``[*context_shape]``, or a batch of one) is
    one context for every example and is broadcast; any other mismatch raises a
    ``ValueError`` naming ``context`` and the shape expected.

    Args:
      layer: the layer that checks (its class and name go into the message).
      context: a tensor.
      context_shape: the declared context event shape (a tuple).
      x: the inputs, ``[batch, ...]``.
    """
    context_shape = tuple(context_shape)
    want = ", ".join(str(d) for d in context_shape)
    if context.shape.rank == len(context_shape):
        context = context[None]
    got = tuple(context.shape)
    if len(got) != len(context_shape) + 1 or any(
        g is not None and g != w for g, w in zip(got[1:], context_shape)
    ):
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r} takes a context of shape [batch, {want}] "
            f"(or [{want}] for the whole batch); got context of shape {list(context.shape)}."
        )
    batch = tf.shape(x)[:1]
    if got[0] is not None and x.shape[0] is not None and got[0] not in (1, x.shape[0]):
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r}: context has {got[0]} rows for a batch of "
            f"{x.shape[0]}; give one context per example or one for all."
        )
    return tf.broadcast_to(context, tf.concat([batch, context_shape], 0))


def route_context(layer: InvertibleLayer, context: tf.Tensor | None) -> dict[str, tf.Tensor]:
    """Keyword arguments that pass ``context`` to ``layer`` if it is conditional (containers)."""
    return {"context": context} if layer.conditional and context is not None else {}


class Stackable:
    """Mixin for Keras layers whose parameters can be stacked: ``[stack, ...]`` per weight.

    A residual stack (:class:`keras_iresnet.InvertibleResidualStack`) holds its
    blocks' sublayers once, each with ``stack=num_blocks`` parameter sets, and
    applies slice ``i`` in block ``i`` of one ``tf.while_loop``. The layer itself
    is then not callable on its own (:meth:`refuse_if_stacked`).
    """

    stack = None

    def set_stack(self, stack: int | None) -> None:
        """Validate and store ``stack`` (None: one parameter set)."""
        self.stack = None if stack is None else validation.positive_int("stack", stack)

    def stacked_shape(self, shape: Sequence[int | None]) -> tuple[int | None, ...]:
        """``shape`` with the stack axis in front (unchanged without a stack)."""
        return ((self.stack,) if self.stack else ()) + tuple(shape)

    def per_slice(
        self, initializer: keras.initializers.Initializer
    ) -> keras.initializers.Initializer | Callable[..., tf.Tensor]:
        """An initializer that initializes every slice as a single parameter set.

        Fans come from the slice's shape, not the stacked one (which would shrink
        Glorot's scale by ``sqrt(stack)``), and each slice gets its own seed: a
        Keras 3 random initializer holds an int seed and returns the same values
        on every call, so every block would otherwise start alike.
        """
        if not self.stack:
            return initializer

        def slice_initializer(index: int) -> keras.initializers.Initializer:
            seed = getattr(initializer, "seed", None)
            if not isinstance(seed, int) or isinstance(seed, bool):
                return initializer
            config = initializer.get_config()
            config["seed"] = seed + index
            return type(initializer).from_config(config)

        def initialize(shape: Sequence[int], dtype: Any = None) -> tf.Tensor:
            return tf.stack([slice_initializer(i)(shape[1:], dtype=dtype) for i in range(shape[0])])

        return initialize

    @staticmethod
    def slice_of(t: tf.Tensor | None, index: int | tf.Tensor, stacked: bool) -> tf.Tensor | None:
        """Slice ``index`` of a stacked tensor (``t`` itself when not ``stacked`` or None)."""
        return t if t is None or not stacked else t[index]

    def refuse_if_stacked(self, what: str = "parameter sets") -> None:
        """A stacked layer is applied slice by slice by its residual stack, never called itself."""
        if self.stack:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} holds {self.stack} {what} (stacked); a "
                "residual stack applies it slice by slice (it is not called on its own)."
            )
