"""Quality (issue 7): 2-D densities, image bits/dim and digits classification.

Parts (``--parts``, default all):

- ``2d``: test NLL (nats) of the i-ResNet flow vs TFP RealNVP and MAF on five
  2-D densities. Same data, same training budget (epochs, batch size, Adam
  learning rate), about the same number of parameters, several seeds (mean and
  standard deviation). The i-ResNet flow uses the exact log-det (2-D), as in the
  paper's Figure 2 experiment (ELU; 40 blocks of width 18 at coeff 0.99 by default,
  where the paper used 100 blocks at 0.97).
- ``images``: test bits/dim of the i-ResNet flow vs a TFP Glow (``tfb.Glow``,
  affine couplings + 1x1 convs + ActNorm) of similar size, same budget, on
  scikit-learn digits and on a held-out split of the MNIST test-images file
  (skipped with a reason when the file is absent).
- ``classification``: digits test accuracy of the i-ResNet classifier at coeff
  0.5 / 0.7 / 0.9 and of its vanilla twin, with the reconstruction error of the
  inverse (the shape of the paper's Table 2).
"""
from common import parser, report  # noqa: I001

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import keras_iresnet as kir  # noqa: E402
from keras_iresnet import data, models  # noqa: E402

tfb, tfd = tfp.bijectors, tfp.distributions
DENSITIES = ("moons", "8gaussians", "checkerboard", "2spirals", "pinwheel")


def _mlp(hidden, outputs):
    return keras.Sequential([
        keras.Input((1,)), keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(outputs),
    ])


def realnvp(layers, hidden):
    """RealNVP couplings (1 -> 1 dimension) with Keras 3 MLPs; variables via the bridge."""
    bijectors, variables = [], []
    for _ in range(layers):
        net = _mlp(hidden, 2)
        variables += kir.bridge.tf_variables(net, trainable_only=True)

        def fn(x, output_units, net=net, **kwargs):
            out = net(x)
            return out[..., :1], tf.tanh(out[..., 1:])

        bijectors += [tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=fn), tfb.Permute([1, 0])]
    return tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), tfb.Chain(bijectors)), variables


def maf(layers, hidden):
    """Masked autoregressive flow with TFP's AutoregressiveNetwork (its own tf.Variables)."""
    bijectors = []
    for _ in range(layers):
        made = tfb.AutoregressiveNetwork(params=2, hidden_units=[hidden, hidden], activation="relu")
        bijectors += [tfb.MaskedAutoregressiveFlow(made), tfb.Permute([1, 0])]
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), tfb.Chain(bijectors))
    dist.log_prob(tf.zeros([1, 2]))  # create the variables
    return dist, dist.trainable_variables


