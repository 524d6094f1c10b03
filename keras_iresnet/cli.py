"""The ``iresnet`` command: train, evaluate, sample, invert and certify i-ResNets.

``iresnet train`` runs a named recipe (:mod:`keras_iresnet.recipes`), by
``--recipe NAME`` or by ``--task`` (+ ``--data``), with a few overrides, and
writes a run folder (default ``iresnet_runs/<recipe>-<data>[-vanilla][-seedN]``;
an existing run is never replaced without ``--overwrite``, and a folder that is
not a run of this package is never written to or deleted):

- ``model.keras`` (the final model; the EMA weights for recipes that keep them),
  ``best.keras`` (the epoch with the best validation loss);
- ``run.json``: the recipe, the overrides and the data split, so ``evaluate``,
  ``sample``, ``invert`` and ``certify --run DIR`` use the same data;
- ``metrics.json`` (with the whole history, also across ``--resume``),
  ``history.csv`` (one row per epoch) and ``figure.png``; ``backup/`` while
  training (``--resume`` continues an interrupted run); TensorBoard logs with ``--logdir``.

Every failure the user can cause -- Ctrl-C included -- is reported as one line,
``iresnet: error: ...``, with exit code 2.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import warnings
import zipfile

from keras_iresnet._cli_args import build_parser

__all__ = ["main", "run", "build_parser", "CLIError"]


class CLIError(Exception):
    """An error reported to the user as one line."""


# -- runs ----------------------------------------------------------------------------
def _recipe_for(args):
    from keras_iresnet import recipes

    if args.recipe:
        if args.recipe not in recipes.names():
            raise CLIError(
                f"--recipe {args.recipe!r} is not a recipe; the recipes are {', '.join(recipes.names())}"
            )
        recipe = recipes.get(args.recipe)
        if args.task and args.task != recipe.task:
            raise CLIError(
                f"--recipe {recipe.name} is a {recipe.task} recipe, not --task {args.task}"
            )
        return recipe
    if not args.task:
        raise CLIError("train needs --recipe NAME or --task {density,classify,hybrid}")
    data = (
        args.data
        or recipes.for_task(args.task, "moons" if args.task == "density" else "digits").data
    )
    _check_data_for_task(args.task, data)
    return recipes.for_task(args.task, data)


def _check_data_for_task(task, data):
    from keras_iresnet import data as data_lib

    valid = data_lib.data_sets_for(task)
    if data not in valid and not str(data).startswith("tfds:"):
        raise CLIError(
            f"--data {data!r} is not a data set for --task {task}; use one of {', '.join(valid)} "
            "or tfds:NAME"
        )
    if task != "density" and data in data_lib.DENSITIES_2D:
        raise CLIError(f"--data {data} is a 2-D density without labels; use --task density")


def _default_out(recipe, data, args):
    name = f"{recipe.name}-{data.replace(':', '_')}"
    if getattr(args, "vanilla", False):
        name += "-vanilla"
    if args.seed:
        name += f"-seed{args.seed}"
    return pathlib.Path("iresnet_runs") / name


def _run_folder(out, kind, overwrite=False, resume=False):
    from keras_iresnet import runs

    try:
        return runs.RunFolder(out, kind).prepare(overwrite=overwrite, resume=resume)
    except runs.RunFolderError as error:
        raise CLIError(str(error)) from None


def _check_data_options(args, data):
    """``--data-path`` / ``--data-dir`` / ``--download`` only where they are used."""
    if getattr(args, "data_path", None) and data != "mnist-file":
        raise CLIError(f"--data-path applies to --data mnist-file; the data here is {data!r}")
    if (getattr(args, "data_dir", None) or getattr(args, "download", False)) and not str(
        data
    ).startswith("tfds:"):
        flag = "--data-dir" if getattr(args, "data_dir", None) else "--download"
        raise CLIError(f"{flag} applies to --data tfds:NAME; the data here is {data!r}")


def _overrides(args, recipe):
    model = {}
    block = dict(recipe.model.get("block", {}))
    if args.coeff is not None:
        block["coeff"] = args.coeff
    if args.hidden is not None:
        block["hidden"] = args.hidden
    if args.logdet is not None:
        if recipe.task == "classify":
            raise CLIError("--logdet applies to density and hybrid models only")
        block["logdet"] = args.logdet
    if block != dict(recipe.model.get("block", {})):
        model["block"] = block
    if args.blocks is not None:
        key = "stages" if recipe.task == "classify" else "blocks"
        current = recipe.model.get(key)
        blocks = args.blocks
        if isinstance(blocks, int) and isinstance(current, (tuple, list)):
            blocks = (blocks,) * len(current)  # N blocks in every stage / scale
        model[key] = blocks
    if args.vanilla:
        if recipe.task != "classify":
            raise CLIError("--vanilla applies to --task classify only")
        model["vanilla"] = True
    return model


def _strategy(name):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise CLIError(
                "--strategy multiworker needs TF_CONFIG (see the README's multi-worker section)"
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError:
            raise CLIError(
                "TF_CONFIG is not valid JSON (see the README's multi-worker section)"
            ) from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _worker_index(strategy):
    """This worker's index under ``MultiWorkerMirroredStrategy``, else None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return None
    return int(resolver.task_id or 0)


