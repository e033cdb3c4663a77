"""The server as operators run it (`python -m mediaserver.cli --smtp-url ...`): a
sign-up answers at once and its verification mail reaches the test's SMTP server
from the server's own sender task, counted in /metrics."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.signalling_client import free_port
from tests.support.smtp_server import SmtpServer, body_of, smtp_server  # noqa: F401


def test_the_server_sends_queued_mail_and_counts_it_in_metrics(
        tmp_path: Path, smtp_server: SmtpServer) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp_port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediaserver.cli", "--host", "127.0.0.1", "--port", str(port),
         "--udp-port", str(udp_port), "--workers", "1", "--log-level", "warning",
         "--db", str(tmp_path / "s.db"), "--data-key-file", str(tmp_path / "s.key"),
         "--smtp-url", smtp_server.url, "--mail-from", "hello@example.org"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                r = httpx.post(base + "/api/v1/profiles", json={
                    "username": "mailed", "date_of_birth": "1990-05-17",
                    "email": "mailed@example.org", "name": "Mailed Person"})
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 201, r.text
        (mail,) = smtp_server.wait_for(1, timeout=20)
        assert mail["To"] == "mailed@example.org" and mail["From"] == "hello@example.org"
        assert "Your verification code is" in body_of(mail)
        deadline = time.monotonic() + 10
        while True:
            metrics = httpx.get(base + "/metrics").text
            if 'mediaserver_mail_sent_total{worker="0"} 1.0' in metrics:
                break
            assert time.monotonic() < deadline, metrics[-2000:]
            time.sleep(0.2)
        assert 'mediaserver_mail_failed_attempts_total{worker="0"} 0.0' in metrics
        assert 'mediaserver_mail_given_up_total{worker="0"} 0.0' in metrics
        proc.send_signal(15)
        assert proc.wait(timeout=15) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
