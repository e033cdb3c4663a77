"""The `mediaserver` command: flags, errors, and a real start and stop."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

MEDIASERVER = [sys.executable, "-m", "mediaserver.cli"]


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_documents_every_flag():
    out = subprocess.run(MEDIASERVER + ["--help"], capture_output=True, text=True, check=True)
    turn = ("--turn-url", "--turn-secret", "--turn-secret-file", "--turn-ttl")
    flags = ("--host", "--port", "--udp-port", "--announced-ip", "--log-level", "--read-hold-us",
             "--socket-thread", "--no-socket-thread")
    for flag in (*flags, *turn):
        assert flag in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "port must be 0..65535"),
    (["--udp-port", "x"], "not a port number"),
    (["--announced-ip", "example.com"], "--announced-ip must be an IPv4 or IPv6 address"),
    (["--log-level", "loud"], "invalid choice"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--turn-url", "turn:turn.example.org"], "--turn-url needs --turn-secret-file"),
    (["--turn-url", "stun:turn.example.org", "--turn-secret", "s"], "is not a TURN URL"),
    (["--turn-ttl", "soon"], "not a whole number"),
    (["--read-hold-us", "200000"], "--read-hold-us must be 0..100000, not 200000"),
])
def test_bad_flags_exit_2_with_one_clear_line(args, message):
    proc = subprocess.run(MEDIASERVER + args, capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr.strip().splitlines()[-1]


def test_starts_serves_health_and_stops_on_sigterm(tmp_path):
    port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(
        # one worker: with one per core, /healthz may be answered by worker 1 before
        # worker 0 has bound --udp-port (the multi-worker start is tests/e2e/test_operator's)
        MEDIASERVER + ["--host", "127.0.0.1", "--port", str(port), "--udp-port", str(udp_port),
                       "--workers", "1",
                       "--log-level", "warning", "--db", str(tmp_path / "db"),
                       "--data-key-file", str(tmp_path / "key")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        body = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    body = json.load(r)
                break
            except OSError:
                time.sleep(0.1)
        assert body is not None and body["status"] == "ok" and body["sessions"] == 0
        # the media port is taken by the server
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(OSError):
                s.bind(("0.0.0.0", udp_port))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_busy_udp_port_is_a_clear_error(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        busy = s.getsockname()[1]
        proc = subprocess.run(
            MEDIASERVER + ["--host", "127.0.0.1", "--port", str(free_port()), "--udp-port", str(busy),
                           "--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")],
            capture_output=True, text=True, timeout=20, env={**os.environ},
        )
    assert proc.returncode == 1
    assert "cannot start" in proc.stderr and "in use" in proc.stderr.lower()
