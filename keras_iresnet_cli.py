"""The ``iresnet`` console command: parse first, then start TensorFlow quietly.

This launcher sits outside the ``keras_iresnet`` package so that ``--help`` and
argument errors answer at once without importing TensorFlow. Unless you set
``TF_CPP_MIN_LOG_LEVEL`` yourself, it keeps TensorFlow's C++ start-up lines out
of the terminal: it sets that variable to 3 and silences the process's stderr
while TensorFlow loads (the CUDA-probing lines are written by the native
libraries as they load, below any log level). The library itself changes no logging.
"""

import contextlib
import importlib.util
import os
import sys


def _load_parser():
    spec = importlib.util.find_spec("keras_iresnet")  # finds the package without importing it
    path = os.path.join(list(spec.submodule_search_locations)[0], "_cli_args.py")
    module_spec = importlib.util.spec_from_file_location("keras_iresnet_cli_args", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.build_parser()


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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _load_parser().parse_args(argv)  # --help and bad arguments end here (exit 0 / 2)
        if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
            from keras_iresnet import cli
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
            with _quiet_native_stderr():
                from keras_iresnet import cli
    except KeyboardInterrupt:  # Ctrl-C while TensorFlow loads: one line, like every other error
        print("iresnet: error: interrupted (Ctrl-C)", file=sys.stderr)
        return 2
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
