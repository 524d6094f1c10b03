"""The ``iresnet`` command's arguments (standard library only: loaded without TensorFlow).

Every numeric argument is validated here, at parse time: a bad value gives one
line (``iresnet: error: ...``) and exit code 2 before anything is imported or trained.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

_T = TypeVar("_T")

__all__ = ["build_parser", "CLIError", "TASKS", "LOGDETS"]

TASKS = ("density", "classify", "hybrid")


class CLIError(Exception):
    """An error reported to the user as one line, ``iresnet: error: ...`` (exit code 2)."""


LOGDETS = ("auto", "exact", "power_series", "russian_roulette")


def _typed(
    name: str, convert: Callable[[str], _T], check: Callable[[_T], bool], expected: str
) -> Callable[[str], _T]:
    def parse(text: str) -> _T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value

    parse.__name__ = name
    return parse


positive_int = _typed("positive int", int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _typed("non-negative int", int, lambda v: v >= 0, "an integer >= 0")
positive_float = _typed(
    "positive float", float, lambda v: v > 0 and v != float("inf"), "a number > 0"
)
unit_interval = _typed("coefficient", float, lambda v: 0 < v < 1, "a number with 0 < value < 1")
open_unit = _typed("fraction", float, lambda v: 0 < v < 1, "a number with 0 < value < 1")


def _blocks(text):
    """``40`` (vectors / every scale) or ``2,2`` (blocks per scale)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer or a comma-separated list like 2,2; got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values) or sum(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected block counts >= 0 with at least one block; got {text!r}"
        )
    return values[0] if len(values) == 1 else values


def _recipe_name(text):
    """A recipe's name (the catalogue is plain Python: checking it loads no TensorFlow)."""
    from keras_iresnet.experiments import recipes

    if text not in recipes.names():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a recipe; the recipes are {', '.join(recipes.names())}"
        )
    return text


def _data_options(parser):
    parser.add_argument(
        "--data-path",
        default=None,
        metavar="FILE",
        help="the MNIST images .npz (with --data mnist-file; default: $IRESNET_MNIST_FILE)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="TFDS data_dir holding the prepared data set (with --data tfds:NAME)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let TFDS download and prepare --data tfds:NAME (needs a network)",
    )


def _model_options(parser):
    parser.add_argument("--model", default=None, metavar="FILE", help="a saved model file (.keras)")
    parser.add_argument(
        "--run",
        default=None,
        metavar="DIR",
        help="a run folder written by 'iresnet train' (uses its data and preprocessing)",
    )


