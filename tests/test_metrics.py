"""keras_iresnet.metrics: the mean with its standard error, against numpy."""

import keras
import numpy as np
import pytest

from keras_iresnet.metrics import MeanWithStandardError


def test_mean_and_standard_error_over_batches():
    values = np.random.default_rng(0).normal(3.0, 2.0, size=250)
    metric = MeanWithStandardError(name="bits_per_dim")
    for batch in np.array_split(values, 7):
        metric.update_state(batch)
    result = {k: float(v) for k, v in metric.result().items()}
    assert set(result) == {"bits_per_dim", "bits_per_dim_stderr"}
    assert result["bits_per_dim"] == pytest.approx(values.mean(), rel=1e-6)
    assert result["bits_per_dim_stderr"] == pytest.approx(
        values.std(ddof=1) / np.sqrt(values.size), rel=1e-5
    )
    metric.reset_state()
    metric.update_state(np.array([5.0]))  # one value: no spread to measure
    assert {k: float(v) for k, v in metric.result().items()} == {
        "bits_per_dim": 5.0,
        "bits_per_dim_stderr": 0.0,
    }
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(clone) is MeanWithStandardError and clone.name == "bits_per_dim"
