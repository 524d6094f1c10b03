"""Inverse cost per solver and coefficient: g evaluations, time and error at rtol 1e-7.

For each coeff in {0.5, 0.7, 0.9}, two networks are inverted block by block with
the fixed-point iteration (Algorithm 1) and with Anderson acceleration, to a
per-block relative tolerance of 1e-7:

- "random": a sequence of residual blocks (3x3/1x1/3x3, hidden 32, on 14x14x16,
  batch 32) in the trained regime (kernels scaled up so every layer sits at its
  coefficient);
- "digits": the trunk of the "digits-classifier" recipe trained 5 epochs at that
  coefficient, inverting 128 test images.

Reported: mean g evaluations per block, the reached relative reconstruction error,
the inverse's wall time and inverse time / forward time (interleaved rounds). The
paper: 5-20 forward passes for visually exact reconstructions.

Run::

    python -m benchmarks.inverse --out benchmarks/results_inverse.json

Numbers: benchmarks/README.md, section "Inverse".
"""

import tensorflow as tf

import keras_iresnet as kir
from benchmarks.common import TINY_SPLIT, parser, report, time_interleaved, tiny_model
from keras_iresnet.experiments import recipes, runs
from keras_iresnet.layers.walk import residual_stacks
from keras_iresnet.testing import saturate


def random_flow(coeff, shape, blocks, hidden):
    """``blocks`` residual blocks on ``shape`` with every spectral layer at ``coeff``."""
    flow = kir.InvertibleSequential(
        [
            kir.InvertibleResidualBlock(hidden=hidden, coeff=coeff, max_iterations=500)
            for _ in range(blocks)
        ]
    )
    flow.build((None,) + shape)
    return saturate(flow)


def trained_digits_trunk(coeff, epochs, tiny=False):
    """The trunk of the "digits-classifier" recipe's model at ``coeff``, trained ``epochs``.

    Returns ``(trunk, its residual stacks, 128 test images)``. ``tiny``: a small
    model and split (:func:`~benchmarks.common.tiny_model`, :data:`~benchmarks.common.TINY_SPLIT`).
    """
    recipe = recipes.get("digits-classifier")
    model_args = tiny_model(recipe) if tiny else {"block": recipe.model["block"]}
    model_args["block"] = {**model_args["block"], "coeff": coeff}
    split = runs.load_split(recipe, **TINY_SPLIT) if tiny else None
    model, _, split = runs.train(recipe, split=split, epochs=epochs, verbose=0, **model_args)
    x = next(iter(runs.datasets(recipe, split, batch_size=128)[1]))[0][:128]
    return model.trunk, residual_stacks(model.trunk), x


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
                if layer in blocks and report:
                    # a stack reports the iterations summed over its blocks
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


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    if args.tiny:
        batch, shape, blocks, hidden, repeats = 2, (8, 8, 4), 1, 8, 2
    elif args.full:
        batch, shape, blocks, hidden, repeats = 128, (16, 16, 16), 8, 64, 10
    else:
        batch, shape, blocks, hidden, repeats = 32, (14, 14, 16), 4, 32, 5
    coeffs = (0.9,) if args.tiny else (0.5, 0.7, 0.9)  # tiny: the smoke test, each path once
    x = tf.random.uniform((batch,) + shape)
    rows = []
    for coeff in coeffs:
        flow = random_flow(coeff, shape, blocks, hidden)
        rows += measure(flow, list(flow.chain), x, repeats, "random, layers at coeff", coeff)
    epochs = 1 if args.tiny else (30 if args.full else 5)
    for coeff in coeffs:
        trunk, trunk_blocks, x_digits = trained_digits_trunk(coeff, epochs, tiny=args.tiny)
        rows += measure(
            trunk, trunk_blocks, x_digits, repeats, f"digits classifier, {epochs} epochs", coeff
        )
    return report(
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
