"""Inverse cost per solver and coefficient (issue 3): g evaluations and time to 1e-6.

For each coeff in {0.5, 0.7, 0.9}, a stack of residual blocks in the trained
regime (kernels large enough that the normalization is active, so every layer
sits at coeff) is inverted with the fixed-point iteration (Algorithm 1) and with
Anderson acceleration. Reported: mean g evaluations per block, wall time, the
reached relative reconstruction error, and inverse time / forward time.
The paper: 5-20 forward passes for visually exact reconstructions.
"""

from common import parser, report, time_interleaved  # noqa: I001

import tensorflow as tf  # noqa: E402

import keras_iresnet as kir  # noqa: E402
from keras_iresnet import certify, recipes, runs  # noqa: E402


def build(coeff, shape, blocks, hidden):
    flow = kir.InvertibleSequential(
        [
            kir.InvertibleResidualBlock(hidden=hidden, coeff=coeff, max_iterations=500)
            for _ in range(blocks)
        ]
    )
    flow.build((None,) + shape)
    for layer in certify.spectral_layers(flow):
        layer.kernel.assign(layer.kernel * 5.0)
    certify.refine(flow)
    return flow


def trained_digits_trunk(coeff, epochs):
    """The trunk of the "digits-classifier" recipe's model at ``coeff``, trained for ``epochs``."""
    recipe = recipes.get("digits-classifier")
    model, _, split = runs.train(
        recipe, epochs=epochs, verbose=0, block={**recipe.model["block"], "coeff": coeff}
    )
    x = next(iter(runs.datasets(recipe, split, batch_size=128)[1]))[0][:128]
    return model.trunk, certify.residual_stacks(model.trunk), x


def measure(flow, blocks, x, repeats, label, coeff):
    """Rows for both solvers: inverting ``flow(x)`` block by block (non-block layers exactly)."""
    y = flow(x)
    forward = tf.function(lambda t: flow(t))
    fns = {"forward": lambda: forward(x).numpy()}
    results = {}
    for solver in ("fixed_point", "anderson"):

        def invert(solver=solver, report=False):
            z = y
            evaluations = []
            for layer in reversed(flow.chain):
                if (
                    layer in blocks and report
                ):  # a stack reports the iterations summed over its blocks
                    z, info = layer.inverse(z, return_info=True, solver=solver, rtol=1e-7, atol=0.0)
                    per_block = float(tf.reduce_max(info.iterations)) / layer.num_blocks
                    evaluations.extend([per_block] * layer.num_blocks)
                else:  # timed without the report (it costs one more evaluation of g per block)
                    z = layer.inverse(z, solver=solver, rtol=1e-7, atol=0.0)
            return z, evaluations

        x_rec, evaluations = invert(report=True)
        error = float(tf.norm(x_rec - x) / tf.norm(x))
        results[solver] = (sum(evaluations) / len(evaluations), error)
        fns[solver] = lambda invert=invert: invert()[0].numpy()
    times = time_interleaved(fns, repeats=repeats, warmup=1)
    return [
        {
            "network": label,
            "coeff": coeff,
            "solver": solver,
            "g_evals_per_block": results[solver][0],
            "relative_error": results[solver][1],
            "inverse_ms": 1e3 * times[solver],
            "inverse_over_forward": times[solver] / times["forward"],
        }
        for solver in ("fixed_point", "anderson")
    ]


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.tiny:
        batch, shape, blocks, hidden, repeats = 2, (8, 8, 4), 1, 8, 2
    elif args.full:
        batch, shape, blocks, hidden, repeats = 128, (16, 16, 16), 8, 64, 10
    else:
        batch, shape, blocks, hidden, repeats = 32, (14, 14, 16), 4, 32, 5
    x = tf.random.uniform((batch,) + shape)
    rows = []
    for coeff in (0.5, 0.7, 0.9):
        flow = build(coeff, shape, blocks, hidden)
        rows += measure(flow, list(flow.chain), x, repeats, "random, layers at coeff", coeff)
    epochs = 1 if args.tiny else (30 if args.full else 5)
    for coeff in (0.5, 0.7, 0.9):
        trunk, trunk_blocks, x_digits = trained_digits_trunk(coeff, epochs)
        rows += measure(
            trunk, trunk_blocks, x_digits, repeats, f"digits classifier, {epochs} epochs", coeff
        )
    report(
        "inverse",
        rows,
        [
            "network",
            "coeff",
            "solver",
            "g_evals_per_block",
            "relative_error",
            "inverse_ms",
            "inverse_over_forward",
        ],
        args,
        extra={
            "input_shape": [batch, *shape],
            "blocks": blocks,
            "tolerance": "rtol=1e-7 per block",
        },
    )


if __name__ == "__main__":
    main()
