"""The ``iresnet`` command line (entry point ``keras_iresnet.cli:main``).

``main`` parses the arguments first (:mod:`keras_iresnet.cli.args`, standard
library only), so ``--help``, ``--version`` and argument errors answer at once
without importing TensorFlow; then it loads TensorFlow quietly and runs the
command (:mod:`keras_iresnet.cli.commands`). Unless you set
``TF_CPP_MIN_LOG_LEVEL`` yourself, TensorFlow's C++ start-up lines are kept out of
the terminal: the variable is set to 3 and the process's stderr is silenced
while TensorFlow loads (the CUDA-probing lines are written by native libraries
as they load, below any log level). The library itself changes no logging. A
warning raised while a command runs prints as one line, ``iresnet: warning: ...``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import TYPE_CHECKING

from keras_iresnet.cli.args import CLIError, build_parser

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

__all__ = ["main", "run", "build_parser", "CLIError"]


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send file descriptor 2 to /dev/null (Python errors still surface after it is restored)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _commands():
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        from keras_iresnet.cli import commands
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        with _quiet_native_stderr():
            from keras_iresnet.cli import commands
    return commands


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A printed warning as ``iresnet: warning: <message>`` (no source path and line)."""
    return f"iresnet: warning: {message}\n"


def run(args: argparse.Namespace) -> int:
    """Run parsed arguments (see :func:`keras_iresnet.cli.commands.run`): an exit code."""
    return _commands().run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)  # --help and bad arguments end here (exit 0 / 2)
        commands = _commands()
    except KeyboardInterrupt:  # Ctrl-C while TensorFlow loads: one line, like every other error
        print("iresnet: error: interrupted (Ctrl-C)", file=sys.stderr)
        return 2
    # Printed warnings read like the command's other lines (recorded ones, e.g. by pytest, are
    # untouched); the caller's format comes back afterwards.
    saved, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return commands.run(args)
    finally:
        warnings.formatwarning = saved
