"""The C forwarding path, driven without sockets through Router.feed()."""

import os
import socket
import struct

import pytest
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver._router import SLOW_DTLS, SLOW_RTCP, SLOW_STUN, Router
from mediaserver._srtp import PROFILE_AEAD_AES_128_GCM, PROFILE_AES128_CM_SHA1_80, Srtp
from mediaserver.sfu.rtcp import build_pli
from tests.fuzz.fuzz_router import OutIndexes

PUB = ("10.0.0.1", 5000)
SUB = ("10.0.0.2", 6000)
OUT_SSRC = 0x0BADCAFE


def keys(tag: int, profile: int):
    key_len, salt_len = (16, 12) if profile == PROFILE_AEAD_AES_128_GCM else (16, 14)
    return bytes([tag]) * key_len, bytes([tag + 1]) * salt_len


class Wiring:
    """A router with a publisher and a subscriber; the test plays both peers."""

    def __init__(self, profile: int = PROFILE_AEAD_AES_128_GCM, cache_packets: int = 512):
        self.router = Router(-1, max_peers=8, max_streams=8, cache_packets=cache_packets)
        self.profile = profile
        self.pub = self.router.add_peer()
        self.sub = self.router.add_peer()
        self.router.bind_address(self.pub, *PUB)
        self.router.bind_address(self.sub, *SUB)
        # the publisher protects with key 1, we answer it with key 3; the subscriber gets key 5
        self.router.set_srtp(self.pub, profile, *keys(1, profile), *keys(3, profile))
        self.router.set_srtp(self.sub, profile, *keys(7, profile), *keys(5, profile))
        self.router.set_clock_rate(self.pub, 96, 90000)
        self.out = self.router.add_out_stream(self.sub, OUT_SSRC, 90000)
        self.router.add_route(self.pub, 96, self.out, 100)
        self.pub_srtp = Srtp(profile, *keys(1, profile))
        self.sub_srtp = Srtp(profile, *keys(5, profile))  # what the subscriber unprotects with

    def publish(self, seq: int, ts: int = 0, ssrc: int = 1234, payload: bytes = b"v" * 100,
                now: float = 0.0, src=PUB, pt: int = 96, srtp=None):
        packet = RtpPacket(payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=ssrc,
                           payload=payload)
        data = (srtp or self.pub_srtp).protect(bytes(packet.serialize()))
        return self.router.feed(data, src[0], src[1], now)

    def received(self, sent):
        return [RtpPacket.parse(self.sub_srtp.unprotect(data)) for data, _ in sent]


@pytest.mark.parametrize("profile", [PROFILE_AEAD_AES_128_GCM, PROFILE_AES128_CM_SHA1_80])
def test_forward_rewrites_and_reprotects(profile):
    w = Wiring(profile)
    sent, slow = w.publish(seq=1000, ts=90000, payload=b"frame")
    assert slow == []
    assert [addr for _, addr in sent] == [SUB]
    (packet,) = w.received(sent)
    assert packet.ssrc == OUT_SSRC
    assert packet.payload_type == 100
    assert packet.payload == b"frame"
    assert (packet.sequence_number, packet.timestamp) == (1000, 90000)
    counters = w.router.counters()
    assert counters["forwarded_packets"] == 1
    assert sum(counters["drops"].values()) == 0


def test_header_extension_is_stripped():
    w = Wiring()
    raw = bytearray(RtpPacket(payload_type=96, sequence_number=1, ssrc=9, payload=b"p").serialize())
    # insert a one-byte-header extension block (RFC 8285): id 3, 3 bytes, padded
    ext = struct.pack("!HH", 0xBEDE, 1) + bytes([0x32, 1, 2, 3])
    raw[0] |= 0x10
    raw = raw[:12] + ext + raw[12:]
    sent, _ = w.router.feed(w.pub_srtp.protect(bytes(raw)), *PUB, 0.0)
    plain = w.sub_srtp.unprotect(sent[0][0])
    assert plain[0] & 0x10 == 0  # X bit cleared
    assert len(plain) == 12 + 1
    assert RtpPacket.parse(plain).payload == b"p"