def _load_split(recipe, args, seed=0, n_train=None, record=None):
    import numpy as np

    from keras_iresnet import runs

    data = args.data or (record or {}).get("data") or recipe.data
    source = (record or {}).get("source", {})
    try:
        split = runs.load_split(
            recipe,
            data=data,
            path=args.data_path or source.get("path"),
            data_dir=args.data_dir or source.get("data_dir"),
            download=args.download,
            seed=seed,
            n_train=n_train,
            n_test=(record or {}).get("n_test"),
        )
    except (
        FileNotFoundError,
        ValueError,
        IsADirectoryError,
        PermissionError,
        ConnectionError,
    ) as error:
        raise CLIError(_one_line(error)) from None
    for name, array in (("training", split.x_train), ("test", split.x_test)):
        if not np.all(np.isfinite(np.asarray(array, dtype="float64"))):
            raise CLIError(
                f"the {name} data of {data!r} contain NaN or Inf values; nothing was trained"
            )
    return split


def cmd_train(args):
    import keras

    from keras_iresnet import runs
    from keras_iresnet.divergence import NonFiniteLossError

    recipe = _recipe_for(args)
    data = args.data or recipe.data
    _check_data_for_task(recipe.task, data)
    _check_data_options(args, data)
    out = pathlib.Path(args.out) if args.out else _default_out(recipe, data, args)
    model_overrides = _overrides(args, recipe)
    keras.utils.set_random_seed(args.seed)
    split = _load_split(recipe, args, seed=args.seed, n_train=args.n_train)
    strategy = _strategy(args.strategy)
    worker = _worker_index(strategy)
    if worker:  # worker 0 (the chief) writes --out; every other worker a folder of its own
        out = out.with_name(f"{out.name}-worker{worker}")
    folder = _run_folder(out, "train", args.overwrite, args.resume)
    with strategy.scope():
        try:
            model = runs.build_model(recipe, split, **model_overrides)
        except (ValueError, TypeError) as error:
            raise CLIError(_one_line(error)) from None
        runs.compile_model(model, recipe, args.learning_rate, jit_compile=bool(args.jit))
    arguments = runs.fit_arguments(
        recipe, split, args.epochs, args.batch_size, drop_remainder=bool(args.jit)
    )
    callbacks = arguments.pop("callbacks")
    # The history row of an epoch is written before its backup, so a resumed run never misses one.
    callbacks.append(keras.callbacks.CSVLogger(str(folder / "history.csv"), append=args.resume))
    callbacks.append(keras.callbacks.BackupAndRestore(str(folder / "backup")))
    callbacks.append(
        keras.callbacks.ModelCheckpoint(
            str(folder / "best.keras"), monitor="val_loss", save_best_only=True
        )
    )
    if args.logdir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=args.logdir))
    record = {
        "recipe": recipe.name,
        "task": recipe.task,
        "model_overrides": model_overrides,
        "training": {
            "epochs": arguments["epochs"],
            "batch_size": args.batch_size or recipe.batch_size,
            "learning_rate": runs.peak_learning_rate(model.optimizer),
            "warmup_steps": recipe.warmup_steps,
            "seed": args.seed,
            "strategy": args.strategy,
            "worker": worker,
            "jit": bool(args.jit),
        },
        "split": split.record(),
    }
    folder.write_record(record)
    print(
        f"training recipe {recipe.name!r} on {data} ({len(split.x_train)} train / {len(split.x_test)} test) "
        f"into {out}",
        flush=True,
    )
    try:
        if worker is not None:
            _fit_multiworker(model, arguments, callbacks, verbose=0 if args.quiet else 1)
        else:
            model.fit(verbose=0 if args.quiet else 1, callbacks=callbacks, **arguments)
    except NonFiniteLossError as error:
        raise CLIError(
            f"{error} (--learning-rate sets the rate; train again into {out} with --overwrite)"
        ) from None
    except KeyboardInterrupt:
        if (folder / "backup").is_dir():
            raise CLIError(
                f"interrupted; {out} keeps the last completed epoch: continue with the same command "
                "and --resume"
            ) from None
        raise CLIError(
            f"interrupted before the first epoch ended; nothing to resume (run again with --out {out} "
            "--overwrite)"
        ) from None
    model_path = folder / "model.keras"
    model.save(model_path)
    if (
        worker is not None
    ):  # evaluate and draw outside the strategy (Keras' evaluate fails under it)
        model = keras.models.load_model(model_path)
    _report_training(model, recipe, data, split, arguments, folder, args)
    return 0


