"""The ``iresnet`` command (issue 14): run folders, run records, one-line errors, quiet start-up."""
import json
import os
import subprocess
import sys
import time

import keras
import pytest

from keras_iresnet import cli, runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--epochs", "1", "--blocks", "2", "--hidden", "8", "--quiet"]


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("iresnet: error:") and "\n" not in err, err
    return err


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- arguments are validated at parse time: one line, exit code 2 -----------------------------
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--task", "density", "--epochs", "0"], "--epochs"),
        (["train", "--task", "density", "--epochs", "-3"], "--epochs"),
        (["train", "--task", "density", "--batch-size", "0"], "--batch-size"),
        (["train", "--task", "density", "--hidden", "0"], "--hidden"),
        (["train", "--task", "density", "--learning-rate", "-1"], "--learning-rate"),
        (["train", "--task", "density", "--coeff", "1.5"], "--coeff"),
        (["train", "--task", "density", "--blocks", "x"], "--blocks"),
        (["sample", "--run", "r", "--n", "0"], "--n"),
        (["sample", "--run", "r", "--n", "-5"], "--n"),
        (["sample", "--run", "r", "--temperature", "0"], "--temperature"),
        (["evaluate", "--run", "r", "--terms", "0"], "--terms"),
        ([], "command"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert expected in _error_line(capsys)


def test_bad_inputs_give_one_line_and_exit_code_2(workdir, capsys):
    folder = workdir / "a_folder"
    folder.mkdir()
    assert cli.main(["train", "--task", "density", "--data", "mnist-file", "--data-path", str(folder)]) == 2
    assert "is a folder" in _error_line(capsys)
    assert cli.main(["train", "--task", "density", "--data", "nosuchdata"]) == 2
    err = _error_line(capsys)
    assert "moons" in err and "digits" in err and "mnist-file" in err  # the names valid for the task
    assert cli.main(["train", "--task", "classify", "--data", "moons"]) == 2
    assert "--task classify" in _error_line(capsys)
    assert cli.main(["train", "--recipe", "nope"]) == 2
    assert "the recipes are" in _error_line(capsys)
    truncated = workdir / "broken.keras"
    truncated.write_bytes(b"PK\x03\x04 truncated")
    assert cli.main(["certify", "--model", str(truncated)]) == 2
    assert "not a valid .keras model file" in _error_line(capsys)
    assert cli.main(["certify", "--model", str(workdir / "missing.keras")]) == 2
    assert "does not exist" in _error_line(capsys)
    assert cli.main(["evaluate", "--model", str(folder)]) == 2
    assert "is a folder" in _error_line(capsys)
    assert cli.main(["train", "--task", "density", "--resume"] + SMALL) == 2
    assert "no interrupted run" in _error_line(capsys)


# -- runs never overwrite each other; the run record drives the other commands -----------------
def test_runs_are_kept_apart_and_remember_their_data(workdir, capsys):
    assert cli.main(["train", "--task", "density"] + SMALL) == 0
    assert cli.main(["train", "--task", "density", "--data", "8gaussians"] + SMALL) == 0
    runs_dir = workdir / "iresnet_runs"
    assert sorted(p.name for p in runs_dir.iterdir()) == ["2d-8gaussians", "2d-moons"]
    for name in ("model.keras", "best.keras", "run.json", "metrics.json", "figure.png"):
        assert (runs_dir / "2d-8gaussians" / name).stat().st_size > 0
    record = json.loads((runs_dir / "2d-8gaussians" / "run.json").read_text())
    assert record["recipe"] == "2d" and record["split"]["data"] == "8gaussians"
    capsys.readouterr()
    # evaluate scores the 8-gaussians model on its own test split by default
    assert cli.main(["evaluate", "--run", str(runs_dir / "2d-8gaussians")]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    trained = json.loads((runs_dir / "2d-8gaussians" / "metrics.json").read_text())["test"]
    assert evaluated["bits_per_dim"] == pytest.approx(trained["bits_per_dim"], abs=1e-4)
    # another data set is an explicit choice, said on stderr
    assert cli.main(["evaluate", "--run", str(runs_dir / "2d-8gaussians"), "--data", "moons"]) == 0
    assert "trained on 8gaussians" in capsys.readouterr().err
    # an existing run is never replaced silently
    assert cli.main(["train", "--task", "density"] + SMALL) == 2
    assert "--overwrite" in _error_line(capsys)
    assert cli.main(["train", "--task", "density", "--overwrite"] + SMALL) == 0
    assert cli.main(["sample", "--run", str(runs_dir / "2d-moons"), "--n", "16"]) == 0
    assert (runs_dir / "2d-moons" / "samples.png").exists()
    assert cli.main(["invert", "--run", str(runs_dir / "2d-moons"), "--n", "32"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["max_relative_error"] < 1e-5


def test_classifier_runs_vanilla_twin_and_certify(workdir, capsys):
    assert cli.main(["train", "--task", "classify", "--epochs", "1", "--blocks", "1", "--hidden", "8", "--quiet"]) == 0
    assert cli.main(["train", "--task", "classify", "--vanilla", "--epochs", "1", "--blocks", "1", "--hidden", "8",
                     "--quiet"]) == 0
    names = sorted(p.name for p in (workdir / "iresnet_runs").iterdir())
    assert names == ["digits-classifier-digits", "digits-classifier-digits-vanilla"]
    metrics = json.loads((workdir / "iresnet_runs" / "digits-classifier-digits" / "metrics.json").read_text())
    assert metrics["reconstruction_error"]["max"] < 1e-5 and "accuracy" in metrics["test"]
    capsys.readouterr()
    assert cli.main(["certify", "--run", "iresnet_runs/digits-classifier-digits"]) == 0
    assert cli.main(["certify", "--run", "iresnet_runs/digits-classifier-digits-vanilla"]) == 1
    assert "NOT a proven contraction" in capsys.readouterr().out
    assert cli.main(["evaluate", "--run", "iresnet_runs/digits-classifier-digits", "--data", "moons"]) == 2
    assert "takes images" in _error_line(capsys)
    assert cli.main(["sample", "--run", "iresnet_runs/digits-classifier-digits"]) == 2
    assert "density model" in _error_line(capsys)


def test_hybrid_run_reports_accuracy(workdir, capsys):
    assert cli.main(["train", "--task", "hybrid", "--epochs", "1", "--blocks", "1", "--hidden", "8", "--quiet"]) == 0
    metrics = json.loads((workdir / "iresnet_runs" / "digits-hybrid-digits" / "metrics.json").read_text())
    assert {"accuracy", "bits_per_dim"} <= set(metrics["test"])
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", "iresnet_runs/digits-hybrid-digits", "--terms", "10", "--probes", "2"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"accuracy", "bits_per_dim", "bits_per_dim_stderr"} <= set(results)


class _Crash(keras.callbacks.Callback):
    """Crashes at the end of the second epoch (the backup of the first one exists by then)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("simulated crash")


def test_resume_continues_an_interrupted_run_and_tensorboard_logs(workdir, monkeypatch, capsys):
    original = runs.fit_arguments

    def crashing(*args, **kwargs):
        arguments = original(*args, **kwargs)
        arguments["callbacks"].append(_Crash())
        return arguments

    monkeypatch.setattr(runs, "fit_arguments", crashing)
    argv = ["train", "--task", "density", "--epochs", "3", "--blocks", "2", "--hidden", "8", "--quiet",
            "--logdir", str(workdir / "logs")]
    assert cli.main(argv) == 2
    assert "simulated crash" in _error_line(capsys)
    assert (workdir / "iresnet_runs" / "2d-moons" / "backup").exists()
    monkeypatch.setattr(runs, "fit_arguments", original)
    assert cli.main(argv) == 2  # the interrupted run is not replaced silently either
    assert "--resume" in _error_line(capsys)
    assert cli.main(argv + ["--resume"]) == 0
    metrics = json.loads((workdir / "iresnet_runs" / "2d-moons" / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 2  # epochs 2 and 3: epoch 1 was restored, not redone
    assert any(path.name.startswith("events") for path in (workdir / "logs").rglob("*"))


# -- the launcher ----------------------------------------------------------------------------
def test_help_is_fast_and_does_not_import_tensorflow():
    code = ("import sys, keras_iresnet_cli; keras_iresnet_cli._load_parser(); "
            "print('tensorflow' in sys.modules, 'keras_iresnet' in sys.modules)")
    start = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"] and time.time() - start < 10
    result = subprocess.run([sys.executable, "-m", "keras_iresnet_cli", "--help"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0 and "train" in result.stdout


def test_start_up_prints_nothing_on_stderr():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "keras_iresnet_cli", "recipes"], capture_output=True, text=True,
                            cwd=ROOT, env=env)
    assert result.returncode == 0 and "digits-classifier" in result.stdout
    assert result.stderr == "", result.stderr
