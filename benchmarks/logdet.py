"""Log-det estimators (issue 4): bias and spread against the exact value, cost, memory.

1. Bias and standard deviation (bits/dim) of PowerSeries(n) and RussianRoulette
   against the exact log-det of one block in the trained regime, for d = 64 and a
   small image (6x6x2).
2. Cost of a density training step with each estimator relative to the same
   network's step without log-det (the paper: ~4x with 5 terms; goal <= 3x).
3. Peak memory (max RSS of a fresh process) of a training step as the number of
   terms grows, plain backprop through the series vs the Neumann gradient.
"""

import math
import resource

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import parser, report, run_probe, time_interleaved  # noqa: I001

import keras_iresnet as kir  # noqa: E402
from keras_iresnet import certify, logdet  # noqa: E402


def saturated_block(shape, hidden, coeff=0.9):
    block = kir.InvertibleResidualBlock(hidden=hidden, coeff=coeff)
    block.build((None,) + shape)
    for layer in certify.spectral_layers(block):
        layer.kernel.assign(layer.kernel * 5.0)
    certify.refine(block)
    return block


def bias_rows(shape, draws, hidden):
    block = saturated_block(shape, hidden)
    d = int(np.prod(shape))
    x = tf.random.normal((1,) + shape)
    g = block.residual_function()
    exact = float(logdet.Exact(max_dim=4096)(g, x)[1][0])
    copies = tf.repeat(x, draws, axis=0)
    rows = []
    estimators = {f"power_series n={n}": logdet.PowerSeries(n_terms=n) for n in (1, 2, 5, 10)}
    estimators["russian_roulette"] = logdet.RussianRoulette()
    for name, estimator in estimators.items():
        if isinstance(estimator, logdet.RussianRoulette):
            fn = tf.function(lambda s, e=estimator: e(g, x, seed=s)[1][0])
            values = np.array([float(fn(tf.constant([5, i]))) for i in range(draws)])
        else:
            values = estimator(g, copies, seed=tf.constant([5, 6]))[1].numpy()
        scale = d * math.log(2.0)
        rows.append(
            {
                "event": "x".join(map(str, shape)),
                "estimator": name,
                "bias_bits_per_dim": float(values.mean() - exact) / scale,
                "std_bits_per_dim": float(values.std()) / scale,
                "standard_error_bits_per_dim": float(values.std()) / scale / math.sqrt(len(values)),
                "theorem3_bound_bits_per_dim": (
                    logdet.truncation_bound(block.lipschitz_bound(), d, int(name.split("=")[1]))
                    / scale
                    if "n=" in name
                    else 0.0
                ),
            }
        )
    return rows


def step_for(shape, batch, estimator, blocks=2, hidden=32):
    flow = kir.InvertibleSequential(
        [
            kir.InvertibleResidualBlock(
                hidden=hidden, coeff=0.9, logdet=estimator or "power_series"
            )
            for _ in range(blocks)
        ]
    )
    flow.build((None,) + shape)
    x = tf.random.normal((batch,) + shape)
    variables = kir.bridge.tf_variables(flow, trainable_only=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            if estimator is None:
                z = flow(x, training=True)
                loss = tf.reduce_mean(z**2)
            else:
                z, log_det = flow.forward_and_log_det(x, training=True)
                loss = tf.reduce_mean(z**2) - tf.reduce_mean(log_det)
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        for v, grad in zip(variables, grads):
            v.assign_sub(1e-5 * grad)
        return loss

    return lambda: step().numpy()


def memory_probe(n_terms, neumann, batch=64):
    """Run one training step in this (fresh) process; print its peak RSS in MiB."""
    estimator = logdet.PowerSeries(n_terms=n_terms, neumann_gradient=neumann)
    fn = step_for((16, 16, 16), batch, estimator, blocks=1, hidden=64)
    fn()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


def memory_rows(n_values, batch=64):
    """Peak RSS (MiB) of one training step per number of terms, each in a fresh process.

    One block on 16x16x16, hidden 64, ``batch`` examples.
    """
    rows = []
    for n in n_values:
        row = {"n_terms": n, "batch": batch}
        for mode in ("plain", "neumann"):
            row[f"peak_rss_mib_{mode}"] = float(
                run_probe(__file__, "--memory-probe", n, mode, batch)
            )
        rows.append(row)
    return rows


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--memory-probe", nargs=3, default=None, help=argparse_hidden())
    args = p.parse_args()
    if args.memory_probe:
        memory_probe(
            int(args.memory_probe[0]), args.memory_probe[1] == "neumann", int(args.memory_probe[2])
        )
        return
    draws = 40 if args.tiny else 2000
    rows = bias_rows((64,), draws, 64) + bias_rows((6, 6, 2), draws, 16)
    shape, batch = ((8, 8, 2), 4) if args.tiny else ((16, 16, 8), 32)
    if args.full:
        shape, batch = (32, 32, 16), 64
    fns = {"no log-det": step_for(shape, batch, None)}
    for n in (1, 5, 10):
        fns[f"power_series n={n} backprop"] = step_for(
            shape, batch, logdet.PowerSeries(n_terms=n, neumann_gradient=False)
        )
        fns[f"power_series n={n} neumann (default)"] = step_for(
            shape, batch, logdet.PowerSeries(n_terms=n, neumann_gradient=True)
        )
    fns["russian_roulette"] = step_for(shape, batch, logdet.RussianRoulette())
    times = time_interleaved(fns, repeats=3 if args.tiny else 10, warmup=2)
    cost_rows = [
        {"step": name, "step_ms": 1e3 * t, "ratio_to_no_logdet": t / times["no log-det"]}
        for name, t in times.items()
    ]
    memory = memory_rows((2, 5) if args.tiny else (2, 5, 10, 20))
    print()
    report(
        "logdet",
        rows,
        [
            "event",
            "estimator",
            "bias_bits_per_dim",
            "std_bits_per_dim",
            "standard_error_bits_per_dim",
            "theorem3_bound_bits_per_dim",
        ],
        args,
        extra={"cost": cost_rows, "memory": memory},
    )
    print()
    report("logdet-cost", cost_rows, ["step", "step_ms", "ratio_to_no_logdet"], _NoOut())
    print()
    report(
        "logdet-memory", memory, ["n_terms", "peak_rss_mib_plain", "peak_rss_mib_neumann"], _NoOut()
    )


class _NoOut:
    out = None


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
