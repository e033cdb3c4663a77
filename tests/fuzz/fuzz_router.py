"""The C forwarding path of ext/_router.pyx through its sans-I/O entry, Router.feed().

A fresh Router per input, wired like tests/sfu/test_router.py: a publisher and a
subscriber, SRTP keys on both, the publisher's PT 96 (video) and 111 (audio)
routed to the subscriber, PT 97 tapped to Python. Input: records
(tests.fuzz.common.records); a record's tag says what to do with its payload:

    bits 0-1  0: feed it as is (raw datagram)
              1: SRTP-protect it with the publisher's key first, then feed it
                 (so fuzzed plaintext RTP reaches the parse/route/rewrite code)
              2: SRTCP-protect it first, then feed it
              3: a call from Python: NACK resend (payload = 16-bit seqs) when
                 bit 2 is clear, else inject(payload) as re-encoded video
    bits 2-3  source: publisher, subscriber, an unknown address, publisher
    bit 4     one second passes before it (else 20 ms)

Seeds: real aiortc/Chromium RTP and RTCP as plaintext records (modes 1/2), and
re-protected with the publisher's key (mode 0).

Bug: any exception but the documented ValueError/RuntimeError of the Python calls;
a datagram sent anywhere but the subscriber; a tapped or RTCP slow-path datagram
whose plaintext differs from what was protected; a forwarded packet that
decrypts (subscriber's key) to other payload bytes or another SSRC; two
different packets sent under one SSRC and SRTP index (one GCM nonce; injected
ones included); and (make fuzz) any ASan report.
"""

from __future__ import annotations

import struct
from typing import Any

from tests.fuzz.common import main, records

router_module: Any = None
srtp: Any = None
rtp: Any = None

PUB = ("10.0.0.1", 5000)
SUB = ("10.0.0.2", 6000)
STRANGER = ("10.0.0.3", 7000)
OUT_SSRC = 0x0BADCAFE
AUDIO_SSRC = 0x0DEFACED


def load() -> None:
    global router_module, srtp, rtp
    from mediaserver import _router, _rtp, _srtp

    router_module, srtp, rtp = _router, _srtp, _rtp


def keys(tag: int) -> tuple[bytes, bytes]:
    """AEAD_AES_128_GCM master key and salt number ``tag`` (seeds use 1 for the publisher)."""
    return bytes([tag]) * 16, bytes([tag + 1]) * 12


def _wire() -> tuple[Any, int, int, int, int]:
    profile = srtp.PROFILE_AEAD_AES_128_GCM
    router = router_module.Router(-1, max_peers=4, max_streams=4, cache_packets=64)
    pub, sub = router.add_peer(), router.add_peer()
    router.bind_address(pub, *PUB)
    router.bind_address(sub, *SUB)
    router.set_srtp(pub, profile, *keys(1), *keys(3))
    router.set_srtp(sub, profile, *keys(7), *keys(5))
    router.set_clock_rate(pub, 96, 90000)
    router.set_clock_rate(pub, 111, 48000)
    video = router.add_out_stream(sub, OUT_SSRC, 90000)
    audio = router.add_out_stream(sub, AUDIO_SSRC, 48000)
    router.add_route(pub, 96, video, 100)
    router.add_route(pub, 111, audio, 109)
    router.set_tap(pub, 97, True)
    return router, pub, sub, video, audio


def test_one_input(data: bytes) -> None:
    router, pub, sub, video, audio = _wire()
    profile = srtp.PROFILE_AEAD_AES_128_GCM
    pub_tx = srtp.Srtp(profile, *keys(1))
    sub_rx = srtp.Srtp(profile, *keys(5))
    now = 0.0
    indexes = OutIndexes()
    for tag, payload in records(data):
        now += 1.0 if tag & 0x10 else 0.02
        source = (PUB, SUB, STRANGER, PUB)[(tag >> 2) & 3]
        mode = tag & 3
        plain: bytes | None = None
        if mode == 3:
            if tag & 4:
                try:
                    injected = router.inject(pub, payload, video, 100, now)
                except ValueError:
                    injected = None
                if injected is not None:
                    indexes.add(injected)
            else:
                seqs = [s for (s,) in struct.iter_unpack("!H", payload[: len(payload) & ~1])]
                router.resend(video, seqs, now)
                router.resend(audio, seqs[::-1], now)
            continue
        datagram = payload
        if mode in (1, 2):
            try:
                datagram = pub_tx.protect(payload) if mode == 1 else pub_tx.protect_rtcp(payload)
                plain = payload
            except srtp.SrtpError:
                datagram = payload
        sent, slow = router.feed(datagram, source[0], source[1], now)
        for out, addr in sent:
            if addr != SUB:
                raise AssertionError(f"forwarded to {addr}, not the subscriber")
            indexes.add(out)
            _check_forwarded(sub_rx, out, plain if source == PUB and mode == 1 else None)
        for kind, peer, addr, item in slow:
            if addr != source:
                raise AssertionError(f"slow-path datagram from {addr}, fed from {source}")
            if kind in (router_module.SLOW_RTCP, router_module.SLOW_MEDIA):
                if peer < 0:
                    raise AssertionError("decrypted datagram of no peer")
                if plain is not None and source == PUB and item != plain:
                    raise AssertionError(f"slow-path plaintext {item.hex()} != {plain.hex()}")
    for peer in (pub, sub):
        router.in_stats(peer)
        router.last_rx(peer)
    router.out_stats(video)
    router.out_stats(audio)
    router.counters()
    router.remove_out_stream(video)
    router.remove_peer(pub)


class OutIndexes:
    """What subscribers see: per SSRC, each packet's 48-bit SRTP index and the
    bytes first sent under it. Same SSRC and index is the same nonce: two
    different packets there are the bug. The ROC is guessed from the highest
    index seen as RFC 3711 Appendix A does (and ext/_srtp.pyx's sender)."""

    def __init__(self) -> None:
        self.highest: dict[int, int] = {}
        self.sent: dict[tuple[int, int], bytes] = {}

    def add(self, out: bytes) -> int:
        """Record a protected RTP packet; returns its index."""
        seq, ssrc = struct.unpack_from("!HxxxxI", out, 2)
        highest = self.highest.get(ssrc)
        index = seq if highest is None else _estimate_index(highest, seq)
        self.highest[ssrc] = index if highest is None else max(highest, index)
        if self.sent.setdefault((ssrc, index), out) != out:
            raise AssertionError(f"SSRC {ssrc:#x} index {index} protects two different packets")
        return index


def _estimate_index(highest: int, seq: int) -> int:
    roc, s_l = highest >> 16, highest & 0xFFFF
    if s_l < 32768:
        if seq > s_l + 32768 and roc > 0:
            roc -= 1
    elif s_l - 32768 > seq:
        roc += 1
    return (roc << 16) | seq


def _check_forwarded(sub_rx: Any, out: bytes, plain: bytes | None) -> None:
    try:
        decrypted = sub_rx.unprotect(out)
    except srtp.SrtpError:
        return  # a replay (NACK resend) or an ambiguous rollover guess: not checkable
    h = rtp.parse_header(decrypted)
    if h["ssrc"] not in (OUT_SSRC, AUDIO_SSRC) or h["extension_length"]:
        raise AssertionError(f"forwarded header {h}")
    if plain is not None:
        p = rtp.parse_header(plain)
        if decrypted[h["header_length"] :] != plain[p["header_length"] :]:
            raise AssertionError("forwarded payload differs from the publisher's")


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver"])
