"""What the benchmark scripts share, one home for each: the command line, timing,
fresh-process probes, training budgets, tables and the JSON report.

- :func:`parser`, :func:`setting`: ``--out``, ``--tiny``, ``--full`` and the hidden
  ``--probe`` every script takes;
- :func:`time_call`, :func:`time_interleaved`, :func:`time_with_iterations`: median
  wall times (and the spectral iterations the candidates ran meanwhile);
- :func:`run_probe`, :func:`answer_probe`: a measurement in a fresh process
  (``python -m benchmarks.<script> --probe JSON``);
- :func:`compiled_step`, :class:`WallClock`, :class:`StopAfter`, :func:`train_for`:
  training loops on an epoch or wall-clock budget;
- :func:`print_table`, :func:`goal_rows`, :func:`report`: the table and the JSON file;
- :func:`count_parameters`, :func:`dequantize`, :data:`PAPER_RULE`, and the ``--tiny``
  sizes of the recipes: :data:`TINY_SPLIT`, :func:`tiny_model`.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_iresnet.layers.walk import normalized_layers, spectral_layers

#: The folder holding the ``benchmarks`` package: the working directory of probes.
ROOT = Path(__file__).resolve().parents[1]

#: The paper's spectral rule: one power iteration of one vector per step (section 3),
#: against the default rule (warm-started 8-vector subspace iteration to ``power_tol``).
PAPER_RULE = {"power_tol": None, "power_iterations": 1, "power_vectors": 1}

#: The digits split of the ``--tiny`` settings (``runs.load_split`` arguments).
TINY_SPLIT = {"n_train": 128, "n_test": 64}


def tiny_model(recipe):
    """The ``--tiny`` model of an image recipe: its model arguments with one block per
    stage of hidden width 8 (``runs.build_model`` / ``runs.train`` overrides)."""
    stages = "stages" if recipe.task == "classify" else "blocks"
    return {stages: (1, 1), "block": {**recipe.model["block"], "hidden": 8}}


# -- the command line ---------------------------------------------------------------------------
def parser(doc, full=True):
    """The command line of a script whose docstring is ``doc``.

    ``--out FILE`` (the JSON report), ``--tiny`` (smoke-test settings), ``--full``
    (paper-scale settings for a GPU; only if ``full``) and the hidden ``--probe JSON``
    (see :func:`run_probe`).
    """
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--tiny", action="store_true", help="smoke-test settings (for the test suite)")
    if full:
        p.add_argument("--full", action="store_true", help="paper-scale settings (for a GPU)")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    return p


def setting(args):
    """``"tiny"``, ``"full"`` or ``"default"``."""
    if args.tiny:
        return "tiny"
    return "full" if getattr(args, "full", False) else "default"


# -- timing ---------------------------------------------------------------------------------------
def time_call(fn, repeats=20, warmup=3):
    """Median wall time (s) of ``fn()`` after ``warmup`` calls; ``fn`` must block until done."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def time_interleaved(fns, repeats=20, warmup=3):
    """Median wall time (s) of each ``fns[name]()``, measured in interleaved rounds.

    Each function is called ``warmup + repeats`` times. Interleaving spreads
    machine drift (frequency, other load) over all candidates, so the ratios of
    one run are comparable.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in samples.items()}


def spectral_iterations(layer):
    """Subspace iterations run so far by the spectral layers inside ``layer`` (an int)."""
    return sum(int(sub.power_iterations_run.numpy()) for sub in spectral_layers(layer))


def time_with_iterations(fns, owners, repeats=20, warmup=3):
    """:func:`time_interleaved`, and the spectral iterations each candidate ran per call.

    Args:
      fns: ``{name: fn}``, as for :func:`time_interleaved`.
      owners: ``{name: layer or model}`` whose spectral layers ``fns[name]`` runs.

    Returns:
      ``(times, iterations)``: median seconds per name, and per name the iterations
      per normalized spectral layer and call (over all ``warmup + repeats`` calls;
      ``None`` where the owner has no normalized spectral layer).
    """
    before = {name: spectral_iterations(owners[name]) for name in fns}
    times = time_interleaved(fns, repeats=repeats, warmup=warmup)
    iterations = {}
    for name in fns:
        layers = len(normalized_layers(owners[name]))
        ran = spectral_iterations(owners[name]) - before[name]
        iterations[name] = ran / ((warmup + repeats) * layers) if layers else None
    return times, iterations


# -- fresh-process probes -----------------------------------------------------------------------
def run_probe(module, **spec):
    """Run ``python -m module --probe JSON(spec)`` in a fresh process; return its answer.

    Probes measure in a process of their own: peak memory, start-up, and timings
    that earlier work in this process (thread pools, caches, another library's
    spinning threads) would skew. The probe runs from the repository root (so
    ``benchmarks`` and ``keras_iresnet`` are the ones beside each other) and
    answers with its last stdout line, JSON (:func:`answer_probe`).
    """
    result = subprocess.run(
        [sys.executable, "-m", module, "--probe", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"probe {module} {spec} failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def answer_probe(args, probe):
    """If this process is a probe (``--probe JSON``): print ``probe(**spec)`` as JSON; True.

    False (and nothing done) for a normal run.
    """
    if args.probe is None:
        return False
    print(json.dumps(probe(**json.loads(args.probe))))
    return True


# -- training on a budget -----------------------------------------------------------------------
def compiled_step(variables, loss_fn, optimizer=None, jit_compile=False):
    """A ``tf.function`` step ``step(x) -> loss``: one update of ``variables`` on ``loss_fn(x)``.

    ``optimizer`` defaults to ``Adam(1e-4)``; variables without a gradient get zeros.
    """
    optimizer = optimizer or keras.optimizers.Adam(1e-4)

    @tf.function(jit_compile=jit_compile)
    def step(x):
        with tf.GradientTape() as tape:
            loss = loss_fn(x)
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return step


class WallClock:
    """Training time only: ``pause()`` / ``resume()`` around evaluations."""

    def __init__(self):
        self.spent, self.started = 0.0, time.perf_counter()

    def elapsed(self):
        return self.spent + (
            time.perf_counter() - self.started if self.started is not None else 0.0
        )

    def pause(self):
        self.spent, self.started = self.elapsed(), None

    def resume(self):
        self.started = time.perf_counter()


def _checkpoints_due(clock, pending, on_checkpoint, steps):
    """Call ``on_checkpoint(at, steps)`` for every checkpoint ``clock`` passed (clock paused)."""
    while pending and clock.elapsed() >= pending[0]:
        clock.pause()
        on_checkpoint(pending.pop(0), steps)
        clock.resume()


class StopAfter(keras.callbacks.Callback):
    """Stop ``fit`` once ``clock`` reaches ``seconds``; evaluate at the checkpoints (clock paused).

    ``checkpoints``: seconds of training time at which ``on_checkpoint(at, steps)`` runs.
    """

    def __init__(self, clock, seconds, checkpoints=(), on_checkpoint=None):
        super().__init__()
        self.clock, self.seconds = clock, seconds
        self.pending, self.on_checkpoint, self.steps = list(checkpoints), on_checkpoint, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        _checkpoints_due(self.clock, self.pending, self.on_checkpoint, self.steps)
        if self.clock.elapsed() >= self.seconds:
            self.model.stop_training = True


def train_for(
    step, batches, seconds=None, epochs=None, clock=None, checkpoints=(), on_checkpoint=None
):
    """Run ``step(x)`` over ``batches()`` (one iterable per epoch) for a time or epoch budget.

    The loop of the TFP baselines, the counterpart of ``fit`` with :class:`StopAfter`.
    Returns the number of steps taken.
    """
    clock = clock or WallClock()
    steps, pending, epoch = 0, list(checkpoints), 0
    while True:
        for x in batches():
            step(x)
            steps += 1
            _checkpoints_due(clock, pending, on_checkpoint, steps)
            if seconds is not None and clock.elapsed() >= seconds:
                return steps
        epoch += 1
        if epochs is not None and epoch >= epochs:
            return steps


# -- small shared pieces ------------------------------------------------------------------------
def count_parameters(variables):
    """Number of scalars in ``variables`` (an int)."""
    return int(sum(np.prod(v.shape) for v in variables))


def dequantize(images, seed):
    """8-bit ``images`` plus one fixed draw of uniform noise (``seed``), in ``[0, 1)``, float64."""
    rng = np.random.default_rng(seed)
    return (np.asarray(images, np.float64) + rng.uniform(size=np.shape(images))) / 256.0


# -- output ---------------------------------------------------------------------------------------
def machine():
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "date": time.strftime("%Y-%m-%d"),
    }


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(rows, columns, title=None):
    """Print ``rows`` (dicts) as a ``|``-separated table of ``columns``."""
    if title:
        print(f"\n{title}")
    widths = [max([len(c)] + [len(_fmt(r.get(c))) for r in rows]) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def goal_rows(goals):
    """``[(goal, measured, limit)]`` -> rows ``{"goal", "measured", "met": measured <= limit}``."""
    return [{"goal": g, "measured": float(m), "met": bool(m <= limit)} for g, m, limit in goals]


def report(name, rows, columns, args, extra=None):
    """Print the table of ``rows`` and write the JSON report to ``args.out`` (if given).

    The report: ``{"benchmark": name, "machine", "settings": the arguments, "rows",
    **extra}``. Returns it.
    """
    print_table(rows, columns)
    settings = {key: value for key, value in vars(args).items() if key != "probe"}
    payload = {"benchmark": name, "machine": machine(), "settings": settings, "rows": rows}
    payload.update(extra or {})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2, default=float)
        print(f"wrote {args.out}")
    return payload