def test_new_source_continues_sequence_and_timestamp():
    w = Wiring()
    out = []
    for i in range(10):
        out += w.received(w.publish(seq=(65530 + i) & 0xFFFF, ts=1000 + 3000 * i, ssrc=1, now=i / 30)[0])
    # "Next": a different publisher stream (new SSRC, unrelated numbering) feeds the same subscriber
    second = Srtp(w.profile, *keys(1, w.profile))
    for i in range(10):
        out += w.received(
            w.publish(seq=7 + i, ts=5_000_000 + 3000 * i, ssrc=2, now=1.0 + i / 30, srtp=second)[0]
        )
    seqs = [p.sequence_number for p in out]
    assert seqs == [(65530 + i) & 0xFFFF for i in range(20)]
    stamps = [p.timestamp for p in out]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    # the gap at the switch follows the wall clock: 1.0 s - 9/30 s at 90 kHz
    assert stamps[10] - stamps[9] == pytest.approx(90000 * (1.0 - 9 / 30), abs=2)
    assert {p.ssrc for p in out} == {OUT_SSRC}


def test_nack_answered_from_cache_and_misses_mapped_to_publisher():
    w = Wiring(cache_packets=64)
    for seq in range(100, 110):
        if seq != 105:  # lost on the way in
            w.publish(seq=seq)
    missing = w.router.resend(w.out, [101, 103, 105], 0.0)
    assert missing == [105]
    assert w.router.counters()["retransmitted"] == 2
    # evicted from a 64-slot cache: no longer resendable (and older than the source? no: mapped)
    for seq in range(110, 300):
        w.publish(seq=seq)
    assert w.router.resend(w.out, [101], 0.0) == [101]


def test_fanout_to_two_subscribers():
    w = Wiring()
    sub2 = w.router.add_peer()
    w.router.bind_address(sub2, "10.0.0.3", 7000)
    w.router.set_srtp(sub2, w.profile, *keys(9, w.profile), *keys(11, w.profile))
    out2 = w.router.add_out_stream(sub2, 42, 90000)
    w.router.add_route(w.pub, 96, out2, 96)
    sent, _ = w.publish(seq=1)
    assert sorted(addr for _, addr in sent) == [SUB, ("10.0.0.3", 7000)]
    w.router.remove_route(w.pub, out2)
    sent, _ = w.publish(seq=2)
    assert [addr for _, addr in sent] == [SUB]


def test_rtcp_goes_to_python_decrypted():
    w = Wiring()
    pli = build_pli(1, 2)
    sent, slow = w.router.feed(w.pub_srtp.protect_rtcp(pli), *PUB, 0.0)
    assert sent == []
    assert slow == [(SLOW_RTCP, w.pub, PUB, pli)]


def test_demultiplex_by_first_byte():
    w = Wiring()
    stun = bytes([0x00, 0x01]) + b"\x00" * 18
    dtls = bytes([22, 0xFE, 0xFD]) + b"\x00" * 10
    assert w.router.feed(stun, "10.9.9.9", 1, 0.0) == ([], [(SLOW_STUN, -1, ("10.9.9.9", 1), stun)])
    assert w.router.feed(dtls, *PUB, 0.0) == ([], [(SLOW_DTLS, w.pub, PUB, dtls)])
    for first in (4, 19, 64, 127, 192, 255):
        assert w.router.feed(bytes([first]) + b"\x00" * 20, *PUB, 0.0) == ([], [])
    assert w.router.counters()["drops"]["unknown_first_byte"] == 6


def test_bad_packets_are_dropped_and_counted():
    w = Wiring()
    good = w.pub_srtp.protect(bytes(RtpPacket(payload_type=96, sequence_number=5, ssrc=1,
                                              payload=b"x" * 50).serialize()))
    forged = bytearray(good)
    forged[20] ^= 1
    cases = [
        (bytes(forged), PUB, "srtp_auth"),
        (good[:15], PUB, "srtp_other"),
        (good, ("10.0.0.99", 1), "unknown_address"),
        (b"\x80" + b"\x00" * 1600, PUB, "too_big"),
    ]
    for data, src, reason in cases:
        before = w.router.counters()["drops"][reason]
        assert w.router.feed(data, src[0], src[1], 0.0) == ([], [])
        assert w.router.counters()["drops"][reason] == before + 1, reason
    sent, _ = w.router.feed(good, *PUB, 0.0)
    assert len(sent) == 1
    # the same packet again is a replay
    assert w.router.feed(good, *PUB, 0.0) == ([], [])
    assert w.router.counters()["drops"]["srtp_replay"] == 1


def test_peer_without_keys_and_unrouted_payload_type():
    w = Wiring()
    fresh = w.router.add_peer()
    w.router.bind_address(fresh, "10.0.0.5", 1)
    assert w.router.feed(b"\x80\x60" + b"\x00" * 30, "10.0.0.5", 1, 0.0) == ([], [])
    assert w.router.counters()["drops"]["no_srtp"] == 1
    sent, _ = w.publish(seq=1, pt=111)
    assert sent == []
    assert w.router.counters()["drops"]["no_route"] == 1


