"""The benchmarks of keras_iresnet: one script per measured part, run as modules.

From the repository root (nothing to install, no import-path patching)::

    python -m benchmarks.<script> [--tiny | --full] [--out FILE]

Every script prints a table and writes JSON with ``--out FILE`` (the machine, the
settings and every row); ``--tiny`` is the smoke-test setting the test suite runs
(``tests/test_benchmarks.py``), ``--full`` a paper-scale setting meant for a GPU
where the script has one. ``README.md`` in this folder has the latest numbers, the
command behind each and the ``results_*.json`` each wrote.

Scripts:

- :mod:`benchmarks.speed_steps`: training steps of the models (classifier plain vs
  spectral, density with each log-det estimator) and the spectral rule (parts a, b, g);
- :mod:`benchmarks.speed_inverse`: inverse vs forward of a trained trunk (part c);
- :mod:`benchmarks.speed_normflows`: the density step against PyTorch's normflows (part d);
- :mod:`benchmarks.speed_memory`: peak memory of a step against log-det terms (part e);
- :mod:`benchmarks.speed_fit`: ``model.fit`` throughput, XLA and MirroredStrategy (part f);
- :mod:`benchmarks.speed_startup`: build, first step, first evaluate, steady epoch (part h);
- :mod:`benchmarks.spectral`: spectral normalization of one conv layer;
- :mod:`benchmarks.inverse`: inverse cost per solver and coefficient;
- :mod:`benchmarks.logdet`: log-det estimators' bias, cost and memory;
- :mod:`benchmarks.profile_step`: where an image recipe's training step goes;
- :mod:`benchmarks.density_2d`: 2-D densities against TFP RealNVP and MAF;
- :mod:`benchmarks.density_images`: the image race against TFP Glow and RealNVP;
- :mod:`benchmarks.density_hybrid`: the hybrid recipe on digits;
- :mod:`benchmarks.classification`: digits accuracy and reconstruction per coefficient.
- :mod:`benchmarks.conditional`: conditional flows p(x | c) against TFP's conditional MAF
  and RealNVP (closed-form target, digits by label) and SBI calibration.

Shared code: :mod:`benchmarks.common` (command line, timing, fresh-process probes,
training budgets, tables and JSON) and :mod:`benchmarks.baselines` (the TFP,
normflows and closed-form reference models).
"""

import os

# Before any script imports TensorFlow (every script is a module of this package, so
# this runs first): the backend keras_iresnet needs, and TensorFlow's C++ logs quiet.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
