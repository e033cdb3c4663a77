"""The side-by-side benchmark runs end to end (it reports; it asserts no speed).

One minimal run of `python -m benchmarks.compare`: one call, short runs, every
target. The benchmark itself reports a target that cannot run (Janus not
installed...) as an error entry instead of failing the run; this test, where
everything is installed, requires all five to run.
"""

import json
import subprocess
import sys
from pathlib import Path
from tests.support import ROOT


TARGETS = ("mediaserver", "bare_forwarder", "aiortc_relay", "janus", "pion")
FIGURES = (
    "cpu_us_per_packet",
    "wakeups_per_packet",
    "packets_per_s",
    "p99_latency_ms",
    "loss",
    "calls",
)


def test_compare_runs_and_reports_every_target():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.compare",
            "--quick",
            "--calls",
            "1",
            "--duration",
            "1.5",
            "--warmup",
            "0.3",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in TARGETS:
        entry = summary[name]
        # make test installs Janus and Pion and runs this in the private namespace: every
        # target must run here (a target that cannot says why, and that fails this test)
        assert "error" not in entry, (name, entry.get("error"))
        missing = [key for key in FIGURES if key not in entry]
        assert not missing, (name, missing)
        assert entry["calls"] == 1
        assert entry["packets_per_s"] > 0, name
        assert entry["cpu_us_per_packet"] > 0, name
        # every target process was woken to forward (voluntary context switches)
        assert entry["wakeups_per_packet"] > 0, name
    assert summary["mediaserver"]["ratio_to_mediaserver"]["cpu_us_per_packet"] == 1.0
    assert summary["mediaserver"]["ratio_to_mediaserver"]["wakeups_per_packet"] == 1.0
    assert "wake/pkt" in proc.stdout
