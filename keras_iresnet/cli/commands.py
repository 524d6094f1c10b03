"""The ``iresnet`` commands: train, evaluate, sample, invert, certify, tune, recipes.

Each command is a thin layer over :mod:`keras_iresnet.experiments` (recipes, runs,
tuning, plots): it turns arguments into their calls and their failures into one
line.

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
import logging
import os
import pathlib
import sys
import warnings
import zipfile
from typing import TYPE_CHECKING

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

import keras_iresnet  # noqa: F401 - registers every class (saved models load)
from keras_iresnet import certify, logdet, models
from keras_iresnet import data as data_lib
from keras_iresnet.cli.args import CLIError
from keras_iresnet.divergence import NonFiniteLossError
from keras_iresnet.experiments import plots, recipes, runs, tuning

if TYPE_CHECKING:
    import argparse

__all__ = ["run", "COMMANDS"]


class _NoRetracingNotice(logging.Filter):
    """The command trains several models in one process (a search's trials, a run and its
    evaluation); TensorFlow's notice that "N of the last M calls triggered tf.function
    retracing" is then expected and would only alarm the user, so the command hides it."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_NoRetracingNotice())


# -- runs ----------------------------------------------------------------------------
def _recipe_for(args):
    if args.recipe:
        if args.recipe not in recipes.names():
            raise CLIError(
                f"--recipe {args.recipe!r} is not a recipe; the recipes are "
                f"{', '.join(recipes.names())}"
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


def cmd_train(args: argparse.Namespace) -> int:
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
        jit = "auto" if args.jit is None else args.jit
        runs.compile_model(model, recipe, args.learning_rate, jit_compile=jit)
    arguments = runs.fit_arguments(
        recipe, split, args.epochs, args.batch_size, drop_remainder=bool(model.jit_compile)
    )
    callbacks = arguments.pop("callbacks") + runs.folder_callbacks(folder, args.resume, args.logdir)
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
            "jit": bool(model.jit_compile),
        },
        "split": split.record(),
    }
    folder.write_record(record)
    print(
        f"training recipe {recipe.name!r} on {data} ({len(split.x_train)} train / "
        f"{len(split.x_test)} test) into {out}",
        flush=True,
    )
    try:
        if worker is not None:
            runs.fit_multiworker(model, arguments, callbacks, verbose=0 if args.quiet else 1)
        else:
            model.fit(verbose=0 if args.quiet else 1, callbacks=callbacks, **arguments)
    except NonFiniteLossError as error:
        raise CLIError(
            f"{error} (--learning-rate sets the rate; train again into {out} with --overwrite)"
        ) from None
    except KeyboardInterrupt:
        if (folder / "backup").is_dir():
            raise CLIError(
                f"interrupted; {out} keeps the last completed epoch: continue with the same "
                "command and --resume"
            ) from None
        raise CLIError(
            "interrupted before the first epoch ended; nothing to resume (run again with "
            f"--out {out} --overwrite)"
        ) from None
    model_path = folder / "model.keras"
    model.save(model_path)
    if (
        worker is not None
    ):  # evaluate and draw outside the strategy (Keras' evaluate fails under it)
        model = keras.models.load_model(model_path)
    metrics, figure, unconverged = runs.report_training(
        model, recipe, split, arguments["validation_data"], folder, arguments["epochs"]
    )
    if unconverged:
        reason = (
            "as expected without spectral normalization"
            if args.vanilla
            else "raise max_iterations or use solver='anderson'"
        )
        print(
            f"note: the inverse did not converge for some examples ({reason}); the "
            "reconstruction error is in metrics.json"
        )
    print(f"saved model to {model_path} (best epoch: {folder / 'best.keras'})")
    print(f"saved metrics to {folder / 'metrics.json'}: {json.dumps(_strict(metrics['test']))}")
    print(f"saved figure to {figure}")
    return 0


def _strict(value):
    return runs.strict_json(value)


def _one_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- saved models ----------------------------------------------------------------------
def _model_and_record(args):
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
        record = runs.RunFolder(run).read_record()
        if record is None:
            raise CLIError(
                f"--run {run} is not a run folder of 'iresnet train' (no run.json of ours); "
                "pass --model FILE for a .keras file"
            )
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
    if isinstance(model, models.IResNetHybrid):
        return "hybrid"
    if isinstance(model, models.IResNetFlow):
        return "density"
    if isinstance(model, models.IResNetClassifier):
        return "classify"
    raise CLIError(f"{type(model).__name__} is not a keras_iresnet model")


def _eval_split(model, record, args):
    """The test split the model was trained with (or ``--data``), prepared like in training."""

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
    if getattr(model, "conditional", False) and not recipe.context:
        if _unlabeled(data):
            raise CLIError(f"this model is class-conditional; --data {data} has no labels")
        recipe = recipe.replace(context="label")  # a model file without its run record
    split_record = (record or {}).get("split", {})
    split = _load_split(recipe, args, seed=split_record.get("seed", 0), record=split_record)
    if split_record.get("stats") and data == trained_on:
        split.stats = tuple(split_record["stats"])
    if split.input_shape != tuple(model.input_shape_):
        raise CLIError(
            f"--data {data} has inputs of shape {split.input_shape}; the model takes "
            f"{model.input_shape_}"
        )
    return split, runs.datasets(recipe, split)[1]


def _unlabeled(data):
    return data in data_lib.DENSITIES_2D or data == "mnist-file"


def _limit(dataset, n):
    return dataset.unbatch().take(n).batch(n) if n else dataset


def cmd_evaluate(args: argparse.Namespace) -> int:
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


