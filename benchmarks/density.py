"""Quality: 2-D densities, the image race against TFP, the hybrid and digits classification.

Parts (``--parts``, default all):

- ``2d``: test NLL (nats) of the "2d" recipe's i-ResNet flow vs TFP RealNVP and
  MAF of about the same size on five 2-D densities, several seeds. Table 1: the
  same epochs, batch and learning rate. Table 2: the same *wall-clock budget*
  per model (``--seconds``, building and tracing included).
- ``images``: the race on held-out bits/dim: the i-ResNet image recipe
  ("mnist" on the MNIST test-images file, "digits-density" on digits) vs TFP
  Glow (``tfb.Glow``) and TFP RealNVP, each trained alone for the same
  wall-clock budget (``--minutes``, default 20 per model on MNIST, a quarter of
  it on digits). Every model sees the same split, the same dequantization noise
  distribution (and one fixed draw for the held-out set), the same logit
  preprocessing and the same learned diagonal Gaussian base, so the comparison
  is of the flows; parameters within 20 %. Held-out bits/dim with the standard
  error over the images at 10, 25, 50 and 100 % of the budget, steps taken, the
  closed-form "logit + independent Gaussian per pixel" baseline, and a PNG of
  bits/dim against minutes (``--figure``).
- ``hybrid``: the "digits-hybrid" recipe: test accuracy and bits/dim against the
  classifier recipe and the closed-form baseline.
- ``classification``: digits test accuracy of the "digits-classifier" recipe at
  coeff 0.5 / 0.7 / 0.9 and of its vanilla twin, with the reconstruction error
  of the inverse (the shape of the paper's Table 2).
"""

from common import logit_gaussian_bits_per_dim, parser, report  # noqa: I001

import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import keras_iresnet as kir  # noqa: E402
from keras_iresnet import certify, data, logdet, recipes, runs  # noqa: E402

tfb, tfd = tfp.bijectors, tfp.distributions
DENSITIES = ("moons", "8gaussians", "checkerboard", "2spirals", "pinwheel")
PARTS = ("2d", "images", "hybrid", "classification")


def count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


class _NoOut:
    out = None


# -- TFP baselines -----------------------------------------------------------------------
def _mlp(inputs, hidden, outputs, layers=2):
    return keras.Sequential(
        [keras.Input((inputs,))]
        + [keras.layers.Dense(hidden, activation="relu") for _ in range(layers)]
        + [keras.layers.Dense(outputs, kernel_initializer="zeros")]
    )


def realnvp(dims, couplings, hidden):
    """RealNVP on vectors: affine couplings of Keras 3 MLPs, reversed order between couplings.

    Returns ``(bijector, tf.Variables)`` (the variables behind the Keras weights, via the bridge).
    """
    masked = dims // 2
    bijectors, variables = [], []
    for _ in range(couplings):
        net = _mlp(masked, hidden, 2 * (dims - masked))
        variables += kir.bridge.tf_variables(net, trainable_only=True)

        def fn(x, output_units, net=net, **kwargs):
            out = net(x)
            return out[..., :output_units], tf.tanh(out[..., output_units:])

        bijectors += [
            tfb.RealNVP(num_masked=masked, shift_and_log_scale_fn=fn),
            tfb.Permute(permutation=list(range(dims))[::-1]),
        ]
    return tfb.Chain(bijectors[::-1]), variables


def maf(couplings, hidden):
    """Masked autoregressive flow with TFP's AutoregressiveNetwork (its own tf.Variables)."""
    bijectors = []
    for _ in range(couplings):
        made = tfb.AutoregressiveNetwork(params=2, hidden_units=[hidden, hidden], activation="relu")
        bijectors += [tfb.MaskedAutoregressiveFlow(made), tfb.Permute([1, 0])]
    dist = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(2)), tfb.Chain(bijectors)
    )
    dist.log_prob(tf.zeros([1, 2]))  # create the variables
    return dist, dist.trainable_variables


def realnvp_2d(couplings, hidden):
    bijector, variables = realnvp(2, couplings, hidden)
    return tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), bijector), variables


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


