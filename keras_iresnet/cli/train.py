"""``iresnet train`` (a recipe with a few overrides, into a run folder) and ``iresnet recipes``.

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

``iresnet recipes`` lists the recipes ``--recipe`` accepts.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_iresnet.cli.args import CLIError
from keras_iresnet.cli.common import (
    _check_data_for_task,
    _check_data_options,
    _load_split,
    _one_line,
    _run_folder,
    _strict,
)
from keras_iresnet.divergence import NonFiniteLossError
from keras_iresnet.experiments import recipes, reports, runs

if TYPE_CHECKING:
    import argparse

__all__ = ["cmd_train", "cmd_recipes"]


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


def _default_out(recipe, data, args):
    name = f"{recipe.name}-{data.replace(':', '_')}"
    if getattr(args, "vanilla", False):
        name += "-vanilla"
    if args.seed:
        name += f"-seed{args.seed}"
    return pathlib.Path("iresnet_runs") / name


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
    arguments = runs.fit_arguments(recipe, split, args.epochs, args.batch_size)
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
    metrics, figure, unconverged = reports.report_training(
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


def cmd_recipes(args: argparse.Namespace) -> int:
    for name in recipes.names():
        recipe = recipes.get(name)
        print(f"{name:18s} {recipe.task:9s} {recipe.data:12s} {recipe.device}  {recipe.summary}")
    return 0
