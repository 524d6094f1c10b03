"""Log-det estimators: bias and spread against the exact value, cost, memory.

1. Bias and standard deviation (bits/dim) of PowerSeries(n), n = 1, 2, 5, 10, and
   RussianRoulette against the exact log-det of one block in the trained regime
   (coeff 0.9, kernels scaled up so every layer sits at its coefficient), 2000
   probes, for d = 64 and a small image (6x6x2), with the standard error and the
   truncation bound of the paper's Theorem 3.
2. Cost of a density training step with each estimator (backprop through the
   series and the Neumann gradient) relative to the same network's step without
   log-det (2 blocks on 16x16x8, hidden 32, batch 32; interleaved rounds, median;
   the paper: ~4x with 5 terms; goal <= 3x).
3. Peak memory (max RSS of a fresh process) of one training step as the number of
   terms grows, plain backprop through the series vs the Neumann gradient (1 block
   on 16x16x16, hidden 64, batch 64); :func:`memory_rows` also serves
   ``benchmarks.speed_memory``.

Run::

    python -m benchmarks.logdet --out benchmarks/results_logdet.json

Numbers: benchmarks/README.md, section "Log-determinant estimators" (1, 2, 3).
"""

import math
import resource

import numpy as np
import tensorflow as tf

import keras_iresnet as kir
from benchmarks.common import answer_probe, parser, print_table, report, run_probe, time_interleaved
from keras_iresnet import logdet
from keras_iresnet.testing import saturate


def bias_rows(shape, draws, hidden):
    """1: bias, spread and Theorem 3's bound of each estimator on one saturated block."""
    block = kir.InvertibleResidualBlock(hidden=hidden, coeff=0.9)
    block.build((None,) + shape)
    saturate(block)
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
    """A compiled training step (SGD 1e-5 on ``mean(z^2) - mean(log_det)``) of a small flow.

    ``estimator=None``: the same network's step without log-det.
    """
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


def cost_rows(shape, batch, repeats, n_terms=(1, 5, 10)):
    """2: each estimator's step time relative to the step without log-det."""
    fns = {"no log-det": step_for(shape, batch, None)}
    for n in n_terms:
        fns[f"power_series n={n} backprop"] = step_for(
            shape, batch, logdet.PowerSeries(n_terms=n, neumann_gradient=False)
        )
        fns[f"power_series n={n} neumann (default)"] = step_for(
            shape, batch, logdet.PowerSeries(n_terms=n, neumann_gradient=True)
        )
    fns["russian_roulette"] = step_for(shape, batch, logdet.RussianRoulette())
    times = time_interleaved(fns, repeats=repeats, warmup=2)
    return [
        {"step": name, "step_ms": 1e3 * t, "ratio_to_no_logdet": t / times["no log-det"]}
        for name, t in times.items()
    ]


def memory_probe(n_terms, neumann, batch=64):
    """In this (fresh) process: one training step; its peak RSS in MiB."""
    estimator = logdet.PowerSeries(n_terms=n_terms, neumann_gradient=neumann)
    fn = step_for((16, 16, 16), batch, estimator, blocks=1, hidden=64)
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_rows(n_values, batch=64):
    """3: peak RSS (MiB) of one training step per number of terms, each in a fresh process.

    One block on 16x16x16, hidden 64, ``batch`` examples.
    """
    rows = []
    for n in n_values:
        row = {"n_terms": n, "batch": batch}
        for mode in ("plain", "neumann"):
            row[f"peak_rss_mib_{mode}"] = float(
                run_probe("benchmarks.logdet", n_terms=n, neumann=mode == "neumann", batch=batch)
            )
        rows.append(row)
    return rows


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    if answer_probe(args, memory_probe):
        return None
    draws = 40 if args.tiny else 2000
    rows = bias_rows((64,), draws, 64) + bias_rows((6, 6, 2), draws, 16)
    shape, batch = ((8, 8, 2), 4) if args.tiny else ((16, 16, 8), 32)
    if args.full:
        shape, batch = (32, 32, 16), 64
    if args.tiny:  # the smoke test: every code path once
        cost = cost_rows(shape, batch, repeats=3, n_terms=(5,))
    else:
        cost = cost_rows(shape, batch, repeats=10)
    memory = memory_rows((2,) if args.tiny else (2, 5, 10, 20))
    print_table(cost, ["step", "step_ms", "ratio_to_no_logdet"], title="2: cost of a step")
    print_table(
        memory, ["n_terms", "peak_rss_mib_plain", "peak_rss_mib_neumann"], title="3: peak memory"
    )
    print("\n1: bias and spread")
    return report(
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
        extra={"cost": cost, "memory": memory},
    )


if __name__ == "__main__":
    main()