def tfp_trainer(log_prob, variables, optimizer):
    """A compiled maximum-likelihood step ``step(x) -> loss`` over ``variables``."""

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(log_prob(x))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def train_tfp_for(
    step, batches, seconds=None, epochs=None, clock=None, checkpoints=(), on_checkpoint=None
):
    """Run ``step`` over ``batches()`` (one iterable per epoch) for an epoch or time budget."""
    clock = clock or WallClock()
    steps, pending = 0, list(checkpoints)
    epoch = 0
    while True:
        for x in batches():
            step(x)
            steps += 1
            while pending and clock.elapsed() >= pending[0]:
                clock.pause()
                on_checkpoint(pending.pop(0), steps)
                clock.resume()
            if seconds is not None and clock.elapsed() >= seconds:
                return steps
        epoch += 1
        if epochs is not None and epoch >= epochs:
            return steps


class StopAfter(keras.callbacks.Callback):
    """Stop ``fit`` once ``clock`` reaches ``seconds``; evaluate at the checkpoints (clock paused)."""

    def __init__(self, clock, seconds, checkpoints=(), on_checkpoint=None):
        super().__init__()
        self.clock, self.seconds = clock, seconds
        self.pending, self.on_checkpoint, self.steps = list(checkpoints), on_checkpoint, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        while self.pending and self.clock.elapsed() >= self.pending[0]:
            self.clock.pause()
            self.on_checkpoint(self.pending.pop(0), self.steps)
            self.clock.resume()
        if self.clock.elapsed() >= self.seconds:
            self.model.stop_training = True


