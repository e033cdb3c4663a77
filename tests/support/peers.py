"""Real WebRTC peers for tests: aiortc clients wired to an in-process Sfu."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack
from av import VideoFrame


class PatternVideoTrack(VideoStreamTrack):
    """A moving test pattern (so the encoder makes real inter frames)."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.counter = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        img = np.zeros((self.height, self.width, 3), np.uint8)
        x = (self.counter * 4) % self.width
        img[:, x : x + 16] = (255, 128, 0)
        img[(self.counter * 3) % self.height, :] = (0, 255, 255)
        self.counter += 1
        frame = VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class FrameCounter:
    """Consumes a remote track, counting decoded frames and remembering sizes;
    on_frame, if given, sees every decoded frame."""

    def __init__(
        self, track: MediaStreamTrack, on_frame: Callable[[object], None] | None = None
    ) -> None:
        self.track = track
        self.on_frame = on_frame
        self.frames = 0
        self.sizes: set[tuple[int, int]] = set()
        self.last = None
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                frame = await self.track.recv()
            except Exception:
                return
            self.frames += 1
            self.last = frame
            if self.on_frame is not None:
                self.on_frame(frame)
            if hasattr(frame, "width"):
                self.sizes.add((frame.width, frame.height))

    def stop(self) -> None:
        self.task.cancel()


class AiortcPeer:
    """An aiortc RTCPeerConnection sending audio+video and counting what it receives."""

    def __init__(
        self,
        width: int = 320,
        height: int = 240,
        audio: bool = True,
        video_codec: str | None = None,
        video: VideoStreamTrack | None = None,
        on_video_frame: Callable[[VideoFrame], None] | None = None,
    ) -> None:
        # no ICE servers: aiortc's default is a public STUN server
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video = video or PatternVideoTrack(width, height)
        self.pc.addTrack(self.video)
        if video_codec is not None:
            from aiortc import RTCRtpSender

            codecs = RTCRtpSender.getCapabilities("video").codecs
            (transceiver,) = [t for t in self.pc.getTransceivers() if t.kind == "video"]
            transceiver.setCodecPreferences(
                [c for c in codecs if c.mimeType.lower() == f"video/{video_codec.lower()}"]
            )
        if audio:
            self.pc.addTrack(AudioStreamTrack())
        self.received: dict[str, FrameCounter] = {}

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            on_frame = on_video_frame if track.kind == "video" else None
            self.received[track.kind] = FrameCounter(track, on_frame)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def frames(self, kind: str) -> int:
        counter = self.received.get(kind)
        return counter.frames if counter else 0

    async def close(self) -> None:
        for counter in self.received.values():
            counter.stop()
        await self.pc.close()


async def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


class ImageVideoTrack(VideoStreamTrack):
    """Sends one RGB picture as video (e.g. a real face), 30 fps."""

    def __init__(self, rgb: "np.ndarray") -> None:
        super().__init__()
        self.rgb = rgb

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self.rgb, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


async def connect_pair(sfu, a: AiortcPeer, b: AiortcPeer, *, both_ways: bool = True):  # type: ignore[no-untyped-def]
    """Sessions for two aiortc peers on one Sfu, answered, and A's media forwarded
    to B (and B's to A unless both_ways is False). Returns the two sessions."""
    sa = sfu.create_session(await a.offer())
    sb = sfu.create_session(await b.offer())
    await a.accept(sa.answer)
    await b.accept(sb.answer)
    sfu.connect(sa.id, sb.id)
    if both_ways:
        sfu.connect(sb.id, sa.id)
    return sa, sb
