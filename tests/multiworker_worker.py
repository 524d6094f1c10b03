"""One worker of the two-process MultiWorkerMirroredStrategy test (run by test_distributed.py).

argv: out_path. TF_CONFIG comes from the environment. Trains a small 2-D flow
with keras_iresnet.distributed.fit_distributed, then tries Keras' own fit, and writes
a JSON report.
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_iresnet import data, distributed, models  # noqa: E402


def main(out_path):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = models.iresnet_flow((2,), blocks=2, hidden=16, coeff=0.9, logdet="exact")
        model.compile(keras.optimizers.Adam(1e-2))
    points = data.sample_2d("moons", 512, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices(points).batch(64)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    before = float(tf.reduce_mean(model.bits_per_dim(model.log_prob(points))))
    history = distributed.fit_distributed(model, dataset, epochs=3, verbose=0)
    after = float(tf.reduce_mean(model.bits_per_dim(model.log_prob(points))))
    keras_fit_error = None
    try:
        model.fit(dataset, epochs=1, verbose=0)
    except Exception as error:  # noqa: BLE001 - recorded for the xfail test
        keras_fit_error = f"{type(error).__name__}: {str(error)[:300]}"
    weights = [np.asarray(w).ravel().tolist() for w in model.get_weights()]
    with open(out_path, "w") as f:
        json.dump(
            {
                "before": before,
                "after": after,
                "history": history.history,
                "keras_fit_error": keras_fit_error,
                "weights": weights,
            },
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1])
