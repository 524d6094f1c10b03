"""Cost of spectral normalization per training step of one conv layer (issue 2).

Same input, same optimizer step: plain ``keras.layers.Conv2D``, our
``SpectralConv2D`` used on its own (the default rule: a warm-started 8-vector
subspace iteration through conv/conv-transpose until the predicted relative error
is below ``power_tol``, in every training call), the same layer with the paper's
rule (one power iteration of one vector per step) and
``keras.layers.SpectralNormalization(Conv2D)`` (Miyato, reshaped kernel). Reports
median step times, ratios to the plain conv and the iterations per step, measured
in one run. (Inside the keras_iresnet models the iteration runs once per step,
after the update: ``benchmarks/speed.py`` parts a and g.)
The paper: 0.5 s vs 0.2 s (2.5x) for its whole network; our goal: < 1.5x per layer.
"""

from common import parser, report, time_interleaved  # noqa: I001

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_iresnet as kir  # noqa: E402


def step_fn(layer, x):
    layer(x)
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(layer.trainable_variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(layer(x, training=True) ** 2)
        grads = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply_gradients(zip(grads, layer.trainable_variables))
        return loss

    return lambda: step().numpy()


def _iterations(layer):
    counter = getattr(layer, "power_iterations_run", None)
    return None if counter is None else float(counter.numpy())


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.tiny:
        batch, size, channels, repeats = 4, 8, 4, 3
    elif args.full:
        batch, size, channels, repeats = 128, 32, 64, 50
    else:
        batch, size, channels, repeats = 64, 32, 32, 20
    x = tf.random.normal([batch, size, size, channels])
    layers = {
        "keras Conv2D": keras.layers.Conv2D(channels, 3, padding="same"),
        "keras_iresnet SpectralConv2D": kir.SpectralConv2D(channels, 3, coeff=0.9),
        "keras_iresnet SpectralConv2D, paper's rule": kir.SpectralConv2D(
            channels, 3, coeff=0.9, power_tol=None, power_iterations=1, power_vectors=1
        ),
        "keras SpectralNormalization(Conv2D)": keras.layers.SpectralNormalization(
            keras.layers.Conv2D(channels, 3, padding="same")
        ),
    }
    steps = {name: step_fn(layer, x) for name, layer in layers.items()}
    runs_before = {name: _iterations(layer) for name, layer in layers.items()}
    calls = {name: 0 for name in layers}

    def counted(name):
        def run():
            calls[name] += 1
            steps[name]()

        return run

    times = time_interleaved({name: counted(name) for name in layers}, repeats=repeats)
    base = times["keras Conv2D"]
    rows = [
        {
            "layer": name,
            "step_ms": 1e3 * t,
            "ratio_to_plain_conv": t / base,
            "iterations_per_step": None
            if runs_before[name] is None
            else (_iterations(layers[name]) - runs_before[name]) / max(1, calls[name]),
        }
        for name, t in times.items()
    ]
    report(
        "spectral",
        rows,
        ["layer", "step_ms", "ratio_to_plain_conv", "iterations_per_step"],
        args,
        extra={"input_shape": [batch, size, size, channels], "goal_ratio": 1.5},
    )


if __name__ == "__main__":
    main()
