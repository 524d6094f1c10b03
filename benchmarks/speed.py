"""Training and inference speed (issue 7): ratios measured in one run on one machine.

(a) classifier training step, plain convs (``vanilla=True``) vs spectral-normalized;
(b) density training step with the power-series log-det (n = 1, 5, 10) and the
    unbiased Russian-roulette estimator, relative to the classifier step;
(c) inverse vs forward of a trained digits classifier trunk at coeff 0.9
    (fixed-point iteration to a relative error of 1e-6);
(d) our density step vs the PyTorch residual-flow blocks of ``normflows``
    (``pip install torch normflows``) on the same architecture and work;
(e) peak memory of a training step as the number of log-det terms grows
    (Neumann gradient vs backprop through the series), fresh process per point;
(f) ``model.fit`` throughput (examples/s): default, ``jit_compile=True`` and
    ``MirroredStrategy`` over 2 logical CPU devices.

Steps (a), (b), (d) are ``tf.function``-compiled gradient steps with Adam on
the same random batch; (a) and (b) are timed in interleaved rounds (median) in
this process. (d) and (f) run each candidate in a fresh process (PyTorch's
spinning OpenMP threads, and state left by earlier parts, would skew them);
(d) alternates the candidates over two rounds and reports the median.
"""
from common import parser, report, run_probe, time_interleaved  # noqa: I001

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import tensorflow as tf  # noqa: E402

# (f) needs two logical CPU devices; they must exist before TensorFlow initializes.
_CPUS = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_iresnet as kir  # noqa: E402
from keras_iresnet import logdet, models  # noqa: E402

SETTINGS = {
    #          shape        batch stages  hidden normflows blocks
    "tiny": ((8, 8, 2), 4, (1, 1), 8, 1),
    "default": ((16, 16, 4), 64, (2, 2), 32, 4),
    "full": ((32, 32, 3), 128, (4, 4, 4), 128, 16),
}


def compiled_step(model, loss_fn, variables=None, jit_compile=False):
    """A ``tf.function`` Adam step ``step(x, y) -> loss`` on ``loss_fn(model, x, y)``."""
    optimizer = keras.optimizers.Adam(1e-4)
    variables = variables if variables is not None else model.trainable_variables

    @tf.function(jit_compile=jit_compile)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(model, x, y)
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return step


def classification_loss(model, x, y):
    logits = model(x, training=True)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))


def density_loss(model, x, y):
    return tf.reduce_mean(model.bits_per_dim(model.log_prob(x, training=True)))


def bound(step, x, y):
    return lambda: float(step(x, y))


def step_rows(shape, batch, stages, hidden, repeats):
    """(a) and (b): one interleaved timing of classifier and density steps."""
    x = tf.random.uniform((batch,) + shape)
    y = tf.random.uniform((batch,), maxval=10, dtype=tf.int32)
    common = dict(stages=stages, hidden=hidden, pad_channels=0)
    fns = {}
    for label, vanilla in (("classifier, plain convs", True), ("classifier, spectral convs", False)):
        keras.utils.set_random_seed(0)
        model = models.iresnet_classifier(shape, 10, coeff=0.9, vanilla=vanilla, **common)
        fns[label] = bound(compiled_step(model, classification_loss), x, y)
    estimators = {f"density, power series n={n}": logdet.PowerSeries(n_terms=n) for n in (1, 5, 10)}
    estimators["density, Russian roulette (unbiased)"] = logdet.RussianRoulette()
    for label, estimator in estimators.items():
        keras.utils.set_random_seed(0)
        flow = models.iresnet_flow(shape, scales=len(stages), blocks_per_scale=stages[0], hidden=hidden,
                                   coeff=0.9, logdet=estimator)
        fns[label] = bound(compiled_step(flow, density_loss), x, y)
    times = time_interleaved(fns, repeats=repeats, warmup=2)
    plain, spectral = times["classifier, plain convs"], times["classifier, spectral convs"]
    return [
        {"part": "a" if name.startswith("classifier") else "b", "step": name, "step_ms": 1e3 * t,
         "ratio_to_plain_classifier": t / plain, "ratio_to_spectral_classifier": t / spectral}
        for name, t in times.items()
    ]


def inverse_rows(tiny):
    """(c): fixed-point inverse of a trained digits trunk at coeff 0.9, in forward-pass equivalents."""
    import warnings

    import inverse as inverse_benchmark

    trunk, blocks, x = inverse_benchmark.trained_digits_trunk(0.9, 1 if tiny else 5)
    y = trunk(x)
    forward = tf.function(lambda t: trunk(t))

    def invert():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return trunk.inverse(y, rtol=1e-7, atol=0.0)

    x_rec = invert()
    times = time_interleaved({"forward": lambda: forward(x).numpy(), "inverse": lambda: invert().numpy()},
                             repeats=3 if tiny else 10, warmup=1)
    return [{
        "part": "c", "network": "digits classifier trunk, coeff 0.9", "batch": int(x.shape[0]),
        "forward_ms": 1e3 * times["forward"], "inverse_ms": 1e3 * times["inverse"],
        "inverse_over_forward": times["inverse"] / times["forward"],
        "relative_error": float(tf.norm(x_rec - x) / tf.norm(x)),
    }]


