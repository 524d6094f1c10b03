"""Inverse vs forward pass of a trained network, in forward-pass equivalents (part c).

The trunk of the "digits-classifier" recipe trained 5 epochs at coeff 0.9
(:func:`benchmarks.inverse.trained_digits_trunk`), on 128 test images: the
compiled forward pass against the fixed-point inverse to a per-block relative
tolerance of 1e-7, timed in interleaved rounds (median of 10), with the reached
relative reconstruction error. Goal: an error of at most 1e-6 within 20 forward
passes. (``benchmarks.inverse`` compares the solvers and coefficients.)

Run::

    python -m benchmarks.speed_inverse --out benchmarks/results_speed_inverse.json

Numbers: benchmarks/README.md, "Speed", section (c).
"""

import warnings

import tensorflow as tf

from benchmarks.common import goal_rows, parser, print_table, report, time_interleaved
from benchmarks.inverse import trained_digits_trunk


def inverse_rows(tiny):
    """The fixed-point inverse of a trained digits trunk at coeff 0.9, in forward passes."""
    trunk, _, x = trained_digits_trunk(0.9, 1 if tiny else 5, tiny=tiny)
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


def main(argv=None):
    args = parser(__doc__, full=False).parse_args(argv)
    rows = inverse_rows(args.tiny)
    row = rows[0]
    goal = goal_rows(
        [
            (
                "inverse to 1e-6 at coeff 0.9 within 20 forward passes",
                row["inverse_over_forward"] if row["relative_error"] <= 1e-6 else float("inf"),
                20.0,
            )
        ]
    )
    print_table(goal, ["goal", "measured", "met"], title="goals")
    print("\nc: inverse vs forward")
    return report(
        "speed_inverse",
        rows,
        [
            "network",
            "batch",
            "forward_ms",
            "inverse_ms",
            "inverse_over_forward",
            "relative_error",
        ],
        args,
        extra={"goals": goal},
    )


if __name__ == "__main__":
    main()
