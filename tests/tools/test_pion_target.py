"""Pion as a benchmarks.compare target runs end to end (it reports; it asserts no speed).

One short run of `python -m benchmarks.compare --targets pion`: the Go SFU in
benchmarks/peers/pion/main.go, built on first use from Debian's golang-go and
golang-github-pion-webrtc.v3-dev (make test's set-up installs them), one call
over real ICE, DTLS and SRTP on 127.0.0.1, fed by the C loops.
"""

import json
import subprocess
import sys

from tests.support import ROOT


def test_pion_target_forwards_and_reports():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--targets", "pion", "--calls", "1",
         "--call-pps", "200", "--duration", "1.5", "--repeats", "1", "--warmup", "0.3",
         "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entry = json.loads(proc.stdout.strip().splitlines()[-1])["pion"]
    assert "error" not in entry, entry.get("error")
    assert entry["calls"] == 1
    assert entry["srtp_profile"] == "aead-aes-128-gcm"
    # what the subscriber got was valid SRTP from its own publisher, nearly all of it
    assert entry["packets_per_s"] > 0 and entry["loss"] < 0.5
    assert entry["srtp_auth_failures"] == 0 and entry["misrouted"] == 0
    assert entry["pion_forwarded"] > 0
    assert entry["cpu_us_per_packet"] > 0
    assert entry["wakeups_per_packet"] > 0
    assert entry["p99_latency_ms"] is not None
    assert "Pion (Go)" in proc.stdout
