"""Shared helpers of the benchmark scripts: timing, platform description, JSON + table output."""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--full", action="store_true", help="paper-scale settings (for a GPU)")
    p.add_argument("--tiny", action="store_true", help="smoke-test settings (for the test suite)")
    return p


def machine():
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "date": time.strftime("%Y-%m-%d"),
    }


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

    Interleaving spreads machine drift (frequency, other load) over all
    candidates, so the ratios of one run are comparable.
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


def run_probe(script, *args):
    """Run ``python script *args`` in a fresh process; return its last stdout line parsed as JSON.

    Probes measure in a process of their own: peak memory, and timings that earlier
    work in this process (thread pools, caches) would skew.
    """
    import subprocess

    out = subprocess.run(
        [sys.executable, script, *map(str, args)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(name, rows, columns, args, extra=None):
    """Print a table and write ``{"benchmark", "machine", "rows", ...}`` to ``args.out``."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))
    payload = {"benchmark": name, "machine": machine(), "settings": vars(args), "rows": rows}
    payload.update(extra or {})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2, default=float)
        print(f"wrote {args.out}")
    return payload


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def logit_gaussian_bits_per_dim(train, test, alpha, seed=0):
    """Held-out bits/dim of the best model without pixel dependencies in logit space.

    ``train``: uint8 images, dequantized here with ``seed``; ``test``: already
    dequantized to ``[0, 1)``. Per pixel, the maximum-likelihood Gaussian of
    ``logit(alpha + (1 - 2 alpha) x)`` on the training images; the test density
    includes the logit's log-det and the ``D ln 256`` of 8-bit data (numpy, float64).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    train = (np.asarray(train, np.float64) + rng.uniform(size=np.shape(train))) / 256.0

    def logit(x):
        s = alpha + (1 - 2 * alpha) * np.asarray(x, np.float64).reshape(len(x), -1)
        return np.log(s) - np.log1p(-s), np.log1p(-2 * alpha) - np.log(s) - np.log1p(-s)

    y_train, _ = logit(train)
    y_test, log_det = logit(test)
    mean, std = y_train.mean(0), y_train.std(0)
    log_p = (
        -0.5 * ((y_test - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi) + log_det
    ).sum(1)
    dims = y_test.shape[1]
    return float(np.mean((-log_p + dims * np.log(256.0)) / (dims * np.log(2.0))))
