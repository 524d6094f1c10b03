"""The image race at equal wall-clock: the i-ResNet recipes against TFP Glow and RealNVP.

Held-out bits/dim of the i-ResNet image recipe ("mnist" on the MNIST test-images
file, 9,000 train / the last 1,000 held out; "digits-density" on digits, 1,400 /
397) against TFP Glow (``tfb.Glow``) and TFP RealNVP (4 couplings of MLPs on the
flattened image), each trained *alone* for the same wall-clock budget
(``--minutes`` per model on MNIST, default 10, a quarter of it on digits; building
and tracing included, evaluation excluded). Every model sees the same split, the
same dequantization (fresh uniform noise every epoch; one fixed draw for the
held-out set), the same ``Logit`` and the same learned diagonal Gaussian base;
the baselines are sized to the i-ResNet's parameter count. The i-ResNet is trained
with ``model.fit`` and the recipe's callbacks (its held-out bits/dim with a 20-term
power series and 2 probes; the last point is the EMA weights where the recipe keeps
an EMA); the baselines with the recipe's optimizer without EMA (on MNIST with the
settings of the earlier races, ``BASELINE_TRAINING``).

Reported: bits/dim with the standard error over the images at 10, 20, 50 and 100 %
of the budget (1, 2, 5 and 10 minutes at the default), steps taken, parameters, the
closed-form "logit + independent Gaussian per pixel" baseline, and a PNG of bits/dim
against minutes (``--figure``).
Without the MNIST file (``../shared/data``) only digits runs, and it says so.

Run (training alone: 3 models x 10 minutes on MNIST and 3 x 2.5 minutes on digits;
``--models iresnet,glow`` for the two front runners only)::

    python -m benchmarks.density_images \\
        --figure benchmarks/results_density_images.png \\
        --out benchmarks/results_density_images.json

Numbers: benchmarks/README.md, "Quality", section "Images: the race at equal wall-clock".
"""

import math

import keras
import numpy as np
import tensorflow as tf

from benchmarks.baselines import (
    LogitGaussian,
    flattened_realnvp,
    glow,
    logit_gaussian_bits_per_dim,
    size_to,
)
from benchmarks.common import (
    StopAfter,
    WallClock,
    compiled_step,
    count_parameters,
    dequantize,
    parser,
    report,
    tiny_model,
    train_for,
)
from keras_iresnet import data, logdet
from keras_iresnet.experiments import recipes, runs

COLUMNS = [
    "data",
    "model",
    "parameters",
    "minutes",
    "steps",
    "test_bits_per_dim",
    "standard_error",
    "evaluation",
]


def image_sets(tiny):
    """``[(name, recipe name, train images, test images)]``: digits, and the MNIST file if there."""
    digits, _ = data.digits_arrays()
    sets = [("digits", "digits-density", digits[:1400], digits[1400:])]
    try:
        mnist, _ = data.mnist_file_arrays()
        sets.append(("mnist-file", "mnist", mnist[:-1000], mnist[-1000:]))
    except FileNotFoundError as error:
        print(f"images: MNIST file skipped ({error})")
    if tiny:
        sets = [(name, recipe, train[:128], test[:64]) for name, recipe, train, test in sets[:1]]
    return sets


#: The baselines' training settings where they differ from the recipe's: on MNIST those of
#: every earlier race (Adam 2e-3, clipnorm 1, 200 warm-up steps, batch 64), not the i-ResNet
#: recipe's (Adam 6e-3 at batch 32, chosen for the i-ResNet by its own search).
BASELINE_TRAINING = {
    "mnist": dict(
        optimizer={"name": "adam", "learning_rate": 2e-3, "clipnorm": 1.0, "use_ema": False},
        warmup_steps=200,
        batch_size=64,
    )
}

#: The models of the race (``--models``).
MODELS = ("iresnet", "glow", "realnvp")


