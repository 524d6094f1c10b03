"""The ``iresnet`` command: train, evaluate, sample, invert and certify i-ResNets.

With nothing but a task it trains on an embedded default (two moons for
``density``, scikit-learn's digits for ``classify`` and ``hybrid``), shows
Keras progress bars, and writes into ``--out`` (default ``iresnet_runs/<task>``):
``model.keras``, ``metrics.json`` and ``figure.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

__all__ = ["main", "build_parser"]

DENSITY_2D = ("moons", "circles", "8gaussians", "pinwheel", "checkerboard", "2spirals")


class CLIError(Exception):
    """An error reported to the user as one line."""


def build_parser():
    parser = argparse.ArgumentParser(prog="iresnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and save it with metrics and a figure")
    train.add_argument("--task", choices=("density", "classify", "hybrid"), required=True)
    train.add_argument("--data", default=None, help="moons|circles|8gaussians|pinwheel|checkerboard|"
                       "2spirals|digits|mnist-file|tfds:NAME (default: moons for density, digits otherwise)")
    _data_options(train)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--learning-rate", type=float, default=3e-3)
    train.add_argument("--coeff", type=float, default=0.9)
    train.add_argument("--blocks", type=int, default=None, help="residual blocks (per stage/scale)")
    train.add_argument("--hidden", type=int, default=None)
    train.add_argument("--logdet", default="auto", choices=("auto", "exact", "power_series", "russian_roulette"))
    train.add_argument("--vanilla", action="store_true", help="classify: no spectral normalization")
    train.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=None)
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    for name, text in [
        ("evaluate", "evaluate a saved model"),
        ("invert", "report reconstruction errors of a saved model's inverse"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--model", required=True)
        p.add_argument("--data", default=None)
        _data_options(p)
        p.add_argument("--n", type=int, default=256, help="examples to use")
    sample = sub.add_parser("sample", help="draw samples from a saved density model")
    sample.add_argument("--model", required=True)
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--out", default=None, help="PNG path (default: next to the model)")
    certify = sub.add_parser("certify", help="exact per-layer Lipschitz bounds of a saved model")
    certify.add_argument("--model", required=True)

    tune = sub.add_parser("tune", help="keras-tuner search over coeff, depth, width, activation, lr")
    tune.add_argument("--task", choices=("density", "classify", "hybrid"), required=True)
    tune.add_argument("--data", default=None)
    _data_options(tune)
    tune.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), default="random")
    tune.add_argument("--trials", type=int, default=5)
    tune.add_argument("--epochs", type=int, default=3)
    tune.add_argument("--batch-size", type=int, default=None)
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--out", default=None)
    tune.add_argument("--quiet", action="store_true")
    return parser


def _data_options(parser):
    parser.add_argument("--data-path", default=None, help="path of the MNIST images .npz (mnist-file)")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir with prepared data (tfds:NAME)")
    parser.add_argument("--download", action="store_true", help="let TFDS download (needs a network)")


# -- data ------------------------------------------------------------------------
def _default_data(task):
    return "moons" if task == "density" else "digits"


def _load(task, args, n_train=None, seed=0):
    """Returns (train, test) as numpy arrays: x or (x, labels), raw (uint8 for images)."""
    import numpy as np

    from keras_iresnet import data

    name = args.data or _default_data(task)
    if name in DENSITY_2D:
        if task != "density":
            raise CLIError(f"--data {name} is a 2-D density without labels; use --task density")
        return data.sample_2d(name, n_train or 8000, seed), data.sample_2d(name, 2000, seed + 1), None
    try:
        images, labels = data.load_images(
            name, path=args.data_path, data_dir=args.data_dir, download=args.download
        )
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(str(error)) from None
    if task != "density" and labels is None:
        raise CLIError(f"--data {name} has no labels; use --task density")
    order = np.random.default_rng(seed).permutation(len(images))
    split = int(0.8 * len(images))
    train_idx, test_idx = order[:split], order[split:]
    labels_train = None if labels is None else labels[train_idx]
    labels_test = None if labels is None else labels[test_idx]
    return (images[train_idx], labels_train), (images[test_idx], labels_test), name


# -- commands --------------------------------------------------------------------
def _strategy(name):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise CLIError("--strategy multiworker needs TF_CONFIG (see the README's multi-worker section)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def cmd_train(args):
    import keras
    import numpy as np

    from keras_iresnet import certify, models, plots

    keras.utils.set_random_seed(args.seed)
    out = pathlib.Path(args.out or f"iresnet_runs/{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    train, test, image_name = _load(args.task, args, seed=args.seed)
    strategy = _strategy(args.strategy)
    verbose = 0 if args.quiet else 1
    is_2d = image_name is None
    with strategy.scope():
        if is_2d:
            model = models.iresnet_flow(
                (2,), blocks_per_scale=args.blocks or 6, hidden=args.hidden or 64, coeff=args.coeff,
                logdet=args.logdet,
            )
        else:
            shape = train[0].shape[1:]
            common = dict(coeff=args.coeff, hidden=args.hidden or 16, logdet=args.logdet)
            if args.task == "density":
                model = models.iresnet_flow(shape, scales=2, blocks_per_scale=args.blocks or 2, **common)
            elif args.task == "classify":
                # The paper's layout: invertible downsampling, zero-padding to 16 channels.
                squeeze = shape[0] % 2 == 0 and shape[1] % 2 == 0
                model = models.iresnet_classifier(
                    shape, int(np.max(train[1])) + 1, stages=(args.blocks or 2,) * 2, vanilla=args.vanilla,
                    initial_squeeze=squeeze, pad_channels=max(0, 16 - (4 if squeeze else 1) * shape[-1]),
                    **{**common, "hidden": args.hidden or 32},
                )
            else:
                model = models.iresnet_hybrid(shape, int(np.max(train[1])) + 1, stages=(args.blocks or 1,) * 2, **common)
        metrics = ["accuracy"] if args.task == "classify" else None
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if args.task == "classify" else None
        model.compile(keras.optimizers.Adam(args.learning_rate), loss=loss, metrics=metrics)
    batch = args.batch_size or (256 if is_2d else 64)
    epochs = args.epochs or (15 if is_2d else 5)
    train_ds, test_ds = _datasets(args.task, train, test, batch, args.seed, is_2d)
    history = model.fit(train_ds, epochs=epochs, validation_data=test_ds, verbose=verbose, shuffle=False)
    results = model.evaluate(test_ds, verbose=0, return_dict=True)
    report = certify.certify(model)
    metrics = {
        "task": args.task,
        "data": args.data or _default_data(args.task),
        "epochs": epochs,
        "test": {k: float(v) for k, v in results.items()},
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
        "all_blocks_certified_contractions": report["all_contractions"],
    }
    if not is_2d:
        x_test = next(iter(test_ds))
        x_test = x_test[0] if isinstance(x_test, tuple) else x_test
        recon = certify.reconstruction_report(model.trunk, x_test[:16])
        metrics["reconstruction_error"] = {"mean": recon["mean"], "max": recon["max"]}
    model_path = out / "model.keras"
    model.save(model_path)
    figure = out / "figure.png"
    if is_2d:
        plots.density_2d_figure(model, test, figure)
    elif args.task == "classify":
        plots.reconstruction_figure(model, x_test[:8], figure)
    else:
        plots.image_samples_figure(model, figure, reconstruct=x_test[:8])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"saved model to {model_path}")
    print(f"saved metrics to {out / 'metrics.json'}: {json.dumps(metrics['test'])}")
    print(f"saved figure to {figure}")
    return 0


def _load_model(path):
    import keras

    import keras_iresnet  # noqa: F401  (registers the classes)

    if not pathlib.Path(path).exists():
        raise CLIError(f"--model {path} does not exist")
    return keras.models.load_model(path)


def _eval_inputs(model, args):
    """Test inputs prepared for ``model`` (and labels or None)."""
    from keras_iresnet import data, models

    task = "density" if isinstance(model, models.IResNetFlow) else (
        "hybrid" if isinstance(model, models.IResNetHybrid) else "classify"
    )
    if len(model.input_shape_) == 1:
        name = args.data or "moons"
        if name not in DENSITY_2D:
            raise CLIError(f"this model takes 2-D points; --data must be one of {DENSITY_2D}")
        return task, data.sample_2d(name, args.n, seed=99), None
    _, (images, labels), _ = _load(task, args)
    images, labels = images[: args.n], None if labels is None else labels[: args.n]
    ds = data.image_dataset(images, labels, task, batch_size=len(images), shuffle=False)
    batch = next(iter(ds))
    return (task, batch[0], batch[1]) if isinstance(batch, tuple) else (task, batch, None)


def cmd_evaluate(args):
    model = _load_model(args.model)
    task, x, y = _eval_inputs(model, args)
    results = model.evaluate(x, y, verbose=0, return_dict=True) if y is not None else model.evaluate(
        x, verbose=0, return_dict=True
    )
    print(json.dumps({k: float(v) for k, v in results.items()}))
    return 0


def cmd_invert(args):
    from keras_iresnet import certify

    model = _load_model(args.model)
    _, x, _ = _eval_inputs(model, args)
    report = certify.reconstruction_report(model.trunk, x)
    print(json.dumps({"examples": len(report["errors"]), "mean_relative_error": report["mean"],
                      "max_relative_error": report["max"]}))
    return 0


def cmd_sample(args):
    from keras_iresnet import models, plots

    model = _load_model(args.model)
    if not isinstance(model, (models.IResNetFlow, models.IResNetHybrid)):
        raise CLIError("sample needs a density model (trained with --task density or hybrid)")
    out = pathlib.Path(args.out or pathlib.Path(args.model).with_name("samples.png"))
    plots.samples_figure(model, args.n, args.temperature, out)
    print(f"saved {args.n} samples to {out}")
    return 0


def cmd_certify(args):
    from keras_iresnet import certify

    report = certify.certify(_load_model(args.model))
    for block in report["blocks"]:
        print(f"{block['name']}: Lip(g) <= {block['lipschitz_bound']:.4f} "
              f"{'contraction' if block['contraction'] else 'NOT a proven contraction'}")
    print(json.dumps({"all_contractions": report["all_contractions"], "blocks": len(report["blocks"])}))
    return 0 if report["all_contractions"] else 1


def _datasets(task, train, test, batch, seed, is_2d):
    """(train, validation) tf.data pipelines with the paper's preprocessing."""
    import tensorflow as tf

    from keras_iresnet import data

    if is_2d:
        train_ds = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train), seed=seed).batch(batch)
        return train_ds, tf.data.Dataset.from_tensor_slices(test).batch(batch)
    stats = data.standardization_stats(train[0]) if task == "classify" else None
    return (
        data.image_dataset(train[0], train[1], task, batch, seed=seed, stats=stats),
        data.image_dataset(test[0], test[1], task, batch, shuffle=False, stats=stats),
    )


