"""Peak memory of a training step against the number of log-det terms (part e).

Max RSS of a fresh process running one training step of one block on 16x16x16
(hidden 64) at batch 256, for n = 2, 5, 10, 20 power-series terms, with plain
backprop through the series and with the Neumann gradient (the default). The probe
is the log-det benchmark's (:func:`benchmarks.logdet.memory_rows`, there at batch 64).

Run::

    python -m benchmarks.speed_memory --out benchmarks/results_speed_memory.json

Numbers: benchmarks/README.md, "Speed", section (e).
"""

from benchmarks.common import parser, report
from benchmarks.logdet import memory_rows


def main(argv=None):
    args = parser(__doc__, full=False).parse_args(argv)
    rows = memory_rows((2,) if args.tiny else (2, 5, 10, 20), batch=8 if args.tiny else 256)
    rows = [dict(part="e", **row) for row in rows]
    return report(
        "speed_memory",
        rows,
        ["n_terms", "batch", "peak_rss_mib_plain", "peak_rss_mib_neumann"],
        args,
    )


if __name__ == "__main__":
    main()