class _Parser(argparse.ArgumentParser):
    """Errors as one line, ``iresnet: error: ...`` (exit code 2), with a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            2,
            f"iresnet: error: {self.prog.split(' ', 1)[-1] + ': ' if ' ' in self.prog else ''}"
            f"{message} (see '{self.prog} --help')\n",
        )


def _version():
    try:
        from importlib.metadata import version

        return version("keras_iresnet")
    except Exception:  # noqa: BLE001 - not installed (a source checkout): no version to report
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="iresnet",
        description="Train, evaluate, sample, invert and certify invertible residual networks.",
        epilog=(
            "Errors are one line and exit code 2; IRESNET_DEBUG=1 shows the traceback of an "
            "unexpected one."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser(
        "train", help="train a recipe's model; write model, metrics, figure and run record"
    )
    train.add_argument(
        "--recipe",
        type=_recipe_name,
        default=None,
        help="a named recipe ('iresnet recipes' lists them)",
    )
    train.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="without --recipe: the task's recipe for --data (density: '2d' or 'mnist'; "
        "classify: 'digits-classifier'; hybrid: 'digits-hybrid')",
    )
    train.add_argument(
        "--data",
        default=None,
        help="moons|circles|8gaussians|pinwheel|checkerboard|2spirals|"
        "digits|mnist-file|tfds:NAME (default: the recipe's)",
    )
    _data_options(train)
    train.add_argument(
        "--epochs", type=positive_int, default=None, help="training epochs (default: the recipe's)"
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="global batch size (default: the recipe's)",
    )
    train.add_argument(
        "--learning-rate",
        type=positive_float,
        default=None,
        help="peak learning rate, reached after the recipe's warm-up (default: the recipe's)",
    )
    train.add_argument(
        "--coeff",
        type=unit_interval,
        default=None,
        help="spectral-normalization coefficient, 0 < coeff < 1 (default: the recipe's)",
    )
    train.add_argument(
        "--blocks", type=_blocks, default=None, help="residual blocks: N, or per stage/scale N,N"
    )
    train.add_argument(
        "--hidden", type=positive_int, default=None, help="hidden width of the blocks"
    )
    train.add_argument("--logdet", choices=LOGDETS, default=None, help="training log-det estimator")
    train.add_argument(
        "--n-train",
        type=positive_int,
        default=None,
        help="training examples (default: the recipe's)",
    )
    train.add_argument(
        "--vanilla", action="store_true", help="classify: the same network without normalization"
    )
    train.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        default="default",
        help="mirrored: all local GPUs; multiworker: one process per worker, TF_CONFIG set "
        "(worker 0 writes --out, worker i writes --out with '-worker<i>' appended)",
    )
    train.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the training step with XLA (--no-jit: never; default: where it measured "
        "faster: with a GPU, and on a CPU for models without convolutions); with XLA every "
        "training batch has the batch size: each epoch's last partial batch is dropped",
    )
    train.add_argument(
        "--seed", type=non_negative_int, default=0, help="random seed (data draws, initialization)"
    )
    train.add_argument(
        "--out",
        default=None,
        help="run folder (default: iresnet_runs/<recipe>-<data>[-vanilla][-seedN]); must be new, "
        "empty or an earlier run",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --out (only the files a run writes are deleted)",
    )
    train.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --out (its backup/)"
    )
    train.add_argument("--logdir", default=None, help="write TensorBoard logs here")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = sub.add_parser("evaluate", help="evaluate a saved model on its test split")
    _model_options(evaluate)
    evaluate.add_argument("--data", default=None, help="other data than the run's")
    _data_options(evaluate)
    evaluate.add_argument(
        "--n", type=positive_int, default=None, help="test examples to use (default: all)"
    )
    evaluate.add_argument(
        "--terms",
        type=positive_int,
        default=None,
        help="density models: evaluate with a power series of this many terms",
    )
    evaluate.add_argument(
        "--probes", type=positive_int, default=1, help="with --terms: Hutchinson probes"
    )

    invert = sub.add_parser("invert", help="reconstruction errors of a saved model's inverse")
    _model_options(invert)
    invert.add_argument("--data", default=None, help="other data than the run's")
    _data_options(invert)
    invert.add_argument("--n", type=positive_int, default=256, help="examples to use")

    sample = sub.add_parser("sample", help="draw samples from a saved density model")
    _model_options(sample)
    sample.add_argument("--n", type=positive_int, default=64, help="number of samples")
    sample.add_argument(
        "--temperature",
        type=positive_float,
        default=1.0,
        help="scale of the base distribution's noise (below 1: typical samples)",
    )
    sample.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the draw")
    sample.add_argument(
        "--label",
        type=non_negative_int,
        default=None,
        help="class-conditional models (e.g. --recipe digits-conditional): draw --n samples of "
        "this class (default: a grid with a row of --n / classes samples per class)",
    )
    sample.add_argument(
        "--out",
        default=None,
        help="PNG path (default: samples_n<N>_t<T>_seed<S>.png beside the model)",
    )
    sample.add_argument("--overwrite", action="store_true", help="replace an existing --out file")

    certify = sub.add_parser(
        "certify", help="exact per-layer Lipschitz bounds of a saved model (exit 1 if not proven)"
    )
    _model_options(certify)

    tune = sub.add_parser(
        "tune",
        help="keras-tuner search centred on the task's recipe (selects on a validation "
        "split of the training data; the test split is used once, at the end)",
    )
    tune.add_argument(
        "--task", choices=TASKS, required=True, help="the task whose recipe the search centres on"
    )
    tune.add_argument("--data", default=None, help="data set (default: the task's recipe's)")
    _data_options(tune)
    tune.add_argument(
        "--tuner",
        choices=("random", "bayesian", "hyperband"),
        default="random",
        help="keras-tuner search algorithm (random: the recipe itself first, then random points)",
    )
    tune.add_argument(
        "--trials", type=positive_int, default=5, help="models to try (random, bayesian)"
    )
    tune.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="training epochs per trial (default: 3; with --minutes: a cap, default 1000)",
    )
    tune.add_argument(
        "--minutes",
        type=positive_float,
        default=None,
        help="wall-clock budget per trial, build and tracing included: trials compared at "
        "equal seconds, density models scored with one accurate estimator",
    )
    tune.add_argument(
        "--space",
        choices=("recipe", "budget"),
        default="recipe",
        help="recipe: values around the recipe's; budget: the wide density space (the "
        "estimator, widths, blocks and scales, factor-out, FC end blocks, coeff, "
        "activation, learning rate and warm-up, batch size, EMA)",
    )
    tune.add_argument(
        "--batch-size", type=positive_int, default=None, help="batch size (default: the recipe's)"
    )
    tune.add_argument(
        "--validation-fraction",
        type=open_unit,
        default=0.1,
        help="share of the training examples held out for the search's objective",
    )
    tune.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    tune.add_argument(
        "--out", default=None, help="search folder (default: iresnet_runs/tune-<task>-<data>)"
    )
    tune.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier search in --out (only the files a search writes are deleted)",
    )
    tune.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("recipes", help="list the named recipes")
    return parser