def cmd_tune(args):
    import keras
    import keras_tuner
    import numpy as np

    from keras_iresnet import tuning

    keras.utils.set_random_seed(args.seed)
    out = pathlib.Path(args.out or f"iresnet_runs/tune_{args.task}")
    train, test, image_name = _load(args.task, args, n_train=4000, seed=args.seed)
    is_2d = image_name is None
    shape = (2,) if is_2d else train[0].shape[1:]
    classes = None if args.task == "density" else int(np.max(train[1])) + 1
    hypermodel = tuning.IResNetHyperModel(args.task, shape, classes)
    tuner_cls = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization}.get(args.tuner)
    common = dict(objective=hypermodel.objective, directory=str(out), project_name="search", seed=args.seed,
                  overwrite=True)
    if tuner_cls is None:
        tuner = keras_tuner.Hyperband(hypermodel, max_epochs=args.epochs, **common)
    else:
        tuner = tuner_cls(hypermodel, max_trials=args.trials, **common)
    train_ds, valid_ds = _datasets(args.task, train, test, args.batch_size or (256 if is_2d else 64), args.seed,
                                   is_2d)
    tuner.search(train_ds, validation_data=valid_ds, epochs=args.epochs, verbose=0 if args.quiet else 1)
    statuses = [t.status for t in tuner.oracle.trials.values()]
    if "COMPLETED" not in statuses:
        raise CLIError(f"no trial completed (statuses: {statuses}); see the tuner log in {out}")
    best_hp = tuner.get_best_hyperparameters(1)[0].values
    best = tuner.get_best_models(1)[0]
    best.save(out / "best.keras")
    summary = {"objective": hypermodel.objective.name, "best_hyperparameters": best_hp, "statuses": statuses}
    (out / "tuning.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"best hyperparameters: {json.dumps(best_hp, default=str)}")
    print(f"saved best model to {out / 'best.keras'} and summary to {out / 'tuning.json'}")
    return 0


COMMANDS = {
    "tune": cmd_tune,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "invert": cmd_invert,
    "sample": cmd_sample,
    "certify": cmd_certify,
}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CLIError as error:
        print(f"iresnet: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, TypeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"iresnet: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
