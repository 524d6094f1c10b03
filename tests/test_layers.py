"""Every public layer through the two harnesses: the invertible-layer contract
(keras_iresnet.testing.check_invertible_layer) and Keras' own layer checks (run_layer_test).
Each layer's own behaviour is tested in the test file of its module."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.testing import TestCase

import keras_iresnet as kir
from keras_iresnet import testing
from tests.test_containers import two_scale_factor_out
from tests.test_invertible import ElementwiseAffine


def initialized_actnorm(layer, shape):
    layer.forward_and_log_det(
        tf.random.stateless_normal((16,) + shape, seed=[1, 3]) * 2.0 + 1.0, training=True
    )
    return layer


def saturate(layer):
    return testing.saturate(layer, scale=4.0)


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
        lambda layer: (saturate(layer), initialized_actnorm(layer, (3,))),
        {},
    ),
    ("image_stack_power_series", _image_stack, (3, 3, 2), saturate, {}),
    (
        "actnorm_channel",
        kir.ActNorm,
        (2, 2, 3),
        lambda layer: initialized_actnorm(layer, (2, 2, 3)),
        {},
    ),
    (
        "actnorm_position",
        lambda: kir.ActNorm(per_position=True, variance_floor=0.2),
        (3,),
        lambda layer: initialized_actnorm(layer, (3,)),
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
        lambda layer: (saturate(layer), initialized_actnorm(layer, (4, 4, 1))),
        {},
    ),
    (
        "sequential",
        _sequential,
        (4, 4, 1),
        lambda layer: (saturate(layer), initialized_actnorm(layer, (4, 4, 1))),
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
    """The harness raises on any failed check; the bijective cases are small enough for its
    ground truth (the log-det against slogdet of the full Jacobian), which it must not skip."""
    layer = factory()
    layer.build((None,) + shape)
    if prepare is not None:
        prepare(layer)
    report = testing.check_invertible_layer(
        layer, shape, strategy=mirrored_strategy, tmp_dir=str(tmp_path), **kwargs
    )
    if kwargs.get("bijective", True):
        assert "log_det_vs_slogdet" in report and "bijector_round_trip" in report


def test_every_invertible_layer_class_has_a_contract_case():
    covered = {type(case[1]()) for case in CONTRACT_CASES}
    public = {
        getattr(kir.layers, name)
        for name in kir.layers.__all__
        if isinstance(getattr(kir.layers, name), type)
        and issubclass(getattr(kir.layers, name), kir.InvertibleLayer)
    }
    assert {cls.__name__ for cls in public - covered} == {"InvertibleLayer"}


# -- Keras' own layer checks ------------------------------------------------------------------


def _factor_out_factory(**kwargs):
    return kir.FactorOut(two_scale_factor_out().stages, **kwargs)


def _sequential_factory(**kwargs):
    return kir.InvertibleSequential(
        [kir.ActNorm(), kir.InvertibleResidualBlock(hidden=4, coeff=0.9)], **kwargs
    )


KERAS_CASES = [
    (
        "SpectralDense",
        kir.SpectralDense,
        {"units": 3, "coeff": 0.9},
        {"input_shape": (2, 4), "expected_output_shape": (2, 3)},
    ),
    (
        "SpectralConv2D",
        kir.SpectralConv2D,
        {"filters": 3, "kernel_size": 3, "coeff": 0.9},
        {"input_shape": (2, 4, 4, 2), "expected_output_shape": (2, 4, 4, 3)},
    ),
    (
        "LipSwish",
        kir.LipSwish,
        {},
        {"input_shape": (2, 3), "expected_output_shape": (2, 3)},
    ),
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
    (
        "ActNorm",
        kir.ActNorm,
        {"per_position": True},
        {"input_shape": (2, 3), "expected_output_shape": (2, 3)},
    ),
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
        {
            "input_data": np.random.default_rng(0).uniform(size=(2, 3)).astype("float32"),
            "expected_output_shape": (2, 3),
        },
    ),
    (
        "InvertibleResidualBlock",
        kir.InvertibleResidualBlock,
        {"hidden": 4, "coeff": 0.9},
        {"input_shape": (2, 3), "expected_output_shape": (2, 3)},
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
        {"input_shape": (2, 3), "expected_output_shape": (2, 3)},
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
        {
            "input_shape": (2, 3),
            "expected_output_shape": (2, 3),
            "run_mixed_precision_check": False,
        },
    ),
]


@pytest.mark.parametrize(
    "layer_cls,init_kwargs,kwargs", [c[1:] for c in KERAS_CASES], ids=[c[0] for c in KERAS_CASES]
)
def test_keras_run_layer_test(layer_cls, init_kwargs, kwargs):
    """Keras' serialization, build, symbolic/eager call and output shape, a compiled fit step and
    mixed precision.

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
    assert public - covered == {
        "InvertibleLayer",
        "SpectralLayerBase",
        "ConditionalDiagonalGaussian",
    }
