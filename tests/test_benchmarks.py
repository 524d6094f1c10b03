"""Each benchmark runs on tiny settings and writes valid JSON (no timing assertions)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spectral", "inverse", "logdet", "density", "speed"])
def test_benchmark_runs_and_writes_json(tmp_path, name):
    out = tmp_path / f"{name}.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", f"{name}.py"), "--tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == name and report["rows"] and "machine" in report
    assert "|" in result.stdout  # the human table
