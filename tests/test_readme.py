"""The README runs as written: every Python block in a fresh interpreter, set-up command 1 and the
command walk-through in order, the MNIST commands where the file exists.

Every line of the README's bash blocks is either an ``iresnet`` command that these tests run or
one of NOT_RUN, each with the reason it is not run here; any other line fails (nothing is
dropped silently). The ``iresnet`` commands run in this process through
``keras_iresnet.cli.main``, the function the ``iresnet`` script calls (test_cli.py checks the
script's own start-up). Small settings, and nothing else changed: ``epochs=N`` becomes
``epochs=1`` and ``max_trials=N`` ``max_trials=2`` (Python); ``iresnet train`` gets
``--epochs 1``, ``iresnet tune`` ``--trials 2 --epochs 1``, and every recipe trains on at most
512 examples (commands)."""

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
MNIST_DOWNLOAD = (
    "import keras, numpy as np; (_, _), (x, _) = keras.datasets.mnist.load_data(); "
    "np.savez('mnist_test_images.npz', data=x)"
)

#: The README's shell commands that are not ``iresnet`` commands, and why no test runs them.
NOT_RUN = {
    ("pip", "install", "."): "set-up command 1's install: the tests run in an installation",
    ("pip", "install", ".[test]"): "set-up command 2's install: the tests run in an installation",
    ("python", "-m", "pytest", "-q"): (
        "set-up command 2 runs this suite (test_ci_runs_the_readme_test_command_verbatim: CI "
        "runs it)"
    ),
    ("python", "-c", MNIST_DOWNLOAD): (
        "downloads MNIST (needs a network); the developers' copy of the file stands in for it"
    ),
}


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def bash_blocks():
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def quick(code):
    code = re.sub(r"\bepochs=\d+", "epochs=1", code)
    return re.sub(r"\bmax_trials=\d+", "max_trials=2", code)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def shell_commands(block):
    """Every command of a bash block, as its words (comments removed, ``a && b`` is two)."""
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(tuple(words[:cut]))
            words = words[cut + 1 :]
    return commands


def iresnet_commands(block):
    """The ``iresnet`` commands of a block (arguments only); every other command must be one
    of NOT_RUN."""
    result = []
    for words in shell_commands(block):
        if words[0] == "iresnet":
            result.append(list(words[1:]))
        else:
            assert words in NOT_RUN, (
                f"README command neither run nor in NOT_RUN: {shlex.join(words)}"
            )
    return result


def setup_block():
    section = README.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def walkthrough_block():
    return README.split(WALKTHROUGH_MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]


def mnist_block():
    """The MNIST paragraph's block: writing the file needs a network, training it does not."""
    section = README.split("**MNIST.**", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_readme_has_python_blocks_and_a_walkthrough():
    assert len(python_blocks()) >= 6
    assert WALKTHROUGH_MARKER in README


def test_every_shell_command_is_run_or_explained():
    """The three bash blocks are the set-up, the walk-through and MNIST; every command in them
    is an iresnet command or explained in NOT_RUN, and every NOT_RUN entry is in the README."""
    assert sorted(bash_blocks()) == sorted([setup_block(), walkthrough_block(), mnist_block()])
    seen = set()
    for block in bash_blocks():
        iresnet_commands(block)
        seen |= set(shell_commands(block))
    assert set(NOT_RUN) <= seen, set(NOT_RUN) - seen
    with pytest.raises(AssertionError, match="neither run nor in NOT_RUN"):
        iresnet_commands("iresnet recipes && rm -rf iresnet_runs  # a new line\n")


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


def _set(argv, option, value):
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]


@pytest.fixture
def iresnet(tmp_path, monkeypatch, capsys):
    """Run an ``iresnet`` command (its arguments) in ``tmp_path`` with the small settings."""
    from keras_iresnet import cli, recipes

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRESNET_DEBUG", "1")  # an unexpected error shows its traceback
    get, for_task = recipes.get, recipes.for_task

    def small(recipe):
        return recipe.replace(n_train=min(recipe.n_train or 512, 512))

    monkeypatch.setattr(recipes, "get", lambda name: small(get(name)))
    monkeypatch.setattr(recipes, "for_task", lambda task, data: small(for_task(task, data)))

    def run(argv):
        argv = list(argv)
        if argv[0] == "train":
            _set(argv, "--epochs", "1")
        elif argv[0] == "tune":
            _set(argv, "--trials", "2")
            _set(argv, "--epochs", "1")
        code = cli.main(argv)
        output = capsys.readouterr()
        assert code == 0, f"iresnet {shlex.join(argv)}\n{output.out[-2000:]}\n{output.err[-3000:]}"

    return run


@pytest.mark.slow
def test_command_walkthrough_runs_after_setup_and_keeps_runs_apart(iresnet, tmp_path):
    """Set-up command 1, then the walk-through in order: separate runs, a classifier certify
    accepts."""
    commands = iresnet_commands(setup_block()) + iresnet_commands(walkthrough_block())
    for argv in commands:
        iresnet(argv)
    runs = sorted(p.name for p in (tmp_path / "iresnet_runs").iterdir())
    assert len(runs) == len(set(runs)) >= 6, runs
    assert "2d-moons" in runs and "2d-8gaussians" in runs


@pytest.mark.slow
def test_the_mnist_commands_train_from_the_file(iresnet, tmp_path):
    if not MNIST_FILE.exists():
        pytest.skip(
            f"the MNIST test images are not at {MNIST_FILE} (only in the developers' checkout)"
        )
    (command,) = iresnet_commands(mnist_block())
    iresnet([str(MNIST_FILE) if arg == "mnist_test_images.npz" else arg for arg in command])
    assert (tmp_path / "iresnet_runs" / "mnist-mnist-file" / "model.keras").exists()


def test_the_readme_commands_parse():
    """Every iresnet command the README lists is accepted by the parser (no TensorFlow needed)."""
    from keras_iresnet.cli.args import build_parser

    commands = [argv for block in bash_blocks() for argv in iresnet_commands(block)]
    assert len(commands) >= 12
    for argv in commands:
        build_parser().parse_args(argv)


def test_ci_runs_the_readme_test_command_verbatim():
    """CI (``.ci/run``) must run exactly set-up command 2 of the README."""
    command = re.search(r'^pip install "\.\[test\]" && .*$', README, flags=re.M).group(0)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines, (command, ci_lines)