def test_rebinding_an_address_moves_it():
    w = Wiring()
    w.router.bind_address(w.pub, "10.0.0.8", 8)
    assert w.publish(seq=1)[0] == []  # old address is unknown now
    assert len(w.publish(seq=2, src=("10.0.0.8", 8))[0]) == 1
    w.router.remove_peer(w.sub)
    assert w.publish(seq=3, src=("10.0.0.8", 8))[0] == []
    assert w.router.counters()["drops"]["no_route"] == 1


def test_routes_never_outlive_their_stream_or_their_publisher_across_slot_reuse():
    w = Wiring()
    # the subscriber goes (its out stream with it) while the publisher still routes to
    # it: a new subscriber taking the same stream slot gets nothing it did not ask for
    def subscriber() -> int:
        peer = w.router.add_peer()
        w.router.bind_address(peer, *SUB)
        w.router.set_srtp(peer, w.profile, *keys(7, w.profile), *keys(5, w.profile))
        return peer

    w.router.remove_peer(w.sub)
    sub2 = subscriber()
    out2 = w.router.add_out_stream(sub2, OUT_SSRC, 90000)
    assert out2 == w.out
    assert w.publish(seq=1)[0] == []
    w.router.add_route(w.pub, 96, out2, 100)
    assert len(w.publish(seq=2)[0]) == 1
    # the publisher goes: a new peer in its slot routes nothing until told to
    w.router.remove_peer(w.pub)
    pub2 = w.router.add_peer()
    assert pub2 == w.pub
    w.router.bind_address(pub2, *PUB)
    w.router.set_srtp(pub2, w.profile, *keys(1, w.profile), *keys(3, w.profile))
    assert w.publish(seq=3)[0] == []
    assert w.router.counters()["drops"]["no_route"] >= 1
    # disconnected first (as the SFU does), then removed: the stream goes cleanly
    w.router.add_route(pub2, 96, out2, 100)
    w.router.remove_route(pub2, out2)
    w.router.remove_peer(sub2)
    sub3 = subscriber()
    out3 = w.router.add_out_stream(sub3, OUT_SSRC + 1, 90000)
    assert w.publish(seq=4)[0] == []
    w.router.add_route(pub2, 96, out3, 100)
    assert len(w.publish(seq=5)[0]) == 1


def test_many_peers_address_table_survives_churn():
    r = Router(-1, max_peers=64, max_streams=8, cache_packets=64)
    for round_ in range(20):
        peers = [r.add_peer() for _ in range(64)]
        for i, p in enumerate(peers):
            r.bind_address(p, "10.1.%d.%d" % (round_, i), 1000 + i)
        for p in peers:
            r.remove_peer(p)
    assert r.add_peer() == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=1600), st.booleans())
def test_random_bytes_never_crash_or_forward(data, from_known):
    w = Wiring()
    src = PUB if from_known else ("10.7.7.7", 7)
    sent, slow = w.router.feed(data, src[0], src[1], 0.0)
    assert sent == []
    counters = w.router.counters()
    assert counters["rx_datagrams"] == 1
    assert sum(counters["drops"].values()) + counters["slow_datagrams"] == 1


def test_drain_over_a_real_loopback_socket():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    pub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pub.bind(("127.0.0.1", 0))
    sub.bind(("127.0.0.1", 0))
    sub.settimeout(2)
    try:
        r = Router(server.fileno(), max_peers=4, max_streams=4, cache_packets=64)
        p, s = r.add_peer(), r.add_peer()
        r.bind_address(p, *pub.getsockname())
        r.bind_address(s, *sub.getsockname())
        prof = PROFILE_AEAD_AES_128_GCM
        r.set_srtp(p, prof, *keys(1, prof), *keys(3, prof))
        r.set_srtp(s, prof, *keys(7, prof), *keys(5, prof))
        out = r.add_out_stream(s, 77, 90000)
        r.add_route(p, 96, out, 96)
        tx, rx = Srtp(prof, *keys(1, prof)), Srtp(prof, *keys(5, prof))
        seqs = []
        for round_ in range(3):
            # 70 datagrams: more than one recvmmsg batch, less than a default socket buffer
            for seq in range(70 * round_, 70 * round_ + 70):
                pkt = RtpPacket(payload_type=96, sequence_number=seq, ssrc=1, payload=os.urandom(900))
                pub.sendto(tx.protect(bytes(pkt.serialize())), server.getsockname())
            pub.sendto(b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"\x00" * 12, server.getsockname())
            assert r.drain(0.0) == 1
            ((kind, peer, addr, _),) = r.pop_slow()
            assert (kind, peer, addr) == (SLOW_STUN, p, pub.getsockname())
            seqs += [RtpPacket.parse(rx.unprotect(sub.recv(2048))).sequence_number for _ in range(70)]
        assert seqs == list(range(210))
        assert r.counters()["forwarded_packets"] == 210
        assert r.counters()["batches"] >= 6
    finally:
        for sock in (server, pub, sub):
            sock.close()