def _fit_multiworker(model, arguments, callbacks, verbose):
    """Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy``: train with ``fit_distributed``."""
    import tensorflow as tf

    from keras_iresnet import train as train_lib

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_lib.fit_distributed(
        model,
        arguments["x"].with_options(options),
        epochs=arguments["epochs"],
        callbacks=callbacks,
        verbose=verbose,
        validation_data=arguments["validation_data"].with_options(options),
    )


def _report_training(model, recipe, data, split, arguments, folder, args):
    """After training: test metrics, certificate, reconstruction, figure, ``metrics.json``."""
    from keras_iresnet import certify, plots, runs
    from keras_iresnet.inverse import InverseConvergenceWarning

    results = model.evaluate(arguments["validation_data"], verbose=0, return_dict=True)
    report = certify.certify(model)
    metrics = {
        "recipe": recipe.name,
        "task": recipe.task,
        "data": data,
        "epochs": arguments["epochs"],
        "test": {k: float(v) for k, v in results.items()},
        "history": _history(folder / "history.csv"),
        "all_blocks_certified_contractions": report["all_contractions"],
    }
    with warnings.catch_warnings(
        record=True
    ) as caught:  # a vanilla network is not expected to invert
        warnings.simplefilter("always", InverseConvergenceWarning)
        if not split.is_2d:
            x_test = _first_inputs(arguments["validation_data"])
            recon = certify.reconstruction_report(model.trunk, x_test[:16])
            metrics["reconstruction_error"] = {"mean": recon["mean"], "max": recon["max"]}
        figure = folder / "figure.png"
        if split.is_2d:
            plots.density_2d_figure(model, split.x_test, figure)
        elif recipe.task == "classify":
            plots.reconstruction_figure(model, x_test[:8], figure)
        else:
            plots.image_samples_figure(model, figure, reconstruct=x_test[:8])
    if any(issubclass(w.category, InverseConvergenceWarning) for w in caught):
        reason = (
            "as expected without spectral normalization"
            if args.vanilla
            else "raise max_iterations or use solver='anderson'"
        )
        print(
            f"note: the inverse did not converge for some examples ({reason}); the reconstruction error "
            f"is in metrics.json"
        )
    runs.write_json(folder / "metrics.json", metrics)
    print(f"saved model to {folder / 'model.keras'} (best epoch: {folder / 'best.keras'})")
    print(f"saved metrics to {folder / 'metrics.json'}: {json.dumps(_strict(metrics['test']))}")
    print(f"saved figure to {figure}")


