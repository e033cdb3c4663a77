"""Synthetic peers for full ICE agents (aiortc, Janus), and real VP8 for codecs.

benchmarks/peers/webrtc.py's peers only send checks: enough for an ICE-lite
server. A full agent (aioice, libnice) sends its own connectivity checks and
only nominates a pair once we answered them, so these peers also answer STUN
Binding requests (with MESSAGE-INTEGRITY keyed by their own ice-pwd), during the
handshake and during the run.

A relay that decodes (aiortc's MediaRelay) needs real video: make_clip() encodes
a short clip (a moving pattern, first frame a keyframe) with aiortc's own VP8
encoder and packetizer once, and VideoLoop replays it in a loop, with rewritten
sequence numbers and timestamps, SRTP-protected with pylibsrtp, at a fixed
frame rate; it counts what the subscribers get back (packets, frames, bytes),
and answers the server's checks all along.
"""

from __future__ import annotations

import fractions
import selectors
import struct
import time
from dataclasses import dataclass

from aioice import stun

from benchmarks.peers.webrtc import VIDEO_PT, SyntheticPeer, _Handshake


class FullIcePeer(SyntheticPeer):
    """A SyntheticPeer whose offer says a=setup:active (we stay the DTLS client,
    whichever role the server would pick for actpass), and that answers checks."""

    setup = "active"

    def offer(self) -> str:
        return super().offer().replace("a=setup:actpass", f"a=setup:{self.setup}")

    def answer_check(self, data: bytes) -> bool:
        """If `data` is a STUN Binding request for us, answer it; True if STUN."""
        try:
            message = stun.parse_message(data)
        except (ValueError, KeyError, IndexError):
            return False
        if (
            message.message_method == stun.Method.BINDING
            and message.message_class == stun.Class.REQUEST
            and self.server_addr is not None
        ):
            response = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.RESPONSE,
                transaction_id=message.transaction_id,
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = self.server_addr
            response.add_message_integrity(self.pwd.encode())
            self.send(bytes(response))
        return True


class FullIceHandshake(_Handshake):
    """webrtc._Handshake that also answers the server's checks."""

    def datagram(self, data: bytes, now: float) -> None:
        if data and data[0] < 4:
            try:
                message = stun.parse_message(data)
            except (ValueError, KeyError, IndexError):
                return
            if message.message_class == stun.Class.REQUEST:
                self.peer.answer_check(data)  # type: ignore[attr-defined]
                return
        super().datagram(data, now)


# ---- real VP8 --------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    frames: list[list[bytes]]
    """RTP payloads (VP8 payload descriptor + data) of each frame."""
    fps: int
    width: int
    height: int
    bitrate: int

    @property
    def packets_per_second(self) -> float:
        return sum(len(f) for f in self.frames) * self.fps / len(self.frames)


