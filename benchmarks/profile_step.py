"""Where a training step of an image recipe goes (why the race is lost).

For the recipe's model on one batch of its data (default "mnist" on the MNIST
test-images file when present, else "digits-density"; ``--recipe`` picks another),
each piece compiled with ``tf.function`` and timed in interleaved rounds (median
of 15):

- the forward pass ``F(x)`` without log-det (inference mode);
- the forward pass with the training log-det estimator, no gradient;
- the gradient of the loss (forward + log-det + backward), no update;
- the post-update spectral tracking of every layer (``layer.track()``);
- the whole ``train_step`` (what ``fit`` runs: gradient, Adam with EMA, tracking);

with each piece's share of the whole step.

Run::

    python -m benchmarks.profile_step --out benchmarks/results_profile_step.json

Numbers: benchmarks/README.md, "Quality", section "Images: the race at equal
wall-clock" (the paragraph "Where the i-ResNet's step goes").
"""

import keras
import numpy as np
import tensorflow as tf

from benchmarks.common import (
    count_parameters,
    parser,
    report,
    time_interleaved,
    tiny_model,
)
from keras_iresnet import data
from keras_iresnet.experiments import recipes, runs
from keras_iresnet.layers.walk import normalized_layers


def _default_recipe():
    try:
        data.mnist_file_arrays()
        return "mnist"
    except FileNotFoundError:
        return "digits-density"


def main(argv=None):
    p = parser(__doc__, full=False)
    p.add_argument(
        "--recipe",
        default=None,
        help="an image-density recipe (default: mnist, else digits-density)",
    )
    args = p.parse_args(argv)
    name = "digits-density" if args.tiny else (args.recipe or _default_recipe())
    recipe = recipes.get(name)
    if args.tiny:
        recipe = recipe.replace(model=tiny_model(recipe), init_examples=0)
    split = runs.load_split(recipe, n_train=512, n_test=64)
    keras.utils.set_random_seed(0)
    model = runs.build_model(recipe, split)
    runs.compile_model(model, recipe)
    train, _ = runs.datasets(recipe, split)
    x = next(iter(train))
    x = x[0] if isinstance(x, tuple) else x
    model(x, training=True)  # ActNorm initialization
    variables = model.trainable_variables
    layers = normalized_layers(model)

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
    iterator = iter(tf.data.Dataset.from_tensors(x).repeat())

    pieces = {
        "forward F(x), no log-det": forward,
        "forward + training log-det": forward_log_det,
        "gradient (forward + log-det + backward)": gradient,
        "spectral tracking of all layers": track,
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
        f"{count_parameters(variables)} parameters"
    )
    return report(
        "profile_step",
        rows,
        ["piece", "ms", "share_of_step"],
        args,
        extra={"recipe": name, "batch": int(x.shape[0])},
    )


if __name__ == "__main__":
    main()
