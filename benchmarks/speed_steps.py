"""Training steps of the models and the cost of the spectral rule (parts a, b, g).

(a) the classifier's training step with plain convolutions (``vanilla=True``) vs
    spectral-normalized ones (the default rule: a warm-started 8-vector subspace
    iteration to ``power_tol``, re-tracked after each update);
(b) the density flow's training step with the power-series log-det (n = 1, 5, 10)
    and the unbiased Russian-roulette estimator, relative to the classifier steps;
(g) the default spectral rule vs the paper's one-iteration rule (``power_tol=None,
    power_iterations=1, power_vectors=1``) on the classifier and the 5-term density
    step, with the subspace iterations per layer and step actually taken.

Every step is the model's own ``train_step`` (what ``fit`` runs) in a
``tf.function``, with ``--optimizer`` (default Adam 1e-4; the price of the every-step
guarantee grows with how far each update moves the weights: measure Adam 1e-3 and the
digits-classifier recipe's SGD 0.1 with momentum 0.9 too), on one random batch; all
candidates are timed in interleaved rounds in this process (median of 15). Default setting: input
16x16x4, batch 64, 2 stages x 2 blocks (3-1-3 kernels, hidden 32 then 64).
Also prints the project's goals read off these ratios.

Run::

    python -m benchmarks.speed_steps --out benchmarks/results_speed_steps.json
    python -m benchmarks.speed_steps --optimizer adam-1e-3 --out ...
    python -m benchmarks.speed_steps --optimizer sgd-0.1 --out ...

Numbers: benchmarks/README.md, "Speed", sections (a, b) and (g).
"""

import keras
import tensorflow as tf

from benchmarks.common import (
    PAPER_RULE,
    goal_rows,
    parser,
    print_table,
    report,
    setting,
    time_with_iterations,
)
from keras_iresnet import logdet, models

#: Per setting: input shape, batch, blocks per stage, hidden channels.
SETTINGS = {
    "tiny": ((8, 8, 2), 4, (1, 1), 8),
    "default": ((16, 16, 4), 64, (2, 2), 32),
    "full": ((32, 32, 3), 128, (4, 4, 4), 128),
}


def classifier(shape, stages, hidden, vanilla=False, **block):
    """The measured classifier: no initial squeeze or padding, coeff 0.9 (``block`` adds to it)."""
    return models.iresnet_classifier(
        shape,
        10,
        stages=stages,
        block={"hidden": hidden, "coeff": 0.9, **block},
        initial_squeeze=False,
        pad_to_channels=0,
        vanilla=vanilla,
    )


def density_flow(shape, stages, hidden, estimator, **block):
    """The measured density flow: ActNorm blocks at coeff 0.9, no logit, standard normal base."""
    return models.iresnet_flow(
        shape,
        blocks=stages,
        block={"hidden": hidden, "coeff": 0.9, "actnorm": True, "logdet": estimator, **block},
        logit=None,
        base="standard",
        initial_squeeze=False,
    )


#: The optimizers of ``--optimizer``.
OPTIMIZERS = {
    "adam-1e-4": lambda: keras.optimizers.Adam(1e-4),
    "adam-1e-3": lambda: keras.optimizers.Adam(1e-3),
    "sgd-0.1": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
}


