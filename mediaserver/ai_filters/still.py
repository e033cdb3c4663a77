"""One still frame of a publisher's video, as JPEG: the moderators' evidence when a
reporter ticks "include a still of their video".

    tapped RTP (event loop) -> depacketize + reorder (aiortc, as pipeline.py)
      -> the first keyframe -> worker thread: decode it (PyAV), encode one JPEG (Pillow)

Only the keyframe is decoded (one decode per capture), and only for a stream that
was reported with include_frame: nothing else is ever decoded or kept.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import Executor
from typing import Any

from aiortc.codecs import depayload, get_decoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from mediaserver.ai_filters.pipeline import is_keyframe

JPEG_QUALITY = 85
MAX_SIDE = 1280
"""A larger frame is scaled down to this many pixels on its longer side."""


def frame_to_jpeg(frame: Any) -> bytes:
    """A decoded PyAV VideoFrame as JPEG bytes (no metadata)."""
    image = frame.to_image()  # RGB, through libswscale
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


class StillCapture:
    """Waits for the publisher's next keyframe and makes `result` its JPEG.

    Args:
        mime: "video/VP8" or "video/H264".
        payload_type: the publisher's payload type of that codec.
        executor: the effects' worker threads (the decode runs there).
    """

    def __init__(self, mime: str, payload_type: int, executor: Executor) -> None:
        self.mime = mime
        self.payload_type = payload_type
        self._codec = RTCRtpCodecParameters(
            mimeType=mime, clockRate=90000, payloadType=payload_type
        )
        self._jitter = JitterBuffer(capacity=128, is_video=True)
        self._executor = executor
        self.result: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._decoding = False
        self.frames_seen = 0
        self.decoded = 0

    @property
    def done(self) -> bool:
        return self._decoding or self.result.done()

    def receive_rtp(self, data: bytes) -> None:
        """One decrypted RTP packet of the publisher (on the event loop)."""
        if self.done:
            return
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        if packet.payload_type != self.payload_type:
            return  # another codec of the track (or RTX): not what we decode
        try:
            packet._data = depayload(self._codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
        except ValueError:
            return
        _, frame = self._jitter.add(packet)
        if frame is None:
            return
        self.frames_seen += 1
        if not is_keyframe(self.mime, frame.data):
            return
        self._decoding = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._decode, frame)
        future.add_done_callback(self._done)

    def cancel(self) -> None:
        if not self.result.done():
            self.result.cancel()

    def _decode(self, encoded: JitterFrame) -> bytes:
        """Worker thread: a fresh decoder for the one keyframe, then the JPEG."""
        frames = get_decoder(self._codec).decode(encoded)
        if not frames:
            raise ValueError("the keyframe did not decode")
        self.decoded += 1
        return frame_to_jpeg(frames[0])

    def _done(self, future: asyncio.Future[bytes]) -> None:
        if self.result.done():
            return
        try:
            self.result.set_result(future.result())
        except Exception as exc:  # noqa: BLE001 - a corrupt keyframe: no still, said so
            self.result.set_exception(exc)
