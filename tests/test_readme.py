"""The README runs as written: every Python block in a fresh interpreter, set-up command 1 and the
command walk-through in order, the MNIST commands where the file exists. Small settings:
``epochs=N`` becomes ``epochs=1`` (Python) and ``--epochs 1`` is given to ``iresnet train``
(commands); nothing else is changed."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MNIST_FILE = ROOT.parent / "shared" / "data" / "mnist_test_images.npz"
WALKTHROUGH_MARKER = "<!-- command walk-through: tests/test_readme.py runs these in order -->"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def quick(code):
    code = re.sub(r"\bepochs=\d+", "epochs=1", code)
    return re.sub(r"\bmax_trials=\d+", "max_trials=2", code)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def test_readme_has_python_blocks_and_a_walkthrough():
    assert len(python_blocks()) >= 6
    assert WALKTHROUGH_MARKER in README


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_python_block_runs_in_a_fresh_interpreter(index, tmp_path):
    code = quick(python_blocks()[index])
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"block {index}:\n{code}\n--- stderr ---\n{result.stderr[-4000:]}"
    )


def _iresnet_lines(block):
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith("iresnet "):
                commands.append(shlex.split(part)[1:])
    return commands


def setup_commands():
    """The ``iresnet`` commands of the set-up section (command 1's main job)."""
    section = README.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    return _iresnet_lines(section.split("```bash\n", 1)[1].split("```", 1)[0])


def walkthrough_commands():
    block = README.split(WALKTHROUGH_MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return _iresnet_lines(block)


def mnist_commands():
    """The MNIST paragraph's block: writing the file needs a network, training it does not."""
    section = README.split("**MNIST.**", 1)[1]
    return _iresnet_lines(section.split("```bash\n", 1)[1].split("```", 1)[0])


def _run_iresnet(argv, cwd):
    argv = list(argv)
    if argv[0] == "train":
        if "--epochs" in argv:
            argv[argv.index("--epochs") + 1] = "1"
        else:
            argv += ["--epochs", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "keras_iresnet.cli", *argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"iresnet {' '.join(argv)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.mark.slow
def test_command_walkthrough_runs_after_setup_and_keeps_runs_apart(tmp_path):
    """Set-up command 1, then the walk-through in order: separate runs, a classifier certify accepts."""
    for argv in setup_commands() + walkthrough_commands():
        _run_iresnet(argv, tmp_path)
    runs = sorted(p.name for p in (tmp_path / "iresnet_runs").iterdir())
    assert len(runs) == len(set(runs)) >= 6, runs
    assert "2d-moons" in runs and "2d-8gaussians" in runs


@pytest.mark.slow
def test_the_mnist_commands_train_from_the_file(tmp_path):
    if not MNIST_FILE.exists():
        pytest.skip(
            f"the MNIST test images are not at {MNIST_FILE} (only in the developers' checkout)"
        )
    (commands,) = mnist_commands()
    argv = [str(MNIST_FILE) if arg == "mnist_test_images.npz" else arg for arg in commands]
    _run_iresnet(argv + ["--n-train", "512"], tmp_path)
    assert (tmp_path / "iresnet_runs" / "mnist-mnist-file" / "model.keras").exists()


def test_the_readme_commands_parse():
    """Every iresnet command the README lists is accepted by the parser (no TensorFlow needed)."""
    from keras_iresnet.cli.args import build_parser

    commands = setup_commands() + walkthrough_commands() + mnist_commands()
    assert len(commands) >= 12
    for argv in commands:
        build_parser().parse_args(argv)


def test_ci_runs_the_readme_test_command_verbatim():
    """CI (``.ci/run``) must run exactly set-up command 2 of the README."""
    command = re.search(r'^pip install "\.\[test\]" && .*$', README, flags=re.M).group(0)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines, (command, ci_lines)
