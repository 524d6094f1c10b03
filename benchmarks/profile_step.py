"""Where a training step of an image recipe goes (issue 13: why the race is lost).

For the recipe's model on one batch of its data (default ``mnist`` on the MNIST
test-images file when present, else ``digits-density``), each piece compiled
with ``tf.function`` and timed in interleaved rounds (median):

- the forward pass ``F(x)`` without log-det (inference mode);
- the forward pass with the training log-det estimator, no gradient;
- the gradient of the loss (forward + log-det + backward), no update;
- the post-update spectral tracking of every layer (``layer.track()``);
- the whole ``train_step`` (what ``fit`` runs: gradient, Adam with EMA, tracking).

Prints a table and JSON (``--out``).
"""

from common import parser, report, time_interleaved  # noqa: I001

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_iresnet import certify, data, recipes, runs  # noqa: E402


def _default_recipe():
    try:
        data.mnist_file_arrays()
        return "mnist"
    except FileNotFoundError:
        return "digits-density"


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--recipe",
        default=None,
        help="an image-density recipe (default: mnist, else digits-density)",
    )
    args = p.parse_args()
    name = "digits-density" if args.tiny else (args.recipe or _default_recipe())
    recipe = recipes.get(name)
    if args.tiny:
        recipe = recipe.replace(model={"blocks": (1, 1), "block": {"hidden": 8}}, init_examples=0)
    split = runs.load_split(recipe, n_train=512, n_test=64)
    keras.utils.set_random_seed(0)
    model = runs.build_model(recipe, split)
    runs.compile_model(model, recipe)
    train, _ = runs.datasets(recipe, split)
    x = next(iter(train))
    x = x[0] if isinstance(x, tuple) else x
    model(x, training=True)  # ActNorm initialization
    variables = model.trainable_variables
    layers = [layer for layer in certify.spectral_layers(model) if layer.coeff is not None]

    @tf.function
    def forward():
        return model.trunk(x, training=False)

    @tf.function
    def forward_log_det():
        return model.log_prob(x, training=True)

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.bits_per_dim(model.log_prob(x, training=True)))
        return tape.gradient(loss, variables)

    @tf.function
    def track():
        return [layer.track() for layer in layers]

    model.make_train_function()
    step = model.train_function
    dataset = tf.data.Dataset.from_tensors(x).repeat()
    iterator = iter(dataset)

    pieces = {
        "forward F(x), no log-det": lambda: forward(),
        "forward + training log-det": lambda: forward_log_det(),
        "gradient (forward + log-det + backward)": lambda: gradient(),
        "spectral tracking of all layers": lambda: track(),
        "whole train_step (fit)": lambda: step(iterator),
    }
    times = time_interleaved(
        {k: (lambda f=f: tf.nest.map_structure(np.asarray, f())) for k, f in pieces.items()},
        repeats=3 if args.tiny else 15,
    )
    whole = times["whole train_step (fit)"]
    rows = [{"piece": k, "ms": 1e3 * t, "share_of_step": t / whole} for k, t in times.items()]
    print(
        f"{name}: batch {int(x.shape[0])}, {len(layers)} spectral layers, "
        f"{int(sum(np.prod(v.shape) for v in variables))} parameters"
    )
    report(
        "profile_step",
        rows,
        ["piece", "ms", "share_of_step"],
        args,
        extra={"recipe": name, "batch": int(x.shape[0])},
    )


if __name__ == "__main__":
    main()