# -- 2-D ---------------------------------------------------------------------------------------
def density_2d_rows(args, extra):
    recipe = recipes.get("2d")
    if args.tiny:
        densities, seeds, n_train, epochs, baseline = DENSITIES[:1], 1, 512, 1, (2, 16)
        recipe = recipe.replace(model={"blocks": 2})
        seconds = 5.0
    elif args.full:
        densities, seeds, n_train, epochs, baseline = DENSITIES, 5, 50000, 100, (10, 128)
        recipe = recipe.replace(model={"blocks": 100, "block": {"hidden": 40}})  # Figure 2's depth
        seconds = 600.0
    else:
        densities, seeds, n_train, epochs, baseline = (
            DENSITIES,
            3,
            recipe.n_train,
            recipe.epochs,
            (4, 64),
        )
        seconds = args.seconds
    seeds = args.seeds or seeds
    batch, lr = recipe.batch_size, recipe.optimizer["learning_rate"]
    rows = {"epochs": [], "seconds": []}
    for name in densities:
        for budget in ("epochs", "seconds"):
            scores = {"i-ResNet": [], "RealNVP": [], "MAF": []}
            params, spent, steps = {}, {k: 0.0 for k in scores}, {k: 0 for k in scores}
            for seed in range(seeds):
                train = data.sample_2d(name, n_train, seed=100 + seed)
                test = data.sample_2d(name, 5000, seed=200 + seed)
                keras.utils.set_random_seed(seed)
                clock = WallClock()
                flow = runs.build_model(recipe, input_shape=(2,))
                runs.compile_model(flow, recipe)
                stop = StopAfter(clock, seconds if budget == "seconds" else float("inf"))
                flow.fit(
                    train,
                    epochs=epochs if budget == "epochs" else 10**6,
                    batch_size=batch,
                    verbose=0,
                    callbacks=[stop],
                )
                spent["i-ResNet"] += clock.elapsed()
                steps["i-ResNet"] += stop.steps
                scores["i-ResNet"].append(-float(tf.reduce_mean(flow.log_prob(test))))
                params["i-ResNet"] = count(flow.trainable_variables)
                for label, build in (("RealNVP", realnvp_2d), ("MAF", maf)):
                    keras.utils.set_random_seed(seed)
                    clock = WallClock()
                    dist, variables = build(*baseline)
                    step = tfp_trainer(dist.log_prob, variables, keras.optimizers.Adam(lr))
                    rng = np.random.default_rng(seed)

                    def batches():
                        return np.array_split(rng.permutation(train), max(1, len(train) // batch))

                    steps[label] += train_tfp_for(
                        step,
                        batches,
                        seconds=seconds if budget == "seconds" else None,
                        epochs=epochs if budget == "epochs" else None,
                        clock=clock,
                    )
                    spent[label] += clock.elapsed()
                    scores[label].append(-float(tf.reduce_mean(dist.log_prob(test))))
                    params[label] = count(variables)
            best = min(scores, key=lambda k: np.mean(scores[k]))
            print(
                f"2d ({budget}): {name}: "
                + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in scores.items()),
                flush=True,
            )
            for label, values in scores.items():
                rows[budget].append(
                    {
                        "density": name,
                        "model": label,
                        "parameters": params[label],
                        "test_nll_mean": float(np.mean(values)),
                        "test_nll_std": float(np.std(values)),
                        "train_seconds_per_seed": spent[label] / seeds,
                        "steps_per_seed": steps[label] / seeds,
                        "best": label == best,
                    }
                )
    extra["2d_budget"] = {
        "epochs": epochs,
        "seconds": seconds,
        "batch_size": batch,
        "learning_rate": lr,
        "n_train": n_train,
        "seeds": seeds,
        "baseline_layers": baseline[0],
        "baseline_hidden": baseline[1],
        "iresnet_recipe": recipe.name,
        "iresnet_model": recipe.model,
    }
    return rows["epochs"], rows["seconds"]


# -- the image race ---------------------------------------------------------------------------
class LogitGaussian:
    """The shared preprocessing and base of every raced model: Logit(alpha) and a learned
    diagonal Gaussian over the flow's latent, as tf.Variables (for the TFP flows)."""

    def __init__(self, alpha, latent_shape):
        self.logit = kir.Logit(alpha, validate_args=False)
        self.base = kir.DiagonalGaussian()
        self.base.build((None,) + tuple(latent_shape))
        self.variables = list(kir.bridge.tf_variables(self.base, trainable_only=True))

    def log_prob(self, bijector, x):
        y, logit_log_det = self.logit.forward_and_log_det(x)
        z = bijector.inverse(y)
        return (
            self.base.log_prob(z)
            + bijector.inverse_log_det_jacobian(y, event_ndims=len(y.shape) - 1)
            + logit_log_det
        )


def glow_sized(shape, blocks, steps, hidden):
    return tfb.Glow(
        output_shape=shape,
        num_glow_blocks=blocks,
        num_steps_per_block=steps,
        coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=hidden),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork,
    )


def flattened_realnvp(shape, couplings, hidden):
    dims = int(np.prod(shape))
    bijector, variables = realnvp(dims, couplings, hidden)
    return tfb.Chain(
        [tfb.Reshape(event_shape_out=list(shape), event_shape_in=[dims]), bijector]
    ), variables


def _size_to(target, build, low, high):
    """The largest width in [low, high] whose model has at most ``target`` parameters (bisection)."""
    best = low
    while low <= high:
        mid = (low + high) // 2
        if build(mid) <= target:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best


def image_sets(args):
    digits, _ = data.digits_arrays()
    sets = [("digits", "digits-density", digits[:1400], digits[1400:])]
    try:
        mnist, _ = data.mnist_file_arrays()
        sets.append(("mnist-file", "mnist", mnist[:-1000], mnist[-1000:]))
    except FileNotFoundError as error:
        print(f"images: MNIST file skipped ({error})")
    if args.tiny:
        sets = [(name, recipe, train[:128], test[:64]) for name, recipe, train, test in sets[:1]]
    return sets


