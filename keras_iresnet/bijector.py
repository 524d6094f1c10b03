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
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from keras_iresnet._tf import tfp_greedy_cache
from keras_iresnet.bridge import tf_variables
from keras_iresnet.layers.distributions import DiagonalGaussian, StandardNormal
from keras_iresnet.layers.invertible import InvertibleLayer

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
      name: bijector name.

    Methods take an optional ``training`` keyword (pass it through
    ``log_prob(x, bijector_kwargs={"training": True})`` in a training loop so the
    spectral power iteration advances and ActNorm initializes).

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
        layer,
        event_shape=None,
        direction="density",
        inverse_kwargs=None,
        validate_args=False,
        name="iresnet",
    ):
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
        with tf.name_scope(name) as name:
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
    def layer(self):
        return self._layer

    @property
    def direction(self):
        return self._direction

    @property
    def event_shape(self):
        """Event shape of the data ``x`` (the network's input)."""
        return tf.TensorShape(self._event_shape_tuple)

    @property
    def latent_shape(self):
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

    def _network(self, x, training=False):
        """``z = F(x)`` and ``ln|det J_F(x)|`` (batch-shaped)."""
        flat, batch_shape = self._split(x, self._event_shape_tuple)
        z, log_det = self._layer.forward_and_log_det(flat, training=training)
        return self._merge(z, batch_shape, self._latent_shape_tuple, log_det)

    def _solve(self, z):
        """``x = F^{-1}(z)`` by the layers' fixed-point inverse."""
        flat, batch_shape = self._split(z, self._latent_shape_tuple)
        x = self._layer.inverse(flat, **self._inverse_kwargs)
        return self._merge(x, batch_shape, self._event_shape_tuple)

    # -- TFP hooks -------------------------------------------------------------
    def _augmented_forward(self, x, training=False):
        if self._direction == "network":
            y, log_det = self._network(x, training=training)
            return y, {"fldj": log_det, "ildj": -log_det}
        return self._solve(x), {}

    def _augmented_inverse(self, y, training=False):
        if self._direction == "density":
            z, log_det = self._network(y, training=training)
            return z, {"ildj": log_det, "fldj": -log_det}
        return self._solve(y), {}

    def _forward(self, x, training=False):
        return self._augmented_forward(x, training=training)[0]

    def _inverse(self, y, training=False):
        return self._augmented_inverse(y, training=training)[0]

    def _forward_log_det_jacobian(self, x, training=False):
        cached = self._cache.forward_attributes(x) if self._has_greedy_cache else {}
        if "fldj" not in cached:
            if self._direction == "network":
                cached.update(self._augmented_forward(x, training=training)[1])
            else:
                # d x / d z of the solve: minus the network's log-det at x = F^{-1}(z).
                _, log_det = self._network(self.forward(x), training=training)
                cached.update({"fldj": -log_det, "ildj": log_det})
        return cached["fldj"]

    def _inverse_log_det_jacobian(self, y, training=False):
        cached = self._cache.inverse_attributes(y) if self._has_greedy_cache else {}
        if "ildj" not in cached:
            if self._direction == "density":
                cached.update(self._augmented_inverse(y, training=training)[1])
            else:
                _, log_det = self._network(self.inverse(y), training=training)
                cached.update({"ildj": -log_det, "fldj": log_det})
        return cached["ildj"]


def _built_event_shape(layer):
    config = layer.get_build_config() if layer.built else None
    if config and "input_shape" in config:
        return tuple(config["input_shape"][1:])
    raise ValueError(
        f"layer {layer.name!r} is not built and no event_shape was given: pass "
        "event_shape=[...] (e.g. [2] or [28, 28, 1])."
    )


def density_model(layer, event_shape=None, base=None, **bijector_kwargs):
    """``tfd.TransformedDistribution(base, IResNetBijector(layer))``: the usual flow density.

    ``base`` defaults to a standard normal over the latent event (``tfd.Sample``
    of ``tfd.Normal(0, 1)``; the latent shape differs from the data's after a
    ``Squeeze``). Returns the distribution; ``.bijector`` is the adapter.
    """
    bijector = IResNetBijector(layer, event_shape=event_shape, **bijector_kwargs)
    if base is None:
        base = tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=bijector.latent_shape)
    return tfd.TransformedDistribution(base, bijector)


def base_distribution(base):
    """The TFP distribution of a base-distribution layer, over its latent event.

    ``StandardNormal`` -> ``tfd.Sample(tfd.Normal(0, 1), latent_shape)``;
    ``DiagonalGaussian`` -> an ``Independent`` normal on the ``tf.Variable`` objects
    behind the layer's Keras weights (TFP training loops train them; the scale is
    ``exp(log_scale)`` through a ``DeferredTensor``).

    Args:
      base: a built :class:`~keras_iresnet.StandardNormal` or :class:`~keras_iresnet.DiagonalGaussian`.
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
    raise TypeError(
        f"base must be a StandardNormal or DiagonalGaussian layer; got {type(base).__name__}."
    )
