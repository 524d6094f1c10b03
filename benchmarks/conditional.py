"""Conditional flows p(x | c): held-out conditional NLL at equal wall-clock, and SBI calibration.

Run as ``python -m benchmarks.conditional`` (from the repository root). Parts
(``--parts``, default all):

- ``closed_form``: the linear Gaussian posterior ``theta | x ~ N(A x, S)`` of
  :class:`keras_iresnet.data.GaussianLinear` (``theta`` 2-D, context ``x`` 3-D):
  held-out conditional NLL (nats) of our conditional flow against TFP's
  conditional ``MaskedAutoregressiveFlow`` and ``RealNVP`` trained for the same
  wall-clock budget (``--seconds`` per model, building and tracing included), with
  the truth ``0.5 ln det(2 pi e S)`` beside them.
- ``digits``: class-conditional density of the 8x8 digits (context: the one-hot
  label), held-out conditional bits/dim of the ``digits-conditional`` recipe
  against TFP MAF and RealNVP on the same logit-transformed, dequantized pixels
  (one fixed dequantization draw for the held-out images), same budget. Ours is
  evaluated with a 20-term power series with 4 probes.
- ``sbi``: the calibration of each ``closed_form`` model as a posterior
  estimator: at ``x_obs`` the Monte-Carlo ``KL(q || p)`` and the errors of the
  posterior mean and covariance; over simulated ``(theta*, x)`` pairs the coverage
  of the central 50 % and 90 % credible intervals of each coordinate (calibrated:
  0.50 and 0.90).

Prints a table per part and the JSON report (the machine, the settings and
every part's rows); ``--out FILE`` also writes it to a file; ``--tiny`` is the
smoke setting of the test suite (seconds, small data and models: the numbers mean
nothing). Time the full run on a quiet machine; the results and the command
belong in benchmarks/README.md ("Conditional flows").

The budgets count training only, building and tracing included (the clock of
:mod:`benchmarks.common`: :class:`~benchmarks.common.WallClock`,
:class:`~benchmarks.common.StopAfter` for ``fit``, :func:`~benchmarks.common.train_for`
for the TFP loops); the TFP flows bound their log-scales with ``tanh`` (as
:mod:`benchmarks.baselines` does), without which the MAF diverges on the digits.
"""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from benchmarks import common
from keras_iresnet import bridge, data, logdet, models, recipes, runs

tfb, tfd = tfp.bijectors, tfp.distributions
PARTS = ("closed_form", "digits", "sbi")
LOGIT_ALPHA = 1e-6


# -- the TFP baselines ----------------------------------------------------------------------
def _coupling(inputs, context_dim, outputs, hidden):
    """``shift_and_log_scale_fn`` of a conditional RealNVP: a Keras MLP on ``[x0, c]``.

    Returns ``(fn, tf.Variables)`` (the variables behind the Keras weights, for TFP's loop).
    """
    net = keras.Sequential(
        [keras.Input((inputs + context_dim,))]
        + [keras.layers.Dense(h, activation="relu") for h in hidden]
        + [keras.layers.Dense(2 * outputs, kernel_initializer="zeros")]
    )

    def fn(x0, output_units, conditional_input=None, **kwargs):
        c = tf.broadcast_to(
            conditional_input,
            tf.concat([tf.shape(x0)[:-1], tf.shape(conditional_input)[-1:]], 0),
        )
        out = net(tf.concat([x0, c], axis=-1))
        return out[..., :output_units], tf.tanh(out[..., output_units:])

    return fn, bridge.tf_variables(net, trainable_only=True)


