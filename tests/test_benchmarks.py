"""Smoke tests of the benchmark scripts: each runs its ``--tiny`` setting and writes a full report.

No timing assertions (timing lives in the benchmarks): each test checks that the
script's JSON holds every part's rows, that ratios are positive and finite, and the
numbers that have an independent meaning even at tiny scale (reconstruction errors,
a log-det bias within its bound, a ratio of a candidate to itself).

The scripts run in this process through ``main(argv)`` (one TensorFlow import for
all of them); ``benchmarks.spectral`` runs as ``python -m benchmarks.spectral`` in
a fresh process from the repository root, the form the benchmarks' README documents,
and the probe scripts start fresh processes of that form themselves.
"""

import importlib
import importlib.util
import json
import math
import os
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import benchmarks

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SHARED = {"common", "baselines"}
SCRIPTS = sorted(
    info.name for info in pkgutil.iter_modules([str(BENCHMARKS)]) if info.name not in SHARED
)


def run(name, tmp_path, capsys, *extra):
    """``benchmarks.<name>.main(["--tiny", "--out", ...])``; the JSON report it wrote."""
    out = tmp_path / f"{name}.json"
    importlib.import_module(f"benchmarks.{name}").main(["--tiny", "--out", str(out), *extra])
    report = json.loads(out.read_text())
    assert report["benchmark"] == name and report["settings"]["tiny"] is True
    assert {"platform", "tensorflow", "cpu_count"} <= set(report["machine"])
    assert " | " in capsys.readouterr().out  # the human table
    return report


def positive(*values):
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def check_goals(report, count):
    goals = report["goals"]
    assert len(goals) == count
    assert all(isinstance(g["met"], bool) and math.isfinite(g["measured"]) for g in goals)


# -- the package's shape ----------------------------------------------------------------------
def test_every_script_is_documented_smoke_tested_and_free_of_path_patching():
    readme = (BENCHMARKS / "README.md").read_text()
    tested = {name[len("test_") :] for name in globals() if name.startswith("test_")}
    assert len(SCRIPTS) == 15, SCRIPTS
    for name in SCRIPTS:
        doc = importlib.util.find_spec(f"benchmarks.{name}").loader.get_source(f"benchmarks.{name}")
        assert f"python -m benchmarks.{name}" in doc, f"{name}: docstring names no command"
        assert "benchmarks/README.md" in doc, f"{name}: docstring names no README section"
        assert f"python -m benchmarks.{name}" in readme, f"README has no command for {name}"
        assert name in tested, f"no smoke test for benchmarks.{name}"
        assert name in benchmarks.__doc__, f"benchmarks/__init__.py does not list {name}"
    for path in BENCHMARKS.glob("*.py"):
        assert "sys.path" not in path.read_text(), f"{path.name} patches sys.path"
    # every results file the README names exists, and every one there is named
    named = set(re.findall(r"results_[a-z0-9_]+\.(?:json|png)", readme))
    present = {path.name for path in BENCHMARKS.glob("results_*")}
    assert named == present


# -- one smoke test per script ----------------------------------------------------------------
def test_spectral(tmp_path):
    """Run as the README says, ``python -m benchmarks.spectral`` from the repository root."""
    out = tmp_path / "spectral.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.spectral", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert " | " in result.stdout
    rows = {row["layer"]: row for row in json.loads(out.read_text())["rows"]}
    assert len(rows) == 4
    assert rows["keras Conv2D"]["ratio_to_plain_conv"] == 1.0
    assert all(positive(row["step_ms"], row["ratio_to_plain_conv"]) for row in rows.values())
    assert rows["keras Conv2D"]["iterations_per_step"] is None
    assert rows["keras_iresnet SpectralConv2D, paper's rule"]["iterations_per_step"] == 1.0
    assert rows["keras_iresnet SpectralConv2D"]["iterations_per_step"] >= 1.0


