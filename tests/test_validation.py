"""keras_iresnet.validation: every check accepts good values (normalized) and refuses bad ones
with a ValueError that names the argument and shows the value."""

import math

import numpy as np
import pytest

from keras_iresnet import validation

# -- coeff ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.5, 1e-6, 0.999999, np.float32(0.9), np.float64(0.25)])
def test_coeff_accepts_open_unit_interval(value):
    result = validation.coeff(value)
    assert isinstance(result, float) and result == pytest.approx(float(value))


def test_coeff_none_allowed_unless_refused():
    assert validation.coeff(None) is None
    with pytest.raises(ValueError, match="coeff must be a float") as error:
        validation.coeff(None, allow_none=False)
    assert "None to disable" not in str(error.value)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.2, math.inf, math.nan])
def test_coeff_out_of_range(value):
    with pytest.raises(ValueError, match=r"0 < coeff < 1.*Theorem 1") as error:
        validation.coeff(value)
    assert f"coeff={value!r}" in str(error.value)
    assert "coeff=None" in str(error.value)  # the way to a vanilla layer is named


@pytest.mark.parametrize("value", ["0.5", True, False, [0.5], 1])
def test_coeff_wrong_type(value):
    # 1 is an int in range of no interval: refused by the range check; the others by type.
    with pytest.raises(ValueError, match="coeff"):
        validation.coeff(value)


def test_coeff_custom_name_in_message():
    with pytest.raises(ValueError, match=r"block_coeff=1\.2"):
        validation.coeff(1.2, name="block_coeff")


# -- integers --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1)])
def test_positive_int_good(value):
    result = validation.positive_int("units", value)
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, "3", None, [2]])
def test_positive_int_bad(value):
    with pytest.raises(ValueError, match=r"units must be an integer >= 1; got units="):
        validation.positive_int("units", value)


@pytest.mark.parametrize("value", [0, 1, np.int16(5)])
def test_non_negative_int_good(value):
    result = validation.non_negative_int("seed", value)
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value", [-1, 0.0, False, "0", None])
def test_non_negative_int_bad(value):
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0; got seed="):
        validation.non_negative_int("seed", value)


# -- floats ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1e-12, 0.5, 3, np.float32(2.0)])
def test_positive_float_good(value):
    result = validation.positive_float("power_tol", value)
    assert isinstance(result, float) and result == pytest.approx(float(value))


@pytest.mark.parametrize("value", [0, 0.0, -1e-9, math.inf, math.nan, True, "1", None])
def test_positive_float_bad(value):
    with pytest.raises(ValueError, match=r"power_tol must be a finite number > 0; got power_tol="):
        validation.positive_float("power_tol", value)


@pytest.mark.parametrize("value", [0, 0.0, 2.5, np.float64(1e-3)])
def test_non_negative_float_good(value):
    assert validation.non_negative_float("atol", value) == pytest.approx(float(value))


@pytest.mark.parametrize("value", [-1e-9, math.inf, -math.inf, math.nan, False, "0", None])
def test_non_negative_float_bad(value):
    with pytest.raises(ValueError, match=r"atol must be a finite number >= 0; got atol="):
        validation.non_negative_float("atol", value)


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999])
def test_fraction_good(value):
    assert validation.fraction("dropout", value) == pytest.approx(float(value))


@pytest.mark.parametrize("value", [1, 1.0, -0.1, math.nan, True, "0.1", None])
def test_fraction_bad(value):
    with pytest.raises(ValueError, match=r"dropout must satisfy 0 <= dropout < 1; got dropout="):
        validation.fraction("dropout", value)


@pytest.mark.parametrize("value", [1e-9, 0.5, 0.999])
def test_open_unit_good(value):
    assert validation.open_unit("p", value) == pytest.approx(value)


@pytest.mark.parametrize("value", [0, 0.0, 1, 1.0, -0.5, 2.0, math.nan, True, "0.5", None])
def test_open_unit_bad(value):
    with pytest.raises(ValueError, match=r"p must satisfy 0 < p < 1; got p="):
        validation.open_unit("p", value)


# -- choices, pairs, shapes ----------------------------------------------------------------


def test_one_of():
    assert validation.one_of("solver", "anderson", ("fixed_point", "anderson")) == "anderson"
    with pytest.raises(
        ValueError,
        match=r"solver must be one of \('fixed_point', 'anderson'\); got solver='newton'",
    ):
        validation.one_of("solver", "newton", ("fixed_point", "anderson"))
    # Strings are compared as given (no case folding).
    with pytest.raises(ValueError, match="solver"):
        validation.one_of("solver", "Anderson", ("fixed_point", "anderson"))


@pytest.mark.parametrize(
    "value,expected", [(3, (3, 3)), ((3, 1), (3, 1)), ([2, 5], (2, 5)), (np.int64(2), (2, 2))]
)
def test_int_pair_good(value, expected):
    result = validation.int_pair("kernel_size", value)
    assert result == expected and all(type(v) is int for v in result)


@pytest.mark.parametrize(
    "value", [0, -1, (3,), (3, 3, 3), (0, 1), (1.5, 2), "33", None, True, (True, 1)]
)
def test_int_pair_bad(value):
    with pytest.raises(
        ValueError, match=r"kernel_size must be a positive int or a pair of them; got kernel_size="
    ):
        validation.int_pair("kernel_size", value)


@pytest.mark.parametrize(
    "value,expected", [([2], (2,)), ((28, 28, 1), (28, 28, 1)), ([np.int64(4), 4, 3], (4, 4, 3))]
)
def test_shape_good(value, expected):
    result = validation.shape("event_shape", value)
    assert result == expected and all(type(v) is int for v in result)


@pytest.mark.parametrize(
    "value", [(), (2, 2), (1, 2, 3, 4), (0,), (-1,), (2.0,), (None,), 5, None, "ab"]
)
def test_shape_bad(value):
    with pytest.raises(
        ValueError, match=r"event_shape must be \(d,\) for vectors or \(H, W, C\) for images"
    ) as error:
        validation.shape("event_shape", value)
    assert "event_shape=" in str(error.value)


def test_shape_other_ranks():
    assert validation.shape("s", (2, 3), ranks=(2,)) == (2, 3)
    with pytest.raises(ValueError, match=r"s must be rank 2 with positive integer sizes"):
        validation.shape("s", (2,), ranks=(2,))


class _Named:
    name = "blocks"


def test_input_shape_names_the_layer_and_the_expected_ranks():
    assert validation.input_shape(_Named(), (None, 4)) == (None, 4)
    assert validation.input_shape(_Named(), (None, 8, 8, 2)) == (None, 8, 8, 2)
    with pytest.raises(
        ValueError,
        match=r"_Named 'blocks' expects inputs of rank 2 \(vectors \[batch, features\]\) or rank 4",
    ):
        validation.input_shape(_Named(), (None, 8, 8))
    with pytest.raises(ValueError, match="fully known input shape apart from the batch axis"):
        validation.input_shape(_Named(), (None, None, 8, 2))
    with pytest.raises(
        ValueError,
        match=r"expects inputs of rank 4 \(images \[batch, height, width, channels\]\) with",
    ):
        validation.input_shape(_Named(), (None, 4), ranks=(4,))


def test_every_public_check_is_tested():
    tested = {
        "input_shape",
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
    }
    assert set(validation.__all__) == tested
