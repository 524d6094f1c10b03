"""Experiments on top of the library: named recipes, runs of them, tuning, figures.

- :mod:`~keras_iresnet.experiments.recipes`: each recipe names a preset of
  :mod:`keras_iresnet.models.presets` and adds training settings;
- :mod:`~keras_iresnet.experiments.runs`: a recipe's split, pipelines, model,
  optimizer, callbacks and training;
- :mod:`~keras_iresnet.experiments.folders` and :mod:`~keras_iresnet.experiments.reports`:
  the command line's run folders and what a run reports into them;
- :mod:`~keras_iresnet.experiments.tuning`: keras-tuner search spaces around a recipe;
- :mod:`~keras_iresnet.experiments.plots`: the command line's figures.

The library (layers, models) never imports this package.
"""
