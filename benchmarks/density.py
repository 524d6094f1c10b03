"""2-D density quality (issue 7, first part): i-ResNet flow vs TFP RealNVP and MAF.

Same data, same training budget (epochs, batch size, Adam learning rate), about
the same number of parameters, several seeds; test NLL in nats (mean and
standard deviation over seeds). The i-ResNet flow uses the exact log-det (2-D),
as in the paper's Figure 2 experiment (coeff 0.97, ELU).
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
    optimizer = keras.optimizers.Adam(lr)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for chunk in np.array_split(rng.permutation(train), max(1, len(train) // batch)):
            step(chunk)


def count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    # Baselines: `blocks` couplings / MADEs with `hidden`-wide MLPs. The i-ResNet gets
    # about the same parameter count spread over more, narrower blocks (`ires_blocks`
    # of width `ires_hidden`): a contractive block bends space only so far, so depth
    # matters more than width (the paper's Figure 2 model has 100 blocks).
    if args.tiny:
        densities, seeds, n_train, epochs, blocks, hidden = DENSITIES[:1], 1, 512, 1, 2, 16
        ires_blocks, ires_hidden = 2, 16
    elif args.full:
        densities, seeds, n_train, epochs, blocks, hidden = DENSITIES, 5, 50000, 100, 10, 128
        ires_blocks, ires_hidden = 40, 80
    else:
        densities, seeds, n_train, epochs, blocks, hidden = DENSITIES, 2, 10000, 10, 4, 64
        ires_blocks, ires_hidden = 10, 40
    coeff = 0.97
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
        for label, values in scores.items():
            rows.append({
                "density": name, "model": label, "parameters": params[label],
                "test_nll_mean": float(np.mean(values)), "test_nll_std": float(np.std(values)),
                "train_seconds_per_seed": seconds[label] / seeds, "best": label == best,
            })
    report("density", rows, ["density", "model", "parameters", "test_nll_mean", "test_nll_std",
                             "train_seconds_per_seed", "best"], args,
           extra={"budget": {"epochs": epochs, "batch_size": batch, "learning_rate": lr, "n_train": n_train,
                             "seeds": seeds, "baseline_layers": blocks, "baseline_hidden": hidden,
                             "iresnet_blocks": ires_blocks, "iresnet_hidden": ires_hidden,
                             "iresnet_coeff": coeff}})


if __name__ == "__main__":
    main()