def train_step_fn(model, x, y=None, optimizer="adam-1e-4"):
    """The model's own compiled ``train_step`` (what ``fit`` runs) on one batch."""
    if y is None:
        model.compile(OPTIMIZERS[optimizer]())
        data = (x,)
    else:
        model.compile(
            OPTIMIZERS[optimizer](),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        data = (x, y)
    step = tf.function(model.train_step)
    return lambda: float(step(data)["loss"])


def step_rows(shape, batch, stages, hidden, repeats, n_terms=(1, 5, 10), optimizer="adam-1e-4"):
    """(a), (b) and (g): one interleaved timing of classifier and density steps.

    ``n_terms``: the power-series lengths of (b) (5 is needed: (g) compares it).
    """
    x = tf.random.uniform((batch,) + shape)
    y = tf.random.uniform((batch,), maxval=10, dtype=tf.int32)
    fns, built = {}, {}
    for label, kwargs in (
        ("classifier, plain convs", dict(vanilla=True)),
        ("classifier, spectral convs", {}),
        ("classifier, spectral convs, paper rule", PAPER_RULE),
    ):
        keras.utils.set_random_seed(0)
        built[label] = classifier(shape, stages, hidden, **kwargs)
        fns[label] = train_step_fn(built[label], x, y, optimizer)
    estimators = {f"density, power series n={n}": logdet.PowerSeries(n_terms=n) for n in n_terms}
    estimators["density, Russian roulette (unbiased)"] = logdet.RussianRoulette()
    for label, estimator in estimators.items():
        keras.utils.set_random_seed(0)
        built[label] = density_flow(shape, stages, hidden, estimator)
        fns[label] = train_step_fn(built[label], x, optimizer=optimizer)
    keras.utils.set_random_seed(0)
    label = "density, power series n=5, paper rule"
    built[label] = density_flow(shape, stages, hidden, logdet.PowerSeries(n_terms=5), **PAPER_RULE)
    fns[label] = train_step_fn(built[label], x)
    times, iterations = time_with_iterations(fns, built, repeats=repeats, warmup=2)
    plain, spectral = times["classifier, plain convs"], times["classifier, spectral convs"]
    rows = []
    for name, t in times.items():
        part = "g" if "paper rule" in name else ("a" if name.startswith("classifier") else "b")
        rows.append(
            {
                "part": part,
                "step": name,
                "step_ms": 1e3 * t,
                "ratio_to_plain_classifier": t / plain,
                "ratio_to_spectral_classifier": t / spectral,
                "iterations_per_layer_and_step": iterations[name] or 0,
                "optimizer": optimizer,
            }
        )
    for name, default in (
        ("classifier, spectral convs, paper rule", "classifier, spectral convs"),
        ("density, power series n=5, paper rule", "density, power series n=5"),
    ):
        rows.append(
            {
                "part": "g",
                "step": f"{default}: default rule / paper rule",
                "step_ms": 1e3 * times[default],
                "ratio_default_to_paper_rule": times[default] / times[name],
                "iterations_per_layer_and_step": iterations[default] or 0,
                "optimizer": optimizer,
            }
        )
    return rows


def goals(rows):
    """The project's goals, read off the step rows."""
    step = {r["step"]: r for r in rows}
    return goal_rows(
        [
            (
                "spectral convs <= 1.1x a plain conv classifier step",
                step["classifier, spectral convs"]["ratio_to_plain_classifier"],
                1.1,
            ),
            (
                "5-term log-det density step <= 3x the classifier step (paper ~4x)",
                step["density, power series n=5"]["ratio_to_spectral_classifier"],
                3.0,
            ),
            (
                "default spectral rule <= 1.15x the paper's rule, classifier step",
                step["classifier, spectral convs: default rule / paper rule"][
                    "ratio_default_to_paper_rule"
                ],
                1.15,
            ),
            (
                "default spectral rule <= 1.15x the paper's rule, density step",
                step["density, power series n=5: default rule / paper rule"][
                    "ratio_default_to_paper_rule"
                ],
                1.15,
            ),
        ]
    )


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--optimizer", default="adam-1e-4", choices=sorted(OPTIMIZERS))
    args = p.parse_args(argv)
    shape, batch, stages, hidden = SETTINGS[setting(args)]
    if args.tiny:  # the smoke test: every code path once
        rows = step_rows(shape, batch, stages, hidden, 3, (5,), args.optimizer)
    else:
        rows = step_rows(shape, batch, stages, hidden, 15, optimizer=args.optimizer)
    goal = goals(rows)
    print_table(goal, ["goal", "measured", "met"], title="goals")
    print_table(
        [r for r in rows if r["part"] == "g" and "ratio_default_to_paper_rule" in r],
        ["step", "step_ms", "ratio_default_to_paper_rule", "iterations_per_layer_and_step"],
        title="g: spectral rule",
    )
    print("\na, b, g: training steps")
    return report(
        "speed_steps",
        rows,
        [
            "part",
            "step",
            "step_ms",
            "ratio_to_plain_classifier",
            "ratio_to_spectral_classifier",
            "iterations_per_layer_and_step",
        ],
        args,
        extra={
            "goals": goal,
            "setting": setting(args),
            "input_shape": [batch, *shape],
            "stages": list(stages),
            "hidden": hidden,
        },
    )


if __name__ == "__main__":
    main()
