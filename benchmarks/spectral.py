"""Cost of spectral normalization per training step of one conv layer (issue 2).

Same input, same optimizer step: plain ``keras.layers.Conv2D``, our
``SpectralConv2D`` (1 power iteration through conv/conv-transpose per step) and
``keras.layers.SpectralNormalization(Conv2D)`` (Miyato, reshaped kernel). Reports
median step times and ratios to the plain conv, measured in one run.
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
        "keras SpectralNormalization(Conv2D)": keras.layers.SpectralNormalization(
            keras.layers.Conv2D(channels, 3, padding="same")
        ),
    }
    times = time_interleaved({name: step_fn(layer, x) for name, layer in layers.items()}, repeats=repeats)
    base = times["keras Conv2D"]
    rows = [
        {"layer": name, "step_ms": 1e3 * t, "ratio_to_plain_conv": t / base}
        for name, t in times.items()
    ]
    report("spectral", rows, ["layer", "step_ms", "ratio_to_plain_conv"], args,
           extra={"input_shape": [batch, size, size, channels], "goal_ratio": 1.5})


if __name__ == "__main__":
    main()