def race(name, recipe, train, test, budget, fractions=(0.1, 0.2, 0.5), models=MODELS):
    """One data set's race: ``(rows, {model: [(minutes, steps, bits/dim, s.e.)]})``.

    Every model is evaluated at these ``fractions`` of the ``budget`` (seconds) and at its end.
    """
    checkpoints = [budget * f for f in fractions]
    shape = train.shape[1:]
    dims = int(np.prod(shape))
    alpha = recipe.model["logit"]
    test_x = dequantize(test, 7).astype("float32")
    closed = logit_gaussian_bits_per_dim(train, test_x, alpha, seed=7)
    train_ds = data.image_dataset(train, None, "density", recipe.batch_size, seed=0)
    split = runs.Split(name, "density", train, test)
    results = {}

    def evaluate(log_prob_fn):
        values = np.concatenate([log_prob_fn(batch).numpy() for batch in np.array_split(test_x, 4)])
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
        curve.append((at / 60.0, steps, *evaluate(lambda b: model.log_prob(b, logdet=estimator))))

    callbacks = runs.make_callbacks(recipe, split)
    stop = StopAfter(clock, budget, checkpoints, ires_checkpoint)
    model.fit(train_ds, epochs=10**6, verbose=0, callbacks=callbacks + [stop])
    ires_checkpoint(clock.elapsed(), stop.steps)  # the final weights (EMA swapped in at the end)
    target = count_parameters(model.trainable_variables)
    results["i-ResNet"] = (
        f"i-ResNet recipe {recipe.name!r}",
        target,
        curve,
        "power series, 20 terms, 2 probes" if model.eval_logdet is None else str(estimator),
    )

    # -- TFP Glow and RealNVP, sized to the i-ResNet's parameter count
    baseline_recipe = recipe.replace(**BASELINE_TRAINING.get(recipe.name, {}))
    train_ds = data.image_dataset(train, None, "density", baseline_recipe.batch_size, seed=0)
    init = next(iter(train_ds))
    glow_blocks = 1 if shape[0] <= 8 else 2
    glow_steps = 4

    def glow_params(hidden):
        flow = glow(shape, glow_blocks, glow_steps, hidden)
        preprocessing = LogitGaussian(alpha, flow.inverse_event_shape(shape))
        preprocessing.log_prob(flow, init[:2])
        return count_parameters(flow.trainable_variables)

    glow_hidden = size_to(target, glow_params, 4, 400)
    nvp_couplings = 4
    nvp_hidden = size_to(
        target, lambda h: count_parameters(flattened_realnvp(shape, nvp_couplings, h)[1]), 4, 2048
    )
    baselines = {
        "glow": ("TFP Glow", lambda: (glow(shape, glow_blocks, glow_steps, glow_hidden), None)),
        "realnvp": ("TFP RealNVP", lambda: flattened_realnvp(shape, nvp_couplings, nvp_hidden)),
    }
    for label, make in (baselines[m] for m in models if m in baselines):
        keras.utils.set_random_seed(0)
        clock = WallClock()
        bijector, variables = make()
        latent = bijector.inverse_event_shape(shape)
        preprocessing = LogitGaussian(alpha, latent)
        log_prob = lambda x, b=bijector, p=preprocessing: p.log_prob(b, x)  # noqa: E731
        log_prob(init)  # creates (and data-initializes) Glow's variables
        variables = list(variables or bijector.trainable_variables) + preprocessing.variables
        step = compiled_step(
            variables,
            lambda x, log_prob=log_prob: -tf.reduce_mean(log_prob(x)),
            runs.make_optimizer(baseline_recipe.replace(optimizer={"use_ema": False})),
        )
        curve = []

        def checkpoint(at, steps, log_prob=log_prob, curve=curve):
            curve.append((at / 60.0, steps, *evaluate(tf.function(log_prob))))

        steps = train_for(
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
        results[label] = (f"{label} ({detail})", count_parameters(variables), curve, "exact")

    rows = []
    for description, params, curve, evaluation in results.values():
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
    curves = {
        label: [list(point) for point in curve] for label, (_, _, curve, _) in results.items()
    }
    curves["closed form"] = closed
    return rows, curves


def race_figure(curves, path):
    """Bits/dim against training minutes, one panel per data set (PNG)."""
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


def main(argv=None):
    p = parser(__doc__, full=False)
    p.add_argument("--minutes", type=float, default=10.0, help="the budget per model on MNIST")
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated models to race, of {MODELS} (the i-ResNet always runs)",
    )
    p.add_argument("--figure", default=None, help="write the bits/dim-vs-minutes PNG here")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        p.error(f"--models must name models of {MODELS}; got {unknown}")
    rows, curves = [], {}
    for name, recipe_name, train, test in image_sets(args.tiny):
        recipe = recipes.get(recipe_name)
        minutes = args.minutes if name == "mnist-file" else args.minutes / 4
        fractions = (0.1, 0.2, 0.5)
        if args.tiny:  # the smoke test: one checkpoint before the end
            recipe = recipe.replace(model=tiny_model(recipe), init_examples=0)
            minutes, fractions = 0.02, (0.5,)
        data_rows, curves[name] = race(name, recipe, train, test, 60.0 * minutes, fractions, models)
        rows += data_rows
    if args.figure and curves:
        race_figure(curves, args.figure)
    print()
    return report(
        "density_images",
        rows,
        COLUMNS,
        args,
        extra={"image_curves": curves},
    )


if __name__ == "__main__":
    main()
