"""Micro-benchmarks of the per-packet path, each an A/B pair in one run.

    pytest benchmarks/test_bench_router.py --benchmark-only

- rtp-parse: mediaserver._rtp.parse_header vs aiortc's RtpPacket.parse.
- rtp-rewrite: mediaserver._rtp.rewrite (new SSRC, sequence number, timestamp,
  payload type; header extension dropped) vs aiortc parse, set the fields,
  serialize (the same result).
- route-step: Router.feed (unprotect, route, rewrite, protect, in C) vs the same
  steps in Python with libsrtp (pylibsrtp) and aiortc, as a Python SFU does.

Packets are Chromium-like VP8: a one-byte header extension (mid,
abs-send-time) and a 1,100-byte payload.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from mediaserver import _router, _rtp, _srtp

Router = _router.Router
Srtp = _srtp.Srtp
PROFILE_AEAD_AES_128_GCM = _srtp.PROFILE_AEAD_AES_128_GCM

PAYLOAD = bytes(range(256)) * 4 + bytes(76)  # 1,100 bytes
PUB = ("127.0.0.1", 40001)
SUB = ("127.0.0.1", 40002)
PUB_SSRC = 0x11223344
OUT_SSRC = 0x55667788
FEED_ROUNDS = 20
FEED_ITERATIONS = 2000
FEED_PACKETS = FEED_ROUNDS * FEED_ITERATIONS + 100  # pedantic() may make an extra call


def rtp_packet(seq: int, ts: int = 90000, ssrc: int = PUB_SSRC) -> bytes:
    # RFC 8285 one-byte extensions: id 1 mid "0" (1 byte), id 3 abs-send-time (3 bytes)
    ext = bytes([0x10, ord("0"), 0x32, 0x01, 0x02, 0x03, 0x00, 0x00])
    header = struct.pack("!BBHLL", 0x90, 96, seq & 0xFFFF, ts, ssrc)
    return header + struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext + PAYLOAD


def extensions_map() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
            ]
        )
    )
    return m


PACKET = rtp_packet(1000)
EXTENSIONS = extensions_map()
NO_EXTENSIONS = HeaderExtensionsMap()


# ---- RTP header parse -------------------------------------------------------------


@pytest.mark.benchmark(group="rtp-parse")
def test_parse_mediaserver(benchmark):
    header = benchmark(_rtp.parse_header, PACKET)
    assert header["sequence_number"] == 1000 and header["header_length"] == 24


@pytest.mark.benchmark(group="rtp-parse")
def test_parse_aiortc(benchmark):
    packet = benchmark(RtpPacket.parse, PACKET, EXTENSIONS)
    assert packet.sequence_number == 1000 and packet.extensions.mid == "0"


# ---- RTP header rewrite --------------------------------------------------------------


def aiortc_rewrite(data: bytes, ssrc: int, seq: int, ts: int, pt: int) -> bytes:
    packet = RtpPacket.parse(data, EXTENSIONS)
    packet.ssrc = ssrc
    packet.sequence_number = seq
    packet.timestamp = ts
    packet.payload_type = pt
    return packet.serialize(NO_EXTENSIONS)  # no ids negotiated: the extension is dropped


@pytest.mark.benchmark(group="rtp-rewrite")
def test_rewrite_mediaserver(benchmark):
    out = benchmark(_rtp.rewrite, PACKET, OUT_SSRC, 7, 1234, 100)
    assert out == aiortc_rewrite(PACKET, OUT_SSRC, 7, 1234, 100)


@pytest.mark.benchmark(group="rtp-rewrite")
def test_rewrite_aiortc(benchmark):
    out = benchmark(aiortc_rewrite, PACKET, OUT_SSRC, 7, 1234, 100)
    assert len(out) == 12 + len(PAYLOAD)


# ---- the route step ------------------------------------------------------------------

KEYS = {
    "pub": (bytes(range(16)), bytes(range(100, 112))),  # what the publisher protects with
    "sub": (
        bytes(range(32, 48)),
        bytes(range(200, 212)),
    ),  # what the server protects with for the subscriber
}


def protected_stream(count: int) -> list[bytes]:
    """`count` consecutive SRTP packets from the publisher (sequence numbers go
    up by one, so none is a replay: every feed() call does the full work)."""
    publisher = Srtp(PROFILE_AEAD_AES_128_GCM, *KEYS["pub"])
    return [publisher.protect(rtp_packet(seq, 90000 + 3000 * seq)) for seq in range(count)]


def make_router() -> tuple[Router, int]:
    router = Router(fd=-1, max_peers=4, max_streams=4)
    pub = router.add_peer()
    sub = router.add_peer()
    router.bind_address(pub, *PUB)
    router.bind_address(sub, *SUB)
    # set_srtp(peer, profile, rx key, rx salt, tx key, tx salt)
    router.set_srtp(pub, PROFILE_AEAD_AES_128_GCM, *KEYS["pub"], *KEYS["sub"])
    router.set_srtp(sub, PROFILE_AEAD_AES_128_GCM, *KEYS["sub"], *KEYS["sub"])
    router.set_clock_rate(pub, 96, 90000)
    out = router.add_out_stream(sub, OUT_SSRC, 90000)
    router.add_route(pub, 96, out, 96)
    return router, out


@pytest.mark.benchmark(group="route-step")
def test_route_step_router_feed(benchmark):
    """Router.feed per packet: SRTP unprotect, route by payload type, rewrite into
    the subscriber's cache slot, SRTP protect (AES-128-GCM), on a Router(fd=-1).

    feed() is the sans-I/O test entry point, so this includes what drain() does
    not pay per packet: a Python call, copying the datagram in, parsing the
    address string, and building the output list, bytes and address tuple (plus
    next() on the packet iterator). It bounds the C route step from above; the
    forwarding benchmark (python -m benchmarks.forward) measures it in place.
    """
    router, _ = make_router()
    packets = iter(protected_stream(FEED_PACKETS))
    host, port = PUB

    calls = itertools.count(1)

    def step() -> None:
        router.feed(next(packets), host, port, 1.0)
        next(calls)

    benchmark.pedantic(step, rounds=FEED_ROUNDS, iterations=FEED_ITERATIONS, warmup_rounds=0)
    counters = router.counters()
    assert counters["forwarded_packets"] == next(calls) - 1
    assert not any(counters["drops"].values()), counters["drops"]
    # what reached the subscriber decrypts with its keys, rewritten
    sent, _ = router.feed(next(packets), host, port, 1.0)
    ((data, addr),) = sent
    plain = Srtp(PROFILE_AEAD_AES_128_GCM, *KEYS["sub"]).unprotect(data)
    assert addr == SUB and _rtp.parse_header(plain)["ssrc"] == OUT_SSRC
    assert plain.endswith(PAYLOAD)


@pytest.mark.benchmark(group="route-step")
def test_route_step_python_libsrtp(benchmark):
    """The same step in Python: pylibsrtp unprotect, aiortc parse + rewrite +
    serialize, pylibsrtp protect, a dict lookup for the route."""
    import pylibsrtp  # a dependency (also the SRTP tests' reference): no skip

    def session(keys: tuple[bytes, bytes], inbound: bool):  # type: ignore[no-untyped-def]
        kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        return pylibsrtp.Session(
            pylibsrtp.Policy(
                key=keys[0] + keys[1], ssrc_type=kind, srtp_profile=PROFILE_AEAD_AES_128_GCM
            )
        )

    rx = session(KEYS["pub"], inbound=True)
    tx = session(KEYS["sub"], inbound=False)
    routes = {(PUB, 96): (tx, OUT_SSRC, 96, SUB)}
    packets = iter(protected_stream(FEED_PACKETS))
    seqs = itertools.count()

    def step() -> tuple[bytes, tuple[str, int]]:
        plain = rx.unprotect(next(packets))
        packet = RtpPacket.parse(plain, EXTENSIONS)
        context, ssrc, pt, dest = routes[(PUB, packet.payload_type)]
        packet.ssrc = ssrc
        packet.payload_type = pt
        packet.sequence_number = next(seqs) & 0xFFFF
        return context.protect(packet.serialize(NO_EXTENSIONS)), dest

    benchmark.pedantic(step, rounds=FEED_ROUNDS, iterations=FEED_ITERATIONS, warmup_rounds=0)
