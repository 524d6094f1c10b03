"""keras_iresnet.recipes and keras_iresnet.runs: one home for configurations (issue 14)."""

import inspect

import keras
import numpy as np
import pytest

from keras_iresnet import data, models, recipes, runs


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
    assert model.get_config()  # serializable


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


def test_warmup_schedule_is_linear_then_constant():
    recipe = recipes.get("digits-density")
    optimizer = runs.make_optimizer(recipe)
    schedule = (
        optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    )
    target, warmup = recipe.optimizer["learning_rate"], recipe.warmup_steps
    values = [float(schedule(step)) for step in (0, warmup // 2, warmup, 10 * warmup)]
    np.testing.assert_allclose(values, [0.0, target / 2, target, target], rtol=1e-5, atol=1e-9)
    assert optimizer.clipnorm == recipe.optimizer["clipnorm"] and optimizer.use_ema


def test_splits_follow_the_recipe_and_do_not_overlap():
    recipe = recipes.get("digits-classifier")
    split = runs.load_split(recipe)
    images, labels = data.digits_arrays()
    assert len(split.x_train) == recipe.n_train and len(split.x_test) == recipe.n_test
    np.testing.assert_array_equal(split.x_train, images[: recipe.n_train])
    np.testing.assert_array_equal(split.x_test, images[len(images) - recipe.n_test :])
    assert split.stats == data.standardization_stats(
        images[: recipe.n_train]
    )  # training statistics only
    two_d = runs.load_split(recipes.get("2d"), seed=3)
    np.testing.assert_array_equal(
        two_d.x_train, data.sample_2d("moons", recipes.get("2d").n_train, 3)
    )
    np.testing.assert_array_equal(
        two_d.x_test, data.sample_2d("moons", recipes.get("2d").n_test, 4)
    )
    record = split.record()
    assert record["data"] == "digits" and record["n_train"] == recipe.n_train
    with pytest.raises(ValueError, match="too many"):
        runs.load_split(recipe, n_train=1700, n_test=200)
    with pytest.raises(ValueError, match="2-D density"):
        runs.load_split(recipe, data="moons")


def test_pipelines_standardize_with_training_statistics():
    recipe = recipes.get("digits-classifier")
    split = runs.load_split(recipe)
    train, test = runs.datasets(recipe, split)
    mean, std = split.stats
    x_test, y_test = next(iter(test))
    np.testing.assert_allclose(
        x_test.numpy(), (split.x_test[: len(x_test)] / 255.0 - mean) / std, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(y_test.numpy(), split.y_test[: len(y_test)])
    assert abs(float(np.mean(np.concatenate([x.numpy() for x, _ in train])))) < 1e-5


def test_train_runs_a_recipe_end_to_end():
    recipe = recipes.get("2d").replace(
        model={"blocks": 2, "block": {"hidden": 8}}, n_train=512, n_test=256
    )
    model, history, split = runs.train(recipe, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and "val_bits_per_dim" in history.history
    assert model.trunk.chain[0].num_blocks == 2 and split.is_2d


@pytest.mark.slow
def test_the_2d_recipe_reaches_the_benchmarked_moons_nll():
    """The recipe's own budget on moons reaches at least what the density benchmark reports for
    it (2.024 nats, mean of 2 seeds at the recipe's 15 epochs; benchmarks/README.md, Table 1)."""
    model, _, split = runs.train(recipes.get("2d"), verbose=0)
    nll = -float(np.mean(model.log_prob(split.x_test).numpy()))
    assert nll <= 2.024, nll


@pytest.mark.slow
def test_the_hybrid_recipe_learns_both():
    """>= 90 % test accuracy and bits/dim below the logit + per-pixel Gaussian closed form."""
    from tests.test_models import _closed_form_logit_gaussian

    recipe = recipes.get("digits-hybrid")
    model, _, split = runs.train(recipe, verbose=0)
    results = model.evaluate(runs.datasets(recipe, split)[1], verbose=0, return_dict=True)
    rng = np.random.default_rng(0)
    train = (split.x_train.astype("float64") + rng.uniform(size=split.x_train.shape)) / 256.0
    test = (split.x_test.astype("float64") + rng.uniform(size=split.x_test.shape)) / 256.0
    closed = _closed_form_logit_gaussian(train, test, recipe.model["logit"])
    assert results["accuracy"] >= 0.90, results
    assert results["bits_per_dim"] < closed, (results, closed)


@pytest.mark.slow
def test_the_image_recipe_learns_dependencies_and_keeps_the_ema_weights(tmp_path):
    """A few epochs of "digits-density": below the closed form of independent pixels; the EMA
    weights are the ones in the model (evaluated and saved)."""
    from tests.test_models import _closed_form_logit_gaussian

    recipe = recipes.get("digits-density")
    model, _, split = runs.train(recipe, epochs=6, verbose=0)
    results = model.evaluate(runs.datasets(recipe, split)[1], verbose=0, return_dict=True)
    rng = np.random.default_rng(0)
    train = (split.x_train.astype("float64") + rng.uniform(size=split.x_train.shape)) / 256.0
    test = (split.x_test.astype("float64") + rng.uniform(size=split.x_test.shape)) / 256.0
    closed = _closed_form_logit_gaussian(train, test, recipe.model["logit"])
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


@pytest.mark.parametrize("name", ["2d", "digits-density"])
def test_a_given_learning_rate_replaces_the_recipes_and_keeps_its_warm_up(name):
    recipe = recipes.get(name)
    optimizer = runs.make_optimizer(recipe, 0.0321)
    assert runs.peak_learning_rate(optimizer) == pytest.approx(0.0321)
    assert runs.peak_learning_rate(runs.make_optimizer(recipe)) == pytest.approx(
        recipe.optimizer["learning_rate"]
    )
    if recipe.warmup_steps:
        schedule = optimizer.get_config()["learning_rate"]
        assert schedule["class_name"] == "CosineDecay"
        assert schedule["config"]["warmup_steps"] == recipe.warmup_steps
    model = runs.build_model(
        recipe.replace(model={"blocks": 2 if name == "2d" else (1,)}),
        input_shape=(2,) if name == "2d" else (8, 8, 1),
    )
    runs.compile_model(model, recipe, learning_rate=0.0321)
    assert runs.peak_learning_rate(model.optimizer) == pytest.approx(0.0321)


def test_train_uses_the_given_learning_rate():
    recipe = recipes.get("2d").replace(
        model={"blocks": 2, "block": {"hidden": 8}}, n_train=256, n_test=64
    )
    model, _, _ = runs.train(recipe, epochs=1, learning_rate=0.0456, verbose=0)
    assert runs.peak_learning_rate(model.optimizer) == pytest.approx(0.0456)


def test_the_validation_split_comes_from_the_training_examples_only():
    recipe = recipes.get("digits-classifier")
    split = runs.load_split(recipe)
    search = runs.validation_split(split, 0.25)
    assert len(search.x_train) + len(search.x_test) == len(split.x_train)
    np.testing.assert_array_equal(np.concatenate([search.x_train, search.x_test]), split.x_train)
    np.testing.assert_array_equal(np.concatenate([search.y_train, search.y_test]), split.y_train)
    assert search.stats == split.stats
    with pytest.raises(ValueError, match="fraction"):
        runs.validation_split(split, 1.5)