NF_TERMS, NF_COEFF = 5, 0.97


def normflows_probe(which, shape, batch, blocks, hidden, repeats):
    """In a fresh process: median step time (ms) and parameter count of one implementation.

    Each implementation runs alone in its own process: PyTorch's OpenMP threads
    keep spinning after each op and would slow down TensorFlow ops interleaved
    with them (and TensorFlow's pools would slow PyTorch).
    """
    from common import time_call

    shape = tuple(shape)
    x = tf.random.uniform((batch,) + shape, seed=0)
    if which == "torch":
        import normflows as nf
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count())
        height, width, channels = shape
        flows = [
            nf.flows.Residual(
                nf.nets.LipschitzCNN([channels, hidden, hidden, channels], [3, 1, 3], lipschitz_const=NF_COEFF,
                                     max_lipschitz_iter=1),
                n_power_series=NF_TERMS, reduce_memory=True,
            )
            for _ in range(blocks)
        ]
        model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian((channels, height, width), trainable=False),
                                   flows=flows)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        x_torch = torch.from_numpy(np.transpose(x.numpy(), (0, 3, 1, 2)).copy())

        def step():
            optimizer.zero_grad()
            loss = model.forward_kld(x_torch)
            loss.backward()
            optimizer.step()
            return loss.item()

        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"step_ms": 1e3 * time_call(step, repeats=repeats, warmup=3), "parameters": int(params),
                "versions": {"torch": torch.__version__, "normflows": getattr(nf, "__version__", "?")}}
    keras.utils.set_random_seed(0)
    ours = kir.InvertibleSequential([
        kir.InvertibleResidualBlock(hidden=hidden, coeff=NF_COEFF, activation="lipswish", preactivation=True,
                                    logdet=logdet.PowerSeries(n_terms=NF_TERMS))
        for _ in range(blocks)
    ])
    ours.build((None,) + shape)

    def loss_fn(model, x, y):
        z, log_det = model.forward_and_log_det(x, training=True)
        return -tf.reduce_mean(models.standard_normal_log_prob(z) + log_det)

    variables = kir.bridge.tf_variables(ours, trainable_only=True)
    step = compiled_step(ours, loss_fn, variables, jit_compile=which == "ours_xla")
    return {"step_ms": 1e3 * time_call(bound(step, x, None), repeats=repeats, warmup=3),
            "parameters": int(sum(np.prod(v.shape) for v in variables))}


def normflows_rows(shape, batch, blocks, hidden, repeats, rounds=2):
    """(d): the same stack of iResBlocks in keras_iresnet and in normflows (PyTorch), CPU.

    Fresh processes in alternating rounds; the median over rounds is reported.
    """
    import importlib.util

    if importlib.util.find_spec("normflows") is None or importlib.util.find_spec("torch") is None:
        reason = "normflows/torch not installed (`pip install torch normflows`)"
        print(f"(d) skipped: {reason}")
        return [], {"skipped": reason}
    labels = {"ours": "keras_iresnet", "ours_xla": "keras_iresnet, jit_compile", "torch": "normflows (PyTorch)"}
    results = {which: [] for which in labels}
    spec = json.dumps([list(shape), batch, blocks, hidden, repeats])
    for _ in range(rounds):
        for which in labels:
            results[which].append(run_probe(__file__, "--normflows-probe", which, spec))
    median = {which: float(np.median([r["step_ms"] for r in runs])) for which, runs in results.items()}
    rows = [{"part": "d", "implementation": labels[which], "parameters": runs[0]["parameters"],
             "step_ms": median[which], "ratio_to_normflows": median[which] / median["torch"]}
            for which, runs in results.items()]
    info = dict(results["torch"][0]["versions"])
    info["architecture"] = (f"{blocks} blocks on {shape}, hidden {hidden}, kernels 3-1-3, LipSwish pre-activation, "
                            f"coeff {NF_COEFF}, 1 power iteration, power series n={NF_TERMS}, batch {batch}")
    return rows, info


def memory_rows(tiny):
    """(e): reuses the log-det benchmark's fresh-process memory probe."""
    import logdet as logdet_benchmark

    rows = logdet_benchmark.memory_rows((2, 5) if tiny else (2, 5, 10, 20), batch=8 if tiny else 256)
    return [dict(part="e", **row) for row in rows]


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


FIT_SETTINGS = {"default": "default", "jit": "jit_compile=True", "mirrored": "MirroredStrategy, 2 logical CPUs"}


