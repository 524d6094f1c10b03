"""What a training run of the command line reports into its folder: the test metrics, the
certificate, reconstructions and the figure (``metrics.json``, ``figure.png``)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from keras_iresnet import certify
from keras_iresnet.experiments import plots
from keras_iresnet.experiments.folders import write_json
from keras_iresnet.inverse import InverseConvergenceWarning

if TYPE_CHECKING:
    import pathlib
    from typing import Any

    import tensorflow as tf

    from keras_iresnet.experiments.folders import RunFolder
    from keras_iresnet.experiments.recipes import Recipe
    from keras_iresnet.experiments.runs import Split
    from keras_iresnet.models.base import IResNetModel

__all__ = ["report_training"]


def report_training(
    model: IResNetModel,
    recipe: Recipe,
    split: Split,
    test: tf.data.Dataset,
    folder: RunFolder,
    epochs: int,
) -> tuple[dict[str, Any], pathlib.Path, bool]:
    """After training: test metrics, certificate, reconstructions, figure, ``metrics.json``.

    Args:
      model: the trained model.
      recipe, split: its recipe and data split.
      test: the test pipeline.
      folder: the :class:`RunFolder` (``metrics.json`` and ``figure.png`` are written there).
      epochs: the epochs the run was asked for.

    Returns:
      ``(metrics, figure_path, unconverged)``: the metrics written, the figure's path,
      and whether some inverse did not converge (expected for a vanilla network).
    """
    results = model.evaluate(test, verbose=0, return_dict=True)
    report = certify.certify(model)
    metrics = {
        "recipe": recipe.name,
        "task": recipe.task,
        "data": split.data,
        "epochs": epochs,
        "test": {k: float(v) for k, v in results.items()},
        "history": folder.history(),
        "all_blocks_certified_contractions": report["all_contractions"],
    }
    figure = folder / "figure.png"
    if "inverse_check" in report:
        metrics["inverse_check_random_contexts"] = report["inverse_check"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InverseConvergenceWarning)
        batch = next(iter(test))
        x_test = batch[0] if isinstance(batch, tuple) else batch
        context = {"context": batch[1][:16]} if recipe.context else {}
        if not split.is_2d:
            recon = certify.reconstruction_report(model.trunk, x_test[:16], **context)
            metrics["reconstruction_error"] = {"mean": recon["mean"], "max": recon["max"]}
        if split.is_2d:
            plots.density_2d_figure(model, split.x_test, figure)
        elif recipe.task == "classify":
            plots.reconstruction_figure(model, x_test[:8], figure)
        elif recipe.context == "label":
            plots.class_samples_figure(model, figure)
        else:
            plots.image_samples_figure(model, figure, reconstruct=x_test[:8])
    write_json(folder / "metrics.json", metrics)
    unconverged = any(issubclass(w.category, InverseConvergenceWarning) for w in caught)
    return metrics, figure, unconverged
