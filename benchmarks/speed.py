"""Training and inference speed (issues 7, 12, 16): ratios measured in one run on one machine.

(a) classifier training step, plain convs (``vanilla=True``) vs spectral-normalized
    (the default rule: warm-started subspace iteration to ``power_tol``, re-tracked
    after each update);
(b) density training step with the power-series log-det (n = 1, 5, 10) and the
    unbiased Russian-roulette estimator, relative to the classifier step;
(g) the default spectral rule vs the paper's one-iteration rule
    (``power_tol=None, power_iterations=1, power_vectors=1``) on the classifier and
    density steps, and the iterations per layer and step actually taken;
(h) start-up: time from building the model to the end of its first training
    step, to the end of its first ``evaluate``, and the steady-state epoch, for
    deep 2-D flows (10, 40, 100 blocks) and the image recipes, next to TFP
    RealNVP of about the same size (each in a fresh process);
(c) inverse vs forward of a trained digits classifier trunk at coeff 0.9
    (fixed-point iteration to a relative error of 1e-6);
(d) our density step vs the PyTorch residual-flow blocks of ``normflows``
    (``pip install torch normflows``) on the same architecture and work: a CNN
    on 14x14x4 and a 2-D flow of 8 blocks of width 128;
(e) peak memory of a training step as the number of log-det terms grows
    (Neumann gradient vs backprop through the series), fresh process per point;
(f) ``model.fit`` throughput (examples/s): default, ``jit_compile=True`` and
    ``MirroredStrategy`` over 2 logical CPU devices.

Steps (a), (b), (g) are the models' own ``train_step`` (what ``fit`` runs)
compiled with ``tf.function``, Adam, on the same random batch, timed in
interleaved rounds (median) in this process. (d), (f) and (h) run each
candidate in a fresh process (PyTorch's spinning OpenMP threads, and state left
by earlier parts, would skew them); (d) alternates the candidates over two
rounds and reports the median.
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
from keras_iresnet import certify, logdet, models, recipes, runs  # noqa: E402

SETTINGS = {
    #          shape        batch stages  hidden normflows blocks
    "tiny": ((8, 8, 2), 4, (1, 1), 8, 1),
    "default": ((16, 16, 4), 64, (2, 2), 32, 4),
    "full": ((32, 32, 3), 128, (4, 4, 4), 128, 16),
}
PAPER_RULE = {"power_tol": None, "power_iterations": 1, "power_vectors": 1}


def classifier(shape, stages, hidden, vanilla=False, **block):
    return models.iresnet_classifier(
        shape,
        10,
        stages=stages,
        block={"hidden": hidden, "coeff": 0.9, **block},
        initial_squeeze=False,
        pad_to_channels=0,
        vanilla=vanilla,
    )


def density_flow(shape, stages, hidden, estimator, **block):
    return models.iresnet_flow(
        shape,
        blocks=stages,
        block={"hidden": hidden, "coeff": 0.9, "actnorm": True, "logdet": estimator, **block},
        logit=None,
        base="standard",
        initial_squeeze=False,
    )


def train_step_fn(model, x, y=None):
    """The model's own compiled ``train_step`` (what ``fit`` runs) on one batch."""
    if y is None:
        model.compile(keras.optimizers.Adam(1e-4))
        data = (x,)
    else:
        model.compile(
            keras.optimizers.Adam(1e-4),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        data = (x, y)
    step = tf.function(model.train_step)
    return lambda: float(step(data)["loss"])


def spectral_iterations(model):
    return sum(int(layer.power_iterations_run.numpy()) for layer in certify.spectral_layers(model))


def step_rows(shape, batch, stages, hidden, repeats):
    """(a), (b) and (g): one interleaved timing of classifier and density steps."""
    x = tf.random.uniform((batch,) + shape)
    y = tf.random.uniform((batch,), maxval=10, dtype=tf.int32)
    fns, built = {}, {}
    for label, kwargs in (
        ("classifier, plain convs", dict(vanilla=True)),
        ("classifier, spectral convs", {}),
        ("classifier, spectral convs, paper rule", PAPER_RULE),
    ):
        keras.utils.set_random_seed(0)
        built[label] = classifier(shape, stages, hidden, **kwargs)
        fns[label] = train_step_fn(built[label], x, y)
    estimators = {f"density, power series n={n}": logdet.PowerSeries(n_terms=n) for n in (1, 5, 10)}
    estimators["density, Russian roulette (unbiased)"] = logdet.RussianRoulette()
    for label, estimator in estimators.items():
        keras.utils.set_random_seed(0)
        built[label] = density_flow(shape, stages, hidden, estimator)
        fns[label] = train_step_fn(built[label], x)
    keras.utils.set_random_seed(0)
    label = "density, power series n=5, paper rule"
    built[label] = density_flow(shape, stages, hidden, logdet.PowerSeries(n_terms=5), **PAPER_RULE)
    fns[label] = train_step_fn(built[label], x)
    before = {name: spectral_iterations(model) for name, model in built.items()}
    calls = {name: 0 for name in fns}

    def counted(name, fn):
        def run():
            calls[name] += 1
            return fn()

        return run

    times = time_interleaved(
        {name: counted(name, fn) for name, fn in fns.items()}, repeats=repeats, warmup=2
    )
    plain, spectral = times["classifier, plain convs"], times["classifier, spectral convs"]
    rows = []
    for name, t in times.items():
        part = "g" if "paper rule" in name else ("a" if name.startswith("classifier") else "b")
        layers = len(
            [layer for layer in certify.spectral_layers(built[name]) if layer.coeff is not None]
        )
        iterations = (
            (spectral_iterations(built[name]) - before[name]) / max(1, calls[name] * layers)
            if layers
            else 0
        )
        rows.append(
            {
                "part": part,
                "step": name,
                "step_ms": 1e3 * t,
                "ratio_to_plain_classifier": t / plain,
                "ratio_to_spectral_classifier": t / spectral,
                "iterations_per_layer_and_step": iterations,
            }
        )
    for name, default in (
        ("classifier, spectral convs, paper rule", "classifier, spectral convs"),
        ("density, power series n=5, paper rule", "density, power series n=5"),
    ):
        rows.append(
            {
                "part": "g",
                "step": f"{default}: default rule / paper rule",
                "step_ms": 1e3 * times[default],
                "ratio_default_to_paper_rule": times[default] / times[name],
                "iterations_per_layer_and_step": next(r for r in rows if r["step"] == default)[
                    "iterations_per_layer_and_step"
                ],
            }
        )
    return rows


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
    times = time_interleaved(
        {"forward": lambda: forward(x).numpy(), "inverse": lambda: invert().numpy()},
        repeats=3 if tiny else 10,
        warmup=1,
    )
    return [
        {
            "part": "c",
            "network": "digits classifier trunk, coeff 0.9",
            "batch": int(x.shape[0]),
            "forward_ms": 1e3 * times["forward"],
            "inverse_ms": 1e3 * times["inverse"],
            "inverse_over_forward": times["inverse"] / times["forward"],
            "relative_error": float(tf.norm(x_rec - x) / tf.norm(x)),
        }
    ]


NF_TERMS, NF_COEFF = 5, 0.97
NF_CONFIGS = {
    #            shape        batch  blocks hidden
    "cnn": ((14, 14, 4), 64, 4, 32),
    "2d": ((2,), 256, 8, 128),
}
NF_TINY = {"cnn": ((8, 8, 2), 4, 1, 8), "2d": ((2,), 16, 1, 8)}


def compiled_step(variables, loss_fn, jit_compile=False):
    """A ``tf.function`` Adam step ``step(x) -> loss`` on ``loss_fn(x)`` over ``variables``."""
    optimizer = keras.optimizers.Adam(1e-4)

    @tf.function(jit_compile=jit_compile)
    def step(x):
        with tf.GradientTape() as tape:
            loss = loss_fn(x)
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return step


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
        if len(shape) == 1:
            nets = [
                nf.nets.LipschitzMLP(
                    [shape[0], hidden, hidden, shape[0]],
                    lipschitz_const=NF_COEFF,
                    max_lipschitz_iter=1,
                )
                for _ in range(blocks)
            ]
            q0 = nf.distributions.DiagGaussian(shape[0], trainable=False)
            x_torch = torch.from_numpy(x.numpy().copy())
        else:
            height, width, channels = shape
            nets = [
                nf.nets.LipschitzCNN(
                    [channels, hidden, hidden, channels],
                    [3, 1, 3],
                    lipschitz_const=NF_COEFF,
                    max_lipschitz_iter=1,
                )
                for _ in range(blocks)
            ]
            q0 = nf.distributions.DiagGaussian((channels, height, width), trainable=False)
            x_torch = torch.from_numpy(np.transpose(x.numpy(), (0, 3, 1, 2)).copy())
        flows = [
            nf.flows.Residual(net, n_power_series=NF_TERMS, reduce_memory=True) for net in nets
        ]
        model = nf.NormalizingFlow(q0=q0, flows=flows)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step():
            optimizer.zero_grad()
            loss = model.forward_kld(x_torch)
            loss.backward()
            optimizer.step()
            return loss.item()

        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {
            "step_ms": 1e3 * time_call(step, repeats=repeats, warmup=3),
            "parameters": int(params),
            "versions": {"torch": torch.__version__, "normflows": getattr(nf, "__version__", "?")},
        }
    keras.utils.set_random_seed(0)
    rule = PAPER_RULE if which == "ours_paper_rule" else {}
    ours = kir.InvertibleResidualStack(
        num_blocks=blocks,
        hidden=hidden,
        coeff=NF_COEFF,
        activation="lipswish",
        preactivation=True,
        logdet=logdet.PowerSeries(n_terms=NF_TERMS),
        **rule,
    )
    ours.build((None,) + shape)
    base = kir.StandardNormal()
    base.build((None,) + shape)

    def loss_fn(x):
        z, log_det = ours.forward_and_log_det(x, training=True)
        return -tf.reduce_mean(base.log_prob(z) + log_det)

    variables = kir.bridge.tf_variables(ours, trainable_only=True)
    step = compiled_step(variables, loss_fn, jit_compile=which == "ours_xla")
    return {
        "step_ms": 1e3 * time_call(lambda: float(step(x)), repeats=repeats, warmup=3),
        "parameters": int(sum(np.prod(v.shape) for v in variables)),
    }


def normflows_rows(configs, repeats, rounds=2):
    """(d): the same iResBlocks in keras_iresnet (one stack) and in normflows (PyTorch), CPU.

    Fresh processes in alternating rounds; the median over rounds is reported.
    """
    import importlib.util

    if importlib.util.find_spec("normflows") is None or importlib.util.find_spec("torch") is None:
        reason = "normflows/torch not installed (`pip install torch normflows`)"
        print(f"(d) skipped: {reason}")
        return [], {"skipped": reason}
    labels = {
        "ours": "keras_iresnet",
        "ours_paper_rule": "keras_iresnet, paper's 1-iteration rule",
        "ours_xla": "keras_iresnet, jit_compile",
        "torch": "normflows (PyTorch)",
    }
    rows, info = [], {}
    for config, (shape, batch, blocks, hidden) in configs.items():
        results = {which: [] for which in labels}
        spec = json.dumps([list(shape), batch, blocks, hidden, repeats])
        for _ in range(rounds):
            for which in labels:
                results[which].append(run_probe(__file__, "--normflows-probe", which, spec))
        median = {
            which: float(np.median([r["step_ms"] for r in runs])) for which, runs in results.items()
        }
        rows += [
            {
                "part": "d",
                "config": config,
                "implementation": labels[which],
                "parameters": runs[0]["parameters"],
                "step_ms": median[which],
                "ratio_to_normflows": median[which] / median["torch"],
            }
            for which, runs in results.items()
        ]
        info.update(results["torch"][0]["versions"])
        info[config] = (
            f"{blocks} blocks on {shape}, hidden {hidden}, 3 linear layers (kernels 3-1-3 for images), "
            f"LipSwish pre-activation, coeff {NF_COEFF}, power series n={NF_TERMS}, batch {batch}"
        )
    return rows, info


def memory_rows(tiny):
    """(e): reuses the log-det benchmark's fresh-process memory probe."""
    import logdet as logdet_benchmark

    rows = logdet_benchmark.memory_rows(
        (2, 5) if tiny else (2, 5, 10, 20), batch=8 if tiny else 256
    )
    return [dict(part="e", **row) for row in rows]


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


FIT_SETTINGS = {
    "default": "default",
    "jit": "jit_compile=True",
    "mirrored": "MirroredStrategy, 2 logical CPUs",
}


def fit_probe(task, setting, shape, batch, stages, hidden, examples, epochs):
    """In a fresh process: examples/s of ``model.fit`` in its last epoch (earlier ones include tracing)."""
    shape, stages = tuple(shape), tuple(stages)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(examples,) + shape).astype("float32")
    y = rng.integers(0, 10, size=examples).astype("int32")
    strategy = (
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        if setting == "mirrored"
        else tf.distribute.get_strategy()
    )
    with strategy.scope():
        keras.utils.set_random_seed(0)
        if task == "classify":
            model = classifier(shape, stages, hidden)
            model.compile(
                keras.optimizers.Adam(1e-4),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=setting == "jit",
            )
            data = (x, y)
        else:
            model = density_flow(shape, stages, hidden, logdet.PowerSeries(n_terms=5))
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
            rows.append(
                {
                    "part": "f",
                    "task": task,
                    "setting": label,
                    "batch": batch,
                    **run_probe(__file__, "--fit-probe", task, setting, spec),
                }
            )
        base = rows[-len(FIT_SETTINGS)]["examples_per_s"]
        for row in rows[-len(FIT_SETTINGS) :]:
            row["speedup"] = row["examples_per_s"] / base
    return rows


