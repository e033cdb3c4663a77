"""A still frame of a publisher's video for the moderators, through the real SFU:
aiortc peers in the private namespace, the publisher sending a known picture.
The JPEG decodes and matches the picture sent; the subscriber keeps getting the
video meanwhile; nothing is decoded unless asked; captures are bounded."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from mediaserver.netns import SERVER_IP
from mediaserver.sfu.server import Sfu, SfuConfig
from mediaserver.sfu.stills import MAX_STILLS, StillsBusy, StillTimeout
from tests.support.peers import AiortcPeer, ImageVideoTrack, connect_pair, wait_for

pytestmark = pytest.mark.netns


def quadrants(width: int = 320, height: int = 240) -> np.ndarray:
    """Four solid colours, one per quadrant (RGB): easy to tell apart, and to blur."""
    rgb = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    rgb[:h, :w] = (220, 30, 30)
    rgb[:h, w:] = (30, 200, 40)
    rgb[h:, :w] = (40, 50, 210)
    rgb[h:, w:] = (230, 220, 60)
    return rgb


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decode_jpeg(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_still_matches_the_picture_sent_and_the_video_keeps_flowing(codec: str) -> None:
    sfu = Sfu(SfuConfig(announced_ip=SERVER_IP))
    await sfu.start()
    source = quadrants()
    a = AiortcPeer(audio=False, video=ImageVideoTrack(source), video_codec=codec)
    b = AiortcPeer(audio=False)
    try:
        sa, _ = await connect_pair(sfu, a, b, both_ways=False)
        assert await wait_for(lambda: b.frames("video") >= 20, timeout=30)
        # forwarding alone decodes nothing and taps nothing
        assert sfu.stats["stills_decoded"] == 0 and not sfu.stills.running
        before = b.frames("video")
        jpeg = await sfu.capture_still(sa.id)
        still = decode_jpeg(jpeg)
        assert still.shape == source.shape
        assert psnr(still, source) > 30, psnr(still, source)
        # mean colour of each quadrant within a few levels of what was sent
        for ys, xs in ((slice(0, 120), slice(0, 160)), (slice(120, 240), slice(160, 320))):
            assert np.abs(still[ys, xs].mean((0, 1)) - source[ys, xs].mean((0, 1))).max() < 8
        assert sfu.stats["stills_taken"] == 1 and sfu.stats["stills_decoded"] == 1
        assert not sfu.stills.running  # the tap is off again
        # the subscriber was served throughout, and still is
        assert await wait_for(lambda: b.frames("video") >= before + 30, timeout=10)
    finally:
        await a.close()
        await b.close()
        await sfu.close()


async def test_captures_are_bounded_and_time_out_without_a_keyframe() -> None:
    sfu = Sfu(SfuConfig(announced_ip=SERVER_IP))
    await sfu.start()
    peers = [AiortcPeer(audio=False, video=ImageVideoTrack(quadrants())) for _ in range(4)]
    try:
        pairs = [await connect_pair(sfu, peers[i], peers[i + 1]) for i in (0, 2)]
        publishers = [s.id for pair in pairs for s in pair]
        assert await wait_for(lambda: all(p.frames("video") >= 10 for p in peers), timeout=30)
        # MAX_STILLS at once; the next is refused (counted), never queued
        running = [asyncio.ensure_future(sfu.capture_still(p)) for p in publishers[:MAX_STILLS]]
        await asyncio.sleep(0)
        with pytest.raises(StillsBusy):
            await sfu.capture_still(publishers[MAX_STILLS])
        assert sfu.stats["stills_busy"] == 1
        for jpeg in await asyncio.gather(*running):
            assert psnr(decode_jpeg(jpeg), quadrants()) > 30
        # a publisher whose keyframe never comes in time: the wait ends, without a still
        with pytest.raises(StillTimeout):
            await sfu.capture_still(publishers[0], timeout=0.001)
        assert sfu.stats["stills_timeout"] == 1 and not sfu.stills.running
    finally:
        for p in peers:
            await p.close()
        await sfu.close()