def test_tapped_payload_type_goes_to_python_and_injected_packets_continue_the_stream():
    from mediaserver._router import SLOW_MEDIA

    w = Wiring()
    sent, _ = w.publish(seq=500, ts=1000)
    (first,) = w.received(sent)
    w.router.set_tap(w.pub, 96, True)
    sent, slow = w.publish(seq=501, ts=4000, payload=b"raw")
    assert sent == []
    ((kind, peer, addr, data),) = slow
    assert (kind, peer, addr) == (SLOW_MEDIA, w.pub, PUB)
    assert RtpPacket.parse(data).payload == b"raw"  # decrypted, untouched
    # the effects path sends its own (re-encoded) stream in its place
    made = RtpPacket(payload_type=96, sequence_number=9, timestamp=77, ssrc=0xE0, payload=b"fx")
    protected = w.router.inject(w.pub, bytes(made.serialize()), w.out, 100, 0.05)
    (packet,) = [RtpPacket.parse(w.sub_srtp.unprotect(protected))]
    assert (packet.ssrc, packet.payload_type, packet.payload) == (OUT_SSRC, 100, b"fx")
    assert packet.sequence_number == first.sequence_number + 1  # one continuous stream
    assert packet.timestamp > first.timestamp
    # effect off: plain forwarding resumes, still continuous
    w.router.set_tap(w.pub, 96, False)
    (back,) = w.received(w.publish(seq=502, ts=7000, now=0.1)[0])
    assert back.sequence_number == packet.sequence_number + 1
    with pytest.raises(ValueError):
        w.router.inject(w.pub, b"\x00" * 5, w.out, 100, 0.0)


# ---- one SRTP index, one packet (issue 20: GCM nonce reuse on the way out) ----------


def padding_only(seq: int, ssrc: int = 1234) -> bytes:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=0, ssrc=ssrc, payload=b"")
    packet.padding_size = 20
    return bytes(packet.serialize())


def test_late_packet_after_a_padding_only_packet_gets_a_fresh_index():
    # the review's case: publisher seq 10, a padding-only 13, then a late 11 went
    # out as seq 10 again, XOR-equal ciphertexts under one nonce
    w = Wiring()
    seen = OutIndexes()
    for data, _ in w.publish(seq=10, payload=b"ten" * 30)[0]:
        seen.add(data)
    assert w.router.feed(w.pub_srtp.protect(padding_only(13)), *PUB, 0.0)[0] == []
    sent, _ = w.publish(seq=11, payload=b"eleven" * 15)
    (late,) = w.received(sent)
    seen.add(sent[0][0])
    assert late.payload == b"eleven" * 15
    for seq in (12, 14):
        for data, _ in w.publish(seq=seq)[0]:
            seen.add(data)
    assert len(seen.sent) == 4


def test_late_packet_before_a_skipped_padding_packet_is_dropped_not_sent_again():
    # padding that is next in line is skipped (no gap), so a packet older than it
    # would land on a number already sent: dropped and counted, never protected
    w = Wiring()
    seen = OutIndexes()
    for seq in (8, 10):
        for data, _ in w.publish(seq=seq, payload=bytes([seq]) * 50)[0]:
            seen.add(data)
    w.router.feed(w.pub_srtp.protect(padding_only(11)), *PUB, 0.0)
    assert w.publish(seq=9, payload=b"late" * 20)[0] == []
    drops = w.router.counters()["drops"]
    assert (drops["out_seq_used"], drops["padding_only"], drops["protect_index_used"]) == (1, 1, 0)
    for data, _ in w.publish(seq=12)[0]:
        assert seen.add(data) == 11  # the padding packet left no gap
    # the first packet at that number stays in the cache for NACKs
    assert w.router.resend(w.out, [8], 0.0) == []
    assert w.router.counters()["retransmitted"] == 1