def image_rows(args, extra):
    rows, curves = [], {}
    for name, recipe_name, train, test in image_sets(args):
        recipe = recipes.get(recipe_name)
        if args.tiny:
            recipe = recipe.replace(
                model={"blocks": (1, 1), "block": {"hidden": 8}}, init_examples=0
            )
        minutes = args.minutes if name == "mnist-file" else args.minutes / 4
        if args.tiny:
            minutes = 0.05
        budget = 60.0 * minutes
        checkpoints = [budget * f for f in (0.1, 0.25, 0.5)]
        shape = train.shape[1:]
        dims = int(np.prod(shape))
        alpha = recipe.model["logit"]
        rng = np.random.default_rng(7)
        test_x = ((test.astype("float64") + rng.uniform(size=test.shape)) / 256.0).astype("float32")
        closed = logit_gaussian_bits_per_dim(train, test_x, alpha, seed=7)
        train_ds = data.image_dataset(train, None, "density", recipe.batch_size, seed=0)
        split = runs.Split(name, "density", train, test)
        results = {}

        def evaluate(log_prob_fn):
            values = np.concatenate(
                [log_prob_fn(batch).numpy() for batch in np.array_split(test_x, 4)]
            )
            bpd = (-values + dims * math.log(256.0)) / (dims * math.log(2.0))
            return float(bpd.mean()), float(bpd.std(ddof=1) / math.sqrt(len(bpd)))

        # -- the i-ResNet recipe, trained with model.fit as a user would
        keras.utils.set_random_seed(0)
        clock = WallClock()
        model = runs.build_model(recipe, split)
        runs.compile_model(model, recipe)
        estimator = model.eval_logdet or logdet.PowerSeries(n_terms=20, n_samples=2)
        curve = []

        def ires_checkpoint(at, steps, model=model, estimator=estimator, curve=curve):
            curve.append(
                (at / 60.0, steps, *evaluate(lambda b: model.log_prob(b, logdet=estimator)))
            )

        callbacks = runs.make_callbacks(recipe, split)
        stop = StopAfter(clock, budget, checkpoints, ires_checkpoint)
        model.fit(train_ds, epochs=10**6, verbose=0, callbacks=callbacks + [stop])
        ires_checkpoint(
            clock.elapsed(), stop.steps
        )  # the final weights (EMA swapped in at the end)
        target = count(model.trainable_variables)
        results["i-ResNet"] = (
            f"i-ResNet recipe {recipe.name!r}",
            target,
            curve,
            "power series, 20 terms, 2 probes" if model.eval_logdet is None else str(estimator),
        )

        # -- TFP Glow and RealNVP, sized to the i-ResNet's parameter count
        init = next(iter(train_ds))
        glow_blocks = 1 if shape[0] <= 8 else 2
        glow_steps = 4

        def glow_params(hidden):
            flow = glow_sized(shape, glow_blocks, glow_steps, hidden)
            preprocessing = LogitGaussian(alpha, flow.inverse_event_shape(shape))
            preprocessing.log_prob(flow, init[:2])
            return count(flow.trainable_variables)

        glow_hidden = _size_to(target, glow_params, 4, 400)
        nvp_couplings = 4

        def nvp_params(hidden):
            return count(flattened_realnvp(shape, nvp_couplings, hidden)[1])

        nvp_hidden = _size_to(target, nvp_params, 4, 2048)
        for label, make in (
            ("TFP Glow", lambda: (glow_sized(shape, glow_blocks, glow_steps, glow_hidden), None)),
            ("TFP RealNVP", lambda: flattened_realnvp(shape, nvp_couplings, nvp_hidden)),
        ):
            keras.utils.set_random_seed(0)
            clock = WallClock()
            bijector, variables = make()
            latent = bijector.inverse_event_shape(shape)
            preprocessing = LogitGaussian(alpha, latent)
            log_prob = lambda x, b=bijector, p=preprocessing: p.log_prob(b, x)  # noqa: E731
            log_prob(init)  # creates (and data-initializes) Glow's variables
            variables = list(variables or bijector.trainable_variables) + preprocessing.variables
            step = tfp_trainer(
                log_prob,
                variables,
                runs.make_optimizer(recipe.replace(optimizer={"use_ema": False})),
            )
            curve = []

            def checkpoint(at, steps, log_prob=log_prob, curve=curve):
                curve.append((at / 60.0, steps, *evaluate(tf.function(log_prob))))

            steps = train_tfp_for(
                step,
                lambda: train_ds,
                seconds=budget,
                clock=clock,
                checkpoints=checkpoints,
                on_checkpoint=checkpoint,
            )
            checkpoint(clock.elapsed(), steps)
            detail = (
                f"{glow_blocks} blocks x {glow_steps} steps, hidden {glow_hidden}"
                if label == "TFP Glow"
                else f"{nvp_couplings} couplings, MLP hidden {nvp_hidden}"
            )
            results[label] = (f"{label} ({detail})", count(variables), curve, "exact")
        for label, (description, params, curve, evaluation) in results.items():
            for minute, steps, bpd, stderr in curve:
                rows.append(
                    {
                        "data": name,
                        "model": description,
                        "parameters": params,
                        "minutes": minute,
                        "steps": steps,
                        "test_bits_per_dim": bpd,
                        "standard_error": stderr,
                        "evaluation": evaluation,
                    }
                )
            print(
                f"images: {name}: {description}: {curve[-1][2]:.3f} +- {curve[-1][3]:.3f} bits/dim "
                f"after {curve[-1][0]:.1f} min, {curve[-1][1]} steps",
                flush=True,
            )
        rows.append(
            {
                "data": name,
                "model": "logit + independent Gaussian per pixel (closed form)",
                "parameters": 2 * dims,
                "minutes": 0.0,
                "steps": 0,
                "test_bits_per_dim": closed,
                "standard_error": None,
                "evaluation": "exact",
            }
        )
        curves[name] = {
            label: [list(point) for point in curve] for label, (_, _, curve, _) in results.items()
        }
        curves[name]["closed form"] = closed
    extra["image_curves"] = curves
    if args.figure and curves:
        race_figure(curves, args.figure)
    return rows


