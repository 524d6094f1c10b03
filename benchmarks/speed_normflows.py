"""Our density step against PyTorch's residual flows of ``normflows`` (part d).

The same architecture and work in keras_iresnet (one ``InvertibleResidualStack``)
and in ``normflows`` (``pip install torch normflows``; skipped, and said so in the
JSON, where they are not installed), CPU, Adam 1e-4, one batch:

- cnn: 4 iResBlocks on 14x14x4 (LipSwish pre-activation, 3-1-3 kernels, hidden 32),
  coeff 0.97, 5-term power series with the Neumann gradient, batch 64;
- 2d: 8 dense blocks of width 128 on 2-D points, batch 256.

Ours with the default spectral rule, with the paper's 1-iteration rule and with
``jit_compile=True``. Each implementation runs alone in a fresh process
(PyTorch's OpenMP threads keep spinning after each op and would slow TensorFlow
ops interleaved with them, and TensorFlow's pools would slow PyTorch), in 2
alternating rounds; the median step time and the ratio to normflows are reported.

Run::

    python -m benchmarks.speed_normflows --out benchmarks/results_speed_normflows.json

Numbers: benchmarks/README.md, "Speed", section (d).
"""

import importlib.util
import os

import keras
import numpy as np
import tensorflow as tf

import keras_iresnet as kir
from benchmarks.common import (
    PAPER_RULE,
    answer_probe,
    compiled_step,
    count_parameters,
    goal_rows,
    parser,
    print_table,
    report,
    run_probe,
    time_call,
)
from keras_iresnet import logdet

NF_TERMS, NF_COEFF = 5, 0.97
CONFIGS = {
    #            shape        batch  blocks hidden
    "cnn": ((14, 14, 4), 64, 4, 32),
    "2d": ((2,), 256, 8, 128),
}
TINY_CONFIGS = {"cnn": ((8, 8, 2), 4, 1, 8), "2d": ((2,), 16, 1, 8)}
LABELS = {
    "ours": "keras_iresnet",
    "ours_paper_rule": "keras_iresnet, paper's 1-iteration rule",
    "ours_xla": "keras_iresnet, jit_compile",
    "torch": "normflows (PyTorch)",
}


def _torch_step(x, shape, blocks, hidden, repeats):
    import normflows as nf
    import torch

    from benchmarks.baselines import normflows_residual_flow

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    model = normflows_residual_flow(shape, blocks, hidden, NF_COEFF, NF_TERMS)
    x = x.numpy() if len(shape) == 1 else np.transpose(x.numpy(), (0, 3, 1, 2))
    x_torch = torch.from_numpy(x.copy())
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        loss = model.forward_kld(x_torch)
        loss.backward()
        optimizer.step()
        return loss.item()

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "step_ms": 1e3 * time_call(step, repeats=repeats, warmup=3),
        "parameters": int(params),
        "versions": {"torch": torch.__version__, "normflows": getattr(nf, "__version__", "?")},
    }


def normflows_probe(which, shape, batch, blocks, hidden, repeats):
    """In a fresh process: median step time (ms) and parameter count of one implementation."""
    shape = tuple(shape)
    x = tf.random.uniform((batch,) + shape, seed=0)
    if which == "torch":
        return _torch_step(x, shape, blocks, hidden, repeats)
    keras.utils.set_random_seed(0)
    rule = PAPER_RULE if which == "ours_paper_rule" else {}
    ours = kir.InvertibleResidualStack(
        num_blocks=blocks,
        hidden=hidden,
        coeff=NF_COEFF,
        activation="lipswish",
        preactivation=True,
        logdet=logdet.PowerSeries(n_terms=NF_TERMS),
        **rule,
    )
    ours.build((None,) + shape)
    base = kir.StandardNormal()
    base.build((None,) + shape)

    def loss_fn(x):
        z, log_det = ours.forward_and_log_det(x, training=True)
        return -tf.reduce_mean(base.log_prob(z) + log_det)

    variables = kir.bridge.tf_variables(ours, trainable_only=True)
    step = compiled_step(variables, loss_fn, jit_compile=which == "ours_xla")
    return {
        "step_ms": 1e3 * time_call(lambda: float(step(x)), repeats=repeats, warmup=3),
        "parameters": count_parameters(variables),
    }


def normflows_rows(configs, repeats, rounds=2):
    """Fresh processes in alternating rounds; the median over rounds per implementation.

    Returns ``(rows, info)``; no rows and ``info["skipped"]`` without torch/normflows.
    """
    if importlib.util.find_spec("normflows") is None or importlib.util.find_spec("torch") is None:
        reason = "normflows/torch not installed (`pip install torch normflows`)"
        print(f"(d) skipped: {reason}")
        return [], {"skipped": reason}
    rows, info = [], {}
    for config, (shape, batch, blocks, hidden) in configs.items():
        results = {which: [] for which in LABELS}
        for _ in range(rounds):
            for which in LABELS:
                results[which].append(
                    run_probe(
                        "benchmarks.speed_normflows",
                        which=which,
                        shape=list(shape),
                        batch=batch,
                        blocks=blocks,
                        hidden=hidden,
                        repeats=repeats,
                    )
                )
        median = {
            which: float(np.median([r["step_ms"] for r in runs])) for which, runs in results.items()
        }
        rows += [
            {
                "part": "d",
                "config": config,
                "implementation": LABELS[which],
                "parameters": runs[0]["parameters"],
                "step_ms": median[which],
                "ratio_to_normflows": median[which] / median["torch"],
            }
            for which, runs in results.items()
        ]
        info.update(results["torch"][0]["versions"])
        info[config] = (
            f"{blocks} blocks on {shape}, hidden {hidden}, 3 linear layers "
            "(kernels 3-1-3 for images), "
            f"LipSwish pre-activation, coeff {NF_COEFF}, power series n={NF_TERMS}, batch {batch}"
        )
    return rows, info


def main(argv=None):
    args = parser(__doc__, full=False).parse_args(argv)
    if answer_probe(args, normflows_probe):
        return None
    rows, info = normflows_rows(
        TINY_CONFIGS if args.tiny else CONFIGS,
        repeats=3 if args.tiny else 15,
        rounds=1 if args.tiny else 2,
    )
    goal = goal_rows(
        [
            (
                f"density step at least as fast as normflows ({row['config']})",
                row["ratio_to_normflows"],
                1.0,
            )
            for row in rows
            if row["implementation"] == LABELS["ours"]
        ]
    )
    if goal:
        print_table(goal, ["goal", "measured", "met"], title="goals")
        print("\nd: against normflows")
    return report(
        "speed_normflows",
        rows,
        ["config", "implementation", "parameters", "step_ms", "ratio_to_normflows"],
        args,
        extra={"goals": goal, "normflows": info},
    )


if __name__ == "__main__":
    main()