@pytest.mark.slow
def test_speed_steps(tmp_path, capsys):
    report = run("speed_steps", tmp_path, capsys)
    rows = {row["step"]: row for row in report["rows"]}
    assert {row["part"] for row in report["rows"]} == {"a", "b", "g"}
    assert rows["classifier, plain convs"]["ratio_to_plain_classifier"] == 1.0
    assert rows["classifier, plain convs"]["iterations_per_layer_and_step"] == 0
    for name in ("classifier, spectral convs, paper rule", "density, power series n=5, paper rule"):
        assert rows[name]["iterations_per_layer_and_step"] == 1.0
    timed = [row for row in rows.values() if "ratio_to_plain_classifier" in row]
    assert len(timed) == 6 and "density, Russian roulette (unbiased)" in rows
    assert all(
        positive(r["step_ms"], r["ratio_to_plain_classifier"], r["ratio_to_spectral_classifier"])
        for r in timed
    )
    rules = [row for row in rows.values() if "ratio_default_to_paper_rule" in row]
    assert len(rules) == 2 and all(positive(r["ratio_default_to_paper_rule"]) for r in rules)
    check_goals(report, 4)


@pytest.mark.slow
def test_speed_inverse(tmp_path, capsys):
    (row,) = run("speed_inverse", tmp_path, capsys)["rows"]
    assert row["relative_error"] < 1e-6  # per-block rtol 1e-7
    assert positive(row["forward_ms"], row["inverse_ms"], row["inverse_over_forward"])


@pytest.mark.slow
def test_speed_normflows(tmp_path, capsys):
    report = run("speed_normflows", tmp_path, capsys)
    if importlib.util.find_spec("normflows") and importlib.util.find_spec("torch"):
        rows = report["rows"]
        assert {(r["config"], r["implementation"]) for r in rows} == {
            (config, label)
            for config in ("cnn", "2d")
            for label in importlib.import_module("benchmarks.speed_normflows").LABELS.values()
        }
        assert all(positive(r["step_ms"], r["ratio_to_normflows"], r["parameters"]) for r in rows)
        assert all(r["ratio_to_normflows"] == 1.0 for r in rows if "PyTorch" in r["implementation"])
        check_goals(report, 2)
    else:
        assert report["rows"] == [] and "not installed" in report["normflows"]["skipped"]


@pytest.mark.slow
def test_speed_memory(tmp_path, capsys):
    (row,) = run("speed_memory", tmp_path, capsys)["rows"]
    assert row["part"] == "e" and row["n_terms"] == 2
    # a process that imported TensorFlow and ran a step holds well over 100 MiB
    assert row["peak_rss_mib_plain"] > 100 and row["peak_rss_mib_neumann"] > 100


@pytest.mark.slow
def test_speed_fit(tmp_path, capsys):
    rows = run("speed_fit", tmp_path, capsys)["rows"]
    cases = importlib.import_module("benchmarks.speed_fit").TINY_CASES
    assert len(rows) == len(cases) and {r["task"] for r in rows} == {"classify", "density"}
    assert all(positive(r["examples_per_s"], r["speedup"]) for r in rows)
    assert all(r["speedup"] == 1.0 for r in rows if r["setting"] == "default")


@pytest.mark.slow
def test_speed_startup(tmp_path, capsys):
    report = run("speed_startup", tmp_path, capsys)
    ours, theirs = report["rows"]
    assert "i-ResNet" in ours["model"] and "RealNVP" in theirs["model"]
    assert 0 < theirs["parameters"] <= ours["parameters"]  # sized to at most ours
    for row in (ours, theirs):
        assert positive(row["first_step_s"], row["first_evaluate_s"], row["steady_epoch_s"])
    assert positive(ours["build_s"]) and ours["build_s"] < ours["first_step_s"]
    check_goals(report, 1)


@pytest.mark.slow
def test_logdet(tmp_path, capsys):
    report = run("logdet", tmp_path, capsys)
    rows = report["rows"]
    assert len(rows) == 10 and {r["event"] for r in rows} == {"64", "6x6x2"}
    for row in rows:
        # truncation bias within Theorem 3's bound, up to 6 standard errors of the probes
        limit = row["theorem3_bound_bits_per_dim"] + 6 * row["standard_error_bits_per_dim"]
        assert abs(row["bias_bits_per_dim"]) <= limit, row
        assert positive(row["std_bits_per_dim"])
    cost = {row["step"]: row for row in report["cost"]}
    assert len(cost) == 4 and cost["no log-det"]["ratio_to_no_logdet"] == 1.0
    assert all(positive(row["step_ms"], row["ratio_to_no_logdet"]) for row in cost.values())
    (memory,) = report["memory"]
    assert memory["peak_rss_mib_plain"] > 100 and memory["peak_rss_mib_neumann"] > 100


