"""The commands on a saved model: ``iresnet evaluate``, ``invert``, ``sample`` and ``certify``.

Each takes ``--run DIR`` (a folder written by ``iresnet train``, whose ``run.json`` names the
data it was trained on) or ``--model FILE``.
"""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING

from keras_iresnet import certify, logdet, models
from keras_iresnet.cli.args import CLIError
from keras_iresnet.cli.common import _eval_split, _limit, _model_and_record, _strict
from keras_iresnet.experiments import plots

if TYPE_CHECKING:
    import argparse

__all__ = ["cmd_evaluate", "cmd_invert", "cmd_sample", "cmd_certify"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    model, record, _ = _model_and_record(args)
    _, test = _eval_split(model, record, args)
    if args.terms is not None:
        if not isinstance(model, models.IResNetFlow):
            raise CLIError("--terms applies to density and hybrid models")
        model.eval_logdet = logdet.PowerSeries(n_terms=args.terms, n_samples=args.probes)
        model.compile(model.optimizer or "adam")  # retrace the evaluation with that estimator
    elif model.optimizer is None:
        model.compile("adam")
    results = model.evaluate(_limit(test, args.n), verbose=0, return_dict=True)
    print(json.dumps(_strict({k: float(v) for k, v in results.items()})))
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    model, record, _ = _model_and_record(args)
    _, test = _eval_split(model, record, args)
    batch = next(iter(_limit(test, args.n)))
    x = batch[0] if isinstance(batch, tuple) else batch
    conditional = getattr(model, "conditional", False)
    context = {"context": batch[1]} if conditional and isinstance(batch, tuple) else {}
    report = certify.reconstruction_report(model.trunk, x, **context)
    print(
        json.dumps(
            _strict(
                {
                    "examples": len(report["errors"]),
                    "mean_relative_error": report["mean"],
                    "max_relative_error": report["max"],
                }
            )
        )
    )
    return 0


def _class_count(model, label):
    """A class-conditional model's number of classes (its one-hot context); checks ``--label``."""
    conditional = getattr(model, "conditional", False)
    if label is not None and not conditional:
        raise CLIError(
            "--label applies to class-conditional models (e.g. --recipe digits-conditional); "
            "this model is unconditional"
        )
    if not conditional:
        return None
    if len(model.context_shape) != 1:
        raise CLIError(
            f"sample draws class-conditional models (a one-hot context); this model's context "
            f"has shape {model.context_shape}"
        )
    classes = int(model.context_shape[0])
    if label is not None and label >= classes:
        raise CLIError(f"--label {label} is not a class of this model (0 to {classes - 1})")
    return classes


def cmd_sample(args: argparse.Namespace) -> int:
    model, _, path = _model_and_record(args)
    if not isinstance(model, models.IResNetFlow):
        raise CLIError("sample needs a density model (trained with --task density or hybrid)")
    classes = _class_count(model, args.label)
    label = "" if args.label is None else f"_label{args.label}"
    default = f"samples_n{args.n}_t{args.temperature:g}_seed{args.seed}{label}.png"
    out = pathlib.Path(args.out) if args.out else path.with_name(default)
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give the PNG file's path")
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it, or --out FILE")
    if not out.parent.is_dir():
        raise CLIError(f"--out {out}: the folder {out.parent} does not exist")
    if classes is None:
        plots.samples_figure(model, args.n, args.temperature, out, seed=args.seed)
        print(f"saved {args.n} samples (temperature {args.temperature}) to {out}")
    elif args.label is not None:
        plots.class_samples_figure(
            model, out, [args.label], args.n, args.temperature, seed=args.seed
        )
        print(
            f"saved {args.n} samples of class {args.label} (temperature {args.temperature}) "
            f"to {out}"
        )
    else:
        per_class = max(1, args.n // classes)
        plots.class_samples_figure(model, out, None, per_class, args.temperature, seed=args.seed)
        print(
            f"saved {per_class} samples of each of the {classes} classes, a row per class "
            f"(temperature {args.temperature}), to {out}"
        )
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    model, _, path = _model_and_record(args)
    report = certify.certify(model)
    if not report["blocks"]:
        raise CLIError(f"{path} has no residual blocks to certify")
    for block in report["blocks"]:
        lipschitz = "Lip_x(g(., c)) for every c" if block["conditional"] else "Lip(g)"
        print(
            f"{block['name']}: {lipschitz} <= {block['lipschitz_bound']:.4f} "
            f"{'contraction' if block['contraction'] else 'NOT a proven contraction'}"
        )
    summary = {"all_contractions": report["all_contractions"], "blocks": len(report["blocks"])}
    check = report.get("inverse_check")
    if check is not None:
        print(
            f"inverse at {check['contexts']} random contexts: max relative error "
            f"{check['max_relative_error']:.2e} ({'passed' if check['passed'] else 'FAILED'})"
        )
        summary["inverse_check"] = check
    print(json.dumps(_strict(summary)))
    passed = report["all_contractions"] and (check is None or check["passed"])
    return 0 if passed else 1