def train_tfp(dist, variables, train, epochs, batch, lr, seed):
    """Maximum likelihood with Adam on the points ``train``, reshuffled every epoch."""
    rng = np.random.default_rng(seed)
    train_dataset(dist, variables, lambda: np.array_split(rng.permutation(train), max(1, len(train) // batch)),
                  epochs, lr)


def count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--parts", default="2d,images,classification",
                   help="comma-separated subset of 2d, images, classification")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    unknown = parts - {"2d", "images", "classification"}
    if unknown:
        p.error(f"--parts: unknown part(s) {sorted(unknown)}; expected 2d, images, classification")
    tables = {}
    if "2d" in parts:
        budget = {}
        tables["2d"] = (density_2d_rows(args, budget), ["density", "model", "parameters", "test_nll_mean",
                                                        "test_nll_std", "train_seconds_per_seed", "best"])
    if "images" in parts:
        tables["images"] = (image_rows(args), ["data", "model", "parameters", "epochs", "train_seconds",
                                               "test_bits_per_dim", "evaluation"])
    if "classification" in parts:
        tables["classification"] = (classification_rows(args), [
            "layout", "model", "test_accuracy_mean", "test_accuracy_std", "reconstruction_error_max",
            "epochs", "seeds"])
    for name, (rows, columns) in tables.items():
        print(f"\n{name}")
        report(f"density-{name}", rows, columns, _NoOut())
    extra = {name: rows for name, (rows, _) in tables.items()}
    if "2d" in parts:
        extra["budget"] = budget
    all_rows = [dict(part=name, **row) for name, (rows, _) in tables.items() for row in rows]
    print()
    report("density", all_rows, ["part"], args, extra=extra)


class _NoOut:
    out = None


def density_2d_rows(args, extra):
    # Baselines: `blocks` couplings / MADEs with `hidden`-wide MLPs. The i-ResNet gets
    # about the same parameter count spread over more, narrower blocks (`ires_blocks`
    # of width `ires_hidden`): a contractive block bends space only so far, so depth
    # matters more than width (the paper's Figure 2 model has 100 blocks).
    if args.tiny:
        densities, seeds, n_train, epochs, blocks, hidden = DENSITIES[:1], 1, 512, 1, 2, 16
        ires_blocks, ires_hidden = 2, 16
    elif args.full:
        densities, seeds, n_train, epochs, blocks, hidden = DENSITIES, 5, 50000, 100, 10, 128
        ires_blocks, ires_hidden = 100, 40  # the paper's Figure 2 depth
    else:
        densities, seeds, n_train, epochs, blocks, hidden = DENSITIES, 2, 10000, 10, 4, 64
        ires_blocks, ires_hidden = 40, 18
    # coeff 0.99 rather than the paper's 0.97: on checkerboard and two spirals (10 blocks)
    # it gave 2.706 / 3.495 nats against 2.749 / 3.497 (benchmarks/README.md).
    coeff = 0.99
    batch, lr = 256, 3e-3
    rows = []
    for name in densities:
        scores = {"i-ResNet": [], "RealNVP": [], "MAF": []}
        params, seconds = {}, {k: 0.0 for k in scores}
        for seed in range(seeds):
            train = data.sample_2d(name, n_train, seed=100 + seed)
            test = data.sample_2d(name, 5000, seed=200 + seed)
            keras.utils.set_random_seed(seed)
            start = time.perf_counter()
            flow = models.iresnet_flow((2,), blocks_per_scale=ires_blocks, hidden=ires_hidden, coeff=coeff)
            flow.compile(keras.optimizers.Adam(lr))
            flow.fit(train, epochs=epochs, batch_size=batch, verbose=0)
            seconds["i-ResNet"] += time.perf_counter() - start
            scores["i-ResNet"].append(-float(tf.reduce_mean(flow.log_prob(test))))
            params["i-ResNet"] = count(flow.trainable_variables)
            for label, build in (("RealNVP", realnvp), ("MAF", maf)):
                keras.utils.set_random_seed(seed)
                start = time.perf_counter()
                dist, variables = build(blocks, hidden)
                train_tfp(dist, variables, train, epochs, batch, lr, seed)
                seconds[label] += time.perf_counter() - start
                scores[label].append(-float(tf.reduce_mean(dist.log_prob(test))))
                params[label] = count(variables)
        best = min(scores, key=lambda k: np.mean(scores[k]))
        print(f"2d: {name}: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in scores.items()), flush=True)
        for label, values in scores.items():
            rows.append({
                "density": name, "model": label, "parameters": params[label],
                "test_nll_mean": float(np.mean(values)), "test_nll_std": float(np.std(values)),
                "train_seconds_per_seed": seconds[label] / seeds, "best": label == best,
            })
    extra["budget"] = {"epochs": epochs, "batch_size": batch, "learning_rate": lr, "n_train": n_train,
                       "seeds": seeds, "baseline_layers": blocks, "baseline_hidden": hidden,
                       "iresnet_blocks": ires_blocks, "iresnet_hidden": ires_hidden, "iresnet_coeff": coeff}
    return rows


def glow(shape, blocks, steps, hidden, init_batch):
    """``tfb.Glow`` (ActNorm, 1x1 conv, affine coupling with a ``hidden``-channel network) + N(0, I).

    Glow's ActNorm initializes from the first batch it sees (data-dependent
    init), so the variables are created on ``init_batch``, a batch of real data.
    """
    bijector = tfb.Glow(
        output_shape=shape, num_glow_blocks=blocks, num_steps_per_block=steps,
        coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=hidden),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork,
    )
    base = tfd.Sample(tfd.Normal(0.0, 1.0), bijector.inverse_event_shape(shape))
    dist = tfd.TransformedDistribution(base, bijector)
    dist.log_prob(init_batch)  # create (and data-initialize) the variables
    return dist, dist.trainable_variables


def with_estimator(flow, estimator, fn):
    """Run ``fn()`` with every residual block of ``flow`` using ``estimator`` for its log-det."""
    blocks = [layer for layer in flow.trunk.chain if isinstance(layer, kir.InvertibleResidualBlock)]
    saved = [block.estimator for block in blocks]
    try:
        for block in blocks:
            block.estimator = estimator
        return fn()
    finally:
        for block, old in zip(blocks, saved):
            block.estimator = old


def mean_bits_per_dim(log_prob_fn, test, event_dims):
    """Bits/dim of dequantized 8-bit data from ``ln p`` in nats: ``(-ln p + D ln 256) / (D ln 2)``."""
    values = [log_prob_fn(batch) for batch in test]
    nll = -float(tf.reduce_mean(tf.concat(values, 0)))
    return (nll + event_dims * np.log(256.0)) / (event_dims * np.log(2.0))


def image_rows(args):
    """Bits/dim on digits and on the MNIST test-images file: i-ResNet flow vs TFP Glow."""
    sets = []
    digits, _ = data.digits_arrays()
    sets.append(("digits 8x8 (1400 train / 397 test)", digits[:1400], digits[1400:]))
    try:
        mnist, _ = data.mnist_file_arrays()
        n_test = 1000
        sets.append((f"MNIST test-images file ({len(mnist) - n_test} train / {n_test} held out)",
                     mnist[:-n_test], mnist[-n_test:]))
    except FileNotFoundError as error:
        print(f"images: MNIST file skipped ({error})")
    if args.tiny:
        sets = [(name, train[:128], test[:64]) for name, train, test in sets[:1]]
    rows = []
    for name, train, test in sets:
        shape = train.shape[1:]
        small = shape[0] <= 8
        if args.tiny:
            epochs, blocks, hidden, glow_steps, glow_hidden = 1, 1, 8, 1, 8
        elif args.full:  # the official code's density settings (3 scales x 16 blocks, 512 channels)
            epochs, blocks, hidden, glow_steps, glow_hidden = 200, 16, 512, 32, 512
        elif small:
            epochs, blocks, hidden, glow_steps, glow_hidden = 30, 4, 24, 4, 52
        else:
            epochs, blocks, hidden, glow_steps, glow_hidden = 3, 4, 24, 4, 52
        scales = 3 if args.full and not small else 2
        batch, lr, terms = 64, 1e-3, 5
        train_ds = data.image_dataset(train, None, "density", batch, seed=0)
        test_ds = data.image_dataset(test, None, "density", 250, shuffle=False).map(
            lambda x: x)  # fixed batches; dequantization noise differs per call, averaged over the set
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        flow = models.iresnet_flow(shape, scales=scales, blocks_per_scale=blocks, hidden=hidden, coeff=0.9,
                                   initial_squeeze=True, logdet=kir.logdet.PowerSeries(n_terms=terms))
        flow.compile(keras.optimizers.Adam(lr))
        flow.fit(train_ds, epochs=epochs, verbose=0)
        ires_seconds = time.perf_counter() - start
        d = int(np.prod(shape))
        if small:
            evaluation, estimator = "exact log-det", kir.logdet.Exact(max_dim=4096)
        else:
            evaluation, estimator = "power series, 20 terms", kir.logdet.PowerSeries(n_terms=20)
        ires_bpd = with_estimator(flow, estimator, lambda: mean_bits_per_dim(flow.log_prob, test_ds, d))
        print(f"images: {name}: i-ResNet flow {ires_bpd:.3f} bits/dim after {ires_seconds:.0f} s", flush=True)
        rows.append({"data": name, "model": f"i-ResNet flow ({scales} scales x {blocks} blocks, hidden {hidden})",
                     "parameters": count(flow.trainable_variables), "epochs": epochs,
                     "train_seconds": ires_seconds, "test_bits_per_dim": ires_bpd, "evaluation": evaluation})
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        dist, variables = glow(shape, scales, glow_steps, glow_hidden, next(iter(train_ds)))
        train_dataset(dist, variables, train_ds, epochs, lr)
        rows.append({"data": name, "model": f"TFP Glow ({scales} blocks x {glow_steps} steps, hidden {glow_hidden})",
                     "parameters": count(variables), "epochs": epochs,
                     "train_seconds": time.perf_counter() - start,
                     "test_bits_per_dim": mean_bits_per_dim(dist.log_prob, test_ds, d), "evaluation": "exact"})
    return rows


def train_dataset(dist, variables, dataset, epochs, lr):
    """Maximum likelihood with Adam over ``dataset`` (an iterable of batches, or a callable
    returning one per epoch); a ``tf.data`` pipeline draws fresh dequantization each epoch."""
    optimizer = keras.optimizers.Adam(lr)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for _ in range(epochs):
        for x in dataset() if callable(dataset) else dataset:
            step(x)


def classification_rows(args):
    """Digits accuracy and reconstruction error per coeff and for the vanilla twin (paper's Table 2)."""
    import warnings

    from keras_iresnet import certify

    train, test = data.digits_split("classify")
    x = next(iter(test))[0][:64]
    layouts = {
        "paper: squeeze, pad to 16 channels, hidden 32": dict(stages=(2, 2), hidden=32, initial_squeeze=True,
                                                              pad_channels=12),
        "pad to 4 channels, hidden 16": dict(stages=(2, 2), hidden=16, pad_channels=3),
    }
    seeds, epochs = (1, 1) if args.tiny else ((5, 30) if args.full else (3, 10))
    variants = [("c = 0.5", 0.5), ("c = 0.7", 0.7), ("c = 0.9", 0.9), ("vanilla", None)]
    if args.tiny:
        layouts = dict(list(layouts.items())[:1])
        variants = variants[2:]
    rows = []
    for layout, kwargs in layouts.items():
        for label, coeff in variants:
            if not layout.startswith("paper") and coeff in (0.5, 0.7):
                continue
            accuracies, errors = [], []
            for seed in range(seeds):
                keras.utils.set_random_seed(seed)
                model = models.iresnet_classifier((8, 8, 1), 10, coeff=coeff or 0.9, vanilla=coeff is None, **kwargs)
                model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                              keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
                model.fit(train, epochs=epochs, verbose=0)
                accuracies.append(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the vanilla inverse need not converge
                    errors.append(certify.reconstruction_report(model.trunk, x)["max"])
            print(f"classification: {layout}, {label}: accuracy {np.mean(accuracies):.3f}", flush=True)
            rows.append({"layout": layout, "model": label, "test_accuracy_mean": float(np.mean(accuracies)),
                         "test_accuracy_std": float(np.std(accuracies)),
                         "reconstruction_error_max": float(np.max(errors)), "epochs": epochs, "seeds": seeds})
    return rows


if __name__ == "__main__":
    main()
