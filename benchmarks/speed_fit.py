"""``model.fit`` throughput: default, XLA and MirroredStrategy (part f).

Examples per second of ``model.fit`` in its last epoch (the earlier one includes
tracing), for the classifier and the 5-term density flow of
:mod:`benchmarks.speed_steps` (same input, batch and architecture), each in a
fresh process: the default compile, ``jit_compile=True``, and a
``MirroredStrategy`` over 2 logical CPU devices; with the speed-up over the
default per task. Random data, 32 batches per epoch, 2 epochs. (``--tiny``, the smoke
test, runs every setting on the classifier and the default on the flow, in one process.)

Run::

    python -m benchmarks.speed_fit --out benchmarks/results_speed_fit.json

Numbers: not in benchmarks/README.md (no run recorded); the JSON is the record.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks.common import answer_probe, parser, report, run_probe, setting
from benchmarks.speed_steps import SETTINGS, classifier, density_flow
from keras_iresnet import logdet

FIT_SETTINGS = {
    "default": "default",
    "jit": "jit_compile=True",
    "mirrored": "MirroredStrategy, 2 logical CPUs",
}
#: Every task with every setting; the smoke test (``--tiny``) runs every branch once
#: (XLA compiling a model takes most of its time).
CASES = [(task, name) for task in ("classify", "density") for name in FIT_SETTINGS]
TINY_CASES = [(task, name) for task, name in CASES if task == "classify" or name == "default"]


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def _fit_one(task, fit_setting, shape, batch, stages, hidden, examples, epochs):
    """examples/s of ``model.fit`` in its last epoch, for one task and setting."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(examples,) + shape).astype("float32")
    y = rng.integers(0, 10, size=examples).astype("int32")
    strategy = (
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        if fit_setting == "mirrored"
        else tf.distribute.get_strategy()
    )
    with strategy.scope():
        keras.utils.set_random_seed(0)
        if task == "classify":
            model = classifier(shape, stages, hidden)
            model.compile(
                keras.optimizers.Adam(1e-4),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=fit_setting == "jit",
            )
            data = (x, y)
        else:
            model = density_flow(shape, stages, hidden, logdet.PowerSeries(n_terms=5))
            model.compile(keras.optimizers.Adam(1e-4), jit_compile=fit_setting == "jit")
            data = (x,)
    timer = _EpochTimer()
    model.fit(*data, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer])
    return {"examples_per_s": examples / timer.seconds}


def fit_probe(cases, shape, batch, stages, hidden, examples, epochs):
    """In a fresh process: ``[{"examples_per_s"}]`` for each ``(task, setting)`` of ``cases``."""
    # Two logical CPU devices for MirroredStrategy (in every probe, so the settings
    # differ only in what they measure); they must exist before TensorFlow initializes.
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
    sizes = (tuple(shape), batch, tuple(stages), hidden, examples, epochs)
    return [_fit_one(task, fit_setting, *sizes) for task, fit_setting in cases]


def fit_rows(probes, shape, batch, stages, hidden, examples, epochs):
    """``model.fit`` throughput per ``(task, setting)``; ``probes``: the cases of each process.

    The speed-up is relative to the task's default setting (which ``probes`` must hold).
    """
    rows = []
    for cases in probes:
        results = run_probe(
            "benchmarks.speed_fit",
            cases=cases,
            shape=list(shape),
            batch=batch,
            stages=list(stages),
            hidden=hidden,
            examples=examples,
            epochs=epochs,
        )
        for (task, fit_setting), result in zip(cases, results):
            label = FIT_SETTINGS[fit_setting]
            rows.append({"part": "f", "task": task, "setting": label, "batch": batch, **result})
    for row in rows:
        base = next(r for r in rows if r["task"] == row["task"] and r["setting"] == "default")
        row["speedup"] = row["examples_per_s"] / base["examples_per_s"]
    return rows


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    if answer_probe(args, fit_probe):
        return None
    shape, batch, stages, hidden = SETTINGS[setting(args)]
    examples = 4 * batch if args.tiny else 32 * batch
    # each case in a fresh process; --tiny (the smoke test, no measurement) in one
    probes = [TINY_CASES] if args.tiny else [[case] for case in CASES]
    rows = fit_rows(probes, shape, batch, stages, hidden, examples, epochs=2)
    return report(
        "speed_fit",
        rows,
        ["task", "setting", "batch", "examples_per_s", "speedup"],
        args,
        extra={"setting": setting(args), "input_shape": [batch, *shape], "examples": examples},
    )


if __name__ == "__main__":
    main()
