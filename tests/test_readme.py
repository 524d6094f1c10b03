"""The README runs as written (issue 14): every Python block in a fresh interpreter, and the
command walk-through in order. Small settings: ``epochs=N`` becomes ``epochs=1`` (Python) and
``--epochs 1`` is added to ``iresnet train`` (commands); nothing else is changed."""
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
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"block {index}:\n{code}\n--- stderr ---\n{result.stderr[-4000:]}"


def walkthrough_commands():
    block = README.split(WALKTHROUGH_MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("iresnet "):
            commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.slow
def test_command_walkthrough_runs_in_order_and_keeps_runs_apart(tmp_path):
    """Run in order, the commands leave separate runs and an i-ResNet classifier certify accepts."""
    for argv in walkthrough_commands():
        if "--data-path" in argv:
            if not MNIST_FILE.exists():
                continue  # users without the shared MNIST file skip this line
            argv[argv.index("--data-path") + 1] = str(MNIST_FILE)
        if argv[0] == "train":
            if "--epochs" in argv:
                argv[argv.index("--epochs") + 1] = "1"
            else:
                argv += ["--epochs", "1"]
            if "--n-train" not in argv and "mnist-file" in argv:
                argv += ["--n-train", "512"]
        result = subprocess.run([sys.executable, "-m", "keras_iresnet_cli", *argv], cwd=tmp_path, env=_env(),
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"iresnet {' '.join(argv)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    runs = sorted(p.name for p in (tmp_path / "iresnet_runs").iterdir())
    assert len(runs) == len(set(runs)) >= 4, runs


def test_ci_runs_the_readme_test_command_verbatim():
    """CI (``.ci/run``) must run exactly set-up command 2 of the README."""
    command = re.search(r'^pip install "\.\[test\]" && .*$', README, flags=re.M).group(0)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines, (command, ci_lines)