def race_figure(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, (name, models) in zip(axes[0], curves.items()):
        for label, curve in models.items():
            if label == "closed form":
                ax.axhline(curve, color="gray", ls="--", label="logit + per-pixel Gaussian")
                continue
            points = np.array(curve)
            ax.errorbar(points[:, 0], points[:, 2], yerr=points[:, 3], marker="o", label=label)
        ax.set_xlabel("training minutes (build and tracing included)")
        ax.set_ylabel("held-out bits/dim")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")


# -- hybrid and classification ------------------------------------------------------------------
def hybrid_rows(args):
    hybrid, classifier = recipes.get("digits-hybrid"), recipes.get("digits-classifier")
    seeds = 1 if args.tiny else (args.seeds or (3 if args.full else 2))
    epochs = {
        "hybrid": 1 if args.tiny else hybrid.epochs,
        "classifier": 1 if args.tiny else classifier.epochs,
    }
    rows = []
    split = runs.load_split(hybrid)
    rng = np.random.default_rng(7)
    test_x = (
        (split.x_test.astype("float64") + rng.uniform(size=split.x_test.shape)) / 256.0
    ).astype("float32")
    closed = logit_gaussian_bits_per_dim(split.x_train, test_x, hybrid.model["logit"], seed=7)
    for label, recipe in (("hybrid", hybrid), ("classifier", classifier)):
        accuracies, bpds = [], []
        for seed in range(seeds):
            model, _, model_split = runs.train(recipe, epochs=epochs[label], verbose=0, seed=seed)
            results = model.evaluate(
                runs.datasets(recipe, model_split)[1], verbose=0, return_dict=True
            )
            accuracies.append(results["accuracy"])
            if "bits_per_dim" in results:
                bpds.append(results["bits_per_dim"])
        print(
            f"hybrid: {label}: accuracy {np.mean(accuracies):.3f}"
            + (f", {np.mean(bpds):.3f} bits/dim" if bpds else ""),
            flush=True,
        )
        rows.append(
            {
                "model": f"{label} recipe {recipe.name!r}",
                "epochs": epochs[label],
                "seeds": seeds,
                "test_accuracy_mean": float(np.mean(accuracies)),
                "test_accuracy_min": float(np.min(accuracies)),
                "test_bits_per_dim_mean": float(np.mean(bpds)) if bpds else None,
            }
        )
    rows.append(
        {
            "model": f"logit({hybrid.model['logit']}) + per-pixel Gaussian (closed form)",
            "epochs": 0,
            "seeds": 1,
            "test_accuracy_mean": None,
            "test_accuracy_min": None,
            "test_bits_per_dim_mean": closed,
        }
    )
    return rows


def classification_rows(args):
    """Digits accuracy and reconstruction error per coeff and for the vanilla twin (paper's Table 2)."""
    recipe = recipes.get("digits-classifier")
    split = runs.load_split(recipe)
    _, test = runs.datasets(recipe, split)
    x = next(iter(test))[0][:64]
    seeds, epochs = (1, 1) if args.tiny else ((5, 30) if args.full else (3, recipe.epochs))
    seeds = 1 if args.tiny else (args.seeds or seeds)
    variants = [("c = 0.5", 0.5), ("c = 0.7", 0.7), ("c = 0.9", 0.9), ("vanilla", None)]
    if args.tiny:
        variants = variants[2:]
    rows = []
    for label, coeff in variants:
        accuracies, errors = [], []
        for seed in range(seeds):
            block = {**recipe.model["block"], "coeff": coeff or 0.9}
            model, _, _ = runs.train(
                recipe,
                split=split,
                epochs=epochs,
                verbose=0,
                seed=seed,
                block=block,
                vanilla=coeff is None,
            )
            accuracies.append(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the vanilla inverse need not converge
                errors.append(certify.reconstruction_report(model.trunk, x)["max"])
        print(f"classification: {label}: accuracy {np.mean(accuracies):.3f}", flush=True)
        rows.append(
            {
                "model": label,
                "test_accuracy_mean": float(np.mean(accuracies)),
                "test_accuracy_std": float(np.std(accuracies)),
                "reconstruction_error_max": float(np.max(errors)),
                "epochs": epochs,
                "seeds": seeds,
            }
        )
    return rows


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}"
    )
    p.add_argument(
        "--seconds", type=float, default=30.0, help="2d: the equal wall-clock budget per model"
    )
    p.add_argument(
        "--minutes", type=float, default=20.0, help="images: the budget per model on MNIST"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per configuration (default: 2d and classification 3, hybrid 2)",
    )
    p.add_argument("--figure", default=None, help="images: write the bits/dim-vs-minutes PNG here")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        p.error(f"--parts: unknown part(s) {sorted(unknown)}; expected some of {', '.join(PARTS)}")
    tables, extra = {}, {}
    columns_2d = [
        "density",
        "model",
        "parameters",
        "test_nll_mean",
        "test_nll_std",
        "train_seconds_per_seed",
        "steps_per_seed",
        "best",
    ]
    if "2d" in parts:
        by_epochs, by_seconds = density_2d_rows(args, extra)
        tables["2d-equal-epochs"] = (by_epochs, columns_2d)
        tables["2d-equal-seconds"] = (by_seconds, columns_2d)
    if "images" in parts:
        tables["images"] = (
            image_rows(args, extra),
            [
                "data",
                "model",
                "parameters",
                "minutes",
                "steps",
                "test_bits_per_dim",
                "standard_error",
                "evaluation",
            ],
        )
    if "hybrid" in parts:
        tables["hybrid"] = (
            hybrid_rows(args),
            [
                "model",
                "epochs",
                "seeds",
                "test_accuracy_mean",
                "test_accuracy_min",
                "test_bits_per_dim_mean",
            ],
        )
    if "classification" in parts:
        tables["classification"] = (
            classification_rows(args),
            [
                "model",
                "test_accuracy_mean",
                "test_accuracy_std",
                "reconstruction_error_max",
                "epochs",
                "seeds",
            ],
        )
    for name, (rows, columns) in tables.items():
        print(f"\n{name}")
        report(f"density-{name}", rows, columns, _NoOut())
    extra.update({name: rows for name, (rows, _) in tables.items()})
    all_rows = [dict(part=name, **row) for name, (rows, _) in tables.items() for row in rows]
    print()
    report("density", all_rows, ["part"], args, extra=extra)


if __name__ == "__main__":
    main()
