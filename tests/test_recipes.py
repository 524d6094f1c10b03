"""keras_iresnet.experiments.recipes: one home for training configurations -- every recipe is
complete and builds its model, and the CPU recipes reach the results they were measured at."""

import inspect
import json
import pathlib

import keras
import numpy as np
import pytest

from keras_iresnet import data, models, recipes, runs
from keras_iresnet.testing import logit_gaussian_bits_per_dim

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_recipe_is_complete_and_its_model_arguments_are_valid():
    for name in recipes.names():
        recipe = recipes.get(name)
        assert recipe.name == name and recipe.task in ("density", "classify", "hybrid")
        assert recipe.device in ("cpu", "gpu") and recipe.measured and recipe.summary
        builder = {
            "density": models.IResNetFlow,
            "classify": models.IResNetClassifier,
            "hybrid": models.IResNetHybrid,
        }[recipe.task]
        accepted = set(inspect.signature(builder.__init__).parameters)
        if recipe.task == "hybrid":
            accepted |= set(inspect.signature(models.IResNetFlow.__init__).parameters)
        assert set(recipe.model) <= accepted, (name, set(recipe.model) - accepted)
        models.block_config(recipe.model["block"])  # raises on an unknown block argument
        if "fc_block" in recipe.model:
            models.block_config(recipe.model["fc_block"])
        optimizer = runs.make_optimizer(recipe)
        assert isinstance(optimizer, keras.optimizers.Optimizer)


@pytest.mark.parametrize("name", [n for n in recipes.names() if recipes.get(n).device == "cpu"])
def test_cpu_recipes_build_their_model(name):
    recipe = recipes.get(name)
    shape = (
        (2,)
        if recipe.data in data.DENSITIES_2D
        else ((28, 28, 1) if recipe.data == "mnist-file" else (8, 8, 1))
    )
    model = runs.build_model(recipe, input_shape=shape, num_classes=10)
    assert model.input_shape_ == shape
    rebuilt = type(model).from_config(model.get_config())  # the configuration is complete
    assert rebuilt.get_config() == model.get_config()
    assert rebuilt.count_params() == model.count_params()


def test_recipes_are_copies_and_replace_merges():
    first = recipes.get("2d")
    first.model["blocks"] = 1
    assert recipes.get("2d").model["blocks"] != 1
    changed = recipes.get("2d").replace(model={"blocks": 3}, epochs=2)
    assert (
        changed.model["blocks"] == 3 and changed.model["block"] == recipes.get("2d").model["block"]
    )
    assert changed.epochs == 2
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.get("nope")
    assert recipes.for_task("density", "8gaussians").name == "2d"
    assert recipes.for_task("classify", "tfds:mnist").name == "digits-classifier"


def benchmarked_2d_nll(density):
    """The i-ResNet's test NLL on ``density`` at the recipe's budget in the density benchmark
    (``benchmarks/results_density_2d.json``, table "equal epochs"): ``(mean, std)`` over its
    seeds.
    """
    results = json.loads((ROOT / "benchmarks" / "results_density_2d.json").read_text())
    (row,) = [
        r
        for r in results["rows"]
        if r["part"] == "2d-equal-epochs" and r["density"] == density and r["model"] == "i-ResNet"
    ]
    model = runs.build_model(recipes.get("2d"), input_shape=(2,))
    assert row["parameters"] == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return row["test_nll_mean"], row["test_nll_std"]


@pytest.mark.slow
def test_the_2d_recipe_reaches_the_benchmarked_moons_nll():
    """The recipe's own budget on moons lands where the density benchmark measured it: at most
    three of the benchmark's standard deviations (over seeds) above its mean, and below the
    closed-form baseline (the maximum-likelihood Gaussian) by more than that spread."""
    mean, std = benchmarked_2d_nll("moons")
    model, _, split = runs.train(recipes.get("2d"), verbose=0)
    nll = -float(np.mean(model.log_prob(split.x_test).numpy()))
    train = split.x_train.astype("float64")
    centred = split.x_test.astype("float64") - train.mean(axis=0)
    covariance = np.cov(train.T, bias=True)
    gaussian = float(
        np.mean(0.5 * np.einsum("ni,ij,nj->n", centred, np.linalg.inv(covariance), centred))
        + 0.5 * np.log(np.linalg.det(covariance))
        + np.log(2 * np.pi)
    )
    assert nll <= mean + 3 * std, (nll, mean, std)
    assert nll < gaussian - 3 * std, (nll, gaussian)


@pytest.mark.slow
def test_the_hybrid_recipe_learns_both():
    """>= 90 % test accuracy and bits/dim below the logit + per-pixel Gaussian closed form."""
    recipe = recipes.get("digits-hybrid")
    model, _, split = runs.train(recipe, verbose=0)
    results = model.evaluate(runs.datasets(recipe, split)[1], verbose=0, return_dict=True)
    rng = np.random.default_rng(0)
    train = (split.x_train.astype("float64") + rng.uniform(size=split.x_train.shape)) / 256.0
    test = (split.x_test.astype("float64") + rng.uniform(size=split.x_test.shape)) / 256.0
    closed = logit_gaussian_bits_per_dim(train, test, recipe.model["logit"])
    assert results["accuracy"] >= 0.90, results
    assert results["bits_per_dim"] < closed, (results, closed)


@pytest.mark.slow
def test_the_image_recipe_learns_dependencies_and_keeps_the_ema_weights(
    tmp_path, digits_density_run
):
    """Half the epochs of "digits-density" (the shared training): below the closed form of
    independent pixels; the EMA weights are the ones in the model (evaluated and saved)."""
    recipe = recipes.get("digits-density")
    model, split = digits_density_run
    results = model.evaluate(runs.datasets(recipe, split)[1], verbose=0, return_dict=True)
    rng = np.random.default_rng(0)
    train = (split.x_train.astype("float64") + rng.uniform(size=split.x_train.shape)) / 256.0
    test = (split.x_test.astype("float64") + rng.uniform(size=split.x_test.shape)) / 256.0
    closed = logit_gaussian_bits_per_dim(train, test, recipe.model["logit"])
    assert results["bits_per_dim"] < closed - 0.05, (results, closed)
    averages = model.optimizer._model_variables_moving_average  # noqa: SLF001 - Keras' EMA slots
    for variable, average in zip(model.trainable_variables, averages):
        np.testing.assert_allclose(variable.numpy(), average.numpy(), rtol=1e-6, atol=1e-7)
    path = tmp_path / "ema.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = next(iter(runs.datasets(recipe, split)[1]))[:16]
    np.testing.assert_allclose(
        loaded.log_prob(x, logdet="exact").numpy(),
        model.log_prob(x, logdet="exact").numpy(),
        rtol=1e-5,
    )
