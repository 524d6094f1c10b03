"""Keras models: the i-ResNet classifier, density flow and hybrid (sections 5.1, 5.3, 6).

All three are ``keras.Model`` subclasses built from a few architecture
arguments plus one *block configuration* (``block=``, the arguments of
:class:`keras_iresnet.InvertibleResidualStack`), so ``get_config`` and
``.keras`` files round-trip. They train with plain ``compile`` / ``fit`` /
``evaluate`` / ``predict``; their training step additionally

- refuses non-finite data and losses with a clear error (at the first bad batch);
- re-tracks every spectral layer's power iteration right after the optimizer
  update, so the contraction holds for the model as it is after every step
  (see :mod:`keras_iresnet.layers.spectral_layers`);

and their ``fit`` adds :class:`keras_iresnet.callbacks.RefineSpectralNorm` (a final
check that changes nothing unless an estimate is off) and
:class:`keras_iresnet.callbacks.StopOnNonFiniteLoss`.

The defaults of every argument are the measured recipes of
:mod:`keras_iresnet.recipes` ("2d" for vectors, "mnist" for image flows,
"digits-classifier", "digits-hybrid"): ``IResNetFlow((2,))`` is the 2-D model
whose figure the README shows.

Density models report **bits/dim**. For 8-bit images dequantized as
``x = (pixel + u) / 256`` (see :mod:`keras_iresnet.data`) the continuous density
on ``[0, 1)^D`` is converted to the discrete 8-bit data space by the change of
scale ``p_256(x) = p(x) / 256^D``:

    bits/dim = (-ln p(x) + D ln 256) / (D ln 2).

For continuous data (``data_8bit=False``, e.g. 2-D densities) it is
``-ln p(x) / (D ln 2)``. ``log_prob`` always returns ``ln p(x)`` of the data ``x``
in nats, including the log-det of a :class:`~keras_iresnet.layers.Logit` first
layer (so bits/dim keep their meaning with it).
"""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import logdet as logdet_lib
from keras_iresnet import recipes, validation
from keras_iresnet._tf import graph_function, in_xla_context, no_autograph, track_loss
from keras_iresnet.bijector import density_model
from keras_iresnet.callbacks import RefineSpectralNorm, StopOnNonFiniteLoss
from keras_iresnet.certify import refine, spectral_layers
from keras_iresnet.divergence import (
    DIVERGED,
    EXPLODED,
    EXPLODING_UPDATE,
    NON_FINITE_DATA,
    DivergenceGuard,
    NonFiniteLossError,
)
from keras_iresnet.layers import (
    ActNorm,
    ClassifierHead,
    FactorOut,
    FlattenEvent,
    InjectivePad,
    InvertibleLayer,
    InvertibleResidualStack,
    InvertibleSequential,
    Logit,
    Squeeze,
    get_base,
)
from keras_iresnet.layers.spectral_layers import tracked_after_update
from keras_iresnet.metrics import MeanWithStandardError

__all__ = [
    "IResNetClassifier",
    "IResNetFlow",
    "IResNetHybrid",
    "iresnet_classifier",
    "iresnet_flow",
    "iresnet_hybrid",
    "block_config",
    "classifier_trunk",
    "flow_trunk",
]

LN2 = math.log(2.0)
_BLOCK_ARGUMENTS = frozenset(
    ["hidden", "kernel_sizes", "coeff", "activation", "power_iterations", "power_tol", "power_vectors", "dropout", "preactivation", "actnorm", "actnorm_variance_floor", "logdet", "solver", "max_iterations", "atol", "rtol", "strict", "seed"]
)


