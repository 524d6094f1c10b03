"""keras_iresnet.experiments.tuning: keras-tuner search spaces centred on the recipes, and the
``iresnet tune`` command (it selects on the training data, never on the test split)."""

import json

import keras
import keras_tuner
import numpy as np
import pytest

from keras_iresnet import cli, recipes, runs, tuning

SMALL = {
    "classify": recipes.get("digits-classifier").replace(
        model={"stages": (1, 1), "block": {"hidden": 8}}
    ),
    "density": recipes.get("2d").replace(model={"blocks": 4, "block": {"hidden": 16}}),
}


@pytest.fixture
def small_recipes(monkeypatch):
    """``iresnet tune`` searches around SMALL's recipe (what the tests check does not depend on
    the size of the model or of the data)."""
    original = recipes.for_task

    def small(task, data):
        recipe = original(task, data)
        return SMALL[task].replace(n_train=1024, n_test=256) if task in SMALL else recipe

    monkeypatch.setattr(recipes, "for_task", small)
    return small


def _two_trials(tuner_class, hypermodel, split, folder, epochs):
    """A search of two trials of ``hypermodel`` on ``split``: ``(tuner, validation pipeline)``."""
    train, valid = runs.datasets(hypermodel.recipe, split)
    tuner = tuner_class(
        hypermodel,
        objective=hypermodel.objective,
        max_trials=2,
        directory=str(folder),
        project_name="search",
        seed=0,
        overwrite=True,
    )
    tuner.search(train, validation_data=valid, epochs=epochs, verbose=0)
    return tuner, valid


@pytest.mark.parametrize("task", ["classify", "density"])
def test_random_search_completes_trials_and_best_model_reloads(tmp_path, task):
    recipe = SMALL[task]
    split = runs.load_split(recipe, n_train=512, n_test=256)
    hypermodel = tuning.IResNetHyperModel(recipe, split.input_shape, split.num_classes)
    tuner, valid = _two_trials(keras_tuner.RandomSearch, hypermodel, split, tmp_path, epochs=1)
    trials = tuner.oracle.trials.values()
    assert len(trials) == 2
    assert all(trial.status == "COMPLETED" for trial in trials), [t.status for t in trials]
    best = tuner.get_best_models(1)[0]
    metric = "accuracy" if task == "classify" else "bits_per_dim"
    score = best.evaluate(valid, verbose=0, return_dict=True)[metric]
    assert np.isfinite(score)
    path = tmp_path / "best.keras"
    best.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.evaluate(valid, verbose=0, return_dict=True)[metric] == pytest.approx(
        score, rel=1e-3, abs=1e-3
    )


def test_the_untuned_recipe_is_a_point_of_the_search_space():
    """The default hyperparameters rebuild the recipe's own model (the paper layout for
    classify)."""
    recipe = recipes.get("digits-classifier")
    hypermodel = tuning.IResNetHyperModel(recipe, (8, 8, 1), 10)
    model = hypermodel.build(keras_tuner.HyperParameters())
    reference = runs.build_model(recipe, input_shape=(8, 8, 1), num_classes=10)
    assert model.get_config()["block"] == reference.get_config()["block"]
    assert (
        model.stages == reference.stages and model.initial_squeeze and model.pad_to_channels == 16
    )
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(
        recipe.optimizer["learning_rate"]
    )


@pytest.mark.parametrize("space", ["recipe", "budget"])
def test_recipe_first_random_search_measures_the_recipe_in_trial_zero(tmp_path, space):
    """Trial 0 holds every hyperparameter at its default (the recipe's values), trial 1 a
    random point; a budget trial stops on time."""
    recipe = SMALL["density"]
    split = runs.load_split(recipe, n_train=512, n_test=256)
    hypermodel = tuning.IResNetHyperModel(recipe, (2,), seconds=3.0, space=space)
    tuner, _ = _two_trials(tuning.RecipeFirstRandomSearch, hypermodel, split, tmp_path, epochs=50)
    first, second = tuner.oracle.trials.values()
    assert first.status == second.status == "COMPLETED"
    defaults = {hp.name: hp.default for hp in tuner.oracle.get_space().space}
    assert first.hyperparameters.values == defaults
    assert first.hyperparameters.values["learning_rate"] == recipe.optimizer["learning_rate"]
    assert second.hyperparameters.values != defaults
    assert np.isfinite(first.score) and np.isfinite(second.score)


