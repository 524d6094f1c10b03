"""A TensorFlow Probability bijector over any invertible keras_iresnet layer.

Change of variables (section 3, equation (3)): with the network ``F`` mapping data
``x`` to latents ``z = F(x)``,

    ln p_x(x) = ln p_z(F(x)) + ln |det J_F(x)|.

The network's cheap direction (one pass plus the log-det estimate) is
``x -> z``; its inverse is the iterative fixed-point solve. In the default
``direction="density"`` layout -- that of ``tfb.MaskedAutoregressiveFlow`` --
the *bijector's* ``inverse`` is the network and its ``forward`` is the solve, so
``tfd.TransformedDistribution(base, bijector).log_prob`` never runs or
differentiates through the solve, and ``sample`` uses it. ``direction="network"``
gives the other orientation (``forward`` = network).

The log-det is computed together with the transform and cached with it (like
TFP's FFJORD), so ``log_prob`` evaluates the network once.

:func:`base_distribution` turns a base-distribution layer
(:class:`~keras_iresnet.StandardNormal`, :class:`~keras_iresnet.DiagonalGaussian`)
into the TFP distribution over the latent event; this module is the one place
where keras_iresnet's layers meet TFP distributions.

**Conditional flows** take the context through TFP's convention, the keyword
``conditional_input`` of the bijector's methods (as ``tfb.MaskedAutoregressiveFlow``
and ``tfb.RealNVP`` take theirs), which ``TransformedDistribution`` forwards from
``bijector_kwargs``::

    dist = density_model(trunk, event_shape=[2], context_shape=[3])
    dist.log_prob(x, bijector_kwargs={"conditional_input": c})   # c: [batch, 3] or [3]
    dist.sample(n, bijector_kwargs={"conditional_input": c})     # c: [n, 3] or [3]

The context is broadcast to the batch shape of the bijector's input (sample
shape included). Inside a ``tfb.Chain``, TFP routes keyword arguments *by
bijector name* (``bijector_kwargs={"<name>": {"conditional_input": c}}``;
un-nested ones are dropped, and a conditional layer then refuses the missing
context): give each conditional bijector its own ``name=``. TFP's cache keys the
keyword arguments by object identity, so pass a tensor, not a numpy array you
mutate in place between calls. A conditional base
(:class:`~keras_iresnet.ConditionalDiagonalGaussian`) cannot read ``bijector_kwargs``
(TFP hands them to the bijector only); :func:`density_model` therefore appends it
to the network as a last step, ``z -> (z - mu(c)) / sigma(c)`` with log-det
``-sum log sigma(c)``, over a standard normal -- the same density, since
``ln N(z; mu, sigma^2) = ln N((z - mu) / sigma; 0, I) - sum ln sigma``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf
import tensorflow_probability as tfp

from keras_iresnet import validation
from keras_iresnet._tf import tfp_greedy_cache
from keras_iresnet.bridge import tf_variables
from keras_iresnet.layers.distributions import (
    ConditionalDiagonalGaussian,
    DiagonalGaussian,
    StandardNormal,
)
from keras_iresnet.layers.invertible import InvertibleLayer

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from keras_iresnet.logdet import LogDetEstimator

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["IResNetBijector", "density_model", "base_distribution"]

DIRECTIONS = ("density", "network")


class IResNetBijector(tfb.Bijector):
    """``tfp.bijectors.Bijector`` adapter over an :class:`~keras_iresnet.InvertibleLayer`.

    Args:
      layer: an invertible layer (a block, an ``InvertibleSequential``, ...). All
        state stays in the layer (Keras variables); the bijector creates none and
        exposes the layer's variables as ``trainable_variables``.
      event_shape: event shape of the data, e.g. ``[2]`` or ``[28, 28, 1]``;
        needed if the layer is not built yet (it is built here).
      direction: ``"density"`` (default): ``forward`` = fixed-point solve
        ``z -> x``, ``inverse`` = network ``x -> z``. ``"network"``: the reverse.
      inverse_kwargs: keyword arguments for ``layer.inverse`` (e.g. ``strict=True``).
      validate_args: check inputs are finite.
      name: bijector name (give conditional bijectors in one ``tfb.Chain`` distinct names).
      context_shape: a conditional layer's context event shape (default: the
        layer's ``context_shape``, if it has one); refused for an unconditional layer.

    Methods take an optional ``training`` keyword (pass it through
    ``log_prob(x, bijector_kwargs={"training": True})`` in a training loop so the
    spectral power iteration advances and ActNorm initializes) and, for a
    conditional layer, ``conditional_input`` (the context ``c``, required: shape
    ``batch_shape + context_shape`` or anything that broadcasts to it).

    Shapes: any batch shape; the data event has ``len(event_shape)`` dimensions
    (1 for vectors, 3 for images), the latent event ``len(latent_shape)``
    (``forward_min_event_ndims`` is the rank of the bijector's forward input:
    the latent's for ``"density"``, the data's for ``"network"``).
    """

    _greedy_cache = tfp_greedy_cache("_augmented_forward", "_augmented_inverse")
    _has_greedy_cache = _greedy_cache is not None
    if _has_greedy_cache:
        _cache = _greedy_cache

    def __init__(
        self,
        layer: InvertibleLayer,
        event_shape: Sequence[int] | None = None,
        direction: str = "density",
        inverse_kwargs: Mapping[str, Any] | None = None,
        validate_args: bool = False,
        name: str = "iresnet",
        context_shape: Sequence[int] | None = None,
    ) -> None:
        parameters = dict(locals())
        if not isinstance(layer, InvertibleLayer):
            raise TypeError(
                f"layer must be a keras_iresnet InvertibleLayer; got {type(layer).__name__}."
            )
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}; got direction={direction!r}.")
        if event_shape is None:
            event_shape = _built_event_shape(layer)
        event_shape = tuple(int(d) for d in event_shape)
        if not layer.built:
            layer.build((None,) + event_shape)
        if context_shape is None and layer.conditional:
            context_shape = getattr(layer, "context_shape", None)
            if context_shape is None:
                raise ValueError(
                    f"layer {layer.name!r} is conditional: give the context's event shape, "
                    "context_shape=[...]."
                )
        if context_shape is not None and not layer.conditional:
            raise ValueError(
                f"context_shape={context_shape!r}: layer {layer.name!r} is not conditional."
            )
        with tf.name_scope(name) as name:
            self._context_shape = (
                None if context_shape is None else validation.shape("context_shape", context_shape)
            )
            self._layer = layer
            self._event_shape_tuple = event_shape  # the data x (the network's input)
            self._latent_shape_tuple = tuple(
                int(d) for d in layer.compute_output_shape((None,) + event_shape)[1:]
            )
            self._direction = direction
            self._inverse_kwargs = dict(inverse_kwargs or {})
            # tf.Module collects these: TFP's trainable_variables see the Keras state.
            self.keras_backed_variables = tf_variables(layer)
            # The data and the latent may differ in rank (FlattenEvent, FactorOut: an image
            # to a vector): each direction declares the rank of its own input.
            forward_rank, inverse_rank = (len(shape) for shape in self._shapes())
            super().__init__(
                forward_min_event_ndims=forward_rank,
                inverse_min_event_ndims=inverse_rank,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    @property
    def layer(self) -> InvertibleLayer:
        return self._layer

    @property
    def direction(self) -> str:
        return self._direction

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        """The event shape of ``conditional_input`` (None: unconditional)."""
        return self._context_shape

    @property
    def event_shape(self) -> tf.TensorShape:
        """Event shape of the data ``x`` (the network's input)."""
        return tf.TensorShape(self._event_shape_tuple)

    @property
    def latent_shape(self) -> tf.TensorShape:
        """Event shape of the latent ``z = F(x)`` (differs from the data after ``Squeeze``)."""
        return tf.TensorShape(self._latent_shape_tuple)

    def _shapes(self):
        """(event shape of the bijector's forward input, of its forward output)."""
        if self._direction == "density":
            return self._latent_shape_tuple, self._event_shape_tuple
        return self._event_shape_tuple, self._latent_shape_tuple

    def _forward_event_shape(self, input_shape):
        return tf.TensorShape(self._shapes()[1])

    def _forward_event_shape_tensor(self, input_shape):
        return tf.constant(self._shapes()[1], tf.int32)

    def _inverse_event_shape(self, output_shape):
        return tf.TensorShape(self._shapes()[0])

    def _inverse_event_shape_tensor(self, output_shape):
        return tf.constant(self._shapes()[0], tf.int32)

    # -- batch handling: the layer sees [N, *event] -----------------------------
    def _split(self, t, event):
        t = tf.convert_to_tensor(t)
        if self.validate_args:
            t = tf.debugging.assert_all_finite(t, f"{self.name}: input must be finite")
        batch_shape = tf.shape(t)[: tf.rank(t) - len(event)]
        return tf.reshape(t, (-1,) + event), batch_shape

    @staticmethod
    def _merge(flat, batch_shape, event, log_det=None):
        out = tf.reshape(flat, tf.concat([batch_shape, event], 0))
        if log_det is None:
            return out
        return out, tf.reshape(log_det, batch_shape)

    def _context(self, conditional_input, batch_shape):
        """The context for the flattened batch: ``[N, *context_shape]`` (None: unconditional)."""
        if self._context_shape is None:
            if conditional_input is not None:
                raise ValueError(
                    f"{self.name}: the layer is not conditional; it takes no conditional_input."
                )
            return None
        if conditional_input is None:
            raise ValueError(
                f"{self.name}: the layer is conditional; pass the context as "
                "bijector_kwargs={'conditional_input': c} (inside a tfb.Chain: "
                f"bijector_kwargs={{'{self.name}': {{'conditional_input': c}}}})."
            )
        c = tf.convert_to_tensor(conditional_input, tf.float32)
        c = tf.broadcast_to(c, tf.concat([batch_shape, self._context_shape], 0))
        return tf.reshape(c, (-1,) + self._context_shape)

    def _network(self, x, training=False, conditional_input=None):
        """``z = F(x)`` and ``ln|det J_F(x)|`` (batch-shaped)."""
        flat, batch_shape = self._split(x, self._event_shape_tuple)
        c = self._context(conditional_input, batch_shape)
        context = {} if c is None else {"context": c}
        z, log_det = self._layer.forward_and_log_det(flat, training=training, **context)
        return self._merge(z, batch_shape, self._latent_shape_tuple, log_det)

    def _solve(self, z, training=False, conditional_input=None):
        """``x = F^{-1}(z)`` by the layers' fixed-point inverse (``training`` does not apply)."""
        flat, batch_shape = self._split(z, self._latent_shape_tuple)
        c = self._context(conditional_input, batch_shape)
        context = {} if c is None else {"context": c}
        x = self._layer.inverse(flat, **context, **self._inverse_kwargs)
        return self._merge(x, batch_shape, self._event_shape_tuple)

    # -- TFP hooks (keyword arguments: training, conditional_input) --------------
    def _augmented_forward(self, x, **kwargs):
        if self._direction == "network":
            y, log_det = self._network(x, **kwargs)
            return y, {"fldj": log_det, "ildj": -log_det}
        return self._solve(x, **kwargs), {}

    def _augmented_inverse(self, y, **kwargs):
        if self._direction == "density":
            z, log_det = self._network(y, **kwargs)
            return z, {"ildj": log_det, "fldj": -log_det}
        return self._solve(y, **kwargs), {}

    def _forward(self, x, **kwargs):
        return self._augmented_forward(x, **kwargs)[0]

    def _inverse(self, y, **kwargs):
        return self._augmented_inverse(y, **kwargs)[0]

    # TFP looks the log-dets up in its cache (keyed on the input *and* the keyword
    # arguments) before calling these; they run on a miss, e.g. for a fresh tensor.
    def _forward_log_det_jacobian(self, x, **kwargs):
        cached = self._cache.forward_attributes(x, **kwargs) if self._has_greedy_cache else {}
        if "fldj" not in cached:
            if self._direction == "network":
                cached.update(self._augmented_forward(x, **kwargs)[1])
            else:
                # d x / d z of the solve: minus the network's log-det at x = F^{-1}(z).
                _, log_det = self._network(self.forward(x, **kwargs), **kwargs)
                cached.update({"fldj": -log_det, "ildj": log_det})
        return cached["fldj"]

    def _inverse_log_det_jacobian(self, y, **kwargs):
        cached = self._cache.inverse_attributes(y, **kwargs) if self._has_greedy_cache else {}
        if "ildj" not in cached:
            if self._direction == "density":
                cached.update(self._augmented_inverse(y, **kwargs)[1])
            else:
                _, log_det = self._network(self.inverse(y, **kwargs), **kwargs)
                cached.update({"ildj": -log_det, "fldj": log_det})
        return cached["ildj"]


def _built_event_shape(layer):
    shape = layer.built_input_shape if layer.built else None
    if shape is not None:
        return tuple(shape[1:])
    raise ValueError(
        f"layer {layer.name!r} is not built and no event_shape was given: pass "
        "event_shape=[...] (e.g. [2] or [28, 28, 1])."
    )


def density_model(
    layer: InvertibleLayer,
    event_shape: Sequence[int] | None = None,
    base: tfp.distributions.Distribution
    | StandardNormal
    | DiagonalGaussian
    | ConditionalDiagonalGaussian
    | None = None,
    context_shape: Sequence[int] | None = None,
    **bijector_kwargs: Any,
) -> tfp.distributions.TransformedDistribution:
    """``tfd.TransformedDistribution(base, IResNetBijector(layer))``: the usual flow density.

    Args:
      layer: an invertible layer (the network ``x -> z``).
      event_shape: the data's event shape (needed if ``layer`` is not built).
      base: a TFP distribution over the latent event, or a base-distribution
        *layer* (``StandardNormal``, ``DiagonalGaussian``,
        ``ConditionalDiagonalGaussian``; see :func:`base_distribution`). Default:
        a standard normal over the latent event (``tfd.Sample`` of
        ``tfd.Normal(0, 1)``; the latent shape differs from the data's after a
        ``Squeeze``).
      context_shape: a conditional flow ``p(x | c)``: the context's event shape
        (default: the layer's); the distribution then takes
        ``bijector_kwargs={"conditional_input": c}`` in ``log_prob`` and ``sample``.
      **bijector_kwargs: further arguments of :class:`IResNetBijector`.

    Returns the distribution; ``.bijector`` is the adapter.
    """
    if isinstance(base, ConditionalDiagonalGaussian):
        layer = _WithConditionalBase(layer, base, name=f"{layer.name}_and_base")
        base = None
    elif isinstance(base, (StandardNormal, DiagonalGaussian)):
        base = base_distribution(base)
    bijector = IResNetBijector(
        layer, event_shape=event_shape, context_shape=context_shape, **bijector_kwargs
    )
    if base is None:
        base = tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=bijector.latent_shape)
    return tfd.TransformedDistribution(base, bijector)


