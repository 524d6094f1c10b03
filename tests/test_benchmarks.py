"""Each benchmark runs on tiny settings and writes valid JSON (no timing assertions)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spectral", "inverse", "logdet", "density", "profile_step"])
def test_benchmark_runs_and_writes_json(tmp_path, name):
    out = tmp_path / f"{name}.json"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", f"{name}.py"),
            "--tiny",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == name and report["rows"] and "machine" in report
    assert "|" in result.stdout  # the human table


@pytest.mark.slow
def test_speed_benchmark_reports_every_part(tmp_path):
    """speed.py --tiny: every part measured (d only where the PyTorch reference is installed)."""
    import importlib.util

    out = tmp_path / "speed.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "speed.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    parts = {row["part"] for row in report["measurements"]}
    expected = {"a", "b", "c", "e", "f"}
    if importlib.util.find_spec("normflows") and importlib.util.find_spec("torch"):
        expected.add("d")
    else:
        assert "skipped" in report["normflows"]
    assert expected <= parts, parts
    assert {row["goal"] for row in report["rows"]} and all(
        isinstance(r["met"], bool) for r in report["rows"]
    )
    fit = [row for row in report["measurements"] if row["part"] == "f"]
    assert len(fit) == 6 and all(row["examples_per_s"] > 0 for row in fit)