def test_objective_names_and_bad_arguments():
    assert tuning.IResNetHyperModel("classify", (8, 8, 1), 10).objective.name == "val_accuracy"
    assert tuning.IResNetHyperModel("hybrid", (8, 8, 1), 10).objective.name == "val_accuracy"
    objective = tuning.IResNetHyperModel("density", (2,)).objective
    assert objective.name == "val_bits_per_dim" and objective.direction == "min"
    with pytest.raises(ValueError, match="recipe"):
        tuning.IResNetHyperModel("segment", (2,))
    with pytest.raises(ValueError, match="num_classes"):
        tuning.IResNetHyperModel("hybrid", (8, 8, 1))
    with pytest.raises(ValueError, match="input_shape"):
        tuning.IResNetHyperModel("density", (2, 2))


def test_cli_tune_and_no_silent_rerun(tmp_path, capsys, small_recipes):
    out = tmp_path / "tune"
    args = [
        "tune",
        "--task",
        "density",
        "--trials",
        "2",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert cli.main(args) == 0
    summary = json.loads((out / "tuning.json").read_text())
    assert summary["objective"] == "val_bits_per_dim" and summary["statuses"] == [
        "COMPLETED",
        "COMPLETED",
    ]
    assert summary["recipe"] == "2d" and (out / "best.keras").exists()
    capsys.readouterr()
    assert cli.main(args) == 2  # a second run does not silently reload the old search
    assert "already holds a run" in capsys.readouterr().err


def test_the_tuned_learning_rate_reaches_the_optimizer():
    recipe = SMALL["density"]
    hypermodel = tuning.IResNetHyperModel(recipe, (2,))
    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", 0.0271)
    model = hypermodel.build(hp)
    assert runs.peak_learning_rate(model.optimizer) == pytest.approx(0.0271)


def test_cli_tune_never_shows_the_test_split_to_the_search(
    tmp_path, monkeypatch, capsys, small_recipes
):
    seen = []
    original = tuning.IResNetHyperModel.fit

    def spy(self, hp, model, *args, **kwargs):
        for batch in kwargs["validation_data"]:
            seen.append(np.asarray(batch))
        for batch in args[0] if args else kwargs["x"]:
            seen.append(np.asarray(batch))
        return original(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(tuning.IResNetHyperModel, "fit", spy)
    out = tmp_path / "tune"
    assert (
        cli.main(
            [
                "tune",
                "--task",
                "density",
                "--trials",
                "1",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    split = runs.load_split(small_recipes("density", "moons"))
    shown = {tuple(row) for batch in seen for row in np.round(batch, 6)}
    test_rows = {tuple(row) for row in np.round(split.x_test, 6)}
    train_rows = {tuple(row) for row in np.round(split.x_train, 6)}
    assert shown and shown <= train_rows and not shown & test_rows
    summary = json.loads((out / "tuning.json").read_text())
    assert np.isfinite(summary["test"]["bits_per_dim"]) and np.isfinite(summary["best_validation"])


def test_a_trial_with_a_wall_clock_budget_runs_end_to_end_and_reports_its_objective(tmp_path):
    """seconds=: each trial stops at its budget (epochs is only a cap) and reports held-out
    bits/dim evaluated with the accurate estimator, on the wide 'budget' space."""
    recipe = SMALL["density"]
    split = runs.load_split(recipe, n_train=512, n_test=256)
    train, valid = runs.datasets(recipe, split)
    hypermodel = tuning.IResNetHyperModel(recipe, split.input_shape, seconds=3.0, space="budget")
    assert hypermodel.eval_logdet is not None  # one fixed, accurate estimator for every trial
    tuner = keras_tuner.RandomSearch(
        hypermodel,
        objective=hypermodel.objective,
        max_trials=1,
        directory=str(tmp_path),
        project_name="budget",
        seed=0,
        overwrite=True,
    )
    tuner.search(train, validation_data=valid, epochs=10**4, verbose=0)
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "COMPLETED"
    score = trial.metrics.get_best_value("val_bits_per_dim")
    assert np.isfinite(score)
    # It stopped on the budget, far before the epoch cap: a few seconds hold a few epochs.
    assert trial.metrics.get_history("val_bits_per_dim")[-1].step < 1000
