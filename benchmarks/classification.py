"""Digits classification per Lipschitz coefficient, with the inverse's error (the paper's Table 2).

The "digits-classifier" recipe (the paper's layout: squeeze, pad to 16 channels,
2 + 2 blocks of hidden 32, SGD 0.1 with momentum 0.9, 10 epochs, 3 seeds) at coeff
0.5, 0.7 and 0.9 and its vanilla twin (``coeff=None``, no normalization): test
accuracy (mean and standard deviation over the seeds, 397 test images) and the
largest relative reconstruction error ``||x - F^-1(F(x))|| / ||x||`` over 64 test
images (fixed point, default tolerance; the vanilla inverse need not converge).

Run::

    python -m benchmarks.classification --out benchmarks/results_classification.json

Numbers: benchmarks/README.md, "Quality", section "Hybrid and classification on
digits" (the Classification table).
"""

import warnings

import numpy as np

from benchmarks.common import TINY_SPLIT, parser, report, tiny_model
from keras_iresnet import certify
from keras_iresnet.experiments import recipes, runs

VARIANTS = [("c = 0.5", 0.5), ("c = 0.7", 0.7), ("c = 0.9", 0.9), ("vanilla", None)]


def classification_rows(variants, seeds, epochs, tiny=False):
    """Accuracy and the largest reconstruction error per variant ``(label, coeff or None)``."""
    recipe = recipes.get("digits-classifier")
    split = runs.load_split(recipe, **(TINY_SPLIT if tiny else {}))
    _, test = runs.datasets(recipe, split)
    x = next(iter(test))[0][:64]
    model_args = tiny_model(recipe) if tiny else {"block": recipe.model["block"]}
    rows = []
    for label, coeff in variants:
        accuracies, errors = [], []
        for seed in range(seeds):
            model, _, _ = runs.train(
                recipe,
                split=split,
                epochs=epochs,
                verbose=0,
                seed=seed,
                **{
                    **model_args,
                    "block": {**model_args["block"], "coeff": coeff or 0.9},
                    "vanilla": coeff is None,
                },
            )
            accuracies.append(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the vanilla inverse need not converge
                errors.append(certify.reconstruction_report(model.trunk, x)["max"])
        print(f"classification: {label}: accuracy {np.mean(accuracies):.3f}", flush=True)
        rows.append(
            {
                "model": label,
                "test_accuracy_mean": float(np.mean(accuracies)),
                "test_accuracy_std": float(np.std(accuracies)),
                "reconstruction_error_max": float(np.max(errors)),
                "epochs": epochs,
                "seeds": seeds,
            }
        )
    return rows


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 3)")
    args = p.parse_args(argv)
    if args.tiny:
        variants, seeds, epochs = VARIANTS[2:], 1, 1
    else:
        variants = VARIANTS
        seeds, epochs = (5, 30) if args.full else (3, recipes.get("digits-classifier").epochs)
        seeds = args.seeds or seeds
    return report(
        "classification",
        classification_rows(variants, seeds, epochs, tiny=args.tiny),
        [
            "model",
            "test_accuracy_mean",
            "test_accuracy_std",
            "reconstruction_error_max",
            "epochs",
            "seeds",
        ],
        args,
    )


if __name__ == "__main__":
    main()
