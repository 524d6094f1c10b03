"""Cost of spectral normalization per training step of one conv layer.

One conv layer, 3x3, 32 -> 32 channels, input 64x32x32x32, forward + backward +
SGD step in a ``tf.function``, timed in interleaved rounds (median of 20):

- plain ``keras.layers.Conv2D``;
- our ``SpectralConv2D`` used on its own (the default rule: a warm-started 8-vector
  subspace iteration through conv / conv-transpose until the predicted relative
  error is below ``power_tol``, in every training call: ``update_policy="every_call"``);
- the same layer with the paper's rule (one power iteration of one vector per step);
- ``keras.layers.SpectralNormalization(Conv2D)`` (Miyato, reshaped kernel).

Reports median step times, ratios to the plain conv and the subspace iterations
per step. (Inside the keras_iresnet models the iteration runs once per step, after
the update: ``benchmarks.speed_steps``.) The paper: 0.5 s vs 0.2 s (2.5x) for its
whole network; our goal: < 1.5x per layer.

Run::

    python -m benchmarks.spectral --out benchmarks/results_spectral.json

Numbers: benchmarks/README.md, section "Spectral normalization of one layer".
"""

import keras
import tensorflow as tf

import keras_iresnet as kir
from benchmarks.common import PAPER_RULE, parser, report, time_with_iterations


def step_fn(layer, x):
    """A compiled SGD step on ``mean(layer(x)^2)`` (the layer built on ``x``)."""
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


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
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
            channels, 3, coeff=0.9, **PAPER_RULE
        ),
        "keras SpectralNormalization(Conv2D)": keras.layers.SpectralNormalization(
            keras.layers.Conv2D(channels, 3, padding="same")
        ),
    }
    steps = {name: step_fn(layer, x) for name, layer in layers.items()}
    times, iterations = time_with_iterations(steps, layers, repeats=repeats)
    base = times["keras Conv2D"]
    rows = [
        {
            "layer": name,
            "step_ms": 1e3 * t,
            "ratio_to_plain_conv": t / base,
            "iterations_per_step": iterations[name],
        }
        for name, t in times.items()
    ]
    return report(
        "spectral",
        rows,
        ["layer", "step_ms", "ratio_to_plain_conv", "iterations_per_step"],
        args,
        extra={"input_shape": [batch, size, size, channels], "goal_ratio": 1.5},
    )


if __name__ == "__main__":
    main()
