"""Keras models: the i-ResNet classifier, density flow and hybrid (sections 5.1, 5.3, 6).

All three are ``keras.Model`` subclasses built from hyperparameters (so
``get_config`` and ``.keras`` files round-trip), trained with plain
``model.compile`` / ``fit`` / ``evaluate`` / ``predict``. Their ``fit`` adds
:class:`keras_iresnet.callbacks.RefineSpectralNorm` (unless present), so after
training every spectral layer's estimate has converged and the contraction
guarantee holds at inference.

Density models report **bits/dim**. For 8-bit images dequantized as
``x = (pixel + u) / 256`` (see :mod:`keras_iresnet.data`) the continuous density
on ``[0, 1)^D`` is converted to the discrete 8-bit data space by the
change of scale ``p_256(x) = p(x) / 256^D``:

    bits/dim = (-ln p(x) + D ln 256) / (D ln 2).

For continuous data (``data_8bit=False``, e.g. 2-D densities) it is
``-ln p(x) / (D ln 2)``. ``log_prob`` always returns ``ln p(x)`` in nats.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet import logdet as logdet_lib
from keras_iresnet.bijector import density_model
from keras_iresnet.callbacks import RefineSpectralNorm
from keras_iresnet.layers import (
    InjectivePad,
    InvertibleResidualBlock,
    InvertibleSequential,
    Squeeze,
)

__all__ = [
    "IResNetClassifier",
    "IResNetFlow",
    "IResNetHybrid",
    "iresnet_classifier",
    "iresnet_flow",
    "iresnet_hybrid",
    "standard_normal_log_prob",
]

LN2 = math.log(2.0)


def standard_normal_log_prob(z):
    """``ln N(z; 0, I)`` summed over the event: ``[batch, ...] -> [batch]``."""
    flat = tf.reshape(z, [tf.shape(z)[0], -1])
    d = tf.cast(tf.shape(flat)[1], z.dtype)
    return -0.5 * tf.reduce_sum(flat**2, axis=1) - 0.5 * d * math.log(2 * math.pi)


def _block_kwargs(coeff, activation, power_iterations, dropout, logdet, kernel_sizes, actnorm):
    return dict(
        coeff=coeff,
        activation=activation,
        power_iterations=power_iterations,
        dropout=dropout,
        logdet=logdet,
        kernel_sizes=kernel_sizes,
        actnorm=actnorm,
    )


def build_trunk(input_shape, stages, hidden, pad_channels=0, initial_squeeze=False, **block_kwargs):
    """The invertible trunk: [Squeeze] -> [InjectivePad] -> stage blocks, ``Squeeze`` between stages.

    ``initial_squeeze`` is the official code's ``init_ds 2``: a space-to-depth
    step before the first stage (``[H, W, C] -> [H/2, W/2, 4C]``), so the blocks
    work on more channels at lower resolution.

    Vectors (``len(input_shape) == 1``) get one stage of dense blocks (padding
    and squeezing do not apply).
    """
    layers = []
    if len(input_shape) == 1:
        for _ in range(sum(stages)):
            layers.append(InvertibleResidualBlock(**{**block_kwargs, "hidden": hidden}))
        return InvertibleSequential(layers, name="trunk")
    if initial_squeeze:
        layers.append(Squeeze())
    if pad_channels:
        layers.append(InjectivePad(pad_channels))
    for index, depth in enumerate(stages):
        if index > 0:
            layers.append(Squeeze())
        width = hidden * (2**index)
        for _ in range(depth):
            layers.append(InvertibleResidualBlock(**{**block_kwargs, "hidden": width}))
    return InvertibleSequential(layers, name="trunk")


class _RefiningFitMixin:
    """``fit`` that refines the spectral estimates at the end of training."""

    def fit(self, *args, callbacks=None, **kwargs):
        callbacks = list(callbacks or [])
        if not any(isinstance(c, RefineSpectralNorm) for c in callbacks):
            callbacks.append(RefineSpectralNorm())
        return super().fit(*args, callbacks=callbacks, **kwargs)


def _validate_shape(input_shape):
    shape = tuple(int(d) for d in input_shape)
    if len(shape) not in (1, 3):
        raise ValueError(
            f"input_shape must be (d,) for vectors or (H, W, C) for images; got {input_shape!r}."
        )
    return shape


def _validate_initial_squeeze(initial_squeeze, shape):
    if initial_squeeze and (len(shape) != 3 or shape[0] % 2 or shape[1] % 2):
        raise ValueError(
            "initial_squeeze=True needs image inputs (H, W, C) with even H and W; "
            f"got input_shape={shape!r}."
        )
    return bool(initial_squeeze)


@keras.saving.register_keras_serializable(package="keras_iresnet")
class IResNetClassifier(_RefiningFitMixin, keras.Model):
    """The paper's i-ResNet classifier (section 5.1, Appendix C).

    ``InjectivePad`` to more channels, stages of invertible residual blocks
    separated by ``Squeeze``, then a non-invertible head (BatchNorm, ReLU, global
    average pooling, Dense). ``vanilla=True`` builds the same network without
    spectral normalization (``coeff=None``), for the paper's comparison.
    ``initial_squeeze=True`` puts a ``Squeeze`` before the padding (the official
    code's ``init_ds 2``): the blocks then work at half resolution on 4x the
    channels, and the head sees 4x more channels.

    Inputs ``[batch, H, W, C]`` (or ``[batch, d]``); outputs logits ``[batch, num_classes]``.
    ``features(x)`` gives the trunk output and ``invert(features)`` reconstructs ``x``.
    """

    def __init__(
        self,
        input_shape,
        num_classes,
        stages=(2, 2),
        hidden=16,
        pad_channels=3,
        coeff=0.9,
        activation="elu",
        power_iterations=1,
        dropout=0.0,
        kernel_sizes=(3, 1, 3),
        vanilla=False,
        logdet="auto",
        initial_squeeze=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_shape_ = _validate_shape(input_shape)
        self.initial_squeeze = _validate_initial_squeeze(initial_squeeze, self.input_shape_)
        self.logdet = logdet
        self.num_classes = int(num_classes)
        self.stages = tuple(int(s) for s in stages)
        self.hidden = int(hidden)
        self.pad_channels = int(pad_channels) if len(self.input_shape_) == 3 else 0
        self.coeff = coeff
        self.activation = activation
        self.power_iterations = int(power_iterations)
        self.dropout = float(dropout)
        self.kernel_sizes = tuple(kernel_sizes)
        self.vanilla = bool(vanilla)
        self.trunk = build_trunk(
            self.input_shape_,
            self.stages,
            self.hidden,
            self.pad_channels,
            self.initial_squeeze,
            **_block_kwargs(
                None if self.vanilla else coeff,
                activation,
                self.power_iterations,
                self.dropout,
                logdet,
                self.kernel_sizes,
                False,
            ),
        )
        self.head_norm = keras.layers.BatchNormalization(momentum=0.9)
        self.pool = (
            keras.layers.GlobalAveragePooling2D() if len(self.input_shape_) == 3 else keras.layers.Identity()
        )
        self.logits = keras.layers.Dense(self.num_classes)
        self._create_extra_state()
        self.build((None,) + self.input_shape_)

    def _create_extra_state(self):
        """Hook for subclasses: create state before the model is built (and locked)."""

    def build(self, input_shape):
        self.trunk.build(tuple(input_shape))
        feature_shape = self.trunk.compute_output_shape(tuple(input_shape))
        self.head_norm.build(feature_shape)
        self.logits.build((None, feature_shape[-1]))

    def features(self, x, training=None):
        return self.trunk(x, training=training)

    def invert(self, features, **kwargs):
        """Reconstruct inputs from trunk features (Algorithm 1 through every block)."""
        return self.trunk.inverse(features, **kwargs)

    def call(self, x, training=None):
        h = self.trunk(x, training=training)
        h = tf.nn.relu(self.head_norm(h, training=training))
        return self.logits(self.pool(h))

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=self.input_shape_,
            num_classes=self.num_classes,
            stages=self.stages,
            hidden=self.hidden,
            pad_channels=self.pad_channels,
            coeff=self.coeff,
            activation=self.activation,
            power_iterations=self.power_iterations,
            dropout=self.dropout,
            kernel_sizes=self.kernel_sizes,
            vanilla=self.vanilla,
            logdet=logdet_lib.serialize(self.logdet),
            initial_squeeze=self.initial_squeeze,
        )
        return config


def scale_loss_for_replicas(loss):
    """Divide a per-replica mean loss by the number of replicas (gradients are summed across them).

    Keras applies this to compiled losses; a ``compute_loss`` override must do it too.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


class _DensityMixin:
    """log_prob / bits-per-dim / sampling over ``self.trunk`` with a standard normal base."""

    def _setup_density(self, data_8bit):
        self.data_8bit = bool(data_8bit)
        self.event_dims = int(np.prod(self.input_shape_))
        self.bits_per_dim_tracker = keras.metrics.Mean(name="bits_per_dim")

    def log_prob(self, x, training=False):
        """``ln p(x)`` in nats per example, ``[batch]`` (change of variables, equation (3))."""
        z, log_det = self.trunk.forward_and_log_det(x, training=training)
        return standard_normal_log_prob(z) + log_det

    def bits_per_dim(self, log_prob):
        """Bits/dim from ``ln p(x)`` (adds ``D ln 256`` for dequantized 8-bit data)."""
        nll = -log_prob
        if self.data_8bit:
            nll = nll + self.event_dims * math.log(256.0)
        return nll / (self.event_dims * LN2)

    def sample(self, n, temperature=1.0, seed=None, **inverse_kwargs):
        """``n`` samples ``x = F^{-1}(T z)``, ``z ~ N(0, I)``, by the fixed-point inverse."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got temperature={temperature!r}.")
        latent_shape = self.trunk.compute_output_shape((int(n),) + self.input_shape_)
        z = temperature * tf.random.normal(latent_shape, seed=seed)
        return self.trunk.inverse(z, **inverse_kwargs)

    @property
    def distribution(self):
        """The model as a TFP ``TransformedDistribution`` (data space, nats)."""
        return density_model(self.trunk, event_shape=self.input_shape_)

    @property
    def bijector(self):
        """The :class:`keras_iresnet.IResNetBijector` of the trunk (density layout)."""
        return self.distribution.bijector


@keras.saving.register_keras_serializable(package="keras_iresnet")
class IResNetFlow(_DensityMixin, _RefiningFitMixin, keras.Model):
    """The i-ResNet density model (section 5.3): a normalizing flow trained by maximum likelihood.

    Images: ``scales`` stages of ``blocks_per_scale`` (ActNorm + residual block)
    with ``Squeeze`` between stages (multi-scale, all dimensions kept), Gaussian
    base (``initial_squeeze=True`` starts with a ``Squeeze``, as the official
    MNIST/CIFAR density models do). Vectors: a stack of dense blocks. The log-det estimator is
    ``logdet`` (``"auto"``: exact for events of <= 16 dims, else the power
    series of Algorithm 2).

    ``fit(x)`` minimizes the NLL in bits/dim (no labels); the reported metrics
    are ``loss`` and ``bits_per_dim`` (equal). ``predict(x)`` returns ``ln p(x)``.
    """

    def __init__(
        self,
        input_shape,
        scales=2,
        blocks_per_scale=2,
        hidden=32,
        coeff=0.9,
        activation="elu",
        power_iterations=1,
        logdet="auto",
        kernel_sizes=(3, 1, 3),
        data_8bit=None,
        initial_squeeze=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_shape_ = _validate_shape(input_shape)
        self.initial_squeeze = _validate_initial_squeeze(initial_squeeze, self.input_shape_)
        self.scales = int(scales)
        self.blocks_per_scale = int(blocks_per_scale)
        self.hidden = int(hidden)
        self.coeff = coeff
        self.activation = activation
        self.power_iterations = int(power_iterations)
        self.logdet = logdet
        self.kernel_sizes = tuple(kernel_sizes)
        stages = (self.blocks_per_scale,) * (self.scales if len(self.input_shape_) == 3 else 1)
        self.trunk = build_trunk(
            self.input_shape_,
            stages,
            self.hidden,
            0,
            self.initial_squeeze,
            **_block_kwargs(
                coeff, activation, self.power_iterations, 0.0, logdet, self.kernel_sizes, True
            ),
        )
        self._setup_density(len(self.input_shape_) == 3 if data_8bit is None else data_8bit)
        self.build((None,) + self.input_shape_)

    def build(self, input_shape):
        self.trunk.build(tuple(input_shape))

    def call(self, x, training=None):
        return self.log_prob(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        bpd = self.bits_per_dim(y_pred)
        self.bits_per_dim_tracker.update_state(bpd)
        return scale_loss_for_replicas(tf.reduce_mean(bpd))

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=self.input_shape_,
            scales=self.scales,
            blocks_per_scale=self.blocks_per_scale,
            hidden=self.hidden,
            coeff=self.coeff,
            activation=self.activation,
            power_iterations=self.power_iterations,
            logdet=logdet_lib.serialize(self.logdet),
            kernel_sizes=self.kernel_sizes,
            data_8bit=self.data_8bit,
            initial_squeeze=self.initial_squeeze,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_iresnet")
class IResNetHybrid(_DensityMixin, IResNetClassifier):
    """Shared invertible trunk with a classification head and a density term (section 6).

    Loss = cross-entropy + ``density_weight`` * bits/dim (Nalisnick et al. 2019).
    ``fit(x, labels)`` with ``x`` dequantized to ``[0, 1)``; outputs logits.
    """

    def __init__(self, input_shape, num_classes, density_weight=1.0, data_8bit=None, **kwargs):
        kwargs.setdefault("pad_channels", 0)
        if kwargs["pad_channels"]:
            raise ValueError("IResNetHybrid needs pad_channels=0: the density needs a bijective trunk.")
        object.__setattr__(self, "_requested_data_8bit", data_8bit)
        object.__setattr__(self, "density_weight", float(density_weight))
        super().__init__(input_shape, num_classes, **kwargs)
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def _create_extra_state(self):
        data_8bit = self._requested_data_8bit
        self._setup_density(len(self.input_shape_) == 3 if data_8bit is None else data_8bit)

    def call(self, x, training=None):
        z, log_det = self.trunk.forward_and_log_det(x, training=training)
        h = tf.nn.relu(self.head_norm(z, training=training))
        logits = self.logits(self.pool(h))
        return {"logits": logits, "log_prob": standard_normal_log_prob(z) + log_det}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        bpd = self.bits_per_dim(y_pred["log_prob"])
        self.bits_per_dim_tracker.update_state(bpd)
        loss = self.ce(y, y_pred["logits"]) + self.density_weight * tf.reduce_mean(bpd)
        return scale_loss_for_replicas(loss)

    def get_config(self):
        config = super().get_config()
        config.update(density_weight=self.density_weight, data_8bit=self.data_8bit)
        return config


def iresnet_classifier(input_shape, num_classes, **kwargs):
    """Build an :class:`IResNetClassifier` (see its arguments)."""
    return IResNetClassifier(input_shape, num_classes, **kwargs)


def iresnet_flow(input_shape, **kwargs):
    """Build an :class:`IResNetFlow` density model (see its arguments)."""
    return IResNetFlow(input_shape, **kwargs)


def iresnet_hybrid(input_shape, num_classes, **kwargs):
    """Build an :class:`IResNetHybrid` classifier + density model (see its arguments)."""
    return IResNetHybrid(input_shape, num_classes, **kwargs)
