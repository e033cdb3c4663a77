"""The effects path for one publisher's video: RTP in, processed RTP out.

    tapped RTP (event loop) -> depacketize + reorder (aiortc's JitterBuffer)
      -> worker thread: decode (PyAV) -> effect.apply(frame) -> encode -> packetize
      -> back on the event loop: emit(packets) -> Router.inject for each subscriber

Runs off the event loop: each stream has at most one batch of frames in a worker
at a time. Frames that arrive meanwhile wait in a short backlog; all of them are
decoded (the decoder needs every frame) but only the newest is processed and
encoded. A backlog that overflows is dropped whole, and the stream waits for the
next keyframe and asks the sender for one: it never queues without bound and never
stalls forwarding for anyone else.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

logger = logging.getLogger(__name__)

MAX_BACKLOG = 4  # encoded frames waiting for the worker before we drop and resync
MAX_FAILURES = 3
"""Frames in a row the effect fails on (each after a resync on a keyframe) before
the stream counts as broken: its owner is told (on_failure), once."""


class Effect(Protocol):
    def apply(self, frame: Any) -> Any: ...


def is_keyframe(mime: str, data: bytes) -> bool:
    """Does this depacketized frame start a new decodable sequence?"""
    if not data:
        return False
    if mime.lower() == "video/vp8":
        return not data[0] & 0x01  # RFC 6386 9.1: frame type bit, 0 = key frame
    # H.264 (Annex B from aiortc's depayloader): an IDR slice (NAL type 5)
    i = 0
    while (i := data.find(b"\x00\x00\x01", i)) != -1 and i + 3 < len(data):
        if data[i + 3] & 0x1F == 5:
            return True
        i += 3
    return False


class EffectStream:
    """Args:
    effect: applied to every decoded frame that is sent on.
    mime: "video/VP8" or "video/H264".
    payload_type: the publisher's payload type (kept on the packets we make).
    emit: called on the event loop with the RTP packets of one processed frame.
    request_keyframe: asks the publisher for a keyframe (PLI).
    on_failure: called on the event loop once MAX_FAILURES frames in a row failed
        (every failed frame is dropped: nothing unprocessed is ever sent on).
    """

    def __init__(
        self,
        effect: Effect,
        mime: str,
        payload_type: int,
        executor: Executor,
        emit: Callable[[list[bytes]], None],
        request_keyframe: Callable[[], None],
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.effect = effect
        self.mime = mime
        self.payload_type = payload_type
        self._codec = RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=payload_type)
        self._jitter = JitterBuffer(capacity=128, is_video=True)
        self._decoder = get_decoder(self._codec)
        self._encoder = get_encoder(self._codec)
        self._executor = executor
        self._emit = emit
        self._request_keyframe = request_keyframe
        self._on_failure = on_failure
        self.failures = 0
        """Frames in a row the pipeline failed on."""
        self._pending: deque[JitterFrame] = deque()
        self._busy = False
        self._closed = False
        self._waiting_keyframe = True  # the decoder starts on a keyframe
        self.force_keyframe = True  # our first output is one too
        self.ssrc = random.getrandbits(32) or 1
        self._seq = random.getrandbits(16)
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self.errors = 0

    def set_bitrate(self, bitrate: int) -> None:
        """Target bitrate of the re-encoded video (from the subscribers' REMB)."""
        if hasattr(self._encoder, "target_bitrate"):
            self._encoder.target_bitrate = max(100_000, bitrate)

    def close(self) -> None:
        self._closed = True
        self._pending.clear()

    def receive_rtp(self, data: bytes) -> None:
        """One decrypted RTP packet of the publisher (on the event loop)."""
        if self._closed:
            return
        try:
            packet = RtpPacket.parse(data)
            packet._data = depayload(self._codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
        except ValueError:
            self.errors += 1
            return
        pli, frame = self._jitter.add(packet)
        if pli:
            self._request_keyframe()
        if frame is None:
            return
        self.frames_in += 1
        if self._waiting_keyframe:
            if not is_keyframe(self.mime, frame.data):
                self.frames_dropped += 1
                self._request_keyframe()  # again until one comes (the SFU rate-limits)
                return
            self._waiting_keyframe = False
        if len(self._pending) >= MAX_BACKLOG:
            # fell behind: drop the backlog and start again from a keyframe
            self.frames_dropped += len(self._pending) + 1
            self._pending.clear()
            self._waiting_keyframe = True
            self._request_keyframe()
            return
        self._pending.append(frame)
        self._kick()

    def _kick(self) -> None:
        if self._busy or self._closed or not self._pending:
            return
        self._busy = True
        frames = list(self._pending)
        self._pending.clear()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._process, frames)
        future.add_done_callback(self._done)

    def _process(self, frames: list[JitterFrame]) -> list[bytes]:
        """Worker thread: decode every frame, process and encode the newest."""
        decoded = []
        for encoded in frames:
            decoded.extend(self._decoder.decode(encoded))
        if not decoded:
            return []
        self.frames_dropped += len(decoded) - 1
        frame = self.effect.apply(decoded[-1])
        force, self.force_keyframe = self.force_keyframe, False
        payloads, timestamp = self._encoder.encode(frame, force_keyframe=force)
        packets = []
        for i, payload in enumerate(payloads):
            self._seq = (self._seq + 1) & 0xFFFF
            packets.append(
                bytes(
                    RtpPacket(
                        payload_type=self.payload_type,
                        marker=int(i == len(payloads) - 1),
                        sequence_number=self._seq,
                        timestamp=timestamp,
                        ssrc=self.ssrc,
                        payload=payload,
                    ).serialize()
                )
            )
        self.frames_out += 1
        return packets

    def _done(self, future: asyncio.Future[list[bytes]]) -> None:
        self._busy = False
        try:
            packets = future.result()
        except Exception:
            # a corrupt frame or a codec error: resync from the next keyframe
            self.errors += 1
            self.failures += 1
            logger.exception("effect pipeline failed on a frame")
            self._waiting_keyframe = True
            self._request_keyframe()
            packets = []
            if self.failures == MAX_FAILURES and self._on_failure is not None and not self._closed:
                self._on_failure()
        else:
            if packets:
                self.failures = 0
        if packets and not self._closed:
            self._emit(packets)
        self._kick()
