"""The i-ResNet density flow (section 5.3): a normalizing flow trained by maximum likelihood.

Its defaults are the presets of :mod:`keras_iresnet.models.presets`:
:data:`~keras_iresnet.models.presets.TWO_D_FLOW` for vectors (``IResNetFlow((2,))``
is the 2-D model whose figure the README shows) and
:data:`~keras_iresnet.models.presets.MNIST_FLOW` for images. It trains with plain
``compile`` / ``fit`` (see :mod:`keras_iresnet.models.base` for what its training
step adds).

Density models report **bits/dim**. For 8-bit images dequantized as
``x = (pixel + u) / 256`` (see :mod:`keras_iresnet.data`) the continuous density
on ``[0, 1)^D`` is converted to the discrete 8-bit data space by the change of
scale ``p_256(x) = p(x) / 256^D``:

    bits/dim = (-ln p(x) + D ln 256) / (D ln 2).

For continuous data (``data_8bit=False``, e.g. 2-D densities) it is
``-ln p(x) / (D ln 2)``. ``log_prob`` always returns ``ln p(x)`` of the data ``x``
in nats, including the log-det of a :class:`~keras_iresnet.layers.Logit` first
layer (so bits/dim keep their meaning with it).

A **conditional** flow ``p(x | c)`` (``context_shape=``) has conditional blocks
(the context enters every ``g``, :mod:`keras_iresnet.layers.residual_function`)
and optionally a conditional base (``base="conditional_diagonal"``)::

    ln p(x | c) = ln p_Z(F(x, c) | c) + ln|det J_F(x, c)|      (J: the Jacobian in x)

It trains with ``fit((x, c))``, ``fit({"x": x, "context": c})`` or ``fit`` on a
``tf.data`` dataset of ``(x, c)`` pairs; ``predict`` and ``evaluate`` take the same
inputs, ``log_prob(x, context=c)`` and ``sample(n, context=c)`` the context as a
keyword. Bits/dim count the dimensions of ``x`` only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import logdet as logdet_lib
from keras_iresnet import validation
from keras_iresnet._tf import graph_function, no_autograph
from keras_iresnet.bijector import density_model
from keras_iresnet.layers import InvertibleLayer, get_base
from keras_iresnet.metrics import MeanWithStandardError
from keras_iresnet.models import presets
from keras_iresnet.models.base import IResNetModel, scale_for_replicas, serialize_logdet
from keras_iresnet.models.trunks import (
    LN2,
    block_config,
    blocks_per_scale,
    check_squeeze,
    flow_trunk,
    with_default_block,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    import tensorflow_probability as tfp

    from keras_iresnet.bijector import IResNetBijector
    from keras_iresnet.layers import InvertibleResidualStack

__all__ = ["IResNetFlow", "iresnet_flow"]


@keras.saving.register_keras_serializable(package="keras_iresnet")
class IResNetFlow(IResNetModel):
    """The i-ResNet density model (section 5.3): a normalizing flow trained by maximum likelihood.

    ``ln p(x) = ln p_Z(F(x)) + ln|det J_F(x)|`` (equation (3)) with ``F`` the trunk
    (:func:`flow_trunk`) and ``p_Z`` the base. ``fit(x)`` minimizes the NLL in
    bits/dim (no labels); the reported metrics are ``loss`` and ``bits_per_dim``
    (with ``bits_per_dim_stderr``, the standard error over the examples seen).
    ``predict(x)`` returns ``ln p(x)``. Every argument left ``None`` takes the
    preset's value: :data:`~keras_iresnet.models.presets.TWO_D_FLOW` for vectors,
    :data:`~keras_iresnet.models.presets.MNIST_FLOW` for images.

    Args:
      input_shape: ``(d,)`` or ``(H, W, C)``.
      blocks: vectors: the number of dense blocks (an int); images: blocks per
        scale (a tuple, one entry per scale; a ``Squeeze`` between scales).
      block: the block configuration (see :func:`block_config`); its ``logdet``
        is the training estimator.
      logit: ``alpha`` of a :class:`~keras_iresnet.layers.Logit` first layer, or
        None (no logit).
      base: ``"standard"`` (``N(0, I)``) or ``"diagonal"`` (a learned mean and
        log-std per latent dimension).
      initial_squeeze: images: start with a ``Squeeze``.
      factor_out: images: half the channels leave after every scale but the last.
      fc_blocks: fully connected blocks on the flattened event at the end, each
        followed by an ActNorm over all dimensions (Residual Flows' ``fc_end``).
      fc_block: their block configuration (e.g. ``{"hidden": 128}``).
      eval_logdet: the estimator used when not training (``evaluate``,
        ``predict``, ``log_prob``): e.g. ``PowerSeries(n_terms=20, n_samples=4)``;
        None: the training estimator.
      data_8bit: report bits/dim of 8-bit data (default: True for images).
      trunk: instead of the architecture arguments, any
        :class:`~keras_iresnet.InvertibleLayer` (e.g. just a ``Logit``).
      context_shape: a conditional flow ``p(x | c)``: the context's event shape,
        ``(k,)`` (e.g. a one-hot label) or ``(H, W, k)`` (an image with the data's
        ``H`` and ``W``; it is squeezed with the data). Every residual stack of the
        trunk is conditional (``block={"context_mode": "film"}`` picks FiLM over
        the default additive context). None: unconditional.

    With ``base="conditional_diagonal"`` the base is
    :class:`~keras_iresnet.ConditionalDiagonalGaussian` (a mean and log-std per
    latent dimension linear in the context, zero-initialized).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        blocks: int | Sequence[int] | None = None,
        block: dict[str, Any] | InvertibleResidualStack | None = None,
        logit: float | None = None,
        base: str | dict[str, Any] | keras.layers.Layer | None = None,
        initial_squeeze: bool | None = None,
        factor_out: bool | None = None,
        fc_blocks: int | None = None,
        fc_block: dict[str, Any] | InvertibleResidualStack | None = None,
        eval_logdet: str | dict[str, Any] | logdet_lib.LogDetEstimator | None = None,
        data_8bit: bool | None = None,
        trunk: InvertibleLayer | dict[str, Any] | None = None,
        context_shape: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_shape_ = validation.shape("input_shape", input_shape)
        self.context_shape = (
            None if context_shape is None else validation.shape("context_shape", context_shape)
        )
        image = len(self.input_shape_) == 3
        defaults = presets.MNIST_FLOW if image else presets.TWO_D_FLOW
        self.event_dims = int(np.prod(self.input_shape_))
        self.data_8bit = image if data_8bit is None else bool(data_8bit)
        self.eval_logdet = None if eval_logdet is None else logdet_lib.get(eval_logdet)
        if trunk is not None:
            given = dict(
                blocks=blocks,
                block=block,
                logit=logit,
                initial_squeeze=initial_squeeze,
                factor_out=factor_out,
                fc_blocks=fc_blocks,
                fc_block=fc_block,
            )
            extra = sorted(k for k, v in given.items() if v is not None)
            if extra:
                raise ValueError(
                    f"trunk= replaces the architecture arguments; do not also pass {extra}."
                )
            trunk = (
                keras.saving.deserialize_keras_object(trunk) if isinstance(trunk, dict) else trunk
            )
            if not isinstance(trunk, InvertibleLayer):
                raise TypeError(f"trunk must be an InvertibleLayer; got {type(trunk).__name__}.")
            self.architecture = None
            self.trunk = trunk
        else:
            arch = dict(
                blocks=defaults["blocks"] if blocks is None else blocks,
                block=block_config(defaults["block"] if block is None else block),
                logit=defaults.get("logit") if logit is None else (logit or None),
                initial_squeeze=bool(
                    defaults.get("initial_squeeze", False)
                    if initial_squeeze is None
                    else initial_squeeze
                ),
                factor_out=bool(
                    defaults.get("factor_out", False) if factor_out is None else factor_out
                ),
                fc_blocks=validation.non_negative_int(
                    "fc_blocks", defaults.get("fc_blocks", 0) if fc_blocks is None else fc_blocks
                ),
                fc_block=block_config(defaults.get("fc_block") if fc_block is None else fc_block),
            )
            per_scale = blocks_per_scale(arch["blocks"], image)
            arch["blocks"] = list(per_scale) if image else per_scale[0]
            if arch["logit"] is not None:
                arch["logit"] = validation.open_unit("logit", arch["logit"])
            if image:
                check_squeeze(arch["initial_squeeze"], self.input_shape_, len(arch["blocks"]))
            self.architecture = arch
            self.trunk = flow_trunk(self.input_shape_, context_shape=self.context_shape, **arch)
        self.base = get_base(
            defaults.get("base", "standard") if base is None else base, self.context_shape
        )
        self.base_name = base if isinstance(base, str) or base is None else None
        self._check_conditional()
        self.bits_per_dim_metric = MeanWithStandardError(name="bits_per_dim")
        self._log_prob_functions = {}
        self.finish()

    def _check_conditional(self):
        if self.context_shape is None:
            if self.trunk.conditional or self.base.conditional:
                raise ValueError(
                    "the trunk or the base is conditional: give the flow its context_shape=."
                )
            return
        if not (self.trunk.conditional or self.base.conditional):
            raise ValueError(
                f"context_shape={self.context_shape}: neither the trunk nor the base takes the "
                "context (give a conditional trunk, or base='conditional_diagonal')."
            )
        if self.base.conditional and tuple(self.base.context_shape) != self.context_shape:
            raise ValueError(
                f"context_shape={self.context_shape} differs from the base's "
                f"context_shape={tuple(self.base.context_shape)}."
            )

    @property
    def conditional(self) -> bool:
        """Whether the flow is ``p(x | c)`` (built with ``context_shape``)."""
        return self.context_shape is not None

    def _build_heads(self, feature_shape):
        if not self.base.built:
            self.base.build(feature_shape)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.base.latent_shape)

    # -- inputs ------------------------------------------------------------------------
    def _split_inputs(self, inputs):
        """``(x, c)`` from ``x``, ``(x, c)`` / ``[x, c]`` or ``{"x": x, "context": c}``."""
        if isinstance(inputs, dict):
            if "x" not in inputs or set(inputs) - {"x", "context"}:
                raise ValueError(
                    f"{type(self).__name__} takes a dict with the keys 'x' and 'context'; got "
                    f"keys {sorted(inputs)}."
                )
            x, context = inputs["x"], inputs.get("context")
        elif isinstance(inputs, (tuple, list)) and self.conditional:
            if len(inputs) != 2:
                raise ValueError(
                    f"a conditional {type(self).__name__} takes the pair (x, context); got "
                    f"{len(inputs)} inputs."
                )
            x, context = inputs
        else:
            x, context = inputs, None
        return x, self._context(context)

    def _context(self, context):
        """The context checked against the flow: required if conditional, refused if not."""
        if not self.conditional:
            if context is not None:
                raise ValueError(
                    f"this {type(self).__name__} is not conditional (no context_shape): it takes "
                    "no context."
                )
            return None
        if context is None:
            dims = ", ".join(str(d) for d in self.context_shape)
            raise ValueError(
                f"this {type(self).__name__} is conditional: give the context, as (x, context), "
                f"{{'x': x, 'context': context}} or context= (shape [batch, {dims}])."
            )
        return tf.convert_to_tensor(context)

    def _inputs_and_targets(self, x, y):
        if self.conditional and y is not None and not isinstance(x, (tuple, list, dict)):
            return (x, y), None  # a dataset of (x, c) pairs arrives as (x, y)
        return x, y

    # -- density ---------------------------------------------------------------------
    def _log_prob_graph(self, x, training=False, logdet=None, context=None):
        trunk_context = {"context": context} if self.trunk.conditional else {}
        z, log_det = self.trunk.forward_and_log_det(
            x, training=training, logdet=logdet, **trunk_context
        )
        if self.base.conditional:
            return self.base.log_prob(z, context) + log_det, z
        return self.base.log_prob(z) + log_det, z

    def log_prob(
        self,
        x: tf.Tensor | np.ndarray,
        training: bool = False,
        logdet: str | dict[str, Any] | logdet_lib.LogDetEstimator | None = None,
        context: tf.Tensor | np.ndarray | None = None,
    ) -> tf.Tensor:
        """``ln p(x)`` (or ``ln p(x | c)``) in nats per example, ``[batch]`` (equation (3)).

        Args:
          x: ``[batch, *input_shape]`` (dequantized to ``[0, 1)`` for 8-bit images).
          training: advance power iterations / initialize ActNorm (a training call).
          logdet: estimator for this call (default: ``eval_logdet`` when not
            training, else the blocks' own).
          context: a conditional flow's context, ``[batch, *context_shape]`` or one
            ``[*context_shape]`` for the whole batch.
        """
        if logdet is None and not training:
            logdet = self.eval_logdet
        context = self._context(context)
        if tf.executing_eagerly() and not training:  # one traced graph per estimator, not eager ops
            estimator = None if logdet is None else logdet_lib.get(logdet)
            key = (estimator, context is None)
            if key not in self._log_prob_functions:
                # The context is an argument of the traced function, never captured.
                self._log_prob_functions[key] = graph_function(
                    lambda t, *c: self._log_prob_graph(t, False, estimator, *c)[0]
                )
            arguments = [tf.convert_to_tensor(x, tf.float32)]
            if context is not None:
                arguments.append(tf.cast(context, tf.float32))
            return self._log_prob_functions[key](*arguments)
        return self._log_prob_graph(x, training, logdet, context)[0]

    def bits_per_dim(self, log_prob: tf.Tensor) -> tf.Tensor:
        """Bits/dim from ``ln p(x)`` (adds ``D ln 256`` for dequantized 8-bit data)."""
        nll = -log_prob
        if self.data_8bit:
            nll = nll + self.event_dims * math.log(256.0)
        return nll / (self.event_dims * LN2)

    @no_autograph
    def call(
        self,
        inputs: tf.Tensor | Sequence[tf.Tensor] | dict[str, tf.Tensor],
        training: bool | None = None,
    ) -> tf.Tensor:
        x, context = self._split_inputs(inputs)
        logdet = None if training else self.eval_logdet
        return self._log_prob_graph(x, bool(training), logdet, context)[0]

    def _loss(self, x, y, y_pred, sample_weight, training):
        bpd = self.bits_per_dim(y_pred)
        self.bits_per_dim_metric.update_state(bpd)
        return scale_for_replicas(tf.reduce_mean(bpd))

    def sample(
        self,
        n: int | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
        context: tf.Tensor | np.ndarray | None = None,
        **settings: Any,
    ) -> tf.Tensor:
        """``n`` samples ``x = F^{-1}(z)``, ``z`` from the base at ``temperature``
        (fixed-point inverse).

        Args:
          n: the number of samples (a conditional flow given one context per
            sample may leave it None: ``n = len(context)``).
          temperature: scale of the base's noise.
          seed: of the base's draw.
          context: a conditional flow's context: ``[n, *context_shape]`` (one per
            sample) or ``[*context_shape]`` (one for all ``n``).
          **settings: the fields of :class:`keras_iresnet.inverse.InverseSettings`.

        Returns ``[n, *input_shape]``; sample ``i`` is drawn from ``p(x | c_i)``.
        """
        context = self._context(context)
        if context is not None:
            context = tf.cast(context, tf.float32)
            per_sample = context.shape.rank == len(self.context_shape) + 1
            if per_sample and n is None:
                n = int(context.shape[0])
            elif per_sample and int(context.shape[0]) != validation.positive_int("n", n):
                raise ValueError(
                    f"sample: context has {int(context.shape[0])} rows for n={n} samples; give "
                    "one context per sample or one context for all."
                )
        if n is None:
            raise ValueError("sample needs n, the number of samples.")
        n = validation.positive_int("n", n)
        if context is not None and context.shape.rank == len(self.context_shape):
            context = tf.broadcast_to(context, (n,) + self.context_shape)
        if self.base.conditional:
            z = self.base.sample(n, temperature=temperature, seed=seed, context=context)
        else:
            z = self.base.sample(n, temperature=temperature, seed=seed)
        trunk_context = {"context": context} if self.trunk.conditional else {}
        return self.trunk.inverse(z, **trunk_context, **settings)

    @property
    def distribution(self) -> tfp.distributions.TransformedDistribution:
        """The model as a TFP ``TransformedDistribution`` (data space, nats).

        A conditional flow's takes ``bijector_kwargs={"conditional_input": c}``."""
        return density_model(
            self.trunk,
            event_shape=self.input_shape_,
            base=self.base,
            context_shape=self.context_shape,
        )

    @property
    def bijector(self) -> IResNetBijector:
        """The :class:`keras_iresnet.IResNetBijector` of the trunk (density layout)."""
        return self.distribution.bijector

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            input_shape=self.input_shape_,
            base=self.base_name
            if self.base_name
            else keras.saving.serialize_keras_object(self.base),
            eval_logdet=serialize_logdet(self.eval_logdet),
            data_8bit=self.data_8bit,
            context_shape=None if self.context_shape is None else list(self.context_shape),
        )
        if self.architecture is None:
            config["trunk"] = keras.saving.serialize_keras_object(self.trunk)
        else:
            config.update(self.architecture)
        return config


def iresnet_flow(input_shape: Sequence[int], **kwargs: Any) -> IResNetFlow:
    """Build an :class:`IResNetFlow` density model; block arguments (``hidden=``,
    ``coeff=``, ``logdet=``, ...) may be given directly and complete the default block.

    See :class:`IResNetFlow` for the arguments. Example:
    ``iresnet_flow((2,), blocks=40, hidden=18, coeff=0.99)``.
    """
    shape = validation.shape("input_shape", input_shape)
    preset = presets.MNIST_FLOW if len(shape) == 3 else presets.TWO_D_FLOW
    return IResNetFlow(shape, **with_default_block(kwargs, preset["block"]))
