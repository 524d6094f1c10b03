"""The hybrid model on digits: accuracy and bits/dim against its two halves.

The "digits-hybrid" recipe (classifier and density in one i-ResNet, 30 epochs, 2
seeds) against the "digits-classifier" recipe (10 epochs, same seeds) and the
closed-form "logit + independent Gaussian per pixel" baseline, on the recipes'
digits split (1,400 training / 397 test images): test accuracy (mean and minimum
over the seeds) and test bits/dim. Goal: >= 90 % accuracy with bits/dim below the
closed form.

Run::

    python -m benchmarks.density_hybrid --out benchmarks/results_density_hybrid.json

Numbers: benchmarks/README.md, "Quality", section "Hybrid and classification on
digits" (the Hybrid table).
"""

import numpy as np

from benchmarks.baselines import logit_gaussian_bits_per_dim
from benchmarks.common import TINY_SPLIT, dequantize, parser, report, tiny_model
from keras_iresnet.experiments import recipes, runs


def hybrid_rows(seeds, tiny=False):
    """Accuracy (and bits/dim) of both recipes over ``seeds``, then the closed form."""
    hybrid, classifier = recipes.get("digits-hybrid"), recipes.get("digits-classifier")
    epochs = {
        "hybrid": 1 if tiny else hybrid.epochs,
        "classifier": 1 if tiny else classifier.epochs,
    }
    rows = []
    split = runs.load_split(hybrid, **(TINY_SPLIT if tiny else {}))
    test_x = dequantize(split.x_test, 7).astype("float32")
    closed = logit_gaussian_bits_per_dim(split.x_train, test_x, hybrid.model["logit"], seed=7)
    for label, recipe in (("hybrid", hybrid), ("classifier", classifier)):
        accuracies, bpds = [], []
        for seed in range(seeds):
            if tiny:
                model, _, model_split = runs.train(
                    recipe,
                    split=runs.load_split(recipe, seed=seed, **TINY_SPLIT),
                    epochs=epochs[label],
                    verbose=0,
                    seed=seed,
                    **tiny_model(recipe),
                )
            else:
                model, _, model_split = runs.train(
                    recipe, epochs=epochs[label], verbose=0, seed=seed
                )
            results = model.evaluate(
                runs.datasets(recipe, model_split)[1], verbose=0, return_dict=True
            )
            accuracies.append(results["accuracy"])
            if "bits_per_dim" in results:
                bpds.append(results["bits_per_dim"])
        print(
            f"hybrid: {label}: accuracy {np.mean(accuracies):.3f}"
            + (f", {np.mean(bpds):.3f} bits/dim" if bpds else ""),
            flush=True,
        )
        rows.append(
            {
                "model": f"{label} recipe {recipe.name!r}",
                "epochs": epochs[label],
                "seeds": seeds,
                "test_accuracy_mean": float(np.mean(accuracies)),
                "test_accuracy_min": float(np.min(accuracies)),
                "test_bits_per_dim_mean": float(np.mean(bpds)) if bpds else None,
            }
        )
    rows.append(
        {
            "model": f"logit({hybrid.model['logit']}) + per-pixel Gaussian (closed form)",
            "epochs": 0,
            "seeds": 1,
            "test_accuracy_mean": None,
            "test_accuracy_min": None,
            "test_bits_per_dim_mean": closed,
        }
    )
    return rows


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--seeds", type=int, default=None, help="seeds per recipe (default 2)")
    args = p.parse_args(argv)
    seeds = 1 if args.tiny else (args.seeds or (3 if args.full else 2))
    return report(
        "density_hybrid",
        hybrid_rows(seeds, tiny=args.tiny),
        [
            "model",
            "epochs",
            "seeds",
            "test_accuracy_mean",
            "test_accuracy_min",
            "test_bits_per_dim_mean",
        ],
        args,
    )


if __name__ == "__main__":
    main()