class TFPConditionalFlow:
    """A conditional TFP flow: ``kind`` ``"maf"`` (MADEs with ``conditional=True``) or
    ``"realnvp"`` (affine couplings on ``[x0, c]``), permutations between the layers, a
    standard normal base. ``log_prob(x, c)``, ``sample(c)``."""

    def __init__(self, kind, dim, context_dim, layers, hidden, seed=0):
        rng = np.random.default_rng(seed)
        bijectors, self.names, self._coupling_variables, self._mades = [], [], [], []
        for index in range(layers):
            name = f"{kind}{index}"
            if kind == "maf":
                made = tfb.AutoregressiveNetwork(
                    params=2,
                    event_shape=[dim],
                    conditional=True,
                    conditional_event_shape=[context_dim],
                    hidden_units=list(hidden),
                    activation="relu",
                )
                self._mades.append(made)

                def fn(y, made=made, **kwargs):
                    shift, log_scale = tf.unstack(made(y, **kwargs), axis=-1)
                    return shift, tf.tanh(log_scale)

                bijectors.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=fn, name=name))
            else:
                fn, variables = _coupling(dim // 2, context_dim, dim - dim // 2, hidden)
                self._coupling_variables += variables
                bijectors.append(
                    tfb.RealNVP(num_masked=dim // 2, shift_and_log_scale_fn=fn, name=name)
                )
            self.names.append(name)
            if index < layers - 1:
                bijectors.append(tfb.Permute(rng.permutation(dim).astype("int32")))
        self.distribution = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(0.0, 1.0), [dim]), tfb.Chain(bijectors)
        )
        self.dim, self.context_dim = dim, context_dim
        # build every variable once (the MADEs and couplings create them on first use)
        self.log_prob(tf.zeros((1, dim)), tf.zeros((1, context_dim)))

    def _kwargs(self, c):
        return {"bijector_kwargs": {n: {"conditional_input": c} for n in self.names}}

    def log_prob(self, x, c):
        return self.distribution.log_prob(x, **self._kwargs(tf.convert_to_tensor(c, tf.float32)))

    def sample(self, c, seed=None):
        c = tf.convert_to_tensor(c, tf.float32)
        return self.distribution.sample(tf.shape(c)[0], seed=seed, **self._kwargs(c))

    @property
    def trainable_variables(self):
        variables = list(self.distribution.trainable_variables) + self._coupling_variables
        for made in self._mades:  # behind a shift_and_log_scale_fn closure: not tracked by TFP
            variables += list(made.trainable_variables)
        unique = {id(v): v for v in variables}
        return list(unique.values())


def train_tfp(flow, dataset, seconds, learning_rate):
    """Adam on ``-mean log_prob`` for ``seconds`` of training (tracing included).

    Returns ``(steps, seconds spent)``.
    """
    optimizer = keras.optimizers.Adam(learning_rate, clipnorm=1.0)
    variables = flow.trainable_variables

    @tf.function
    def step(batch):
        x, c = batch
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(flow.log_prob(x, c))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    clock = common.WallClock()
    steps = common.train_for(step, lambda: dataset, seconds=seconds, clock=clock)
    return steps, clock.elapsed()


def fit_for(model, dataset, seconds, callbacks=()):
    """``model.fit`` for ``seconds`` of training (building and tracing included).

    Returns ``(steps, seconds spent)``.
    """
    clock = common.WallClock()
    budget = common.StopAfter(clock, seconds)
    model.fit(
        dataset.repeat(),
        epochs=10**6,
        steps_per_epoch=50,
        verbose=0,
        callbacks=[budget, *callbacks],
    )
    return budget.steps, clock.elapsed()


# -- part 1: the closed-form conditional target ---------------------------------------------
def closed_form(args, simulator):
    n_train, n_test = (2048, 1000) if args.tiny else (20000, 5000)
    theta, x = simulator.simulate(n_train, seed=args.seed)
    held_theta, held_x = simulator.simulate(n_test, seed=args.seed + 1)
    dataset = tf.data.Dataset.from_tensor_slices((theta, x)).shuffle(n_train, seed=args.seed)
    dataset = dataset.batch(256, drop_remainder=True)
    blocks, hidden = (2, 16) if args.tiny else (8, 32)
    keras.utils.set_random_seed(args.seed)
    ours = models.IResNetFlow(
        (simulator.theta_dim,),
        blocks=blocks,
        block={"hidden": hidden, "coeff": 0.9, "logdet": "exact", "actnorm": True},
        base="conditional_diagonal",
        context_shape=(simulator.x_dim,),
    )
    ours.compile(keras.optimizers.Adam(3e-3))
    rows, trained = [], {}
    steps, seconds = fit_for(ours, dataset, args.seconds)
    rows.append(
        dict(
            model=f"i-ResNet conditional ({blocks} blocks, width {hidden})",
            parameters=common.count_parameters(ours.trainable_variables),
            steps=steps,
            seconds=seconds,
            nll=-float(np.mean(ours.log_prob(held_theta, context=held_x))),
        )
    )
    trained["i-ResNet"] = _Adapter(ours)
    layers, width = (2, (16,)) if args.tiny else (5, (32, 32))
    for kind, label in (("maf", "TFP MAF"), ("realnvp", "TFP RealNVP")):
        keras.utils.set_random_seed(args.seed)
        flow = TFPConditionalFlow(kind, simulator.theta_dim, simulator.x_dim, layers, width)
        steps, seconds = train_tfp(flow, dataset, args.seconds, 1e-3)
        rows.append(
            dict(
                model=f"{label} conditional ({layers} layers, hidden {list(width)})",
                parameters=common.count_parameters(flow.trainable_variables),
                steps=steps,
                seconds=seconds,
                nll=-float(np.mean(flow.log_prob(held_theta, held_x))),
            )
        )
        trained[label] = flow
    truth = simulator.conditional_entropy
    for row in rows:
        row["gap_to_truth"] = row["nll"] - truth
    return {
        "truth_nll": truth,
        "best_unconditional_nll": simulator.prior_entropy,
        "seconds_per_model": args.seconds,
        "rows": rows,
    }, trained


