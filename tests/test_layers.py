"""Every public layer: the invertible-layer contract (keras_iresnet.testing), Keras' own
layer checks, and unit tests of the flow, data, base and head layers against closed forms."""

import math

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from keras.src.testing import TestCase

import keras_iresnet as kir
from keras_iresnet import certify, testing
from tests.helpers import full_jacobian_logdet


def random(shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 3])


def saturate(layer, scale=4.0):
    """Normalization active at coeff (the trained regime), estimates converged."""
    for sub in certify.spectral_layers(layer):
        sub.kernel.assign(sub.kernel * scale)
    certify.refine(layer)


@keras.saving.register_keras_serializable(package="my_tests")
class ElementwiseAffine(kir.InvertibleLayer):
    """A user's invertible layer: ``y = x * exp(s) + b`` with its own weights, per dimension."""

    def build(self, input_shape):
        shape = tuple(input_shape[1:])
        self.log_scale = self.add_weight(
            name="log_scale",
            shape=shape,
            initializer=keras.initializers.RandomNormal(stddev=0.5, seed=1),
        )
        self.shift = self.add_weight(
            name="shift", shape=shape, initializer=keras.initializers.RandomNormal(seed=2)
        )

    def forward_and_log_det(self, inputs, training=None, logdet=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        log_scale = tf.convert_to_tensor(self.log_scale)
        y = x * tf.exp(log_scale) + self.shift
        return y, tf.reduce_sum(log_scale) * tf.ones(tf.shape(x)[:1], x.dtype)

    def _inverse(self, y, settings):
        return (y - self.shift) * tf.exp(-tf.convert_to_tensor(self.log_scale))


def initialized_actnorm(layer, shape):
    layer.forward_and_log_det(random((16,) + shape, 1) * 2.0 + 1.0, training=True)
    return layer


def two_scale_factor_out():
    """4x4x1 -> Squeeze -> 2x2x4 -> blocks -> half leaves -> Squeeze -> 1x1x8 -> blocks: [batch, 16]."""
    return kir.FactorOut(
        [
            kir.InvertibleSequential(
                [
                    kir.Squeeze(),
                    kir.InvertibleResidualBlock(hidden=4, coeff=0.9, kernel_sizes=(3, 1)),
                ]
            ),
            kir.InvertibleSequential(
                [
                    kir.Squeeze(),
                    kir.InvertibleResidualBlock(hidden=4, coeff=0.9, kernel_sizes=(1, 1)),
                ]
            ),
        ]
    )


def light_factor_out():
    """The harness's FactorOut: one block (1x1 convolutions) and an ActNorm (the stages are
    checked on their own; this checks the split, the pieces and the reassembly)."""
    return kir.FactorOut(
        [
            kir.InvertibleSequential(
                [
                    kir.Squeeze(),
                    kir.InvertibleResidualBlock(hidden=4, coeff=0.9, kernel_sizes=(1, 1)),
                ]
            ),
            kir.InvertibleSequential([kir.Squeeze(), kir.ActNorm()]),
        ]
    )


def _block():
    return kir.InvertibleResidualBlock(hidden=4, coeff=0.9)


def _stack():
    return kir.InvertibleResidualStack(
        num_blocks=2, hidden=4, coeff=0.9, actnorm=True, activation="lipswish"
    )


def _image_stack():
    return kir.InvertibleResidualStack(
        num_blocks=2, hidden=4, coeff=0.9, logdet="power_series", kernel_sizes=(3, 1, 3)
    )


def _sequential():
    return kir.InvertibleSequential(
        [kir.ActNorm(), kir.Squeeze(), kir.InvertibleResidualBlock(hidden=4, coeff=0.8)]
    )


# (id, factory, event shape, preparation of the built layer, harness keyword arguments)
CONTRACT_CASES = [
    ("block", _block, (3,), saturate, {}),
    (
        "stack_actnorm_lipswish",
        _stack,
        (3,),
        lambda l: (saturate(l), initialized_actnorm(l, (3,))),
        {},
    ),
    ("image_stack_power_series", _image_stack, (3, 3, 2), saturate, {}),
    ("actnorm_channel", kir.ActNorm, (2, 2, 3), lambda l: initialized_actnorm(l, (2, 2, 3)), {}),
    (
        "actnorm_position",
        lambda: kir.ActNorm(per_position=True, variance_floor=0.2),
        (3,),
        lambda l: initialized_actnorm(l, (3,)),
        {},
    ),
    ("squeeze", kir.Squeeze, (4, 4, 1), None, {}),
    ("injective_pad", lambda: kir.InjectivePad(2), (2, 2, 1), None, {"bijective": False}),
    ("flatten_event", kir.FlattenEvent, (2, 2, 2), None, {}),
    (
        "logit",
        lambda: kir.Logit(alpha=0.05),
        (2, 2, 1),
        None,
        {"inputs": tf.random.stateless_uniform([3, 2, 2, 1], seed=[4, 4])},
    ),
    (
        "factor_out",
        light_factor_out,
        (4, 4, 1),
        lambda l: (saturate(l), initialized_actnorm(l, (4, 4, 1))),
        {},
    ),
    (
        "sequential",
        _sequential,
        (4, 4, 1),
        lambda l: (saturate(l), initialized_actnorm(l, (4, 4, 1))),
        {},
    ),
    ("user_defined", ElementwiseAffine, (3,), None, {}),
]


@pytest.mark.parametrize(
    "factory,shape,prepare,kwargs",
    [case[1:] for case in CONTRACT_CASES],
    ids=[case[0] for case in CONTRACT_CASES],
)
def test_invertible_layer_contract(factory, shape, prepare, kwargs, mirrored_strategy, tmp_path):
    layer = factory()
    layer.build((None,) + shape)
    if prepare is not None:
        prepare(layer)
    report = testing.check_invertible_layer(
        layer, shape, strategy=mirrored_strategy, tmp_dir=str(tmp_path), **kwargs
    )
    assert report["distributed_step"] is True
    assert report["inverse_forward"] < 1e-4
    if kwargs.get("bijective", True):
        assert "log_det_vs_slogdet" in report and "bijector_round_trip" in report


def test_the_harness_catches_a_wrong_log_det(tmp_path):
    """The contract can fail: a layer whose log-det is off by a constant is refused."""

    class WrongLogDet(ElementwiseAffine):
        def forward_and_log_det(self, inputs, training=None, logdet=None):
            y, log_det = super().forward_and_log_det(inputs, training, logdet)
            return y, log_det + 0.1

    with pytest.raises(AssertionError, match="log_det vs slogdet"):
        testing.check_invertible_layer(WrongLogDet(), (3,), tmp_dir=str(tmp_path))


def test_user_defined_layer_survives_keras_save_and_load(tmp_path):
    inputs = keras.Input((3,))
    affine = ElementwiseAffine()
    block = kir.InvertibleResidualBlock(hidden=4, coeff=0.9)
    flow = kir.InvertibleSequential([affine, block])
    model = keras.Model(inputs, flow(inputs))
    x = random([4, 3], 5)
    y, log_det = flow.forward_and_log_det(x)
    path = tmp_path / "user_layer.keras"
    model.save(path)
    loaded = keras.models.load_model(path).layers[-1]
    assert type(loaded.chain[0]) is ElementwiseAffine
    np.testing.assert_array_equal(loaded.chain[0].log_scale.numpy(), affine.log_scale.numpy())
    y_loaded, log_det_loaded = loaded.forward_and_log_det(x)
    np.testing.assert_allclose(y_loaded.numpy(), y.numpy(), rtol=1e-6)
    np.testing.assert_allclose(log_det_loaded.numpy(), log_det.numpy(), rtol=1e-6)
    np.testing.assert_allclose(loaded.inverse(y, strict=True).numpy(), x.numpy(), atol=1e-5)


# -- Keras' own layer checks ------------------------------------------------------------------


def _factor_out_factory(**kwargs):
    return kir.FactorOut(two_scale_factor_out().stages, **kwargs)


def _sequential_factory(**kwargs):
    return kir.InvertibleSequential(
        [kir.ActNorm(), kir.InvertibleResidualBlock(hidden=4, coeff=0.9)], **kwargs
    )


KERAS_CASES = [
    ("SpectralDense", kir.SpectralDense, {"units": 3, "coeff": 0.9}, {"input_shape": (2, 4)}),
    (
        "SpectralConv2D",
        kir.SpectralConv2D,
        {"filters": 3, "kernel_size": 3, "coeff": 0.9},
        {"input_shape": (2, 4, 4, 2)},
    ),
    ("LipSwish", kir.LipSwish, {}, {"input_shape": (2, 3)}),
    (
        "ClassifierHead",
        kir.ClassifierHead,
        {"num_classes": 3},
        {"input_shape": (2, 4, 4, 2), "expected_output_shape": (2, 3)},
    ),
    (
        "StandardNormal",
        kir.StandardNormal,
        {},
        {"input_shape": (2, 3), "expected_output_shape": (2,)},
    ),
    (
        "DiagonalGaussian",
        kir.DiagonalGaussian,
        {},
        {"input_shape": (2, 2, 2, 1), "expected_output_shape": (2,)},
    ),
    ("ActNorm", kir.ActNorm, {"per_position": True}, {"input_shape": (2, 3)}),
    (
        "Squeeze",
        kir.Squeeze,
        {},
        {"input_shape": (2, 4, 4, 1), "expected_output_shape": (2, 2, 2, 4)},
    ),
    (
        "InjectivePad",
        kir.InjectivePad,
        {"pad": 2},
        {"input_shape": (2, 3), "expected_output_shape": (2, 5)},
    ),
    (
        "FlattenEvent",
        kir.FlattenEvent,
        {},
        {"input_shape": (2, 2, 2, 1), "expected_output_shape": (2, 4)},
    ),
    (
        "Logit",
        kir.Logit,
        {"alpha": 0.05},
        {"input_data": np.random.default_rng(0).uniform(size=(2, 3)).astype("float32")},
    ),
    (
        "InvertibleResidualBlock",
        kir.InvertibleResidualBlock,
        {"hidden": 4, "coeff": 0.9},
        {"input_shape": (2, 3)},
    ),
    (
        "InvertibleResidualStack",
        kir.InvertibleResidualStack,
        {
            "num_blocks": 2,
            "hidden": 4,
            "coeff": 0.9,
            "actnorm": "position",
            "activation": "lipswish",
        },
        {"input_shape": (2, 3)},
    ),
    # Containers of given layers (like keras.Sequential): their sublayers keep their own dtype
    # policy, so a container built with dtype="mixed_float16" outputs what its float32 sublayers
    # compute; Keras' mixed-precision check (output dtype == the container's compute dtype)
    # does not apply to them. Every other check runs.
    (
        "FactorOut",
        _factor_out_factory,
        {},
        {
            "input_shape": (2, 4, 4, 1),
            "expected_output_shape": (2, 16),
            "run_mixed_precision_check": False,
        },
    ),
    (
        "InvertibleSequential",
        _sequential_factory,
        {},
        {"input_shape": (2, 3), "run_mixed_precision_check": False},
    ),
]


@pytest.mark.parametrize(
    "layer_cls,init_kwargs,kwargs", [c[1:] for c in KERAS_CASES], ids=[c[0] for c in KERAS_CASES]
)
def test_keras_run_layer_test(layer_cls, init_kwargs, kwargs):
    """Keras' serialization, build, symbolic/eager call, a compiled fit step and mixed precision.

    (FactorOut and InvertibleSequential hold layer instances: a factory builds fresh ones for
    every instantiation the check makes; their class is still the one serialized.)
    """
    TestCase().run_layer_test(layer_cls, init_kwargs, **kwargs)


def test_every_public_layer_class_is_covered():
    covered = {case[0] for case in KERAS_CASES}
    public = {
        name
        for name in kir.layers.__all__
        if isinstance(getattr(kir.layers, name), type)
        and issubclass(getattr(kir.layers, name), keras.layers.Layer)
    }
    # The two bases are abstract (InvertibleLayer, SpectralLayerBase): nothing to instantiate.
    # ConditionalDiagonalGaussian takes a context: its run_layer_test is in test_conditional.py.
    assert public - covered == {"InvertibleLayer", "SpectralLayerBase", "ConditionalDiagonalGaussian"}


# -- Logit ------------------------------------------------------------------------------------


def test_logit_log_det_formula_and_inverse():
    alpha = 0.05
    layer = kir.Logit(alpha=alpha)
    x = tf.random.stateless_uniform([4, 2, 2, 1], seed=[6, 6])
    y, log_det = layer.forward_and_log_det(x)
    s = alpha + (1 - 2 * alpha) * x.numpy().astype(np.float64)
    np.testing.assert_allclose(y.numpy(), np.log(s / (1 - s)), rtol=1e-5, atol=1e-6)
    # d/dx logit(s(x)) = (1 - 2 alpha) / (s (1 - s)), elementwise.
    formula = np.sum(np.log((1 - 2 * alpha) / (s * (1 - s))).reshape(4, -1), axis=1)
    np.testing.assert_allclose(log_det.numpy(), formula, rtol=1e-5)
    np.testing.assert_allclose(log_det.numpy(), full_jacobian_logdet(layer, x), rtol=1e-5)
    np.testing.assert_allclose(layer.inverse(y).numpy(), x.numpy(), atol=1e-6)
    # The ends of [0, 1] stay finite (that is what alpha is for).
    _, ends = kir.Logit(alpha=1e-6).forward_and_log_det(tf.constant([[0.0, 1.0]]))
    assert np.all(np.isfinite(ends.numpy()))


def test_logit_out_of_range_input_names_the_layer():
    layer = kir.Logit(name="dequantized_logit")
    with pytest.raises(
        ValueError, match=r"Logit 'dequantized_logit' expects inputs in \[0, 1\].*max 1\.5"
    ):
        layer.forward_and_log_det(tf.constant([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="min -0.1"):
        layer(tf.constant([[-0.1, 0.5]]))

    @tf.function
    def graph(t):
        return layer(t)

    with pytest.raises(tf.errors.InvalidArgumentError, match="dequantized_logit"):
        graph(tf.constant([[2.0, 0.5]]))
    # validate_args=False: no check (NaN out).
    y = kir.Logit(validate_args=False)(tf.constant([[2.0]]))
    assert not np.isfinite(float(y[0, 0]))
    for alpha in (0.0, 0.5, 0.7, -0.1):
        with pytest.raises(ValueError, match="alpha"):
            kir.Logit(alpha=alpha)


# -- bases ----------------------------------------------------------------------------------------


def test_diagonal_gaussian_log_prob_sample_and_distribution():
    base = kir.DiagonalGaussian()
    base.build((None, 2, 3))
    rng = np.random.default_rng(7)
    loc, log_scale = rng.normal(size=(2, 3)), 0.3 * rng.normal(size=(2, 3))
    base.loc.assign(loc)
    base.log_scale.assign(log_scale)
    z = rng.normal(size=(5, 2, 3)).astype(np.float32)
    truth = scipy.stats.norm.logpdf(z, loc=loc, scale=np.exp(log_scale)).reshape(5, -1).sum(axis=1)
    np.testing.assert_allclose(base.log_prob(z).numpy(), truth, rtol=1e-5)
    np.testing.assert_allclose(base(z).numpy(), truth, rtol=1e-5)
    # TFP distribution on the same variables.
    dist = kir.bijector.base_distribution(base)
    np.testing.assert_allclose(dist.log_prob(z).numpy(), truth, rtol=1e-5)
    assert dist.event_shape == (2, 3)
    backing = kir.bridge.tf_variables(base)
    assert {id(v) for v in dist.trainable_variables} == {id(v) for v in backing} and len(
        backing
    ) == 2
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(dist.log_prob(z))
    grads = tape.gradient(loss, backing)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(base.log_prob(z))
    keras_grads = tape.gradient(loss, [base.loc, base.log_scale])
    for a, b in zip(grads, keras_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # Samples: shape, and mu + T sigma eps (4000 draws: the std within 5 standard errors).
    samples = base.sample(4000, temperature=0.5, seed=3).numpy()
    assert samples.shape == (4000, 2, 3)
    np.testing.assert_allclose(
        samples.mean(axis=0), loc, atol=5 * 0.5 * np.exp(log_scale).max() / np.sqrt(4000)
    )
    np.testing.assert_allclose(
        samples.std(axis=0), 0.5 * np.exp(log_scale), rtol=5 / np.sqrt(2 * 4000)
    )
    with pytest.raises(ValueError, match="temperature"):
        base.sample(2, temperature=0.0)
    with pytest.raises(ValueError, match=r"\bn must"):
        base.sample(0)


def test_standard_normal_and_get_base():
    base = kir.StandardNormal()
    base.build((None, 4))
    z = np.random.default_rng(8).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        base.log_prob(z).numpy(), scipy.stats.norm.logpdf(z).sum(axis=1), rtol=1e-6
    )
    np.testing.assert_allclose(
        kir.bijector.base_distribution(base).log_prob(z).numpy(),
        base.log_prob(z).numpy(),
        rtol=1e-6,
    )
    assert not base.weights
    samples = base.sample(2000, temperature=2.0, seed=1).numpy()
    assert samples.shape == (2000, 4)
    np.testing.assert_allclose(samples.std(), 2.0, rtol=5 / np.sqrt(2 * 8000))
    assert isinstance(kir.layers.get_base("standard"), kir.StandardNormal)
    assert isinstance(kir.layers.get_base("diagonal"), kir.DiagonalGaussian)
    assert kir.layers.get_base(base) is base
    assert isinstance(
        kir.layers.get_base(keras.saving.serialize_keras_object(kir.DiagonalGaussian())),
        kir.DiagonalGaussian,
    )
    with pytest.raises(ValueError, match="base must be"):
        kir.layers.get_base("laplace")


# -- FactorOut -------------------------------------------------------------------------------------


def test_factor_out_latent_pieces_inverse_and_log_det():
    flow = two_scale_factor_out()
    flow.build((None, 4, 4, 1))
    saturate(flow)
    assert flow.compute_output_shape((None, 4, 4, 1)) == (None, 16)
    assert flow.splits == [(2, (2, 2, 2))] and flow.final_shape == (1, 1, 8)
    x = random([3, 4, 4, 1], 9)
    z, log_det = flow.forward_and_log_det(x)
    assert z.shape == (3, 16)
    # The pieces: first what left after stage 0 (its last 2 of 4 channels), then the last stage.
    h = flow.stages[0](x)
    np.testing.assert_allclose(z[:, :8].numpy(), tf.reshape(h[..., 2:], [3, -1]).numpy(), rtol=1e-6)
    last = flow.stages[1](h[..., :2])
    np.testing.assert_allclose(z[:, 8:].numpy(), tf.reshape(last, [3, -1]).numpy(), rtol=1e-6)
    # Exact log-det (the split is a permutation) against the full 16x16 Jacobian.
    _, exact = flow.forward_and_log_det(x, logdet="exact")
    np.testing.assert_allclose(exact.numpy(), full_jacobian_logdet(flow, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        log_det.numpy(), exact.numpy(), rtol=1e-5
    )  # auto = exact at these sizes
    x_rec, info = flow.inverse(z, return_info=True, strict=True)
    assert float(tf.norm(x_rec - x) / tf.norm(x)) < 1e-5
    assert info.iterations.shape == (3,) and bool(tf.reduce_all(info.converged))


def test_factor_out_call_estimates_no_log_det():
    """call() (Keras' model(x), predict) returns the latent only: no stage runs its log-det."""
    flow = two_scale_factor_out()
    flow.build((None, 4, 4, 1))
    calls = []
    for stage in flow.stages:
        original = stage.forward_and_log_det

        def counting(*args, _original=original, **kwargs):
            calls.append(1)
            return _original(*args, **kwargs)

        stage.forward_and_log_det = counting
    x = random([2, 4, 4, 1], 21)
    z = flow(x)
    assert not calls
    np.testing.assert_allclose(z.numpy(), flow.forward_and_log_det(x)[0].numpy(), rtol=1e-6)
    assert len(calls) == 2


def test_factor_out_bad_arguments():
    with pytest.raises(TypeError, match="stages"):
        kir.FactorOut([])
    with pytest.raises(TypeError, match="stages"):
        kir.FactorOut([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="factor"):
        kir.FactorOut([kir.Squeeze()], factor=1.0)
    with pytest.raises(ValueError, match="must leave at least one channel"):
        kir.FactorOut([kir.ActNorm(), kir.ActNorm()]).build((None, 2, 2, 1))
    with pytest.raises(ValueError, match="must be built"):
        kir.FactorOut([kir.Squeeze()]).inverse(tf.zeros([1, 4]))
    with pytest.raises(ValueError, match="images"):
        kir.FactorOut([kir.ActNorm()]).build((None, 4))


# -- ActNorm, Squeeze, InjectivePad, FlattenEvent, InvertibleSequential ----------------------------


def test_actnorm_initializes_per_channel():
    layer = kir.ActNorm()
    x = random([64, 4, 4, 3], 10) * tf.constant([5.0, 0.5, 2.0]) + tf.constant([2.0, -1.0, 0.0])
    y = layer(x, training=True)
    assert layer.bias.shape == (3,) and float(layer.initialized) == 1.0
    np.testing.assert_allclose(tf.reduce_mean(y, [0, 1, 2]).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(tf.math.reduce_std(y, [0, 1, 2]).numpy(), 1, atol=1e-3)
    before = layer.bias.numpy().copy()
    layer(x * 2, training=True)  # only the first batch initializes
    np.testing.assert_array_equal(before, layer.bias.numpy())
    # log|det| = positions * sum(log_scale).
    _, log_det = layer.forward_and_log_det(x)
    np.testing.assert_allclose(log_det.numpy(), 16 * layer.log_scale.numpy().sum(), rtol=1e-6)


def test_actnorm_initializes_per_position():
    layer = kir.ActNorm(per_position=True)
    scales = tf.reshape(tf.range(1.0, 13.0), [2, 2, 3])
    x = random([256, 2, 2, 3], 11) * scales + 3.0
    y = layer(x, training=True)
    assert layer.bias.shape == (2, 2, 3)
    np.testing.assert_allclose(tf.reduce_mean(y, 0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(tf.math.reduce_std(y, 0).numpy(), 1, atol=1e-3)
    _, log_det = layer.forward_and_log_det(x)
    np.testing.assert_allclose(log_det.numpy(), layer.log_scale.numpy().sum(), rtol=1e-6)


def test_actnorm_variance_floor():
    layer = kir.ActNorm(per_position=True, variance_floor=0.2)
    x = tf.concat(
        [random([64, 1], 12) * 0.01 + 0.5, random([64, 1], 13) * 3.0], axis=1
    )  # a near-constant dimension
    layer(x, training=True)
    variance = tf.math.reduce_variance(x, axis=0).numpy()
    assert variance[0] < 0.2 < variance[1]
    expected = -np.log(np.sqrt(np.maximum(variance, 0.2)) + 1e-6)
    np.testing.assert_allclose(layer.log_scale.numpy(), expected, rtol=1e-5)
    assert float(layer.log_scale[0]) == pytest.approx(
        -0.5 * np.log(0.2), rel=1e-5
    )  # not log(1/0.01)
    with pytest.raises(ValueError, match="variance_floor"):
        kir.ActNorm(variance_floor=-1.0)


def test_actnorm_uninitialized_is_identity_and_stacked_is_not_callable():
    layer = kir.ActNorm()
    x = random([2, 3], 14)
    y, log_det = layer.forward_and_log_det(x)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_array_equal(log_det.numpy(), [0.0, 0.0])
    stacked = kir.ActNorm(stack=2)
    stacked.build((None, 3))
    with pytest.raises(ValueError, match="holds 2 parameter sets"):
        stacked(x)
    with pytest.raises(ValueError, match="expects inputs"):
        kir.ActNorm()(tf.zeros([2, 3, 4]))


@pytest.mark.parametrize(
    "layer,shape",
    [
        (kir.Squeeze(), (2, 4, 4, 2)),
        (kir.Squeeze(factor=3), (1, 3, 6, 1)),
        (kir.FlattenEvent(), (2, 2, 3, 2)),
    ],
)
def test_permutation_layers_have_zero_log_det(layer, shape):
    x = random(shape, 15)
    y, log_det = layer.forward_and_log_det(x)
    np.testing.assert_array_equal(log_det.numpy(), np.zeros(shape[0]))
    np.testing.assert_allclose(full_jacobian_logdet(layer, x), 0.0, atol=1e-6)
    np.testing.assert_array_equal(layer.inverse(y).numpy(), x.numpy())
    np.testing.assert_array_equal(np.sort(y.numpy().ravel()), np.sort(x.numpy().ravel()))


def test_squeeze_and_flatten_errors():
    with pytest.raises(ValueError, match="divisible"):
        kir.Squeeze()(tf.zeros([1, 5, 4, 1]))
    with pytest.raises(ValueError, match="factor"):
        kir.Squeeze(factor=1)
    with pytest.raises(ValueError, match="image inputs"):
        kir.Squeeze()(tf.zeros([1, 4]))
    with pytest.raises(ValueError, match="must be built"):
        kir.FlattenEvent().inverse(tf.zeros([1, 4]))


def test_injective_pad_is_injective_with_zero_log_volume():
    layer = kir.InjectivePad(2)
    x = random([2, 3, 3, 1], 16)
    y, log_det = layer.forward_and_log_det(x)
    assert y.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(y[..., 1:].numpy(), 0.0)
    np.testing.assert_array_equal(layer.inverse(y).numpy(), x.numpy())
    # The inverse drops the padded channels whatever they hold (a left inverse).
    np.testing.assert_array_equal(
        layer.inverse(y + tf.pad(tf.ones([2, 3, 3, 2]), [[0, 0]] * 3 + [[1, 0]])).numpy(), x.numpy()
    )
    # log sqrt(det(J^T J)) of the (non-square) Jacobian: the volume change onto the image.
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
    jac = tf.reshape(tape.batch_jacobian(out, x), [2, 27, 9]).numpy()
    gram = np.swapaxes(jac, 1, 2) @ jac
    assert np.linalg.matrix_rank(gram[0]) == 9  # injective: full column rank
    np.testing.assert_allclose(log_det.numpy(), 0.5 * np.linalg.slogdet(gram)[1], atol=1e-6)
    with pytest.raises(ValueError, match="pad"):
        kir.InjectivePad(0)


def test_sequential_log_dets_sum_and_match_full_jacobian():
    flow = kir.InvertibleSequential(
        [
            kir.ActNorm(),
            kir.InvertibleResidualBlock(hidden=8, coeff=0.9, logdet="exact"),
            kir.ActNorm(),
        ]
    )
    x = random([3, 4], 17)
    flow.forward_and_log_det(x * 3.0, training=True)
    y, log_det = flow.forward_and_log_det(x)
    parts = []
    h = x
    for layer in flow.chain:
        h, part = layer.forward_and_log_det(h)
        parts.append(part.numpy())
    np.testing.assert_allclose(log_det.numpy(), np.sum(parts, axis=0), rtol=1e-6)
    np.testing.assert_allclose(log_det.numpy(), full_jacobian_logdet(flow, x), rtol=1e-4, atol=1e-4)
    x_rec, info = flow.inverse(y, return_info=True, strict=True)
    np.testing.assert_allclose(x_rec.numpy(), x.numpy(), atol=1e-5)
    _, block_info = flow.chain[1].inverse(flow.chain[2].inverse(y), return_info=True)
    np.testing.assert_array_equal(
        info.iterations.numpy(), block_info.iterations.numpy()
    )  # ActNorm adds none
    with pytest.raises(TypeError, match="InvertibleLayer"):
        kir.InvertibleSequential([keras.layers.Dense(3)])


def test_classifier_head_shapes_and_errors():
    head = kir.ClassifierHead(5)
    assert head(random([2, 4, 4, 3], 18)).shape == (2, 5)
    assert kir.ClassifierHead(3)(random([2, 7], 19)).shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        kir.ClassifierHead(1)
    with pytest.raises(ValueError, match="momentum"):
        kir.ClassifierHead(3, momentum=1.0)


def test_closed_form_layers_accept_and_validate_inverse_settings():
    layer = kir.ActNorm()
    y = random([2, 3], 20)
    np.testing.assert_array_equal(
        layer.inverse(y, solver="anderson", rtol=1e-3, strict=True).numpy(), y.numpy()
    )
    x, info = layer.inverse(y, return_info=True)
    assert info is None
    with pytest.raises(TypeError, match="unexpected inverse settings"):
        layer.inverse(y, tolerance=1e-3)
    with pytest.raises(ValueError, match="rtol"):
        layer.inverse(y, rtol=-1.0)
    assert math.isclose(float(kir.LipSwish().compute_output_shape((2, 3))[1]), 3)
