"""The ``iresnet`` command: run folders, run records, one-line errors, quiet start-up."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_iresnet import cli, runs
from keras_iresnet.testing import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small runs: what these tests check (folders, records, errors) does not depend on the size.
SMALL = ["--epochs", "1", "--blocks", "2", "--hidden", "8", "--n-train", "512", "--quiet"]


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
    assert (
        cli.main(["train", "--task", "density", "--data", "mnist-file", "--data-path", str(folder)])
        == 2
    )
    assert "is a folder" in _error_line(capsys)
    assert cli.main(["train", "--task", "density", "--data", "nosuchdata"]) == 2
    err = _error_line(capsys)
    assert (
        "moons" in err and "digits" in err and "mnist-file" in err
    )  # the names valid for the task
    assert cli.main(["train", "--task", "classify", "--data", "moons"]) == 2
    assert "--task classify" in _error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser, before TensorFlow
        cli.main(["train", "--recipe", "nope"])
    assert exit_info.value.code == 2 and "the recipes are" in _error_line(capsys)
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
    assert (runs_dir / "2d-moons" / "samples_n16_t1_seed0.png").exists()
    assert cli.main(["invert", "--run", str(runs_dir / "2d-moons"), "--n", "32"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["max_relative_error"] < 1e-5


def test_classifier_runs_vanilla_twin_and_certify(workdir, capsys):
    assert (
        cli.main(
            [
                "train",
                "--task",
                "classify",
                "--epochs",
                "1",
                "--blocks",
                "1",
                "--hidden",
                "8",
                "--n-train",
                "256",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "train",
                "--task",
                "classify",
                "--vanilla",
                "--epochs",
                "1",
                "--blocks",
                "1",
                "--hidden",
                "8",
                "--n-train",
                "256",
                "--quiet",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in (workdir / "iresnet_runs").iterdir())
    assert names == ["digits-classifier-digits", "digits-classifier-digits-vanilla"]
    metrics = json.loads(
        (workdir / "iresnet_runs" / "digits-classifier-digits" / "metrics.json").read_text()
    )
    assert metrics["reconstruction_error"]["max"] < 1e-5 and "accuracy" in metrics["test"]
    capsys.readouterr()
    assert cli.main(["certify", "--run", "iresnet_runs/digits-classifier-digits"]) == 0
    assert cli.main(["certify", "--run", "iresnet_runs/digits-classifier-digits-vanilla"]) == 1
    assert "NOT a proven contraction" in capsys.readouterr().out
    assert (
        cli.main(["evaluate", "--run", "iresnet_runs/digits-classifier-digits", "--data", "moons"])
        == 2
    )
    assert "takes images" in _error_line(capsys)
    assert cli.main(["sample", "--run", "iresnet_runs/digits-classifier-digits"]) == 2
    assert "density model" in _error_line(capsys)


def test_hybrid_run_reports_accuracy(workdir, capsys):
    assert (
        cli.main(
            [
                "train",
                "--task",
                "hybrid",
                "--epochs",
                "1",
                "--blocks",
                "1",
                "--hidden",
                "8",
                "--n-train",
                "256",
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads(
        (workdir / "iresnet_runs" / "digits-hybrid-digits" / "metrics.json").read_text()
    )
    assert {"accuracy", "bits_per_dim"} <= set(metrics["test"])
    capsys.readouterr()
    assert (
        cli.main(
            [
                "evaluate",
                "--run",
                "iresnet_runs/digits-hybrid-digits",
                "--terms",
                "10",
                "--probes",
                "2",
            ]
        )
        == 0
    )
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
    argv = [
        "train",
        "--task",
        "density",
        "--epochs",
        "3",
        "--blocks",
        "2",
        "--hidden",
        "8",
        "--n-train",
        "512",
        "--quiet",
        "--logdir",
        str(workdir / "logs"),
    ]
    assert cli.main(argv) == 2
    assert "simulated crash" in _error_line(capsys)
    assert (workdir / "iresnet_runs" / "2d-moons" / "backup").exists()
    monkeypatch.setattr(runs, "fit_arguments", original)
    assert cli.main(argv) == 2  # the interrupted run is not replaced silently either
    assert "--resume" in _error_line(capsys)
    assert cli.main(argv + ["--resume"]) == 0
    metrics = json.loads((workdir / "iresnet_runs" / "2d-moons" / "metrics.json").read_text())
    assert (
        len(metrics["history"]["loss"]) == 3
    )  # the whole history: epoch 1 from before the crash, 2 and 3 after
    assert any(path.name.startswith("events") for path in (workdir / "logs").rglob("*"))


# -- the launcher ----------------------------------------------------------------------------
def test_help_does_not_import_tensorflow():
    code = (
        "import sys, keras_iresnet, keras_iresnet.cli; keras_iresnet.cli.build_parser(); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.split() == ["False", "False"]
    result = subprocess.run(
        [sys.executable, "-m", "keras_iresnet.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0 and "train" in result.stdout


def test_an_unknown_recipe_is_refused_before_tensorflow_loads():
    code = (
        "import sys\n"
        "from keras_iresnet.cli import main\n"
        "try:\n"
        "    main(['train', '--recipe', 'nope'])\n"
        "except SystemExit as exit_info:\n"
        "    print(exit_info.code, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.split() == ["2", "False"], result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert "'nope' is not a recipe" in line and "digits-density" in line


def test_start_up_prints_nothing_on_stderr():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_iresnet.cli", "recipes"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0 and "digits-classifier" in result.stdout
    assert result.stderr == "", result.stderr


# -- what a careless user does ------------------------------------------------------------------
def _saved_learning_rate(path):
    return runs.peak_learning_rate(keras.models.load_model(path).optimizer)


def test_the_learning_rate_reaches_the_optimizer_with_and_without_warm_up(workdir, capsys):
    assert (
        cli.main(
            ["train", "--task", "density", "--learning-rate", "0.0123", "--out", "plain"] + SMALL
        )
        == 0
    )
    assert _saved_learning_rate(workdir / "plain" / "model.keras") == pytest.approx(0.0123)
    assert json.loads((workdir / "plain" / "run.json").read_text())["training"][
        "learning_rate"
    ] == pytest.approx(0.0123)
    warm = [
        "train",
        "--recipe",
        "digits-density",
        "--learning-rate",
        "0.0007",
        "--out",
        "warm",
    ]
    assert cli.main(warm + SMALL) == 0
    optimizer = keras.models.load_model(workdir / "warm" / "model.keras").optimizer
    schedule = optimizer.get_config()["learning_rate"]["config"]
    assert schedule["warmup_target"] == pytest.approx(0.0007) and schedule["warmup_steps"] == 100


def test_a_diverging_learning_rate_stops_with_one_line(workdir, capsys):
    assert (
        cli.main(["train", "--task", "density", "--learning-rate", "1e9", "--out", "wild"] + SMALL)
        == 2
    )
    err = _error_line(capsys)
    assert "diverged" in err and "--learning-rate" in err


def test_overwrite_never_touches_a_folder_that_is_not_a_run(workdir, capsys):
    mine = workdir / "mywork"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes")
    (mine / "figure.png").write_bytes(b"my own figure")
    assert cli.main(["train", "--task", "density", "--out", "mywork", "--overwrite"] + SMALL) == 2
    assert "not an iresnet run" in _error_line(capsys)
    assert sorted(p.name for p in mine.iterdir()) == ["figure.png", "notes.txt"]
    assert (mine / "figure.png").read_bytes() == b"my own figure"
    (workdir / "a_file").write_text("x")
    assert cli.main(["train", "--task", "density", "--out", "a_file"] + SMALL) == 2
    assert "is a file" in _error_line(capsys)


def test_overwrite_replaces_only_the_files_of_a_run(workdir, capsys):
    assert cli.main(["train", "--task", "density", "--out", "run"] + SMALL) == 0
    (workdir / "run" / "my_analysis.txt").write_text("keep me")
    first = (workdir / "run" / "model.keras").stat().st_mtime_ns
    assert cli.main(["train", "--task", "density", "--out", "run", "--overwrite"] + SMALL) == 0
    assert (workdir / "run" / "my_analysis.txt").read_text() == "keep me"
    assert (workdir / "run" / "model.keras").stat().st_mtime_ns != first


@pytest.mark.parametrize("task", ["density", "hybrid"])
def test_density_and_hybrid_recipes_train_under_jit(workdir, capsys, task):
    argv = ["train", "--task", task, "--jit", "--batch-size", "64"] + SMALL
    assert cli.main(argv) == 0, capsys.readouterr().err
    record = json.loads(next((workdir / "iresnet_runs").iterdir()).joinpath("run.json").read_text())
    assert record["training"]["jit"] is True


def test_ctrl_c_is_one_line_and_resume_keeps_the_whole_history(workdir, monkeypatch, capsys):
    class _CtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    original = runs.fit_arguments

    def interrupted(*args, **kwargs):
        arguments = original(*args, **kwargs)
        arguments["callbacks"].append(_CtrlC())
        return arguments

    monkeypatch.setattr(runs, "fit_arguments", interrupted)
    argv = [
        "train",
        "--task",
        "density",
        "--epochs",
        "4",
        "--blocks",
        "2",
        "--hidden",
        "8",
        "--n-train",
        "512",
        "--quiet",
    ]
    assert cli.main(argv) == 2
    err = _error_line(capsys)
    assert "interrupted" in err and "--resume" in err
    monkeypatch.setattr(runs, "fit_arguments", original)
    assert cli.main(argv + ["--resume"]) == 0
    metrics = json.loads((workdir / "iresnet_runs" / "2d-moons" / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and len(metrics["history"]["loss"]) == 4
    assert len(metrics["history"]["val_loss"]) == 4


def test_ctrl_c_in_the_launcher_is_one_line(monkeypatch, capsys):
    import keras_iresnet.cli as launcher

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(launcher, "_commands", interrupt)  # Ctrl-C while TensorFlow loads
    assert launcher.main(["recipes"]) == 2
    assert "interrupted" in _error_line(capsys)


def test_data_options_that_do_not_apply_are_refused(workdir, capsys):
    text = workdir / "images.txt"
    text.write_text("not an archive")
    assert cli.main(["train", "--task", "density", "--data-path", str(text)] + SMALL) == 2
    assert "--data-path applies to --data mnist-file" in _error_line(capsys)
    assert (
        cli.main(
            ["train", "--task", "density", "--data", "mnist-file", "--data-path", str(text)] + SMALL
        )
        == 2
    )
    err = _error_line(capsys)
    assert str(text) in err and "not a readable .npz" in err and "pickle" not in err
    assert cli.main(["train", "--task", "density", "--data-dir", str(workdir)] + SMALL) == 2
    assert "--data-dir applies to --data tfds:NAME" in _error_line(capsys)


def test_sample_never_overwrites_an_earlier_figure(workdir, capsys):
    assert cli.main(["train", "--task", "density", "--out", "run"] + SMALL) == 0
    assert cli.main(["sample", "--run", "run", "--n", "16", "--out", "mine.png"]) == 0
    before = (workdir / "mine.png").read_bytes()
    assert (
        cli.main(
            ["sample", "--run", "run", "--n", "16", "--temperature", "0.5", "--out", "mine.png"]
        )
        == 2
    )
    assert "--overwrite" in _error_line(capsys)
    assert (workdir / "mine.png").read_bytes() == before
    assert (
        cli.main(
            [
                "sample",
                "--run",
                "run",
                "--n",
                "16",
                "--temperature",
                "0.5",
                "--out",
                "mine.png",
                "--overwrite",
            ]
        )
        == 0
    )


def _strict_load(path):
    def refuse(name):
        raise ValueError(f"{path}: {name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_every_json_the_cli_writes_is_strict(workdir, capsys):
    assert cli.main(["train", "--task", "density", "--out", "run"] + SMALL) == 0
    for name in ("run.json", "metrics.json"):
        assert _strict_load(workdir / "run" / name)


def test_version_and_every_option_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("iresnet ")
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001
    missing = [
        f"{name} {action.option_strings}"
        for name, sub in commands.items()
        for action in sub._actions
        if action.option_strings and not action.help
    ]
    assert missing == []


def _multiworker_env(index, ports):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    env = dict(
        os.environ,
        TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_multiworker_training_from_the_command_line(tmp_path):
    """Two local worker processes: both finish, the chief writes --out, worker 1 its own folder,
    same weights."""
    ports = free_ports(2)
    argv = [
        sys.executable,
        "-m",
        "keras_iresnet.cli",
        "train",
        "--task",
        "density",
        "--strategy",
        "multiworker",
        "--batch-size",
        "128",
        "--out",
        "run",
    ] + SMALL
    procs = [
        subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=_multiworker_env(i, ports),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    chief = keras.models.load_model(tmp_path / "run" / "model.keras")
    other = keras.models.load_model(tmp_path / "run-worker1" / "model.keras")
    for a, b in zip(chief.get_weights(), other.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 1 and "val_loss" in metrics["history"]


def test_a_folder_that_is_not_a_run_is_named_as_such(tmp_path, capsys):
    """--run on a folder holding a model.keras but no run record of ours: one line, exit 2."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.keras").write_text("my own file")
    assert cli.main(["evaluate", "--run", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a run folder of 'iresnet train'" in err[0], err
    assert (folder / "model.keras").read_text() == "my own file"


def test_a_warning_during_a_command_prints_as_one_line():
    """A library warning (e.g. RefineSpectralNorm's at the end of a run) prints as
    ``iresnet: warning: ...``, without a source path; the format is restored after the command."""
    code = (
        "import sys, warnings\n"
        "from keras_iresnet import cli\n"
        "from keras_iresnet.cli import commands\n"
        "commands.run = lambda args: (warnings.warn('an estimate moved'), 0)[1]\n"
        "before = warnings.formatwarning\n"
        "code = cli.main(['recipes'])\n"
        "assert warnings.formatwarning is before\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "estimate moved" in line]
    assert lines == ["iresnet: warning: an estimate moved"], result.stderr[-2000:]
    assert "UserWarning" not in result.stderr