@pytest.mark.slow
def test_inverse(tmp_path, capsys):
    rows = run("inverse", tmp_path, capsys)["rows"]
    assert len(rows) == 4  # two networks x two solvers (--tiny: coeff 0.9)
    assert {r["solver"] for r in rows} == {"fixed_point", "anderson"}
    for row in rows:
        assert row["relative_error"] < 1e-6  # per-block rtol 1e-7
        assert row["g_evals_per_block"] >= 1
        assert positive(row["inverse_ms"], row["inverse_over_forward"])


@pytest.mark.slow
def test_profile_step(tmp_path, capsys):
    rows = {r["piece"]: r for r in run("profile_step", tmp_path, capsys)["rows"]}
    assert len(rows) == 5 and rows["whole train_step (fit)"]["share_of_step"] == 1.0
    assert all(positive(r["ms"], r["share_of_step"]) for r in rows.values())


@pytest.mark.slow
def test_density_2d(tmp_path, capsys):
    report = run("density_2d", tmp_path, capsys)
    for part in ("2d-equal-epochs", "2d-equal-seconds"):
        rows = report[part]
        assert {r["model"] for r in rows} == {"i-ResNet", "RealNVP", "MAF"}
        assert sum(r["best"] for r in rows) == 1
        assert all(math.isfinite(r["test_nll_mean"]) and r["parameters"] > 0 for r in rows)
        assert all(r["steps_per_seed"] >= 1 for r in rows)
    assert len(report["rows"]) == 6


@pytest.mark.slow
def test_density_images(tmp_path, capsys):
    figure = tmp_path / "race.png"
    report = run("density_images", tmp_path, capsys, "--figure", str(figure))
    rows = report["rows"]
    models = {r["model"].split(" (")[0].split(" recipe")[0] for r in rows}
    assert models == {
        "i-ResNet",
        "TFP Glow",
        "TFP RealNVP",
        "logit + independent Gaussian per pixel",
    }
    assert len(rows) == 3 * 2 + 1  # one checkpoint and the end per model, the closed form
    assert all(positive(r["test_bits_per_dim"]) for r in rows)
    assert figure.stat().st_size > 1000
    assert set(report["image_curves"]["digits"]) == {
        "i-ResNet",
        "TFP Glow",
        "TFP RealNVP",
        "closed form",
    }


@pytest.mark.slow
def test_density_hybrid(tmp_path, capsys):
    hybrid, classifier, closed = run("density_hybrid", tmp_path, capsys)["rows"]
    for row in (hybrid, classifier):
        assert 0.0 <= row["test_accuracy_min"] <= row["test_accuracy_mean"] <= 1.0
    assert positive(hybrid["test_bits_per_dim_mean"], closed["test_bits_per_dim_mean"])
    assert classifier["test_bits_per_dim_mean"] is None


@pytest.mark.slow
def test_classification(tmp_path, capsys):
    rows = {r["model"]: r for r in run("classification", tmp_path, capsys)["rows"]}
    assert set(rows) == {"c = 0.9", "vanilla"}
    assert all(0.0 <= r["test_accuracy_mean"] <= 1.0 for r in rows.values())
    assert rows["c = 0.9"]["reconstruction_error_max"] < 1e-5  # a contraction inverts


@pytest.mark.slow
def test_conditional(tmp_path, capsys):
    """Every part, every model: finite numbers; the truth of the closed form is the
    conditional entropy 0.5 ln det(2 pi e S) of the simulator's posterior covariance."""
    import numpy as np

    from keras_iresnet import data

    report = run("conditional", tmp_path, capsys, "--seconds", "2")
    simulator = data.GaussianLinear()
    covariance = np.asarray(simulator.posterior_covariance, np.float64)
    truth = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * covariance)[1]
    assert report["closed_form"]["truth_nll"] == pytest.approx(truth, rel=1e-6)
    for part, key in (("closed_form", "nll"), ("sbi", "kl_q_p"), ("digits", "bits_per_dim")):
        rows = report[part]["rows"]
        assert len(rows) == 3 and all(math.isfinite(row[key]) for row in rows), part
    for row in report["closed_form"]["rows"]:
        assert row["gap_to_truth"] == pytest.approx(row["nll"] - truth, abs=1e-9)
        assert row["steps"] >= 1 and row["parameters"] > 0
    for row in report["sbi"]["rows"]:
        assert 0.0 <= row["coverage_50"] <= 1.0 and 0.0 <= row["coverage_90"] <= 1.0
