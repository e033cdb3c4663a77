"""The TURN latency benchmark runs end to end (it reports; it asserts no speed).

One pair over plain UDP, one over ICE-TCP and one through coturn over TURN/TLS, in the
namespace.
"""

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.netns


@pytest.mark.timeout(180)
def test_turn_latency_benchmark_runs_and_reports_json():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.turn_latency", "--pairs", "1",
         "--transports", "udp", "ice-tcp", "turn-tls", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for transport in ("udp", "ice-tcp", "turn-tls"):
        [sample] = result[transport]["samples_ms"]
        assert 0 < sample < 30_000
        assert result[transport]["median_ms"] == sample


def test_it_refuses_to_run_outside_the_namespace():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.turn_latency", "--pairs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "inside the namespace" in proc.stderr