# -- architecture ----------------------------------------------------------------
def block_config(block=None, **overrides):
    """A residual-block configuration: a dict of :class:`InvertibleResidualStack` arguments.

    Args:
      block: a dict, a serialized block (``{"class_name": ..., "config": {...}}``)
        or an :class:`InvertibleResidualStack` whose configuration is copied.
      **overrides: arguments that replace those of ``block``.

    Returns a new dict without ``name`` / ``num_blocks`` (the models set those).
    """
    if isinstance(block, InvertibleResidualStack):
        block = block.get_config()
    elif isinstance(block, dict) and "class_name" in block and "config" in block:
        block = dict(block["config"])
    config = dict(block or {})
    config.update(overrides)
    for key in ("name", "num_blocks", "trainable", "dtype"):
        config.pop(key, None)
    unknown = sorted(set(config) - _BLOCK_ARGUMENTS)
    if unknown:
        raise ValueError(
            f"block: unknown residual-block arguments {unknown}; expected some of {sorted(_BLOCK_ARGUMENTS)}."
        )
    return config


def _stack(num_blocks, block, name):
    return InvertibleResidualStack(num_blocks=num_blocks, name=name, **block)


def _widen(block, index):
    """The block of scale ``index``: hidden width doubled at each scale (as the channels grow)."""
    return {**block, "hidden": int(block.get("hidden", 64)) * 2**index}


def _blocks_per_scale(blocks, image):
    if image:
        blocks = (blocks,) if isinstance(blocks, (int, np.integer)) else tuple(blocks)
        if not blocks:
            raise ValueError("blocks must list at least one scale for images, e.g. blocks=(4, 4).")
        return tuple(validation.non_negative_int("blocks", int(b)) for b in blocks)
    if not isinstance(blocks, (int, np.integer)):
        raise ValueError(
            f"blocks must be an int (the number of blocks) for vectors; got blocks={blocks!r}."
        )
    return (validation.non_negative_int("blocks", int(blocks)),)


def classifier_trunk(input_shape, stages, block, initial_squeeze=True, pad_to_channels=16):
    """[Squeeze] -> [InjectivePad to ``pad_to_channels``] -> stacks, ``Squeeze`` between stages.

    ``initial_squeeze`` is the official code's ``init_ds 2``: a space-to-depth
    step before the first stage (``[H, W, C] -> [H/2, W/2, 4C]``), so the blocks
    work on more channels at lower resolution. Vectors (``(d,)``) get one stack
    of dense blocks.
    """
    image = len(input_shape) == 3
    layers = []
    if not image:
        return InvertibleSequential([_stack(sum(stages), block, "stage0")], name="trunk")
    channels = input_shape[-1] * (4 if initial_squeeze else 1)
    if initial_squeeze:
        layers.append(Squeeze(name="squeeze_in"))
    if pad_to_channels and pad_to_channels > channels:
        layers.append(InjectivePad(pad_to_channels - channels, name="pad"))
    for index, depth in enumerate(stages):
        if index > 0:
            layers.append(Squeeze(name=f"squeeze{index}"))
        if depth:
            layers.append(_stack(depth, _widen(block, index), f"stage{index}"))
    return InvertibleSequential(layers, name="trunk")


def flow_trunk(
    input_shape,
    blocks,
    block,
    logit=None,
    initial_squeeze=False,
    factor_out=False,
    fc_blocks=0,
    fc_block=None,
):
    """The density trunk ``x -> z`` of :class:`IResNetFlow` (see its arguments).

    Images: [Logit] -> [Squeeze] -> scale 0 -> (Squeeze -> scale i)... with the
    hidden width doubled at each scale; with ``factor_out`` half the channels
    leave after every scale but the last (:class:`FactorOut`, latent ``[D]``);
    then ``fc_blocks`` fully connected blocks on the flattened event, each
    followed by an :class:`ActNorm` over all dimensions. Vectors: [ActNorm-free]
    one stack of ``blocks`` dense blocks.
    """
    image = len(input_shape) == 3
    per_scale = _blocks_per_scale(blocks, image)
    layers = [Logit(logit, name="logit")] if logit else []
    if not image:
        if per_scale[0]:
            layers.append(_stack(per_scale[0], block, "blocks"))
    else:
        if initial_squeeze:
            layers.append(Squeeze(name="squeeze_in"))
        scales = []
        for index, depth in enumerate(per_scale):
            scale = [Squeeze(name=f"squeeze{index}")] if index > 0 else []
            if depth:
                scale.append(_stack(depth, _widen(block, index), f"scale{index}"))
            scales.append(scale)
        if factor_out and len(scales) > 1:
            layers.append(
                FactorOut(
                    [InvertibleSequential(s, name=f"scale{i}_chain") for i, s in enumerate(scales)],
                    name="multiscale",
                )
            )
        else:
            layers.extend(layer for scale in scales for layer in scale)
    if fc_blocks:
        if image and not (factor_out and len(per_scale) > 1):
            layers.append(FlattenEvent(name="flatten"))
        fc = {**block_config(fc_block or {}), "actnorm": False}
        for index in range(fc_blocks):
            layers.append(_stack(1, fc, f"fc{index}"))
            layers.append(
                ActNorm(
                    per_position=True,
                    variance_floor=fc.get("actnorm_variance_floor", 0.0),
                    name=f"fc{index}_actnorm",
                )
            )
    return InvertibleSequential(layers, name="trunk")