def make_clip(
    seconds: float = 1.0,
    fps: int = 20,
    width: int = 640,
    height: int = 480,
    bitrate: int = 1_500_000,
) -> Clip:
    """Encode a moving pattern with aiortc's VP8 encoder; frame 0 is a keyframe."""
    import av
    import numpy as np
    from aiortc.codecs.vpx import Vp8Encoder

    encoder = Vp8Encoder()
    encoder.target_bitrate = bitrate
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width]
    noise = rng.integers(0, 24, size=(height, width), dtype=np.uint8)
    frames = []
    count = max(2, round(seconds * fps))
    for i in range(count):
        shift = i * 8
        img = np.empty((height, width, 3), dtype=np.uint8)
        img[..., 0] = ((xx + shift) % 256).astype(np.uint8)
        img[..., 1] = ((yy + 2 * shift) % 256).astype(np.uint8)
        img[..., 2] = (((xx // 40 + yy // 40 + i) % 2) * 160).astype(np.uint8) + noise
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i * (90000 // fps)
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=(i == 0))
        frames.append(payloads)
    return Clip(frames, fps, width, height, bitrate)


class VideoLoop:
    """Replays a clip from every sender and counts what the receivers get.

    Single-threaded Python: fine for the few calls a decoding relay holds.
    """

    def __init__(
        self, senders: list[FullIcePeer], receivers: list[FullIcePeer], clip: Clip
    ) -> None:
        import pylibsrtp

        self.senders = senders
        self.receivers = receivers
        self.clip = clip
        self.tx = []
        for peer in senders:
            assert peer.keys is not None
            policy = pylibsrtp.Policy(
                key=peer.keys.tx_key + peer.keys.tx_salt,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=peer.keys.profile,
            )
            self.tx.append(pylibsrtp.Session(policy))
        self.rx = {}
        for peer in receivers:
            assert peer.keys is not None
            policy = pylibsrtp.Policy(
                key=peer.keys.rx_key + peer.keys.rx_salt,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=peer.keys.profile,
            )
            self.rx[peer.sock.fileno()] = pylibsrtp.Session(policy)
        self.seq = [0] * len(senders)
        self.frame_index = 0
        self.timestamp = 0
        self.error = pylibsrtp.Error

    def run(self, duration: float) -> dict[str, float]:
        """Send for `duration` s (plus 0.3 s to collect the tail); the counts."""
        sent = sent_frames = received = frames = nbytes = rtcp = stun_answered = bad = 0
        interval = 1.0 / self.clip.fps
        start = time.monotonic()
        stop_sending = start + duration
        end = stop_sending + 0.3
        next_frame = start
        peers = {p.sock.fileno(): p for p in self.senders + self.receivers}
        with selectors.DefaultSelector() as selector:
            for peer in peers.values():
                selector.register(peer.sock, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                if now >= next_frame and now < stop_sending:
                    payloads = self.clip.frames[self.frame_index]
                    self.frame_index = (self.frame_index + 1) % len(self.clip.frames)
                    self.timestamp = (self.timestamp + 90000 // self.clip.fps) & 0xFFFFFFFF
                    for i, (peer, session) in enumerate(zip(self.senders, self.tx)):
                        for k, payload in enumerate(payloads):
                            marker = 0x80 if k == len(payloads) - 1 else 0
                            header = struct.pack(
                                "!BBHLL",
                                0x80,
                                marker | VIDEO_PT,
                                self.seq[i],
                                self.timestamp,
                                peer.video_ssrc,
                            )
                            self.seq[i] = (self.seq[i] + 1) & 0xFFFF
                            peer.send(session.protect(header + payload))
                            sent += 1
                        sent_frames += 1
                    next_frame += interval
                    if next_frame < now:  # fell behind: do not burst to catch up
                        next_frame = now + interval
                wait = max(0.0, min(next_frame, end) - time.monotonic())
                for key, _ in selector.select(timeout=wait):
                    fd = key.fd
                    peer = peers[fd]
                    while True:
                        try:
                            data = peer.sock.recv(4096)
                        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                            break
                        if not data:
                            continue
                        if data[0] < 4:
                            stun_answered += peer.answer_check(data)
                            continue
                        if not 128 <= data[0] < 192 or fd not in self.rx:
                            continue
                        if 192 <= data[1] <= 223:
                            rtcp += 1
                            continue
                        try:
                            packet = self.rx[fd].unprotect(data)
                        except self.error:
                            bad += 1
                            continue
                        received += 1
                        nbytes += len(packet)
                        if packet[1] & 0x80:
                            frames += 1
        elapsed = min(time.monotonic(), stop_sending) - start
        return {
            "sent": sent,
            "sent_frames": sent_frames,
            "received": received,
            "received_frames": frames,
            "received_bytes": nbytes,
            "rtcp_received": rtcp,
            "stun_answered": stun_answered,
            "srtp_auth_failures": bad,
            "elapsed_s": elapsed,
        }
