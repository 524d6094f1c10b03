"""keras_iresnet.experiments.runs: what a recipe needs to run -- data splits without overlap,
pipelines with training statistics, the optimizer with the given learning rate and the recipe's
warm-up, training end to end, strict JSON and the run folders of the command line."""

import numpy as np
import pytest

from keras_iresnet import data, recipes, runs


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


def test_pipelines_standardize_with_training_statistics():
    recipe = recipes.get("digits-classifier")
    split = runs.load_split(recipe)
    train, test = runs.datasets(recipe, split, drop_remainder=False)  # every training example
    mean, std = split.stats
    x_test, y_test = next(iter(test))
    np.testing.assert_allclose(
        x_test.numpy(), (split.x_test[: len(x_test)] / 255.0 - mean) / std, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(y_test.numpy(), split.y_test[: len(y_test)])
    assert abs(float(np.mean(np.concatenate([x.numpy() for x, _ in train])))) < 1e-5


def _batch_sizes(dataset):
    return [len(batch[0] if isinstance(batch, tuple) else batch) for batch in dataset]


@pytest.mark.parametrize("name", ["digits-classifier", "2d"])
def test_training_batches_are_full_when_a_full_one_exists(name):
    """The last partial batch of an epoch is dropped (one traced step, one XLA batch size),
    unless the split holds less than one batch; the test split keeps every example."""
    recipe = recipes.get(name)
    split = runs.load_split(recipe)
    train, test = runs.datasets(recipe, split)
    sizes = _batch_sizes(train)
    assert len(split.x_train) % recipe.batch_size != 0  # there is a remainder to drop
    assert sizes == [recipe.batch_size] * (len(split.x_train) // recipe.batch_size)
    assert len(sizes) == runs.steps_per_epoch(recipe, split)
    assert sum(_batch_sizes(test)) == len(split.x_test)
    small = runs.load_split(recipe, n_train=recipe.batch_size - 3)
    assert _batch_sizes(runs.datasets(recipe, small)[0]) == [recipe.batch_size - 3]
    assert runs.steps_per_epoch(recipe, small) == 1
    assert runs.training_batches(10, 4) == (2, True) and runs.training_batches(3, 4) == (1, False)


def test_train_runs_a_recipe_end_to_end_with_the_given_learning_rate():
    recipe = recipes.get("2d").replace(
        model={"blocks": 2, "block": {"hidden": 8}}, n_train=512, n_test=256
    )
    model, history, split = runs.train(recipe, epochs=2, learning_rate=0.0456, verbose=0)
    assert len(history.history["loss"]) == 2 and "val_bits_per_dim" in history.history
    assert model.trunk.chain[0].num_blocks == 2 and split.is_2d and len(split.x_train) == 512
    assert runs.peak_learning_rate(model.optimizer) == pytest.approx(0.0456)
