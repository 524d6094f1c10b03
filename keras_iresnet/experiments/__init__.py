"""Experiments on top of the library: named recipes, runs of them, tuning, figures.

- :mod:`~keras_iresnet.experiments.recipes`: each recipe names a preset of
  :mod:`keras_iresnet.models.presets` and adds training settings;
- :mod:`~keras_iresnet.experiments.runs`: a recipe's split, pipelines, model,
  optimizer, callbacks, training, and the run folders of the command line;
- :mod:`~keras_iresnet.experiments.tuning`: keras-tuner search spaces around a recipe;
- :mod:`~keras_iresnet.experiments.plots`: the command line's figures.

The library (layers, models) never imports this package.
"""
