"""The page restarts ICE on a network change (mediaserver/web/rtc.js), in headless
Chromium against the real server: the `online` event makes PeerLink call
pc.restartIce() and send the new offer as an ordinary `offer`; the server answers on
the same session, the page applies the answer, and both pages keep decoding video.

    python -m mediaserver.netns -- python -m pytest tests/e2e/test_ice_restart_page.py -q
"""

from __future__ import annotations

import asyncio
import re
import subprocess

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from tests.e2e.test_web_client import (
    DESKTOP,
    launch,
    server,
    start,
    status,
    video,
    wait_status,
    wait_video,
)

pytestmark = pytest.mark.netns
__all__ = ["server"]  # the fixture: the real server as a subprocess

ICE_JS = """
() => {
  const pc = window.mediaserverClient.pc;
  const ufrag = (d) => (d && /a=ice-ufrag:(\\S+)/.exec(d.sdp) || [])[1] || null;
  return {local: ufrag(pc.localDescription), remote: ufrag(pc.remoteDescription),
          ice: pc.iceConnectionState, signaling: pc.signalingState,
          restarts: window.mediaserverClient.restarts};
}
"""


async def ice(page: Page) -> dict:
    return dict(await page.evaluate(ICE_JS))


def metric(base: str, name: str, **labels: str) -> float:
    text = httpx.get(base + "metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match[1] for k, v in labels.items()):
            total += float(match[2])
    return total


@pytest.mark.timeout(120)
async def test_the_page_restarts_ice_on_a_network_change_and_video_goes_on(server):
    async with async_playwright() as p:
        browser = await launch(p, server.urls[:2])
        try:
            pages, errors = [], []
            for url in server.urls[:2]:
                page = await browser.new_page(viewport=DESKTOP)
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on(
                    "websocket",
                    lambda ws: ws.on(
                        "framereceived",
                        lambda frame: errors.append(frame) if '"type":"error"' in frame else None,
                    ),
                )
                await page.goto(url)
                pages.append(page)
            a, b = pages
            await start(a)
            await wait_status(a, "looking for someone")
            await start(b)
            for page in (a, b):
                assert await wait_status(page, "connected") == "Connected"
                await wait_video(page)
            before = await ice(a)
            assert before["ice"] in ("connected", "completed"), before
            assert before["restarts"] == {"offered": 0, "answered": 0}

            # the network changed: the browser fires `online`
            await a.evaluate("() => window.dispatchEvent(new Event('online'))")
            await a.wait_for_function(
                "() => window.mediaserverClient.restarts.answered === 1", timeout=10_000
            )
            after = await ice(a)
            # new ICE credentials both ways, the answer applied
            assert after["local"] != before["local"] and after["remote"] != before["remote"]
            assert after["signaling"] == "stable"
            await a.wait_for_function(
                "() => ['connected', 'completed'].includes("
                "window.mediaserverClient.pc.iceConnectionState)",
                timeout=10_000,
            )
            # both pages keep decoding (the same tracks, the same session)
            frames = [(await video(page))["frames"] for page in (a, b)]
            for page, old in zip((a, b), frames):
                now = await wait_video(page, min_new_frames=30)
                assert now["frames"] >= old + 30
            for page in (a, b):
                assert "connected" in (await wait_status(page, "connected")).lower()
            # a burst of network events makes one restart: the page paces them, and
            # one that comes while ICE is connected again is not tried later
            await a.evaluate(
                "() => { for (let i = 0; i < 3; i++) window.dispatchEvent(new Event('online')); }"
            )
            await asyncio.sleep(3)
            assert (await ice(a))["restarts"] == {"offered": 2, "answered": 2}
            await wait_video(a)
            assert errors == [], errors
            base = server.urls[0]
            assert metric(base, "mediaserver_ice_restarts_total", outcome="answered") == 2
            assert metric(base, "mediaserver_ice_restarts_total", outcome="rejected") == 0
        finally:
            await browser.close()


def nft(*commands: str) -> None:
    for command in commands:
        subprocess.run(["nft", *command.split()], check=True)


@pytest.mark.timeout(120)
async def test_a_page_whose_media_path_drops_for_4_5_s_restarts_on_its_own_and_the_call_survives(
    server,
):
    """Longer than the server's 4 s media timeout, and Chromium itself says nothing
    for about 5 s: the page sees nothing arrive, restarts ICE (its offer goes over the
    WebSocket, which is TCP and stays up), and the session waits for the restart."""
    async with async_playwright() as p:
        browser = await launch(p, server.urls[:2])
        try:
            pages = []
            for url in server.urls[:2]:
                page = await browser.new_page(viewport=DESKTOP)
                page.texts = []  # type: ignore[attr-defined]
                page.on(
                    "websocket",
                    lambda ws, page=page: ws.on(
                        "framereceived", lambda frame, page=page: page.texts.append(frame)
                    ),
                )
                await page.goto(url)
                pages.append(page)
            a, b = pages
            await start(a)
            await wait_status(a, "looking for someone")
            await start(b)
            for page in (a, b):
                assert await wait_status(page, "connected") == "Connected"
                await wait_video(page)
            # every UDP datagram in the namespace is dropped (nftables in its own netfilter)
            nft(
                "add table inet wall",
                "add chain inet wall out { type filter hook output priority 0 ; }",
                "add rule inet wall out meta l4proto udp drop",
            )
            try:
                await asyncio.sleep(1.0)
                frozen = [(await video(page))["frames"] for page in pages]
                await asyncio.sleep(3.5)
                assert [(await video(page))["frames"] for page in pages] == frozen
            finally:
                nft("delete table inet wall")  # the namespace outlives the test
            for page in pages:
                await page.wait_for_function(
                    "() => ['connected', 'completed'].includes("
                    "window.mediaserverClient.pc.iceConnectionState)",
                    timeout=15_000,
                )
                await wait_video(page, min_new_frames=30)
                restarts = await page.evaluate("() => window.mediaserverClient.restarts")
                assert restarts["offered"] >= 1 and restarts["answered"] == restarts["offered"]
            for page in pages:
                texts = page.texts  # type: ignore[attr-defined]
                assert not [t for t in texts if "partner_left" in t or '"type":"error"' in t]
                assert await status(page) == "Connected"
        finally:
            await browser.close()