class _WithConditionalBase(InvertibleLayer):
    """The network followed by a conditional base's standardization (see the module docstring).

    ``x -> u = (F(x, c) - mu(c)) / sigma(c)`` with log-det ``ln|det J_F| - sum ln sigma(c)``;
    the base reads the context as given (not as the network's layers leave it). The
    layers and weights stay the network's and the base's. Not serialized:
    :func:`density_model` makes it each time.
    """

    conditional = True

    def __init__(
        self, network: InvertibleLayer, base: ConditionalDiagonalGaussian, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.base = base

    def build(self, input_shape: Sequence[int | None]) -> None:
        if not self.network.built:
            self.network.build(tuple(input_shape))
        if not self.base.built:
            self.base.build(self.network.compute_output_shape(tuple(input_shape)))

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return self.network.compute_output_shape(input_shape)

    def compute_inverse_shape(self, output_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return self.network.compute_inverse_shape(output_shape)

    def _network_context(self, context):
        return {"context": context} if self.network.conditional else {}

    def forward_and_log_det(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        logdet: str | dict[str, Any] | LogDetEstimator | None = None,
        context: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(inputs)
        c = self._take_context(context, x)
        z, log_det = self.network.forward_and_log_det(
            x, training=training, logdet=logdet, **self._network_context(c)
        )
        loc, log_scale = self.base.loc_and_log_scale(c, z)
        base_log_det = tf.reduce_sum(tf.reshape(log_scale, [tf.shape(z)[0], -1]), axis=1)
        return (z - loc) * tf.exp(-log_scale), log_det - base_log_det

    def call(
        self, inputs: tf.Tensor, training: bool | None = None, context: tf.Tensor | None = None
    ) -> tf.Tensor:
        return self.forward_and_log_det(inputs, training=training, context=context)[0]

    def _unstandardize(self, y, context):
        loc, log_scale = self.base.loc_and_log_scale(context, y)
        return loc + tf.exp(log_scale) * y

    def _inverse(self, y, settings, context=None):
        z = self._unstandardize(y, context)
        return self.network.inverse(z, **self._network_context(context), **settings)

    def _inverse_and_info(self, y, settings, context=None):
        z = self._unstandardize(y, context)
        return self.network.inverse(
            z, return_info=True, **self._network_context(context), **settings
        )


def base_distribution(
    base: StandardNormal | DiagonalGaussian,
) -> tfp.distributions.Distribution:
    """The TFP distribution of a base-distribution layer, over its latent event.

    ``StandardNormal`` -> ``tfd.Sample(tfd.Normal(0, 1), latent_shape)``;
    ``DiagonalGaussian`` -> an ``Independent`` normal on the ``tf.Variable`` objects
    behind the layer's Keras weights (TFP training loops train them; the scale is
    ``exp(log_scale)`` through a ``DeferredTensor``).

    Args:
      base: a built :class:`~keras_iresnet.StandardNormal` or
        :class:`~keras_iresnet.DiagonalGaussian` (a
        :class:`~keras_iresnet.ConditionalDiagonalGaussian` goes to :func:`density_model`).
    """
    if isinstance(base, DiagonalGaussian):
        loc, log_scale = tf_variables(base)
        dist = tfd.Independent(
            tfd.Normal(loc, tfp.util.DeferredTensor(log_scale, tf.math.exp)),
            reinterpreted_batch_ndims=len(base.latent_shape),
        )
        dist.keras_backed_variables = (loc, log_scale)
        return dist
    if isinstance(base, StandardNormal):
        return tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=base.latent_shape)
    if isinstance(base, ConditionalDiagonalGaussian):
        raise TypeError(
            "a ConditionalDiagonalGaussian base reads the context, which a TFP base distribution "
            "cannot: pass the layer as density_model(layer, base=that_base) (it becomes the "
            "bijector's last layer over a standard normal)."
        )
    raise TypeError(
        f"base must be a StandardNormal or DiagonalGaussian layer; got {type(base).__name__}."
    )