# -- the shared model machinery -------------------------------------------------------
NON_FINITE_EVAL_DATA = "keras_iresnet: the evaluation data contain NaN or Inf values"


class _IResNetModel(keras.Model):
    """Training step with data checks and post-update power iteration; ``fit`` callbacks."""

    _divergence_guard = None

    def _finish(self):
        self.build((None,) + self.input_shape_)

    def _normalized_layers(self):
        return [layer for layer in spectral_layers(self.trunk) if layer.coeff is not None]

    def build(self, input_shape):
        # Keras calls build again when loading a model (build_from_config); the
        # sublayers are built once.
        if not self.trunk.built:
            self.trunk.build(tuple(input_shape))
        self._build_heads(self.trunk.compute_output_shape(tuple(input_shape)))

    def _build_heads(self, feature_shape):
        pass

    @no_autograph
    def train_step(self, data):
        """One step: data check, loss, gradients, divergence check, update, spectral tracking.

        The update is applied only if the loss and every gradient are finite
        (:mod:`keras_iresnet.divergence`); right after it every spectral layer
        re-tracks its vectors for the updated weights, so the model after any step
        is normalized for *its* weights.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = _check_finite(x, NON_FINITE_DATA)
        with tracked_after_update():  # the vectors were tracked right after the last update
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
                track_loss(self, loss, tf.shape(x)[0])
                scaled = self.optimizer.scale_loss(loss)
            variables = self.trainable_weights
            gradients = tape.gradient(scaled, variables)
        guard = self._divergence_guard
        if guard is not None and not guard.guards(variables):
            guard = None  # train_step outside fit, or other variables: check 1 without the snapshot
        checks = (
            guard.before_update(loss, gradients)
            if guard
            else DivergenceGuard.check_finite(loss, gradients)
        )
        with tf.control_dependencies(checks):
            gradients = [None if g is None else tf.identity(g) for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, variables))
        with tf.control_dependencies(guard.after_update() if guard else []):
            for layer in self._normalized_layers():  # the vectors follow the updated weights
                layer.track()
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    @no_autograph
    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = _check_finite(x, NON_FINITE_EVAL_DATA)
        return super().test_step(keras.utils.pack_x_y_sample_weight(x, y, sample_weight))

    @no_autograph
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self._loss(x, y, y_pred, sample_weight, training)

    def _loss(self, x, y, y_pred, sample_weight, training):
        return super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )

    def compile(self, optimizer="rmsprop", *args, jit_compile=False, **kwargs):
        """``keras.Model.compile``; ``jit_compile`` defaults to False (XLA only when asked for).

        Keras' ``"auto"`` would turn XLA on wherever a GPU is present; on this
        package's models XLA needs training batches of one static size (see
        :meth:`fit`), and on CPU it measured slower than the default.
        """
        if jit_compile == "auto":
            jit_compile = False
        return super().compile(optimizer, *args, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config):
        """Compile a loaded model as it was saved (Keras skips models whose ``compile`` is overridden)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(
        self, x=None, y=None, batch_size=None, *args, callbacks=None, validation_split=0.0, **kwargs
    ):
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
            _check_static_batches(x, batch_size, validation_split)
        self._ensure_divergence_guard()
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

    def evaluate(self, *args, **kwargs):
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
                    f"{method}: the data contain NaN or Inf values; nothing was trained or "
                    "evaluated on them: clean the data (or check the preprocessing)."
                ) from None
            if DIVERGED in text or EXPLODED in text:
                raise self._diverged(exploded=EXPLODED in text) from None
            raise
        except NonFiniteLossError:
            raise self._diverged() from None

    def _diverged(self, exploded=False):
        guard = self._divergence_guard
        step = None
        if guard is not None:
            step = int(guard.finite_steps.numpy()) + (
                0 if exploded else 1
            )  # steps of this model's fits
            guard.restore()
            refine(self)
        where = "fit stopped" if step is None else f"fit stopped at training step {step}"
        if exploded:
            cause = f"{where}: its update was larger than {EXPLODING_UPDATE:g} times the weights (training diverged)"
        else:
            cause = f"{where}: the loss or a gradient became NaN or Inf (training diverged)"
        return NonFiniteLossError(
            f"{cause}, so the weights were restored to those before that update; lower the learning rate or "
            "clip the gradients (e.g. clipnorm=1.0)."
        )

    def features(self, x, training=None):
        """The trunk's output ``F(x)``."""
        return self.trunk(x, training=training)

    def invert(self, features, **settings):
        """Inputs from trunk outputs (Algorithm 1 through every block); ``settings``: the
        fields of :class:`keras_iresnet.inverse.InverseSettings`."""
        return self.trunk.inverse(features, **settings)