class _StartupTimer(keras.callbacks.Callback):
    """Seconds from ``start`` to the end of the first training batch, and per-epoch durations."""

    def __init__(self, start):
        super().__init__()
        self.start, self.first_step, self.epochs = start, None, []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step is None:
            self.first_step = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self.epoch_start)


STARTUP_POINTS, STARTUP_EPOCHS = 10240, 3


def _realnvp_2d(params_target):
    """TFP RealNVP (4 couplings of Keras MLPs) with about ``params_target`` parameters."""
    import density as density_benchmark

    hidden = density_benchmark._size_to(
        params_target,
        lambda h: int(sum(np.prod(v.shape) for v in density_benchmark.realnvp(2, 4, h)[1])),
        4,
        512,
    )
    return density_benchmark.realnvp_2d(4, hidden), hidden


def startup_probe(kind, spec):
    """In a fresh process: build -> first training step -> epochs -> first evaluate, in seconds."""
    from keras_iresnet import data

    spec = json.loads(spec)
    start = time.perf_counter()
    if kind == "realnvp-2d":
        (dist, variables), hidden = _realnvp_2d(spec["parameters"])
        train = data.sample_2d("moons", STARTUP_POINTS, seed=0)
        step = compiled_step(variables, lambda x: -tf.reduce_mean(dist.log_prob(x)))
        batches = np.array_split(train, STARTUP_POINTS // 256)
        first_step, epochs = None, []
        for _ in range(STARTUP_EPOCHS):
            epoch_start = time.perf_counter()
            for batch in batches:
                float(step(batch))
                if first_step is None:
                    first_step = time.perf_counter() - start
            epochs.append(time.perf_counter() - epoch_start)
        evaluate_start = time.perf_counter()
        float(tf.reduce_mean(tf.function(dist.log_prob)(data.sample_2d("moons", 5000, seed=1))))
        return {
            "first_step_s": first_step,
            "first_evaluate_s": time.perf_counter() - evaluate_start,
            "steady_epoch_s": epochs[-1],
            "parameters": int(sum(np.prod(v.shape) for v in variables)),
            "detail": f"4 couplings, MLP hidden {hidden}",
        }
    recipe = recipes.get(spec["recipe"])
    if "model" in spec:
        recipe = recipe.replace(model=spec["model"])
    if kind == "iresnet-2d":
        split = runs.Split(
            "moons",
            "density",
            data.sample_2d("moons", STARTUP_POINTS, seed=0),
            data.sample_2d("moons", 5000, seed=1),
        )
        epochs, steps = STARTUP_EPOCHS, None
    else:
        split = runs.load_split(recipe)
        epochs, steps = 2, spec.get("steps")
    model = runs.build_model(recipe, split)
    built = time.perf_counter() - start
    runs.compile_model(model, recipe)
    train, test = runs.datasets(recipe, split)
    timer = _StartupTimer(start)
    model.fit(train, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    evaluate_start = time.perf_counter()
    model.evaluate(test, verbose=0)
    return {
        "build_s": built,
        "first_step_s": timer.first_step,
        "first_evaluate_s": time.perf_counter() - evaluate_start,
        "steady_epoch_s": timer.epochs[-1],
        "steps_per_epoch": steps,
        "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
    }


def startup_rows(tiny):
    """(h): start-up and steady state of deep 2-D flows and the image recipes, fresh processes."""
    rows = []
    depths = (2, 4) if tiny else (10, 40, 100)
    for depth in depths:
        spec = {"recipe": "2d", "model": {"blocks": depth}}
        ours = run_probe(__file__, "--startup-probe", "iresnet-2d", json.dumps(spec))
        rows.append(
            {"part": "h", "model": f"i-ResNet 2-D flow, {depth} blocks of width 18", **ours}
        )
        theirs = run_probe(
            __file__,
            "--startup-probe",
            "realnvp-2d",
            json.dumps({"parameters": ours["parameters"]}),
        )
        rows.append(
            {"part": "h", "model": f"TFP RealNVP ({theirs.pop('detail')}), same size", **theirs}
        )
    image_recipes = [] if tiny else [("digits-density", None), ("mnist", 20)]
    for name, steps in image_recipes:
        spec = {"recipe": name, "steps": steps}
        result = run_probe(__file__, "--startup-probe", "image", json.dumps(spec))
        label = f"i-ResNet recipe {name!r}" + (f" ({steps} steps per epoch)" if steps else "")
        rows.append({"part": "h", "model": label, **result})
    return rows


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--normflows-probe", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fit-probe", nargs=3, default=None, help=argparse.SUPPRESS)
    p.add_argument("--startup-probe", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--parts", default="a,b,c,d,e,f,g,h", help="comma-separated subset of the parts a-h"
    )
    args = p.parse_args()
    if args.startup_probe:
        print(json.dumps(startup_probe(*args.startup_probe)))
        return
    if args.fit_probe:
        task, setting, spec = args.fit_probe
        print(json.dumps(fit_probe(task, setting, *json.loads(spec))))
        return
    if args.normflows_probe:
        which, spec = args.normflows_probe
        print(json.dumps(normflows_probe(which, *json.loads(spec))))
        return
    setting = "tiny" if args.tiny else ("full" if args.full else "default")
    shape, batch, stages, hidden, _ = SETTINGS[setting]
    repeats = 3 if args.tiny else 15
    parts = set(args.parts.split(","))
    rows, nf_info = [], {}
    if parts & {"a", "b", "g"}:
        rows += step_rows(shape, batch, stages, hidden, repeats)
    if "c" in parts:
        rows += inverse_rows(args.tiny)
    if "d" in parts:
        nf_rows, nf_info = normflows_rows(
            NF_TINY if args.tiny else NF_CONFIGS, repeats, rounds=1 if args.tiny else 2
        )
        rows += nf_rows
    if "e" in parts:
        rows += memory_rows(args.tiny)
    if "f" in parts:
        rows += fit_rows(shape, batch, stages, hidden, 4 * batch if args.tiny else 32 * batch, 2)
    if "h" in parts:
        rows += startup_rows(args.tiny)
    tables = {
        "a/b: training steps": [
            "step",
            "step_ms",
            "ratio_to_plain_classifier",
            "ratio_to_spectral_classifier",
            "iterations_per_layer_and_step",
        ],
        "g: spectral rule": [
            "step",
            "step_ms",
            "ratio_default_to_paper_rule",
            "iterations_per_layer_and_step",
        ],
        "c: inverse vs forward": [
            "network",
            "batch",
            "forward_ms",
            "inverse_ms",
            "inverse_over_forward",
            "relative_error",
        ],
        "d: vs normflows": [
            "config",
            "implementation",
            "parameters",
            "step_ms",
            "ratio_to_normflows",
        ],
        "e: peak memory": ["n_terms", "batch", "peak_rss_mib_plain", "peak_rss_mib_neumann"],
        "f: model.fit": ["task", "setting", "batch", "examples_per_s", "speedup"],
        "h: start-up": [
            "model",
            "parameters",
            "build_s",
            "first_step_s",
            "first_evaluate_s",
            "steady_epoch_s",
        ],
    }
    for title, columns in tables.items():
        part_rows = [r for r in rows if r["part"] in title.split(":")[0].split("/")]
        if part_rows:
            print(f"\n{title}")
            report("speed-" + title.split(":")[0], part_rows, columns, _NoOut())
    print("\ngoals")
    report(
        "speed",
        goal_rows(rows),
        ["goal", "measured", "met"],
        args,
        extra={
            "measurements": rows,
            "setting": setting,
            "input_shape": [batch, *shape],
            "stages": list(stages),
            "hidden": hidden,
            "normflows": nf_info,
        },
    )


def goal_rows(rows):
    """The issues' goals, read off the measurements (only for the parts that ran)."""
    goals = []
    step = {r["step"]: r for r in rows if r["part"] in ("a", "b", "g")}
    if step:
        goals += [
            (
                "spectral convs <= 1.1x a plain conv classifier step (issue 12)",
                step["classifier, spectral convs"]["ratio_to_plain_classifier"],
                1.1,
            ),
            (
                "5-term log-det density step <= 3x the classifier step (paper ~4x)",
                step["density, power series n=5"]["ratio_to_spectral_classifier"],
                3.0,
            ),
            (
                "default spectral rule <= 1.15x the paper's rule, classifier step (issue 12)",
                step["classifier, spectral convs: default rule / paper rule"][
                    "ratio_default_to_paper_rule"
                ],
                1.15,
            ),
            (
                "default spectral rule <= 1.15x the paper's rule, density step (issue 12)",
                step["density, power series n=5: default rule / paper rule"][
                    "ratio_default_to_paper_rule"
                ],
                1.15,
            ),
        ]
    inverse = [r for r in rows if r["part"] == "c"]
    if inverse:
        goals.append(
            (
                "inverse to 1e-6 at coeff 0.9 within 20 forward passes",
                inverse[0]["inverse_over_forward"]
                if inverse[0]["relative_error"] <= 1e-6
                else float("inf"),
                20.0,
            )
        )
    for row in rows:
        if row["part"] == "d" and row["implementation"] == "keras_iresnet":
            goals.append(
                (
                    f"density step at least as fast as normflows ({row['config']})",
                    row["ratio_to_normflows"],
                    1.0,
                )
            )
    startup = [r for r in rows if r["part"] == "h"]
    for index in range(0, len([r for r in startup if "2-D flow" in r["model"]]) * 2, 2):
        ours, theirs = startup[index], startup[index + 1]
        if "40 blocks" in ours["model"]:
            goals.append(
                ("time to first step <= 5 s for 40 blocks (issue 16)", ours["first_step_s"], 5.0)
            )
        goals.append(
            (
                f"steady epoch <= RealNVP's ({ours['model']}), ratio",
                ours["steady_epoch_s"] / theirs["steady_epoch_s"],
                1.0,
            )
        )
    return [{"goal": g, "measured": float(m), "met": bool(m <= limit)} for g, m, limit in goals]


class _NoOut:
    out = None


if __name__ == "__main__":
    main()