def fit_probe(task, setting, shape, batch, stages, hidden, examples, epochs):
    """In a fresh process: examples/s of ``model.fit`` in its last epoch (earlier ones include tracing)."""
    shape, stages = tuple(shape), tuple(stages)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(examples,) + shape).astype("float32")
    y = rng.integers(0, 10, size=examples).astype("int32")
    strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if setting == "mirrored"
                else tf.distribute.get_strategy())
    with strategy.scope():
        keras.utils.set_random_seed(0)
        if task == "classify":
            model = models.iresnet_classifier(shape, 10, stages=stages, hidden=hidden, pad_channels=0)
            model.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          jit_compile=setting == "jit")
            data = (x, y)
        else:
            model = models.iresnet_flow(shape, scales=len(stages), blocks_per_scale=stages[0], hidden=hidden,
                                        logdet=logdet.PowerSeries(n_terms=5))
            model.compile(keras.optimizers.Adam(1e-4), jit_compile=setting == "jit")
            data = (x,)
    timer = _EpochTimer()
    model.fit(*data, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer])
    return {"examples_per_s": examples / timer.seconds}


def fit_rows(shape, batch, stages, hidden, examples, epochs):
    """(f): ``model.fit`` throughput per task and setting, each in a fresh process."""
    rows = []
    spec = json.dumps([list(shape), batch, list(stages), hidden, examples, epochs])
    for task in ("classify", "density"):
        for setting, label in FIT_SETTINGS.items():
            rows.append({"part": "f", "task": task, "setting": label, "batch": batch,
                         **run_probe(__file__, "--fit-probe", task, setting, spec)})
        base = rows[-len(FIT_SETTINGS)]["examples_per_s"]
        for row in rows[-len(FIT_SETTINGS):]:
            row["speedup"] = row["examples_per_s"] / base
    return rows


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--normflows-probe", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fit-probe", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.fit_probe:
        task, setting, spec = args.fit_probe
        print(json.dumps(fit_probe(task, setting, *json.loads(spec))))
        return
    if args.normflows_probe:
        which, spec = args.normflows_probe
        print(json.dumps(normflows_probe(which, *json.loads(spec))))
        return
    setting = "tiny" if args.tiny else ("full" if args.full else "default")
    shape, batch, stages, hidden, nf_blocks = SETTINGS[setting]
    repeats = 3 if args.tiny else 15
    rows = step_rows(shape, batch, stages, hidden, repeats)
    rows += inverse_rows(args.tiny)
    nf_rows, nf_info = normflows_rows(shape, batch, nf_blocks, hidden, repeats, rounds=1 if args.tiny else 2)
    rows += nf_rows
    rows += memory_rows(args.tiny)
    rows += fit_rows(shape, batch, stages, hidden, 4 * batch if args.tiny else 32 * batch, 2)
    tables = {
        "a/b: training steps": ["step", "step_ms", "ratio_to_plain_classifier", "ratio_to_spectral_classifier"],
        "c: inverse vs forward": ["network", "batch", "forward_ms", "inverse_ms", "inverse_over_forward",
                                  "relative_error"],
        "d: vs normflows": ["implementation", "parameters", "step_ms", "ratio_to_normflows"],
        "e: peak memory": ["n_terms", "batch", "peak_rss_mib_plain", "peak_rss_mib_neumann"],
        "f: model.fit": ["task", "setting", "batch", "examples_per_s", "speedup"],
    }
    for title, columns in tables.items():
        part_rows = [r for r in rows if r["part"] in title.split(":")[0].split("/")]
        if part_rows:
            print(f"\n{title}")
            report("speed-" + title.split(":")[0], part_rows, columns, _NoOut())
    print("\ngoals")
    report("speed", goal_rows(rows), ["goal", "measured", "met"], args,
           extra={"measurements": rows, "setting": setting, "input_shape": [batch, *shape],
                  "stages": list(stages), "hidden": hidden, "normflows": nf_info})


def goal_rows(rows):
    """The issue's ratio goals, read off the measurements."""
    step = {r["step"]: r for r in rows if r["part"] in ("a", "b")}
    goals = [
        ("spectral convs <= 1.5x a plain conv classifier step",
         step["classifier, spectral convs"]["ratio_to_plain_classifier"], 1.5),
        ("5-term log-det density step <= 3x the classifier step (paper ~4x)",
         step["density, power series n=5"]["ratio_to_spectral_classifier"], 3.0),
    ]
    inverse = next(r for r in rows if r["part"] == "c")
    goals.append(("inverse to 1e-6 at coeff 0.9 within 20 forward passes",
                  inverse["inverse_over_forward"] if inverse["relative_error"] <= 1e-6 else float("inf"), 20.0))
    ours = [r for r in rows if r["part"] == "d" and r["implementation"] == "keras_iresnet"]
    if ours:
        goals.append(("density step at least as fast as normflows (ratio of step times)",
                      ours[0]["ratio_to_normflows"], 1.0))
    return [{"goal": g, "measured": float(m), "met": bool(m <= limit)} for g, m, limit in goals]


class _NoOut:
    out = None


if __name__ == "__main__":
    main()