def test_reordering_after_a_source_switch_never_reuses_an_index():
    w = Wiring()
    seen = OutIndexes()
    second = Srtp(w.profile, *keys(1, w.profile))
    for seq in range(100, 105):
        for data, _ in w.publish(seq=seq, ssrc=1, payload=b"a%d" % seq)[0]:
            seen.add(data)
    # "Next": the new source's numbering continues ours; its packet 7 arrives
    # before its 5 and 6, which would map onto the first source's last numbers
    for seq in (7, 5, 6, 8):
        for data, _ in w.publish(seq=seq, ssrc=2, srtp=second, payload=b"b%d" % seq)[0]:
            seen.add(data)
    # a late packet of the first source is a switch back: fresh numbers again
    for data, _ in w.publish(seq=105, ssrc=1, payload=b"a105")[0]:
        seen.add(data)
    assert [p.payload for p in map(RtpPacket.parse, map(w.sub_srtp.unprotect, seen.sent.values()))] == [
        b"a100", b"a101", b"a102", b"a103", b"a104", b"b7", b"b8", b"a105"
    ]
    assert w.router.counters()["drops"]["out_seq_used"] == 2


def test_injected_packets_interleaved_with_forwarded_ones_never_reuse_an_index():
    # an effect toggled on and off (Router.inject from the effects path), its
    # packets late or reordered around the publisher's
    w = Wiring()
    seen = OutIndexes()

    def inject(seq: int, payload: bytes) -> None:
        made = RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000, ssrc=0xE0,
                         payload=payload)
        protected = w.router.inject(w.pub, bytes(made.serialize()), w.out, 100, 0.0)
        if protected is not None:
            seen.add(protected)

    for seq in (500, 501):
        for data, _ in w.publish(seq=seq, payload=b"p%d" % seq)[0]:
            seen.add(data)
    w.router.set_tap(w.pub, 96, True)
    inject(10, b"fx10")
    inject(9, b"fx9")  # reordered: would land on the publisher's 501
    inject(11, b"fx11")
    w.router.set_tap(w.pub, 96, False)
    for data, _ in w.publish(seq=503, payload=b"p503")[0]:
        seen.add(data)
    inject(12, b"fx12")  # the encoder's last frame, after the effect went off
    inject(11, b"fx11 again")  # the same number twice from Python
    for data, _ in w.publish(seq=502, payload=b"p502")[0]:  # a late one of the publisher
        seen.add(data)
    for data, _ in w.publish(seq=504, payload=b"p504")[0]:
        seen.add(data)
    payloads = [RtpPacket.parse(w.sub_srtp.unprotect(d)).payload for d in seen.sent.values()]
    assert b"fx10" in payloads and b"fx12" in payloads and b"p504" in payloads
    assert b"fx9" not in payloads and b"fx11 again" not in payloads
    assert w.router.counters()["drops"]["protect_index_used"] == 0


ARRIVAL = st.tuples(
    st.sampled_from(["pub1", "pub2", "padding", "inject"]),
    st.integers(0, 40),  # offset from the source's base: reordering, late, repeated
)


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(ARRIVAL, min_size=1, max_size=80),
    base=st.sampled_from([0, 65500]),
    profile=st.sampled_from([PROFILE_AEAD_AES_128_GCM, PROFILE_AES128_CM_SHA1_80]),
)
def test_no_two_packets_for_a_subscriber_stream_share_an_index(arrivals, base, profile):
    w = Wiring(profile, cache_packets=64)
    seen = OutIndexes()
    # one publisher, two of its SSRCs (a switch each time they alternate), padding
    # on the first, and an effect's stream injected from Python
    ssrcs = {"pub1": 1, "pub2": 2, "padding": 1}
    protected: dict[tuple[int, int, bool], bytes] = {}
    for i, (kind, offset) in enumerate(arrivals):
        seq = (base + offset) & 0xFFFF
        payload = b"%d:%s:%d" % (i, kind.encode(), offset)
        now = i * 0.01
        if kind == "inject":
            made = RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000,
                             ssrc=0xE0, payload=payload)
            out = w.router.inject(w.pub, bytes(made.serialize()), w.out, 100, now)
            sent = [] if out is None else [(out, SUB)]
        else:
            key = (ssrcs[kind], seq, kind == "padding")
            if key not in protected:  # the same (SSRC, seq) again is a replay on the way in
                plain = (padding_only(seq, ssrcs[kind]) if kind == "padding" else bytes(
                    RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000,
                              ssrc=ssrcs[kind], payload=payload).serialize()))
                try:
                    protected[key] = w.pub_srtp.protect(plain)
                except ValueError:
                    continue  # our own sender refuses its used indexes too
            sent, _ = w.router.feed(protected[key], *PUB, now)
        for data, _ in sent:
            seen.add(data)
            w.sub_srtp.unprotect(data)  # and the subscriber can read every one
    assert w.router.counters()["drops"]["protect_index_used"] == 0