def _history(path):
    """The whole per-epoch history from ``history.csv`` (the last row of an epoch counts: a resumed
    run may repeat one), as ``{metric: [value per epoch]}``."""
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle)}
    history = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            if key != "epoch":
                history.setdefault(key, []).append(
                    float(value) if value not in ("", None) else None
                )
    return history


def _first_inputs(dataset):
    batch = next(iter(dataset))
    return batch[0] if isinstance(batch, tuple) else batch


def _strict(value):
    from keras_iresnet import runs

    return runs.strict_json(value)


def _one_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- saved models ----------------------------------------------------------------------
def _model_and_record(args):
    import keras

    import keras_iresnet  # noqa: F401  (registers the classes)

    if args.run and args.model:
        raise CLIError("give --run DIR or --model FILE, not both")
    if not args.run and not args.model:
        raise CLIError("give --run DIR (a folder written by 'iresnet train') or --model FILE")
    record = None
    if args.run:
        run = pathlib.Path(args.run)
        if not (run / "model.keras").is_file():
            raise CLIError(
                f"--run {run}: no model.keras there (is it a run folder of 'iresnet train'?)"
            )
        path = run / "model.keras"
        if (run / "run.json").is_file():
            record = json.loads((run / "run.json").read_text())
    else:
        path = pathlib.Path(args.model)
        if path.is_dir():
            raise CLIError(f"--model {path} is a folder; pass the .keras file (or --run {path})")
        if not path.exists():
            raise CLIError(f"--model {path} does not exist")
        beside = path.parent / "run.json"
        if beside.is_file():
            record = json.loads(beside.read_text())
    if not zipfile.is_zipfile(path):
        raise CLIError(
            f"{path} is not a valid .keras model file (truncated or not a Keras archive)"
        )
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 - a corrupt archive can raise almost anything
        raise CLIError(
            f"{path} could not be loaded as a keras_iresnet model: {_one_line(error)}"
        ) from None
    return model, record, path


def _task_of(model):
    from keras_iresnet import models

    if isinstance(model, models.IResNetHybrid):
        return "hybrid"
    if isinstance(model, models.IResNetFlow):
        return "density"
    if isinstance(model, models.IResNetClassifier):
        return "classify"
    raise CLIError(f"{type(model).__name__} is not a keras_iresnet model")


def _eval_split(model, record, args):
    """The test split the model was trained with (or ``--data``), prepared like in training."""
    from keras_iresnet import data as data_lib
    from keras_iresnet import recipes, runs

    task = _task_of(model)
    is_2d = len(model.input_shape_) == 1
    trained_on = (record or {}).get("split", {}).get("data")
    data = args.data or trained_on or ("moons" if is_2d else "digits")
    if is_2d and data not in data_lib.DENSITIES_2D:
        raise CLIError(
            f"this model takes 2-D points; --data must be one of {', '.join(data_lib.DENSITIES_2D)}"
        )
    if not is_2d and data in data_lib.DENSITIES_2D:
        raise CLIError(
            f"this model takes images of shape {model.input_shape_}; --data {data} is a 2-D density"
        )
    if args.data and trained_on and args.data != trained_on:
        print(
            f"note: evaluating on {args.data}; the model was trained on {trained_on}",
            file=sys.stderr,
        )
    _check_data_for_task(task, data)
    _check_data_options(args, data)
    recipe = recipes.get((record or {}).get("recipe") or recipes.for_task(task, data).name)
    split_record = (record or {}).get("split", {})
    split = _load_split(recipe, args, seed=split_record.get("seed", 0), record=split_record)
    if split_record.get("stats") and data == trained_on:
        split.stats = tuple(split_record["stats"])
    if split.input_shape != tuple(model.input_shape_):
        raise CLIError(
            f"--data {data} has inputs of shape {split.input_shape}; the model takes {model.input_shape_}"
        )
    return split, runs.datasets(recipe, split)[1]