class _Adapter:
    """Our flow with the baselines' ``log_prob(x, c)`` / ``sample(c)``."""

    def __init__(self, flow):
        self.flow = flow

    def log_prob(self, x, c):
        return self.flow.log_prob(x, context=c)

    def sample(self, c, seed=None):
        return self.flow.sample(context=np.asarray(c, "float32"), seed=seed)


# -- part 3: calibration of the posterior estimators ------------------------------------------
def sbi(args, simulator, trained):
    x_obs = np.array([1.0, -0.5, 0.8], dtype="float32")[: simulator.x_dim]
    pairs, draws = (50, 100) if args.tiny else (500, 500)
    truth_theta, xs = simulator.simulate(pairs, seed=args.seed + 2)
    mean, cov = simulator.posterior(x_obs)
    rows = []
    for name, flow in trained.items():
        samples = np.asarray(flow.sample(np.repeat(x_obs[None], 4000, 0), seed=3))
        log_q = np.asarray(flow.log_prob(samples, np.repeat(x_obs[None], 4000, 0)))
        kl = float(np.mean(log_q - simulator.posterior_log_prob(samples, x_obs[None])))
        many = np.asarray(flow.sample(np.repeat(xs, draws, 0), seed=4)).reshape(pairs, draws, -1)
        coverage = {}
        for level in (50, 90):
            low = np.percentile(many, 50 - level / 2, axis=1)
            high = np.percentile(many, 50 + level / 2, axis=1)
            coverage[level] = float(np.mean((truth_theta >= low) & (truth_theta <= high)))
        rows.append(
            dict(
                model=name,
                kl_q_p=kl,
                mean_error=float(np.max(np.abs(samples.mean(0) - mean[0]))),
                cov_error=float(np.max(np.abs(np.cov(samples.T) - cov))),
                coverage_50=coverage[50],
                coverage_90=coverage[90],
            )
        )
    return {"x_obs": x_obs.tolist(), "pairs": pairs, "draws_per_pair": draws, "rows": rows}


# -- part 2: the digits ----------------------------------------------------------------------
def _logit(x):
    """Logit of ``alpha + (1 - 2 alpha) x`` and its log-det per example (keras_iresnet's Logit)."""
    s = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * x
    y = tf.math.log(s) - tf.math.log1p(-s)
    log_det = tf.reduce_sum(
        math.log(1 - 2 * LOGIT_ALPHA) - tf.math.log(s) - tf.math.log1p(-s), axis=-1
    )
    return y, log_det


