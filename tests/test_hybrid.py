"""keras_iresnet.models.hybrid: classifier and density in one model -- both metrics, the accuracy
it reports is that of its logits, and it round-trips through a .keras file."""

import keras
import numpy as np
import pytest

from keras_iresnet import data, models


def test_hybrid_reports_accuracy_and_round_trips(tmp_path):
    images, labels = data.digits_arrays()
    ds = data.image_dataset(images[:256], labels[:256], "hybrid", 64, shuffle=False)
    model = models.iresnet_hybrid((8, 8, 1), 10, blocks=(1, 1), hidden=8, density_weight=0.5)
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(ds, epochs=1, verbose=0)
    assert {"loss", "accuracy", "bits_per_dim", "bits_per_dim_stderr"} <= set(history.history)
    # The reported accuracy is the share of examples whose largest logit is the label.
    x_all = np.concatenate([x.numpy() for x, _ in ds])  # one draw of the dequantization
    results = model.evaluate(x_all, labels[:256], batch_size=64, verbose=0, return_dict=True)
    predicted = np.argmax(model(x_all)["logits"].numpy(), axis=-1)
    assert results["accuracy"] == pytest.approx(np.mean(predicted == labels[:256]), abs=1e-6)
    path = tmp_path / "hybrid.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = next(iter(ds))[0]
    np.testing.assert_allclose(
        loaded(x)["logits"].numpy(), model(x)["logits"].numpy(), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="factor out"):
        models.iresnet_hybrid((8, 8, 1), 10, factor_out=True)
