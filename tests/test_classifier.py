"""keras_iresnet.models.classifier: the i-ResNet classifier learns digits, inverts from its
features (Table 1) and stays within two points of its vanilla twin."""

import warnings

import numpy as np
import pytest

from keras_iresnet import certify
from tests.conftest import DIGITS_CLASSIFIER_SEEDS


@pytest.fixture(scope="module")
def digits_results(digits_classifiers):
    """Test accuracy per seed of the recipe's i-ResNet and its vanilla twin
    (DIGITS_CLASSIFIER_EPOCHS epochs), and the i-ResNet's reconstruction errors."""
    test = digits_classifiers["test"]
    x = next(iter(test))[0][:32]
    results = {"iresnet": {"accuracy": [], "error": []}, "vanilla": {"accuracy": [], "error": []}}
    for seed in DIGITS_CLASSIFIER_SEEDS:
        for vanilla in (False, True):
            model = digits_classifiers[seed, vanilla]
            entry = results["vanilla" if vanilla else "iresnet"]
            entry["accuracy"].append(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the vanilla inverse is expected not to converge
                entry["error"].append(certify.reconstruction_report(model.trunk, x)["max"])
    return results


@pytest.mark.slow
def test_digits_classifier_learns_and_inverts(digits_results):
    ires = digits_results["iresnet"]
    assert min(ires["accuracy"]) > 0.85, digits_results
    # Table 1: the i-ResNet reconstructs its inputs from its features.
    assert max(ires["error"]) < 1e-5, digits_results


@pytest.mark.slow
def test_digits_classifier_within_two_points_of_vanilla(digits_results):
    ires = float(np.mean(digits_results["iresnet"]["accuracy"]))
    vanilla = float(np.mean(digits_results["vanilla"]["accuracy"]))
    assert ires >= vanilla - 0.02, digits_results
