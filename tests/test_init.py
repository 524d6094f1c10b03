"""keras_iresnet/__init__.py: the lazy package. Importing it loads neither Keras nor TensorFlow;
importing Keras (before or after) registers the package's classes, so load_model finds them;
every public name resolves."""

import importlib
import os
import pathlib
import subprocess
import sys

import keras
import pytest

import keras_iresnet as kir

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(code, cwd=None):
    """Run ``code`` in a fresh interpreter (this checkout first on the path); its stdout lines."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("KERAS_BACKEND", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()


def test_import_loads_neither_keras_nor_tensorflow():
    out = _run(
        "import os, sys, keras_iresnet; "
        "print('keras' in sys.modules, 'tensorflow' in sys.modules, os.environ['KERAS_BACKEND'])"
    )
    assert out == ["False", "False", "tensorflow"]


@pytest.fixture(scope="module")
def saved_flow(tmp_path_factory):
    """A saved IResNetFlow and its log-densities of four points."""
    path = tmp_path_factory.mktemp("init") / "flow.keras"
    model = kir.models.iresnet_flow((2,), blocks=2, hidden=8)
    model.save(path)
    points = [[0.1, -0.2], [1.0, 0.5], [-1.5, 0.3], [0.0, 0.0]]
    return path, points, model.log_prob(keras.ops.convert_to_tensor(points)).numpy()


@pytest.mark.parametrize(
    "imports", ["import keras_iresnet; import keras", "import keras; import keras_iresnet"]
)
def test_load_model_finds_the_classes_after_importing_keras(saved_flow, imports):
    """Only the package and Keras are imported (no attribute of the package is touched): the
    classes registered themselves when Keras loaded, whatever the order."""
    path, points, expected = saved_flow
    out = _run(
        f"{imports}; model = keras.models.load_model({str(path)!r}); "
        "print(type(model).__name__, "
        f"*model.log_prob(keras.ops.convert_to_tensor({points})).numpy())"
    )
    assert out[0] == "IResNetFlow"
    assert [float(v) for v in out[1:]] == pytest.approx(expected.tolist(), rel=1e-5)


def test_the_import_hook_leaves_the_import_path_once_the_classes_are_registered():
    out = _run(
        "import sys, keras_iresnet; "
        "hooked = lambda: any(type(f).__name__ == '_RegisterAfterImports' for f in sys.meta_path); "
        "before = hooked(); import keras; print(before, hooked())"
    )
    assert out == ["True", "False"]


def test_every_public_name_resolves():
    """Every name of __all__ (and every lazy name dir() lists) loads what its table says."""
    assert set(kir.__all__) <= set(dir(kir))
    assert set(kir.__all__) <= set(kir._NAMES) | set(kir._MODULES)  # noqa: SLF001
    for name, module in kir._NAMES.items():  # noqa: SLF001
        assert getattr(kir, name) is getattr(importlib.import_module(module), name), name
    for name, module in kir._MODULES.items():  # noqa: SLF001
        assert getattr(kir, name) is importlib.import_module(module), name
    # The earlier module names still resolve to where the code lives now.
    assert kir.recipes is importlib.import_module("keras_iresnet.experiments.recipes")
    assert kir.runs is importlib.import_module("keras_iresnet.experiments.runs")
    assert kir.train is kir.distributed
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        kir.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "statement",
    [
        "import keras_iresnet.layers",
        "from keras_iresnet.layers.spectral import SpectralDense",
        "import keras_iresnet.metrics",
        "import keras_iresnet.callbacks",
        "import keras_iresnet.models.flow",
    ],
)
def test_any_module_can_be_the_first_import_and_every_class_registers(statement):
    """Whichever module comes first, the import works and every Keras class is registered."""
    script = (
        f"{statement}; import keras; names = keras.saving.get_custom_objects(); "
        "print(sorted(n for n in names if n.split('>')[-1] in "
        "('IResNetFlow', 'SpectralConv2D', 'MeanWithStandardError')))"
    )
    assert " ".join(_run(script)) == (
        "['keras_iresnet>IResNetFlow', 'keras_iresnet>MeanWithStandardError', "
        "'keras_iresnet>SpectralConv2D']"
    )
