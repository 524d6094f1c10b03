"""2-D densities: the "2d" recipe's i-ResNet flow against TFP RealNVP and MAF.

Test NLL in nats (5,000 test points per seed; mean and standard deviation over the
seeds) on five 2-D densities (moons, 8 gaussians, checkerboard, two spirals,
pinwheel), 10,000 training points, the recipe's batch (256) and learning rate (Adam
3e-3) for all three models. The i-ResNet is the "2d" recipe trained with
``model.fit``; RealNVP is 4 couplings of 64-64 Keras MLPs, MAF 4 MADEs of 64-64
(about the same number of parameters), trained by a compiled TFP loop.

- Table 1, equal epochs: the recipe's 15 epochs for every model;
- Table 2, equal wall-clock: ``--seconds`` per model and seed (default 30),
  building and tracing included.

Also the parameters, the training seconds and steps per seed, and the best model.

Run (about 25 minutes)::

    python -m benchmarks.density_2d --seeds 2 --out benchmarks/results_density_2d.json

Numbers: benchmarks/README.md, "Quality", section "2-D densities" (Tables 1 and 2).
"""

import keras
import numpy as np
import tensorflow as tf

from benchmarks.baselines import maf, realnvp_2d
from benchmarks.common import (
    StopAfter,
    WallClock,
    compiled_step,
    count_parameters,
    parser,
    print_table,
    report,
    train_for,
)
from keras_iresnet import data
from keras_iresnet.experiments import recipes, runs

DENSITIES = ("moons", "8gaussians", "checkerboard", "2spirals", "pinwheel")
COLUMNS = [
    "density",
    "model",
    "parameters",
    "test_nll_mean",
    "test_nll_std",
    "train_seconds_per_seed",
    "steps_per_seed",
    "best",
]


#: The coupling / autoregressive baselines' training settings (Adam, batch 256, 3e-3: the
#: settings of every earlier race; the i-ResNet trains with its recipe's).
BASELINE_BATCH, BASELINE_LEARNING_RATE = 256, 3e-3


def budgets(args):
    """The recipe and the run's sizes for ``args`` (tiny / full / default)."""
    recipe = recipes.get("2d")
    if args.tiny:
        return dict(
            recipe=recipe.replace(model={"blocks": 2}),
            densities=DENSITIES[:1],
            seeds=1,
            n_train=512,
            epochs=1,
            baseline=(2, 16),
            seconds=1.0,
        )
    if args.full:
        return dict(
            recipe=recipe.replace(model={"blocks": 100, "block": {"hidden": 40}}),  # Figure 2's
            densities=DENSITIES,
            seeds=args.seeds or 5,
            n_train=50000,
            epochs=100,
            baseline=(10, 128),
            seconds=600.0,
        )
    return dict(
        recipe=recipe,
        densities=DENSITIES,
        seeds=args.seeds or 3,
        n_train=recipe.n_train,
        epochs=recipe.epochs,
        baseline=(4, 64),
        seconds=args.seconds,
    )