def cmd_invert(args: argparse.Namespace) -> int:
    model, record, _ = _model_and_record(args)
    _, test = _eval_split(model, record, args)
    batch = next(iter(_limit(test, args.n)))
    x = batch[0] if isinstance(batch, tuple) else batch
    conditional = getattr(model, "conditional", False)
    context = {"context": batch[1]} if conditional and isinstance(batch, tuple) else {}
    report = certify.reconstruction_report(model.trunk, x, **context)
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


def _class_count(model, label):
    """A class-conditional model's number of classes (its one-hot context); checks ``--label``."""
    conditional = getattr(model, "conditional", False)
    if label is not None and not conditional:
        raise CLIError(
            "--label applies to class-conditional models (e.g. --recipe digits-conditional); "
            "this model is unconditional"
        )
    if not conditional:
        return None
    if len(model.context_shape) != 1:
        raise CLIError(
            f"sample draws class-conditional models (a one-hot context); this model's context "
            f"has shape {model.context_shape}"
        )
    classes = int(model.context_shape[0])
    if label is not None and label >= classes:
        raise CLIError(f"--label {label} is not a class of this model (0 to {classes - 1})")
    return classes


def cmd_sample(args: argparse.Namespace) -> int:
    model, _, path = _model_and_record(args)
    if not isinstance(model, models.IResNetFlow):
        raise CLIError("sample needs a density model (trained with --task density or hybrid)")
    classes = _class_count(model, args.label)
    label = "" if args.label is None else f"_label{args.label}"
    default = f"samples_n{args.n}_t{args.temperature:g}_seed{args.seed}{label}.png"
    out = pathlib.Path(args.out) if args.out else path.with_name(default)
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give the PNG file's path")
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it, or --out FILE")
    if not out.parent.is_dir():
        raise CLIError(f"--out {out}: the folder {out.parent} does not exist")
    if classes is None:
        plots.samples_figure(model, args.n, args.temperature, out, seed=args.seed)
        print(f"saved {args.n} samples (temperature {args.temperature}) to {out}")
    elif args.label is not None:
        plots.class_samples_figure(
            model, out, [args.label], args.n, args.temperature, seed=args.seed
        )
        print(
            f"saved {args.n} samples of class {args.label} (temperature {args.temperature}) "
            f"to {out}"
        )
    else:
        per_class = max(1, args.n // classes)
        plots.class_samples_figure(model, out, None, per_class, args.temperature, seed=args.seed)
        print(
            f"saved {per_class} samples of each of the {classes} classes, a row per class "
            f"(temperature {args.temperature}), to {out}"
        )
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    model, _, path = _model_and_record(args)
    report = certify.certify(model)
    if not report["blocks"]:
        raise CLIError(f"{path} has no residual blocks to certify")
    for block in report["blocks"]:
        lipschitz = "Lip_x(g(., c)) for every c" if block["conditional"] else "Lip(g)"
        print(
            f"{block['name']}: {lipschitz} <= {block['lipschitz_bound']:.4f} "
            f"{'contraction' if block['contraction'] else 'NOT a proven contraction'}"
        )
    summary = {"all_contractions": report["all_contractions"], "blocks": len(report["blocks"])}
    check = report.get("inverse_check")
    if check is not None:
        print(
            f"inverse at {check['contexts']} random contexts: max relative error "
            f"{check['max_relative_error']:.2e} ({'passed' if check['passed'] else 'FAILED'})"
        )
        summary["inverse_check"] = check
    print(json.dumps(_strict(summary)))
    passed = report["all_contractions"] and (check is None or check["passed"])
    return 0 if passed else 1


def cmd_tune(args: argparse.Namespace) -> int:
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
    try:
        hypermodel = tuning.IResNetHyperModel(
            recipe,
            split.input_shape,
            split.num_classes,
            seconds=None if args.minutes is None else 60.0 * args.minutes,
            space=args.space,
        )
    except ValueError as error:
        raise CLIError(_one_line(error)) from None
    epochs = args.epochs or (1000 if args.minutes else 3)
    folder = _run_folder(out, "tune", args.overwrite)
    folder.write_record(
        {
            "recipe": recipe.name,
            "task": args.task,
            "split": split.record(),
            "validation_fraction": args.validation_fraction,
            "tuner": args.tuner,
            "trials": args.trials,
            "epochs": epochs,
            "minutes": args.minutes,
            "space": args.space,
            "seed": args.seed,
        }
    )
    common = dict(
        objective=hypermodel.objective,
        directory=str(out),
        project_name="search",
        seed=args.seed,
        overwrite=True,
    )
    if args.tuner == "hyperband":
        tuner = keras_tuner.Hyperband(hypermodel, max_epochs=epochs, **common)
    else:
        tuner_cls = {
            "random": keras_tuner.RandomSearch,
            "bayesian": keras_tuner.BayesianOptimization,
        }[args.tuner]
        tuner = tuner_cls(hypermodel, max_trials=args.trials, **common)
    # vector data trains dense models, which XLA compiles on a CPU too: one static batch size
    train, valid = runs.datasets(
        recipe, search_split, args.batch_size, drop_remainder=search_split.is_2d
    )
    print(
        f"tuning around recipe {recipe.name!r}: {len(search_split.x_train)} training / "
        f"{len(search_split.x_test)} validation examples (the {len(split.x_test)} test "
        "examples are used once, at the end)",
        flush=True,
    )
    try:
        tuner.search(train, validation_data=valid, epochs=epochs, verbose=0 if args.quiet else 1)
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


def cmd_recipes(args: argparse.Namespace) -> int:
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


def run(args: argparse.Namespace) -> int:
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
            f"iresnet: error: {type(error).__name__}: {_one_line(error)} "
            "(IRESNET_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2
