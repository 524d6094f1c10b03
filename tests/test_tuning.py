"""keras-tuner search spaces (issue 6)."""
import keras
import keras_tuner
import numpy as np
import pytest

from keras_iresnet import data, tuning


@pytest.mark.parametrize("task", ["classify", "density"])
def test_random_search_completes_trials_and_best_model_reloads(tmp_path, task):
    if task == "classify":
        images, labels = data.digits_arrays()
        scaled = images.astype("float32") / 255.0
        stats = (float(scaled.mean()), float(scaled.std()))
        train = data.image_dataset(images[:256], labels[:256], "classify", 64, stats=stats)
        valid = data.image_dataset(images[256:384], labels[256:384], "classify", 128, shuffle=False, stats=stats)
        hypermodel = tuning.IResNetHyperModel("classify", (8, 8, 1), 10, blocks_range=(1, 1), hidden_choices=[8])
    else:
        train = data.density_2d_dataset("moons", 512, 128)
        valid = data.density_2d_dataset("moons", 256, 128, seed=1, shuffle=False)
        hypermodel = tuning.IResNetHyperModel("density", (2,), blocks_range=(1, 2), hidden_choices=[16])
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=hypermodel.objective, max_trials=2, directory=str(tmp_path), project_name=task,
        seed=0, overwrite=True,
    )
    tuner.search(train, validation_data=valid, epochs=1, verbose=0)
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
    assert reloaded.evaluate(valid, verbose=0, return_dict=True)[metric] == pytest.approx(score, rel=1e-3, abs=1e-3)


def test_objective_names_and_bad_arguments():
    assert tuning.IResNetHyperModel("classify", (8, 8, 1), 10).objective.name == "val_accuracy"
    objective = tuning.IResNetHyperModel("density", (2,)).objective
    assert objective.name == "val_bits_per_dim" and objective.direction == "min"
    with pytest.raises(ValueError, match="task"):
        tuning.IResNetHyperModel("segment", (2,))
    with pytest.raises(ValueError, match="num_classes"):
        tuning.IResNetHyperModel("hybrid", (8, 8, 1))
    with pytest.raises(ValueError, match="coeff_range"):
        tuning.IResNetHyperModel("density", (2,), coeff_range=(0.5, 1.2))


def test_cli_tune_smoke(tmp_path):
    import json

    from keras_iresnet import cli

    out = tmp_path / "tune"
    code = cli.main(["tune", "--task", "density", "--trials", "2", "--epochs", "1", "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "tuning.json").read_text())
    assert summary["objective"] == "val_bits_per_dim" and summary["statuses"] == ["COMPLETED", "COMPLETED"]
    assert (out / "best.keras").exists()
