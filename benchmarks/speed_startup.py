"""Start-up and steady state: build, first step, first evaluate, later epoch (part h).

Each model in a fresh process; seconds from the start of building the model to
its end, to the end of its first ``fit`` step (tracing included), the first
``evaluate`` after training, and the last of 3 epochs (10,240 points, batch 256):

- the "2d" recipe's i-ResNet flow made 10, 40 and 100 blocks deep (width 18),
  trained with ``model.fit`` on moons;
- next to each, TFP RealNVP (4 couplings of Keras MLPs) of about the same number of
  parameters, trained by the same Keras-style compiled step (Adam 1e-4);
- the image recipes "digits-density" and "mnist" (20 steps per epoch), 2 epochs.

Goals: first step within 5 s at 40 blocks, growing at most linearly in
depth, and a steady-state epoch no slower than RealNVP's.

Run::

    python -m benchmarks.speed_startup --out benchmarks/results_speed_startup.json

Numbers: benchmarks/README.md, "Speed", section (h).
"""

import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks.common import (
    answer_probe,
    compiled_step,
    count_parameters,
    goal_rows,
    parser,
    print_table,
    report,
    run_probe,
)
from keras_iresnet import data
from keras_iresnet.experiments import recipes, runs

POINTS, EPOCHS = 10240, 3


class _StartupTimer(keras.callbacks.Callback):
    """Seconds from ``start`` to the end of the first training batch, and per-epoch durations."""

    def __init__(self, start):
        super().__init__()
        self.start, self.first_step, self.epochs = start, None, []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step is None:
            self.first_step = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self.epoch_start)


def _realnvp_startup(parameters, start):
    from benchmarks.baselines import realnvp_2d_sized

    (dist, variables), hidden = realnvp_2d_sized(parameters)
    train = data.sample_2d("moons", POINTS, seed=0)
    step = compiled_step(variables, lambda x: -tf.reduce_mean(dist.log_prob(x)))
    batches = np.array_split(train, POINTS // 256)
    first_step, epochs = None, []
    for _ in range(EPOCHS):
        epoch_start = time.perf_counter()
        for batch in batches:
            float(step(batch))
            if first_step is None:
                first_step = time.perf_counter() - start
        epochs.append(time.perf_counter() - epoch_start)
    evaluate_start = time.perf_counter()
    float(tf.reduce_mean(tf.function(dist.log_prob)(data.sample_2d("moons", 5000, seed=1))))
    return {
        "first_step_s": first_step,
        "first_evaluate_s": time.perf_counter() - evaluate_start,
        "steady_epoch_s": epochs[-1],
        "parameters": count_parameters(variables),
        "detail": f"4 couplings, MLP hidden {hidden}",
    }


def startup_probe(kind, recipe=None, model=None, steps=None, parameters=None):
    """In a fresh process: build -> first training step -> epochs -> first evaluate, in seconds.

    ``kind``: "realnvp-2d" (of about ``parameters``), "iresnet-2d" (the ``recipe``
    with ``model`` overrides, on moons) or "image" (the ``recipe`` on its data,
    ``steps`` per epoch).
    """
    start = time.perf_counter()
    if kind == "realnvp-2d":
        return _realnvp_startup(parameters, start)
    chosen = recipes.get(recipe)
    if model is not None:
        chosen = chosen.replace(model=model)
    if kind == "iresnet-2d":
        split = runs.Split(
            "moons",
            "density",
            data.sample_2d("moons", POINTS, seed=0),
            data.sample_2d("moons", 5000, seed=1),
        )
        epochs, steps = EPOCHS, None
    else:
        split = runs.load_split(chosen)
        epochs = 2
    built_model = runs.build_model(chosen, split)
    built = time.perf_counter() - start
    runs.compile_model(built_model, chosen)
    train, test = runs.datasets(chosen, split)
    timer = _StartupTimer(start)
    built_model.fit(train, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    evaluate_start = time.perf_counter()
    built_model.evaluate(test, verbose=0)
    return {
        "build_s": built,
        "first_step_s": timer.first_step,
        "first_evaluate_s": time.perf_counter() - evaluate_start,
        "steady_epoch_s": timer.epochs[-1],
        "steps_per_epoch": steps,
        "parameters": count_parameters(built_model.trainable_variables),
    }


def startup_rows(tiny):
    """Deep 2-D flows next to RealNVP of their size, then the image recipes; fresh processes."""
    rows = []
    for depth in (2,) if tiny else (10, 40, 100):
        ours = run_probe(
            "benchmarks.speed_startup", kind="iresnet-2d", recipe="2d", model={"blocks": depth}
        )
        rows.append(
            {"part": "h", "model": f"i-ResNet 2-D flow, {depth} blocks of width 18", **ours}
        )
        theirs = run_probe(
            "benchmarks.speed_startup", kind="realnvp-2d", parameters=ours["parameters"]
        )
        rows.append(
            {"part": "h", "model": f"TFP RealNVP ({theirs.pop('detail')}), same size", **theirs}
        )
    for name, steps in [] if tiny else [("digits-density", None), ("mnist", 20)]:
        result = run_probe("benchmarks.speed_startup", kind="image", recipe=name, steps=steps)
        label = f"i-ResNet recipe {name!r}" + (f" ({steps} steps per epoch)" if steps else "")
        rows.append({"part": "h", "model": label, **result})
    return rows


def goals(rows):
    """First step at 40 blocks; each 2-D flow's steady epoch against its RealNVP."""
    flows = [r for r in rows if "2-D flow" in r["model"]]
    result = []
    for ours in flows:
        theirs = rows[rows.index(ours) + 1]
        if "40 blocks" in ours["model"]:
            result.append(("time to first step <= 5 s for 40 blocks", ours["first_step_s"], 5.0))
        result.append(
            (
                f"steady epoch <= RealNVP's ({ours['model']}), ratio",
                ours["steady_epoch_s"] / theirs["steady_epoch_s"],
                1.0,
            )
        )
    return goal_rows(result)


def main(argv=None):
    args = parser(__doc__, full=False).parse_args(argv)
    if answer_probe(args, startup_probe):
        return None
    rows = startup_rows(args.tiny)
    goal = goals(rows)
    print_table(goal, ["goal", "measured", "met"], title="goals")
    print("\nh: start-up")
    return report(
        "speed_startup",
        rows,
        ["model", "parameters", "build_s", "first_step_s", "first_evaluate_s", "steady_epoch_s"],
        args,
        extra={"goals": goal, "points": POINTS, "epochs_2d": EPOCHS},
    )


if __name__ == "__main__":
    main()