def _check_finite(t, message):
    if in_xla_context():  # XLA drops CheckNumerics: StopOnNonFiniteLoss reports after the step
        return t
    return tf.debugging.check_numerics(t, message)


def _check_static_batches(x, batch_size, validation_split):
    """Under XLA the training batches must have one static size; refuse data that would not."""
    if isinstance(x, tf.data.Dataset):
        first = tf.nest.flatten(x.element_spec)[0]
        if first.shape.rank and first.shape[0] is None:
            raise ValueError(
                "fit with jit_compile=True needs training batches of one static size (XLA compiles this model's "
                "training step for one batch shape); batch the dataset with drop_remainder=True."
            )
        return
    if isinstance(x, (np.ndarray, tf.Tensor)):
        n = int(x.shape[0])
        if validation_split:
            n = int(math.floor(n * (1.0 - validation_split)))
        size = batch_size or 32
        if n % size:
            raise ValueError(
                f"fit with jit_compile=True needs training batches of one static size (XLA compiles this model's "
                f"training step for one batch shape); {n} training examples do not split into batches of "
                f"batch_size={size}: choose a batch size that divides {n}, or pass a tf.data.Dataset batched "
                "with drop_remainder=True."
            )


def _serialize_logdet(value):
    return None if value is None else logdet_lib.serialize(value)


