"""The forwarding benchmark runs end to end (it reports; it asserts no speed).

One short run of `python -m benchmarks.forward`: the SFU in its child process,
2 synthetic publisher/subscriber pairs over real ICE, DTLS and SRTP on
127.0.0.1, and the bare C forwarder beside it.
"""

import json
import subprocess
import sys
from pathlib import Path
from tests.support import ROOT


KEYS = (
    "forwarded_pps",
    "loss",
    "server_cpu_us_per_packet",
    "baseline_cpu_us_per_packet",
    "ratio",
    "offered_pps",
    "latency_p50_us",
    "latency_p99_us",
    "baseline_forwarded_pps",
    "baseline_loss",
    "profile",
    "repeats",
    "wakeups_per_packet",
    "baseline_wakeups_per_packet",
)


def test_forward_benchmark_runs_and_reports_json():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.forward",
            "--pairs",
            "2",
            "--duration",
            "1",
            "--rate",
            "2000",
            "--warmup",
            "0.2",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    missing = [key for key in KEYS if key not in summary]
    assert not missing, missing
    assert summary["forwarded_pps"] > 0
    assert summary["baseline_forwarded_pps"] > 0
    assert summary["loss"] < 0.5
    assert summary["ratio"] > 0
    # wake-ups per packet: the server's threads were woken to forward, and so was
    # the bare forwarder's (a blocking recvmmsg); both in the printed table too
    assert summary["wakeups_per_packet"] > 0
    assert summary["baseline_wakeups_per_packet"] > 0
    assert "wake-ups/packet" in proc.stdout
    assert summary["profile"] == "aead-aes-128-gcm"
    # what the subscribers got was valid SRTP, routed to the right subscriber
    assert summary["srtp_auth_failures"] == 0
    assert summary["misrouted"] == 0
    check = summary["libsrtp_check"]
    if check["available"]:
        assert check["checked"] > 0 and check["ok"] == check["checked"]


def test_forward_benchmark_passes_the_read_hold_to_the_server():
    # 4,000/s in a packet every 0.25 ms: a 2 ms hold expects 8, so the server holds
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.forward", "--pairs", "2", "--duration", "1",
         "--rate", "4000", "--tick", "0.00025", "--warmup", "0.2", "--read-hold-us", "2000",
         "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["read_hold_us"] == 2000
    assert summary["read_holds"] > 0 and summary["packets_per_read"] > 1
    assert "read hold 2000 us:" in proc.stdout
    assert summary["forwarded_pps"] > 0 and summary["loss"] < 0.5
    assert summary["srtp_auth_failures"] == 0 and summary["misrouted"] == 0


def test_forward_benchmark_family_6_reports_ipv6_beside_ipv4():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.forward", "--family", "6", "--pairs", "2",
         "--duration", "1", "--rate", "2000", "--warmup", "0.2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio IPv6/IPv4 CPU per packet (same run)" in proc.stdout
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["family"] == "6"
    assert summary["forwarded_pps"] > 0 and summary["ipv6_forwarded_pps"] > 0
    assert summary["ipv6_loss"] < 0.5
    assert summary["ipv6_server_cpu_us_per_packet"] > 0 and summary["ipv6_over_ipv4"] > 0
    assert summary["srtp_auth_failures"] == 0 and summary["misrouted"] == 0
    # both sets ran: one IPv4, one IPv6, and the floor
    assert {r["target"] for r in summary["runs"]} == {"mediaserver", "IPv6", "bare forwarder"}


def test_forward_benchmark_transport_tcp_reports_ice_tcp_beside_udp():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.forward", "--transport", "tcp", "--pairs", "2",
         "--duration", "1", "--rate", "2000", "--warmup", "0.2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio ICE-TCP/UDP CPU per packet (same run)" in proc.stdout
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["transport"] == "tcp"
    assert summary["forwarded_pps"] > 0 and summary["tcp_forwarded_pps"] > 0
    assert summary["tcp_loss"] < 0.5
    assert summary["tcp_server_cpu_us_per_packet"] > 0 and summary["tcp_over_udp"] > 0
    assert summary["tcp_app_latency_p50_us"] is not None
    assert summary["srtp_auth_failures"] == 0 and summary["misrouted"] == 0
    assert {r["target"] for r in summary["runs"]} == {"mediaserver", "ICE-TCP", "bare forwarder"}