def density_rows(recipe, densities, seeds, n_train, epochs, baseline, seconds):
    """Rows of Table 1 (equal epochs) and Table 2 (equal seconds): ``(by_epochs, by_seconds)``."""
    batch, lr = BASELINE_BATCH, BASELINE_LEARNING_RATE
    rows = {"epochs": [], "seconds": []}
    for name in densities:
        for budget in ("epochs", "seconds"):
            scores = {"i-ResNet": [], "RealNVP": [], "MAF": []}
            params, spent, steps = {}, {k: 0.0 for k in scores}, {k: 0 for k in scores}
            for seed in range(seeds):
                train = data.sample_2d(name, n_train, seed=100 + seed)
                test = data.sample_2d(name, 5000, seed=200 + seed)
                keras.utils.set_random_seed(seed)
                clock = WallClock()
                flow = runs.build_model(recipe, input_shape=(2,))
                runs.compile_model(flow, recipe)  # XLA on a CPU too: the dense step is 2x faster
                stop = StopAfter(clock, seconds if budget == "seconds" else float("inf"))
                pipeline = (  # one static batch size (XLA compiles one shape); reshuffled
                    tf.data.Dataset.from_tensor_slices(train)
                    .shuffle(len(train), seed=seed, reshuffle_each_iteration=True)
                    .batch(recipe.batch_size, drop_remainder=bool(flow.jit_compile))
                )
                flow.fit(
                    pipeline,
                    epochs=epochs if budget == "epochs" else 10**6,
                    verbose=0,
                    callbacks=[stop, *runs.make_callbacks(recipe)],  # the recipe's EMA, if any
                )
                spent["i-ResNet"] += clock.elapsed()
                steps["i-ResNet"] += stop.steps
                scores["i-ResNet"].append(-float(tf.reduce_mean(flow.log_prob(test))))
                params["i-ResNet"] = count_parameters(flow.trainable_variables)
                for label, build in (("RealNVP", realnvp_2d), ("MAF", maf)):
                    keras.utils.set_random_seed(seed)
                    clock = WallClock()
                    dist, variables = build(*baseline)
                    step = compiled_step(
                        variables,
                        lambda x, dist=dist: -tf.reduce_mean(dist.log_prob(x)),
                        keras.optimizers.Adam(lr),
                    )
                    rng = np.random.default_rng(seed)

                    def batches(rng=rng, train=train):
                        return np.array_split(rng.permutation(train), max(1, len(train) // batch))

                    steps[label] += train_for(
                        step,
                        batches,
                        seconds=seconds if budget == "seconds" else None,
                        epochs=epochs if budget == "epochs" else None,
                        clock=clock,
                    )
                    spent[label] += clock.elapsed()
                    scores[label].append(-float(tf.reduce_mean(dist.log_prob(test))))
                    params[label] = count_parameters(variables)
            # A baseline can diverge on a seed (NaN NLL): it then has no mean and cannot win.
            best = min(
                scores,
                key=lambda k: np.mean(scores[k]) if np.all(np.isfinite(scores[k])) else np.inf,
            )
            print(
                f"2d ({budget}): {name}: "
                + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in scores.items()),
                flush=True,
            )
            for label, values in scores.items():
                rows[budget].append(
                    {
                        "density": name,
                        "model": label,
                        "parameters": params[label],
                        "test_nll_mean": float(np.mean(values)),
                        "test_nll_std": float(np.std(values)),
                        "test_nll_per_seed": [float(v) for v in values],
                        "diverged_seeds": int(np.sum(~np.isfinite(values))),
                        "train_seconds_per_seed": spent[label] / seeds,
                        "steps_per_seed": steps[label] / seeds,
                        "best": label == best,
                    }
                )
    return rows["epochs"], rows["seconds"]


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=30.0, help="the equal wall-clock budget")
    p.add_argument("--seeds", type=int, default=None, help="seeds per density (default 3)")
    args = p.parse_args(argv)
    run = budgets(args)
    by_epochs, by_seconds = density_rows(**run)
    recipe = run["recipe"]
    print_table(by_epochs, COLUMNS, title="Table 1: equal epochs")
    print_table(by_seconds, COLUMNS, title="Table 2: equal wall-clock")
    rows = [dict(part="2d-equal-epochs", **r) for r in by_epochs] + [
        dict(part="2d-equal-seconds", **r) for r in by_seconds
    ]
    print()
    return report(
        "density_2d",
        rows,
        ["part", "density", "model", "test_nll_mean", "best"],
        args,
        extra={
            "2d_budget": {
                "epochs": run["epochs"],
                "seconds": run["seconds"],
                "batch_size": recipe.batch_size,
                "learning_rate": recipe.optimizer["learning_rate"],
                "n_train": run["n_train"],
                "seeds": run["seeds"],
                "baseline_layers": run["baseline"][0],
                "baseline_hidden": run["baseline"][1],
                "iresnet_recipe": recipe.name,
                "iresnet_model": recipe.model,
            },
            "2d-equal-epochs": by_epochs,
            "2d-equal-seconds": by_seconds,
        },
    )


if __name__ == "__main__":
    main()
