"""``iresnet tune``: a keras-tuner search around a task's recipe, written to a run folder.

The search trains on part of the training split and validates on the rest; the test split
is used once, to evaluate the best model (``tuning.json``, ``best.keras``).
"""

from __future__ import annotations

import json
import pathlib
import warnings
from typing import TYPE_CHECKING

import keras
import keras_tuner

from keras_iresnet.cli.args import CLIError
from keras_iresnet.cli.common import (
    _check_data_for_task,
    _check_data_options,
    _load_split,
    _one_line,
    _run_folder,
    _strict,
)
from keras_iresnet.experiments import recipes, runs, tuning

if TYPE_CHECKING:
    import argparse

__all__ = ["cmd_tune"]


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
            "random": tuning.RecipeFirstRandomSearch,  # trial 0 is the recipe
            "bayesian": keras_tuner.BayesianOptimization,
        }[args.tuner]
        tuner = tuner_cls(hypermodel, max_trials=args.trials, **common)
    # batches of one static size (XLA needs it; one traced step instead of two)
    train, valid = runs.datasets(recipe, search_split, args.batch_size)
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
    trials = [
        {
            "trial": t.trial_id,
            "status": t.status,
            "score": t.score,
            "values": t.hyperparameters.values,
        }
        for t in tuner.oracle.trials.values()
    ]
    best_score = tuner.oracle.get_best_trials(1)[0].score
    summary = {
        "objective": hypermodel.objective.name,
        "best_hyperparameters": best_hp,
        "best_validation": best_score,
        "test": tested,
        "statuses": statuses,
        "recipe": recipe.name,
        "trials": trials,  # in order; with --tuner random the first is the recipe itself
    }
    runs.write_json(folder / "tuning.json", summary)
    if args.tuner == "random" and trials[0]["score"] is not None:
        print(
            f"{hypermodel.objective.name}: the recipe (trial 0) {trials[0]['score']:.4f}, "
            f"the best trial {best_score:.4f}"
        )
    print(f"best hyperparameters: {json.dumps(_strict(best_hp))}")
    print(f"test of the best model: {json.dumps(_strict(tested))}")
    print(f"saved best model to {folder / 'best.keras'} and summary to {folder / 'tuning.json'}")
    return 0