def _limit(dataset, n):
    return dataset.unbatch().take(n).batch(n) if n else dataset


def cmd_evaluate(args):
    from keras_iresnet import logdet, models

    model, record, _ = _model_and_record(args)
    _, test = _eval_split(model, record, args)
    if args.terms is not None:
        if not isinstance(model, models.IResNetFlow):
            raise CLIError("--terms applies to density and hybrid models")
        model.eval_logdet = logdet.PowerSeries(n_terms=args.terms, n_samples=args.probes)
        model.compile(model.optimizer or "adam")  # retrace the evaluation with that estimator
    elif model.optimizer is None:
        model.compile("adam")
    results = model.evaluate(_limit(test, args.n), verbose=0, return_dict=True)
    print(json.dumps(_strict({k: float(v) for k, v in results.items()})))
    return 0


def cmd_invert(args):
    from keras_iresnet import certify

    model, record, _ = _model_and_record(args)
    _, test = _eval_split(model, record, args)
    x = _first_inputs(_limit(test, args.n))
    report = certify.reconstruction_report(model.trunk, x)
    print(
        json.dumps(
            _strict(
                {
                    "examples": len(report["errors"]),
                    "mean_relative_error": report["mean"],
                    "max_relative_error": report["max"],
                }
            )
        )
    )
    return 0


def cmd_sample(args):
    from keras_iresnet import models, plots

    model, _, path = _model_and_record(args)
    if not isinstance(model, models.IResNetFlow):
        raise CLIError("sample needs a density model (trained with --task density or hybrid)")
    default = f"samples_n{args.n}_t{args.temperature:g}_seed{args.seed}.png"
    out = pathlib.Path(args.out) if args.out else path.with_name(default)
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give the PNG file's path")
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it, or --out FILE")
    if not out.parent.is_dir():
        raise CLIError(f"--out {out}: the folder {out.parent} does not exist")
    plots.samples_figure(model, args.n, args.temperature, out, seed=args.seed)
    print(f"saved {args.n} samples (temperature {args.temperature}) to {out}")
    return 0


def cmd_certify(args):
    from keras_iresnet import certify

    model, _, path = _model_and_record(args)
    report = certify.certify(model)
    if not report["blocks"]:
        raise CLIError(f"{path} has no residual blocks to certify")
    for block in report["blocks"]:
        print(
            f"{block['name']}: Lip(g) <= {block['lipschitz_bound']:.4f} "
            f"{'contraction' if block['contraction'] else 'NOT a proven contraction'}"
        )
    print(
        json.dumps(
            {"all_contractions": report["all_contractions"], "blocks": len(report["blocks"])}
        )
    )
    return 0 if report["all_contractions"] else 1


