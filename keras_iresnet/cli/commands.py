"""The ``iresnet`` commands' dispatch: ``COMMANDS`` (name -> function) and :func:`run`.

Each command is a thin layer over :mod:`keras_iresnet.experiments` (recipes, runs,
tuning, plots): it turns arguments into their calls and their failures into one
line. Where each command lives:

- ``train``, ``recipes``: :mod:`keras_iresnet.cli.train`;
- ``evaluate``, ``invert``, ``sample``, ``certify`` (on a saved model):
  :mod:`keras_iresnet.cli.model_commands`;
- ``tune``: :mod:`keras_iresnet.cli.tune`;
- what several of them share: :mod:`keras_iresnet.cli.common`.

Every failure the user can cause -- Ctrl-C included -- is reported as one line,
``iresnet: error: ...``, with exit code 2.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from keras_iresnet.cli.args import CLIError
from keras_iresnet.cli.common import _one_line
from keras_iresnet.cli.model_commands import cmd_certify, cmd_evaluate, cmd_invert, cmd_sample
from keras_iresnet.cli.train import cmd_recipes, cmd_train
from keras_iresnet.cli.tune import cmd_tune

if TYPE_CHECKING:
    import argparse

__all__ = ["run", "COMMANDS"]


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "invert": cmd_invert,
    "sample": cmd_sample,
    "certify": cmd_certify,
    "tune": cmd_tune,
    "recipes": cmd_recipes,
}


def run(args: argparse.Namespace) -> int:
    """Run parsed arguments; errors become one line and exit code 2.

    Set ``IRESNET_DEBUG=1`` to see the traceback of an unexpected error instead.
    """
    try:
        return COMMANDS[args.command](args)
    except CLIError as error:
        print(f"iresnet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iresnet: error: interrupted (Ctrl-C)", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - TensorFlow raises its own error classes too
        if os.environ.get("IRESNET_DEBUG"):
            raise
        print(
            f"iresnet: error: {type(error).__name__}: {_one_line(error)} "
            "(IRESNET_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2