# -- classifier ------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_iresnet")
class IResNetClassifier(_IResNetModel):
    """The paper's i-ResNet classifier (section 5.1, Appendix C).

    ``[Squeeze] -> [InjectivePad]``, stages of invertible residual blocks separated
    by ``Squeeze``, then a non-invertible :class:`~keras_iresnet.layers.ClassifierHead`
    (BatchNorm, ReLU, global average pooling, Dense). Defaults: the
    "digits-classifier" recipe (the paper's layout at digits size).

    Args:
      input_shape: ``(H, W, C)`` (or ``(d,)``).
      num_classes: number of classes.
      stages: blocks per stage, e.g. ``(2, 2)``; the hidden width doubles per stage.
      block: the block configuration (see :func:`block_config`), e.g.
        ``{"hidden": 32, "coeff": 0.9}``.
      initial_squeeze: start with a ``Squeeze`` (the official code's ``init_ds 2``).
      pad_to_channels: zero-pad the channels to this many (``InjectivePad``, section 5.1).
      vanilla: the same network without spectral normalization (``coeff=None``),
        for the paper's comparison.

    Inputs ``[batch, H, W, C]`` (or ``[batch, d]``); outputs logits ``[batch, num_classes]``.
    ``features(x)`` gives the trunk output and ``invert(features)`` reconstructs ``x``.
    """

    def __init__(
        self,
        input_shape,
        num_classes,
        stages=None,
        block=None,
        initial_squeeze=None,
        pad_to_channels=None,
        vanilla=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        defaults = recipes.get("digits-classifier").model
        self.input_shape_ = validation.shape("input_shape", input_shape)
        self.num_classes = validation.positive_int("num_classes", num_classes)
        self.stages = tuple(
            validation.non_negative_int("stages", int(s))
            for s in (defaults["stages"] if stages is None else stages)
        )
        self.block = block_config(defaults["block"] if block is None else block)
        self.initial_squeeze = bool(
            defaults["initial_squeeze"] if initial_squeeze is None else initial_squeeze
        )
        self.pad_to_channels = validation.non_negative_int(
            "pad_to_channels",
            defaults["pad_to_channels"] if pad_to_channels is None else pad_to_channels,
        )
        self.vanilla = bool(vanilla)
        _check_squeeze(self.initial_squeeze, self.input_shape_, len(self.stages))
        block = {**self.block, "coeff": None} if self.vanilla else self.block
        self.trunk = classifier_trunk(
            self.input_shape_, self.stages, block, self.initial_squeeze, self.pad_to_channels
        )
        self.head = ClassifierHead(self.num_classes, name="head")
        self._finish()

    def _build_heads(self, feature_shape):
        if not self.head.built:
            self.head.build(feature_shape)

    @no_autograph
    def call(self, x, training=None):
        return self.head(self.trunk(x, training=training), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=self.input_shape_,
            num_classes=self.num_classes,
            stages=self.stages,
            block=self.block,
            initial_squeeze=self.initial_squeeze,
            pad_to_channels=self.pad_to_channels,
            vanilla=self.vanilla,
        )
        return config


def _check_squeeze(initial_squeeze, shape, scales):
    if len(shape) != 3:
        return
    factor = 2 ** (scales - 1 + int(initial_squeeze))
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(
            f"input_shape={shape!r}: {scales} scale(s){' after an initial squeeze' if initial_squeeze else ''} "
            f"need H and W divisible by {factor}."
        )


# -- density flow ------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_iresnet")
class IResNetFlow(_IResNetModel):
    """The i-ResNet density model (section 5.3): a normalizing flow trained by maximum likelihood.

    ``ln p(x) = ln p_Z(F(x)) + ln|det J_F(x)|`` (equation (3)) with ``F`` the trunk
    (:func:`flow_trunk`) and ``p_Z`` the base. ``fit(x)`` minimizes the NLL in
    bits/dim (no labels); the reported metrics are ``loss`` and ``bits_per_dim``
    (with ``bits_per_dim_stderr``, the standard error over the examples seen).
    ``predict(x)`` returns ``ln p(x)``. Every argument left ``None`` takes the
    measured recipe's value: "2d" for vectors, "mnist" for images.

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
    """

    def __init__(
        self,
        input_shape,
        blocks=None,
        block=None,
        logit=None,
        base=None,
        initial_squeeze=None,
        factor_out=None,
        fc_blocks=None,
        fc_block=None,
        eval_logdet=None,
        data_8bit=None,
        trunk=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_shape_ = validation.shape("input_shape", input_shape)
        image = len(self.input_shape_) == 3
        defaults = recipes.get("mnist" if image else "2d").model
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
            per_scale = _blocks_per_scale(arch["blocks"], image)
            arch["blocks"] = list(per_scale) if image else per_scale[0]
            if arch["logit"] is not None:
                arch["logit"] = validation.open_unit("logit", arch["logit"])
            if image:
                _check_squeeze(arch["initial_squeeze"], self.input_shape_, len(arch["blocks"]))
            self.architecture = arch
            self.trunk = flow_trunk(self.input_shape_, **arch)
        self.base = get_base(defaults.get("base", "standard") if base is None else base)
        self.base_name = base if isinstance(base, str) or base is None else None
        self.bits_per_dim_metric = MeanWithStandardError(name="bits_per_dim")
        self._log_prob_functions = {}
        self._finish()

    def _build_heads(self, feature_shape):
        if not self.base.built:
            self.base.build(feature_shape)

    @property
    def latent_shape(self):
        return tuple(self.base.latent_shape)

    # -- density ---------------------------------------------------------------------
    def _log_prob_graph(self, x, training=False, logdet=None):
        z, log_det = self.trunk.forward_and_log_det(x, training=training, logdet=logdet)
        return self.base.log_prob(z) + log_det, z

    def log_prob(self, x, training=False, logdet=None):
        """``ln p(x)`` in nats per example, ``[batch]`` (change of variables, equation (3)).

        Args:
          x: ``[batch, *input_shape]`` (dequantized to ``[0, 1)`` for 8-bit images).
          training: advance power iterations / initialize ActNorm (a training call).
          logdet: estimator for this call (default: ``eval_logdet`` when not
            training, else the blocks' own).
        """
        if logdet is None and not training:
            logdet = self.eval_logdet
        if tf.executing_eagerly() and not training:  # one traced graph per estimator, not eager ops
            estimator = None if logdet is None else logdet_lib.get(logdet)
            if estimator not in self._log_prob_functions:
                self._log_prob_functions[estimator] = graph_function(
                    lambda t: self._log_prob_graph(t, False, estimator)[0]
                )
            return self._log_prob_functions[estimator](tf.convert_to_tensor(x, tf.float32))
        return self._log_prob_graph(x, training, logdet)[0]

    def bits_per_dim(self, log_prob):
        """Bits/dim from ``ln p(x)`` (adds ``D ln 256`` for dequantized 8-bit data)."""
        nll = -log_prob
        if self.data_8bit:
            nll = nll + self.event_dims * math.log(256.0)
        return nll / (self.event_dims * LN2)

    @no_autograph
    def call(self, x, training=None):
        return self._log_prob_graph(x, bool(training), None if training else self.eval_logdet)[0]

    def _loss(self, x, y, y_pred, sample_weight, training):
        bpd = self.bits_per_dim(y_pred)
        self.bits_per_dim_metric.update_state(bpd)
        return _scale_for_replicas(tf.reduce_mean(bpd))

    def sample(self, n, temperature=1.0, seed=None, **settings):
        """``n`` samples ``x = F^{-1}(z)``, ``z`` from the base at ``temperature`` (fixed-point inverse).

        ``settings``: the fields of :class:`keras_iresnet.inverse.InverseSettings`.
        Returns ``[n, *input_shape]``.
        """
        z = self.base.sample(n, temperature=temperature, seed=seed)
        return self.trunk.inverse(z, **settings)

    @property
    def distribution(self):
        """The model as a TFP ``TransformedDistribution`` (data space, nats)."""
        return density_model(
            self.trunk, event_shape=self.input_shape_, base=self.base.distribution()
        )

    @property
    def bijector(self):
        """The :class:`keras_iresnet.IResNetBijector` of the trunk (density layout)."""
        return self.distribution.bijector

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=self.input_shape_,
            base=self.base_name
            if self.base_name
            else keras.saving.serialize_keras_object(self.base),
            eval_logdet=_serialize_logdet(self.eval_logdet),
            data_8bit=self.data_8bit,
        )
        if self.architecture is None:
            config["trunk"] = keras.saving.serialize_keras_object(self.trunk)
        else:
            config.update(self.architecture)
        return config


def _scale_for_replicas(loss):
    """Divide a per-replica mean loss by the number of replicas (gradients are summed across them).

    Keras applies this to compiled losses; a ``compute_loss`` override must do it too.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


# -- hybrid --------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_iresnet")
class IResNetHybrid(IResNetFlow):
    """Shared invertible trunk with a classification head and a density term (section 6).

    Loss = cross-entropy + ``density_weight`` * bits/dim (Nalisnick et al. 2019).
    ``fit(x, labels)`` with ``x`` dequantized to ``[0, 1)``; outputs
    ``{"logits", "log_prob"}``; the metrics are ``loss``, ``accuracy``,
    ``bits_per_dim`` (and its standard error). Every argument left None takes
    the "digits-hybrid" recipe's value; the architecture arguments are those of
    :class:`IResNetFlow` (without ``factor_out``: the head needs the final image).

    Args:
      input_shape: ``(H, W, C)`` (or ``(d,)``).
      num_classes: number of classes.
      density_weight: weight of bits/dim in the loss.
      blocks, block, logit, base, initial_squeeze, fc_blocks, fc_block,
      eval_logdet, data_8bit, trunk: as :class:`IResNetFlow` (``factor_out`` is refused).
    """

    def __init__(self, input_shape, num_classes, density_weight=None, **kwargs):
        defaults = recipes.get("digits-hybrid").model
        for key in (
            "blocks",
            "block",
            "logit",
            "base",
            "initial_squeeze",
            "fc_blocks",
            "eval_logdet",
        ):
            if kwargs.get(key) is None and key in defaults and "trunk" not in kwargs:
                kwargs[key] = defaults[key]
        if kwargs.get("factor_out"):
            raise ValueError(
                "IResNetHybrid cannot factor out: its head classifies the trunk's final image."
            )
        self.num_classes = validation.positive_int("num_classes", num_classes)
        self.density_weight = validation.non_negative_float(
            "density_weight",
            defaults["density_weight"] if density_weight is None else density_weight,
        )
        self.head = ClassifierHead(self.num_classes, name="head")
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        super().__init__(input_shape, **kwargs)

    def _build_heads(self, feature_shape):
        super()._build_heads(feature_shape)
        if not self.head.built:
            self.head.build(feature_shape)

    @no_autograph
    def call(self, x, training=None):
        log_prob, z = self._log_prob_graph(
            x, bool(training), None if training else self.eval_logdet
        )
        return {"logits": self.head(z, training=training), "log_prob": log_prob}

    def _loss(self, x, y, y_pred, sample_weight, training):
        bpd = self.bits_per_dim(y_pred["log_prob"])
        self.bits_per_dim_metric.update_state(bpd)
        self.accuracy_metric.update_state(y, y_pred["logits"])
        loss = self.cross_entropy(y, y_pred["logits"]) + self.density_weight * tf.reduce_mean(bpd)
        return _scale_for_replicas(loss)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, density_weight=self.density_weight)
        return config


# -- builders ---------------------------------------------------------------------------
def _with_recipe_block(kwargs, recipe):
    """Direct block arguments complete the recipe's block instead of replacing it."""
    direct = {k: kwargs.pop(k) for k in list(kwargs) if k in _BLOCK_ARGUMENTS}
    if direct:
        base = (
            kwargs.get("block")
            if kwargs.get("block") is not None
            else recipes.get(recipe).model["block"]
        )
        kwargs["block"] = block_config(base, **direct)
    return kwargs


def iresnet_classifier(input_shape, num_classes, **kwargs):
    """Build an :class:`IResNetClassifier`; block arguments (``hidden=``, ``coeff=``, ...)
    may be given directly and complete the default block.

    See :class:`IResNetClassifier` for the arguments.
    """
    return IResNetClassifier(
        input_shape, num_classes, **_with_recipe_block(kwargs, "digits-classifier")
    )


def iresnet_flow(input_shape, **kwargs):
    """Build an :class:`IResNetFlow` density model; block arguments (``hidden=``,
    ``coeff=``, ``logdet=``, ...) may be given directly and complete the default block.

    See :class:`IResNetFlow` for the arguments. Example:
    ``iresnet_flow((2,), blocks=40, hidden=18, coeff=0.99)``.
    """
    shape = validation.shape("input_shape", input_shape)
    return IResNetFlow(shape, **_with_recipe_block(kwargs, "mnist" if len(shape) == 3 else "2d"))


def iresnet_hybrid(input_shape, num_classes, **kwargs):
    """Build an :class:`IResNetHybrid` classifier + density model; block arguments may be
    given directly and complete the default block. See :class:`IResNetHybrid`."""
    return IResNetHybrid(input_shape, num_classes, **_with_recipe_block(kwargs, "digits-hybrid"))