def digits(args):
    recipe = recipes.get("digits-conditional")
    n_train = 300 if args.tiny else None
    split = runs.load_split(recipe, seed=args.seed, n_train=n_train)
    train, _ = runs.datasets(recipe, split, drop_remainder=True)
    classes, dims = split.num_classes, int(np.prod(split.input_shape))
    # one fixed dequantization of the held-out images
    held_x = common.dequantize(split.x_test, args.seed + 7).astype("float32")
    held_c = data.one_hot_labels(split.y_test, classes)

    def bits_per_dim(log_prob):
        return float(
            np.mean((-np.asarray(log_prob) + dims * math.log(256.0)) / (dims * math.log(2.0)))
        )

    rows = []
    keras.utils.set_random_seed(args.seed)
    overrides = common.tiny_model(recipe) if args.tiny else {}
    ours = runs.build_model(recipe, split, **overrides)
    runs.compile_model(ours, recipe)
    steps, seconds = fit_for(ours, train, args.seconds, runs.make_callbacks(recipe, split))
    ours.eval_logdet = logdet.PowerSeries(n_terms=20, n_samples=4)
    log_prob = np.concatenate(
        [
            ours.log_prob(held_x[i : i + 128], context=held_c[i : i + 128])
            for i in range(0, len(held_x), 128)
        ]
    )
    rows.append(
        dict(
            model="i-ResNet recipe digits-conditional",
            parameters=common.count_parameters(ours.trainable_variables),
            steps=steps,
            seconds=seconds,
            bits_per_dim=bits_per_dim(log_prob),
        )
    )
    flat = train.map(lambda x, c: (tf.reshape(x, [tf.shape(x)[0], -1]), c))
    flat_held = held_x.reshape(len(held_x), -1)
    layers = 2 if args.tiny else 4
    for kind, label, hidden in (("maf", "TFP MAF", (96,)), ("realnvp", "TFP RealNVP", (80, 80))):
        hidden = (16,) if args.tiny else hidden
        keras.utils.set_random_seed(args.seed)
        flow = TFPConditionalFlow(kind, dims, classes, layers, hidden)

        def in_logit_space(x, c, flow=flow):
            y, log_det = _logit(x)
            return flow.log_prob(y, c) + log_det

        class Wrapped:
            trainable_variables = flow.trainable_variables
            log_prob = staticmethod(in_logit_space)

        steps, seconds = train_tfp(Wrapped, flat, args.seconds, 1e-3)
        rows.append(
            dict(
                model=f"{label} conditional ({layers} layers, hidden {list(hidden)})",
                parameters=common.count_parameters(flow.trainable_variables),
                steps=steps,
                seconds=seconds,
                bits_per_dim=bits_per_dim(in_logit_space(flat_held, held_c)),
            )
        )
    return {
        "seconds_per_model": args.seconds,
        "n_train": len(split.x_train),
        "n_test": len(held_x),
        "rows": rows,
    }


# -- the command ------------------------------------------------------------------------------
def parse(argv=None):
    p = common.parser(__doc__, full=False)
    p.prog = "python -m benchmarks.conditional"
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="training budget per model in seconds (default 120; --tiny 5)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the models")
    args = p.parse_args(argv)
    args.parts = [part for part in args.parts.split(",") if part]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"unknown parts {unknown}; the parts are {PARTS}")
    if args.seconds is None:
        args.seconds = 5.0 if args.tiny else 120.0
    return args


def main(argv=None):
    args = parse(argv)
    simulator = data.GaussianLinear()
    settings = {key: value for key, value in vars(args).items() if key != "probe"}
    payload = {"benchmark": "conditional", "machine": common.machine(), "settings": settings}
    trained = None
    if "closed_form" in args.parts or "sbi" in args.parts:
        payload["closed_form"], trained = closed_form(args, simulator)
        common.print_table(
            payload["closed_form"]["rows"],
            ["model", "parameters", "steps", "seconds", "nll", "gap_to_truth"],
            title="closed form: held-out conditional NLL (nats), truth "
            f"{simulator.conditional_entropy:.4f}, best without the context "
            f"{simulator.prior_entropy:.4f}; {args.seconds:g} s per model",
        )
    if "sbi" in args.parts:
        payload["sbi"] = sbi(args, simulator, trained)
        common.print_table(
            payload["sbi"]["rows"],
            ["model", "kl_q_p", "mean_error", "cov_error", "coverage_50", "coverage_90"],
            title="SBI calibration of the closed-form models (calibrated: coverage 0.50 / 0.90)",
        )
    if "digits" in args.parts:
        payload["digits"] = digits(args)
        common.print_table(
            payload["digits"]["rows"],
            ["model", "parameters", "steps", "seconds", "bits_per_dim"],
            title="digits: held-out conditional bits/dim (context: one-hot label); "
            f"{args.seconds:g} s per model",
        )
    text = json.dumps(payload, indent=2, default=float)
    print(f"\n{text}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
