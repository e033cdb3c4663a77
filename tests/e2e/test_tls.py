"""The page over built-in HTTPS, in headless Chromium, inside the private namespace.

The server runs with --tls-cert/--tls-key (a self-signed test certificate for the
namespace's addresses); Chromium trusts that one key through
--ignore-certificate-errors-spki-list, and gets no insecure-origin flag: the pages on
https://10.77.0.1 and https://10.77.0.2 are secure contexts because they are HTTPS,
so getUserMedia works, and the Random mode's signalling goes over wss:.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright

from mediaserver.netns import CLIENT_IP, SERVER_IP
from tests.e2e.test_web_client import DESKTOP, start, wait_status, wait_video
from tests.support import ROOT
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.certs import CertFiles, make_cert
from tests.support.signalling_client import free_port

pytestmark = pytest.mark.netns

GUM_JS = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const kinds = stream.getTracks().map(t => t.kind + ':' + t.readyState).sort();
  stream.getTracks().forEach(t => t.stop());
  return kinds;
}
"""


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[list[str], CertFiles]]:
    """The real server over HTTPS; the two visitors' base URLs and the certificate."""
    cert = make_cert(tmp_path)
    port = free_port()
    args = ["--host", "0.0.0.0", "--port", str(port), "--udp-port", "0"]
    args += ["--announced-ip", SERVER_IP, "--log-level", "warning", "--drain-seconds", "1"]
    args += ["--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")]
    args += ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key), "--workers", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "mediaserver.cli", *args], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"the server exited with {proc.returncode}"
            try:
                reply = httpx.get(
                    f"https://{SERVER_IP}:{port}/healthz", timeout=1, verify=cert.client_context()
                )
                if reply.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no /healthz over HTTPS within 20 s"
            time.sleep(0.1)
        yield [f"https://{host}:{port}/" for host in (SERVER_IP, CLIENT_IP)], cert
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(120)
async def test_page_over_https_is_secure_gets_camera_and_matches_over_wss(
    tls_server: tuple[list[str], CertFiles],
) -> None:
    urls, cert = tls_server
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={cert.spki_sha256}"],
        )
        try:
            pages = []
            sockets: list[list[str]] = []
            for url in urls:
                page = await browser.new_page(viewport=DESKTOP)
                opened: list[str] = []
                page.on("websocket", lambda ws, opened=opened: opened.append(ws.url))
                errors: list[str] = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.errors = errors  # type: ignore[attr-defined]
                response = await page.goto(url)
                assert response is not None and response.status == 200
                headers = await response.all_headers()
                assert headers["strict-transport-security"] == "max-age=31536000"
                assert await page.evaluate("() => location.protocol") == "https:"
                assert await page.evaluate("() => window.isSecureContext") is True
                assert await page.evaluate(GUM_JS) == ["audio:live", "video:live"]
                pages.append(page)
                sockets.append(opened)

            for page in pages:
                await start(page)
            for page in pages:
                assert await wait_status(page, "connected", timeout=30) == "Connected"
            for page in pages:
                await wait_video(page)
            for page, opened, url in zip(pages, sockets, urls):
                host = url.split("//")[1].rstrip("/")
                assert opened and all(u == f"wss://{host}/ws" for u in opened), opened
                assert page.errors == [], page.errors  # type: ignore[attr-defined]
        finally:
            await browser.close()
