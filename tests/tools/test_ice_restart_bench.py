"""The ICE restart benchmark runs end to end (it reports; it asserts no speed)."""

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.netns


@pytest.mark.timeout(120)
def test_ice_restart_benchmark_runs_and_reports_json():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.ice_restart", "--restarts", "2", "--outage", "0.5",
         "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["moved"] == 2
    assert len(result["resumed_ms"]) == 2
    assert all(0 < ms < 3000 for ms in result["resumed_ms"])


def test_it_refuses_to_run_outside_the_namespace():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.ice_restart", "--restarts", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "inside the namespace" in proc.stderr
