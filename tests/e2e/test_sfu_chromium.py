"""Headless Chromium through the SFU: to aiortc, and to another Chromium."""

import asyncio

import pytest

from mediaserver.netns import SERVER_IP
from mediaserver.sfu.server import Sfu, SfuConfig
from tests.support.browser import ChromiumPeer, chromium
from tests.support.peers import AiortcPeer, wait_for

pytestmark = pytest.mark.netns


@pytest.fixture
async def sfu():
    server = Sfu(SfuConfig(announced_ip=SERVER_IP))
    await server.start()
    yield server
    await server.close()


async def rising_frames(peer: ChromiumPeer, at_least: int, timeout: float) -> list[int]:
    """framesDecoded samples until it passes at_least, then two more samples."""
    samples = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        samples.append((await peer.stats())["framesDecoded"])
        if samples[-1] >= at_least and len(samples) >= 3:
            break
        await asyncio.sleep(0.5)
    samples.append((await peer.stats())["framesDecoded"])
    await asyncio.sleep(1.0)
    samples.append((await peer.stats())["framesDecoded"])
    return samples


async def test_chromium_to_aiortc_and_back(sfu):
    async with chromium() as browser:
        c = await ChromiumPeer.open(browser)
        a = AiortcPeer(320, 240)
        try:
            sc = sfu.create_session(await c.offer(640, 480))
            sa = sfu.create_session(await a.offer())
            await c.accept(sc.answer)
            await a.accept(sa.answer)
            sfu.connect(sc.id, sa.id)
            sfu.connect(sa.id, sc.id)
            # aiortc decodes Chromium's VP8 at the camera's size
            assert await wait_for(lambda: a.frames("video") >= 20, timeout=30), sfu.counters()
            assert (640, 480) in a.received["video"].sizes
            # Chromium decodes aiortc's video, and keeps decoding
            samples = await rising_frames(c, 20, timeout=30)
            assert samples[-1] > samples[-2] >= 20, samples
            stats = await c.stats()
            assert (stats["width"], stats["height"]) == (320, 240)
            assert stats["audioPackets"] > 0
            # both handshakes went through the cookie exchange (RFC 6347 4.2.1): the
            # server sent its flight only where its HelloVerifyRequest was answered
            for session in (sc, sa):
                assert session.dtls.cookie_requests >= 1
                assert session.dtls.proven_source == session.address
        finally:
            await a.close()


async def test_chromium_to_chromium(sfu):
    async with chromium() as browser:
        c1 = await ChromiumPeer.open(browser)
        c2 = await ChromiumPeer.open(browser)
        s1 = sfu.create_session(await c1.offer(640, 480))
        s2 = sfu.create_session(await c2.offer(320, 240))
        await c1.accept(s1.answer)
        await c2.accept(s2.answer)
        sfu.connect(s1.id, s2.id)
        sfu.connect(s2.id, s1.id)
        for peer in (c1, c2):
            samples = await rising_frames(peer, 20, timeout=30)
            assert samples[-1] > samples[-2] >= 20, samples
        assert ((await c2.stats())["width"], (await c2.stats())["height"]) == (640, 480)
        assert ((await c1.stats())["width"], (await c1.stats())["height"]) == (320, 240)
