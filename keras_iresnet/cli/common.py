"""What several ``iresnet`` commands share: data checks and splits, run folders, saved models.

Importing it also hides TensorFlow's retracing notice (see :class:`_NoRetracingNotice`) for
every command.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys
import zipfile

import keras
import numpy as np
import tensorflow as tf

import keras_iresnet  # noqa: F401 - registers every class (saved models load)
from keras_iresnet import data as data_lib
from keras_iresnet import models
from keras_iresnet.cli.args import CLIError
from keras_iresnet.experiments import recipes, runs


class _NoRetracingNotice(logging.Filter):
    """The command trains several models in one process (a search's trials, a run and its
    evaluation); TensorFlow's notice that "N of the last M calls triggered tf.function
    retracing" is then expected and would only alarm the user, so the command hides it."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_NoRetracingNotice())


# -- output --------------------------------------------------------------------------
def _strict(value):
    return runs.strict_json(value)


def _one_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- data and run folders --------------------------------------------------------------
def _check_data_for_task(task, data):
    valid = data_lib.data_sets_for(task)
    if data not in valid and not str(data).startswith("tfds:"):
        raise CLIError(
            f"--data {data!r} is not a data set for --task {task}; use one of {', '.join(valid)} "
            "or tfds:NAME"
        )
    if task != "density" and data in data_lib.DENSITIES_2D:
        raise CLIError(f"--data {data} is a 2-D density without labels; use --task density")


def _check_data_options(args, data):
    """``--data-path`` / ``--data-dir`` / ``--download`` only where they are used."""
    if getattr(args, "data_path", None) and data != "mnist-file":
        raise CLIError(f"--data-path applies to --data mnist-file; the data here is {data!r}")
    if (getattr(args, "data_dir", None) or getattr(args, "download", False)) and not str(
        data
    ).startswith("tfds:"):
        flag = "--data-dir" if getattr(args, "data_dir", None) else "--download"
        raise CLIError(f"{flag} applies to --data tfds:NAME; the data here is {data!r}")


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


def _run_folder(out, kind, overwrite=False, resume=False):
    try:
        return runs.RunFolder(out, kind).prepare(overwrite=overwrite, resume=resume)
    except runs.RunFolderError as error:
        raise CLIError(str(error)) from None


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
