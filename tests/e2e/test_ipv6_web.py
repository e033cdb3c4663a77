"""The browser client over IPv6 only: two Chromium pages in Random mode meet and get
video both ways, with the server announcing nothing but its IPv6 address.

Inside the private namespace the veth pair has fd77::1 and fd77::2 (mediaserver.netns).
The server listens on `--host ::` (both families) and announces `--announced-ip
fd77::1` alone, so the only candidate pair a page can form is IPv6. Each page comes
from its own /64 (the server keys visitors on it and never pairs one with itself):
A from http://[::1] (loopback, a secure context), B from http://[fd77::2] (declared
secure with a Chromium flag, so the fake camera works).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from playwright.async_api import async_playwright

from mediaserver.netns import CLIENT_IP6, SERVER_IP, SERVER_IP6
from tests.e2e.test_web_client import DESKTOP, launch, start, wait_status, wait_video
from tests.support import ROOT
from tests.support.coturn import SELECTED_PAIR_JS

pytestmark = pytest.mark.netns


def free_port(host: str, kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET6, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path, request):
    """The server on `--host ::`, announcing request.param (default: fd77::1 alone)."""
    announced = getattr(request, "param", SERVER_IP6)
    port = free_port("::1")
    udp_port = free_port(SERVER_IP6, socket.SOCK_DGRAM)
    args = ["--host", "::", "--port", str(port), "--udp-port", str(udp_port)]
    args += ["--announced-ip", announced, "--log-level", "warning", "--workers", "1"]
    args += ["--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")]
    args += ["--drain-seconds", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "mediaserver.cli", *args], cwd=ROOT)
    deadline = time.monotonic() + 20
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode} before it served /healthz")
            try:
                if httpx.get(f"http://[::1]:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer /healthz within 20 s")
            time.sleep(0.1)
        proc.urls = [f"http://[::1]:{port}/", f"http://[{CLIENT_IP6}]:{port}/"]  # type: ignore[attr-defined]
        proc.udp_port = udp_port  # type: ignore[attr-defined]
        proc.announced = announced  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "server", [SERVER_IP6, f"{SERVER_IP},{SERVER_IP6}"], indirect=True, ids=["ipv6", "both"]
)
async def test_a_chromium_pair_gets_video_both_ways_over_ipv6(server):
    """IPv6 only; and with a candidate per family, video on whichever pair Chromium takes."""
    ours = {(ip, server.udp_port) for ip in server.announced.split(",")}
    async with async_playwright() as p:
        browser = await launch(p, server.urls)
        try:
            pages = []
            for url in server.urls:
                page = await browser.new_page(viewport=DESKTOP)
                await page.goto(url)
                pages.append(page)
            for page in pages:
                await start(page)
            for page in pages:
                assert await wait_status(page, "connected", timeout=30) == "Connected"
            for page in pages:
                playing = await wait_video(page, timeout=40)
                assert playing["width"] > 0, playing
                pair = await page.evaluate(SELECTED_PAIR_JS)
                assert pair is not None, "no selected candidate pair"
                assert (pair["remoteAddress"], pair["remotePort"]) in ours, pair
                assert pair["localType"] in ("host", "prflx"), pair
                # an address of the page's own of the same family
                assert (":" in pair["localAddress"]) == (":" in pair["remoteAddress"]), pair
        finally:
            await browser.close()
    # their media went through the server's router
    metrics = (await asyncio.to_thread(httpx.get, server.urls[0] + "metrics", timeout=5)).text
    forwarded = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("mediaserver_forwarded_packets")
    )
    assert forwarded > 100, metrics[:2000]