def cmd_tune(args):
    import keras
    import keras_tuner

    from keras_iresnet import recipes, runs, tuning

    data = args.data or ("moons" if args.task == "density" else "digits")
    _check_data_for_task(args.task, data)
    _check_data_options(args, data)
    recipe = recipes.for_task(args.task, data)
    out = pathlib.Path(
        args.out or pathlib.Path("iresnet_runs") / f"tune-{args.task}-{data.replace(':', '_')}"
    )
    keras.utils.set_random_seed(args.seed)
    args.data = data
    split = _load_split(recipe, args, seed=args.seed)
    try:
        search_split = runs.validation_split(split, args.validation_fraction)
    except ValueError as error:
        raise CLIError(_one_line(error)) from None
    folder = _run_folder(out, "tune", args.overwrite)
    folder.write_record(
        {
            "recipe": recipe.name,
            "task": args.task,
            "split": split.record(),
            "validation_fraction": args.validation_fraction,
            "tuner": args.tuner,
            "trials": args.trials,
            "epochs": args.epochs,
            "seed": args.seed,
        }
    )
    hypermodel = tuning.IResNetHyperModel(recipe, split.input_shape, split.num_classes)
    common = dict(
        objective=hypermodel.objective,
        directory=str(out),
        project_name="search",
        seed=args.seed,
        overwrite=True,
    )
    if args.tuner == "hyperband":
        tuner = keras_tuner.Hyperband(hypermodel, max_epochs=args.epochs, **common)
    else:
        tuner_cls = {
            "random": keras_tuner.RandomSearch,
            "bayesian": keras_tuner.BayesianOptimization,
        }[args.tuner]
        tuner = tuner_cls(hypermodel, max_trials=args.trials, **common)
    train, valid = runs.datasets(recipe, search_split, args.batch_size)
    print(
        f"tuning around recipe {recipe.name!r}: {len(search_split.x_train)} training / "
        f"{len(search_split.x_test)} validation examples (the {len(split.x_test)} test examples are used once, "
        "at the end)",
        flush=True,
    )
    try:
        tuner.search(
            train, validation_data=valid, epochs=args.epochs, verbose=0 if args.quiet else 1
        )
    except KeyboardInterrupt:
        raise CLIError(f"interrupted; the trials that completed are in {out / 'search'}") from None
    statuses = [t.status for t in tuner.oracle.trials.values()]
    if "COMPLETED" not in statuses:
        raise CLIError(f"no trial completed (statuses: {statuses}); see the tuner log in {out}")
    best_hp = tuner.get_best_hyperparameters(1)[0].values
    with (
        warnings.catch_warnings()
    ):  # keras-tuner reloads the weights into an unbuilt optimizer: harmless
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        best = tuner.get_best_models(1)[0]
    best.save(folder / "best.keras")
    _, test = runs.datasets(recipe, split, args.batch_size)
    tested = best.evaluate(test, verbose=0, return_dict=True)  # the one use of the test split
    summary = {
        "objective": hypermodel.objective.name,
        "best_hyperparameters": best_hp,
        "best_validation": tuner.oracle.get_best_trials(1)[0].score,
        "test": tested,
        "statuses": statuses,
        "recipe": recipe.name,
    }
    runs.write_json(folder / "tuning.json", summary)
    print(f"best hyperparameters: {json.dumps(_strict(best_hp))}")
    print(f"test of the best model: {json.dumps(_strict(tested))}")
    print(f"saved best model to {folder / 'best.keras'} and summary to {folder / 'tuning.json'}")
    return 0


def cmd_recipes(args):
    from keras_iresnet import recipes

    for name in recipes.names():
        recipe = recipes.get(name)
        print(f"{name:18s} {recipe.task:9s} {recipe.data:12s} {recipe.device}  {recipe.summary}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "invert": cmd_invert,
    "sample": cmd_sample,
    "certify": cmd_certify,
    "tune": cmd_tune,
    "recipes": cmd_recipes,
}


def run(args):
    """Run parsed arguments; errors become one line and exit code 2.

    Set ``IRESNET_DEBUG=1`` to see the traceback of an unexpected error instead.
    """
    try:
        return COMMANDS[args.command](args)
    except CLIError as error:
        print(f"iresnet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iresnet: error: interrupted (Ctrl-C)", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - TensorFlow raises its own error classes too
        if os.environ.get("IRESNET_DEBUG"):
            raise
        print(
            f"iresnet: error: {type(error).__name__}: {_one_line(error)} (IRESNET_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2


def main(argv=None):
    """Parse ``argv`` and run (the launcher ``keras_iresnet_cli`` adds a quiet TensorFlow start)."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
