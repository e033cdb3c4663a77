import struct

import pytest
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.sfu.rtcp import (
    Bye,
    Fir,
    KeyframeRequestLimiter,
    Nack,
    Pli,
    ReceiverReport,
    ReceptionStats,
    Remb,
    RtcpError,
    SenderClock,
    SenderReport,
    build_fir,
    build_nack,
    build_pli,
    build_receiver_report,
    build_sender_report,
    ntp_from_unix,
    ntp_middle,
    parse_feedback,
    round_trip_time,
    rtp_timestamp_at,
)


def block(ssrc: int = 0x11223344, **kw: int) -> RtcpReceiverInfo:
    values = {
        "fraction_lost": 25,
        "packets_lost": -3,
        "highest_sequence": 0x1000A,
        "jitter": 123,
        "lsr": 0xAABBCCDD,
        "dlsr": 98304,
    }
    values.update(kw)
    return RtcpReceiverInfo(ssrc=ssrc, **values)


# ---------------------------------------------------------------- builders -> aiortc


def test_build_pli_parsed_by_aiortc() -> None:
    data = build_pli(0x01020304, 0x0A0B0C0D)
    assert data == bytes.fromhex("81ce0002 01020304 0a0b0c0d".replace(" ", ""))
    [packet] = RtcpPacket.parse(data)
    assert packet == RtcpPsfbPacket(fmt=1, ssrc=0x01020304, media_ssrc=0x0A0B0C0D)
    assert parse_feedback(data) == [Pli(0x01020304, 0x0A0B0C0D)]


def test_build_fir_parsed_by_aiortc() -> None:
    data = build_fir(1, 0xCAFEBABE, 300)
    [packet] = RtcpPacket.parse(data)
    assert isinstance(packet, RtcpPsfbPacket)
    # RFC 5104 4.3.1.2: media source 0, target and seq nr in the FCI.
    assert (packet.fmt, packet.ssrc, packet.media_ssrc) == (4, 1, 0)
    assert packet.fci == bytes.fromhex("cafebabe2c000000")
    assert parse_feedback(data) == [Fir(1, 0xCAFEBABE, 300 & 0xFF)]


def test_fir_with_several_entries() -> None:
    fci = struct.pack("!LB3xLB3x", 5, 1, 6, 2)
    data = bytes(RtcpPsfbPacket(fmt=4, ssrc=9, media_ssrc=0, fci=fci))
    assert parse_feedback(data) == [Fir(9, 5, 1), Fir(9, 6, 2)]


def test_build_receiver_report_parsed_by_aiortc() -> None:
    blocks = [block(1), block(2, packets_lost=(1 << 23) - 1)]
    data = build_receiver_report(0x55, blocks, remb=(1_000_000, [1, 2]), cname="sfu")
    rr, sdes, remb = RtcpPacket.parse(data)
    assert rr == RtcpRrPacket(ssrc=0x55, reports=blocks)
    assert isinstance(sdes, RtcpSdesPacket)
    assert sdes.chunks[0].ssrc == 0x55 and sdes.chunks[0].items == [(1, b"sfu")]
    assert isinstance(remb, RtcpPsfbPacket)
    assert (remb.fmt, remb.ssrc, remb.media_ssrc) == (15, 0x55, 0)
    assert unpack_remb_fci(remb.fci) == (1_000_000, [1, 2])
    assert parse_feedback(data) == [
        ReceiverReport(0x55, blocks),
        Remb(0x55, 1_000_000, [1, 2]),
    ]


def test_build_receiver_report_without_blocks_or_remb() -> None:
    data = build_receiver_report(7, [])
    assert data == bytes.fromhex("80c90001 00000007".replace(" ", ""))
    assert RtcpPacket.parse(data) == [RtcpRrPacket(ssrc=7, reports=[])]


def test_build_receiver_report_splits_past_31_blocks() -> None:
    blocks = [block(i) for i in range(40)]
    data = build_receiver_report(7, blocks)
    first, second = RtcpPacket.parse(data)
    assert isinstance(first, RtcpRrPacket) and isinstance(second, RtcpRrPacket)
    assert first.reports == blocks[:31] and second.reports == blocks[31:]
    parsed = parse_feedback(data)
    assert [b for r in parsed if isinstance(r, ReceiverReport) for b in r.reports] == blocks


def test_build_sender_report_parsed_by_aiortc() -> None:
    ntp = ntp_from_unix(1_700_000_000.25)
    data = build_sender_report(0x1234, ntp, 0x1_0000_0005, 10, 2000, [block(9)], cname="x")
    sr, sdes = RtcpPacket.parse(data)
    assert sr == RtcpSrPacket(
        ssrc=0x1234,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=5, packet_count=10, octet_count=2000
        ),
        reports=[block(9)],
    )
    assert isinstance(sdes, RtcpSdesPacket)
    assert parse_feedback(data) == [SenderReport(0x1234, ntp, 5, 10, 2000, [block(9)])]


# ---------------------------------------------------------------- aiortc -> parse_feedback


def test_aiortc_compound_parsed() -> None:
    sr = RtcpSrPacket(
        ssrc=1,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=0x0123456789ABCDEF, rtp_timestamp=2, packet_count=3, octet_count=4
        ),
    )
    rr = RtcpRrPacket(ssrc=2, reports=[block(3)])
    sdes = RtcpSdesPacket()
    nack = RtcpRtpfbPacket(fmt=1, ssrc=4, media_ssrc=5, lost=[100, 101, 117, 200])
    pli = RtcpPsfbPacket(fmt=1, ssrc=6, media_ssrc=7)
    remb = RtcpPsfbPacket(fmt=15, ssrc=8, media_ssrc=0, fci=pack_remb_fci(250_000, [9]))
    bye = RtcpByePacket(sources=[10, 11])
    data = b"".join(bytes(p) for p in (sr, rr, sdes, nack, pli, remb, bye))
    assert parse_feedback(data) == [
        SenderReport(1, 0x0123456789ABCDEF, 2, 3, 4, []),
        ReceiverReport(2, [block(3)]),
        Nack(4, 5, [100, 101, 117, 200]),
        Pli(6, 7),
        Remb(8, 250_000, [9]),
        Bye([10, 11]),
    ]


def test_bye_with_reason_and_padding() -> None:
    # RFC 3550 6.6: SSRC, then length-prefixed reason; P bit with 4 padding octets.
    payload = struct.pack("!L", 42) + b"\x03bye" + b"\x00\x00\x00\x04"
    data = struct.pack("!BBH", 0x80 | 0x20 | 1, 203, len(payload) // 4) + payload
    assert parse_feedback(data) == [Bye([42])]


def test_skips_what_it_does_not_act_on() -> None:
    # transport-cc (RTPFB FMT 15) padded to a word with the P bit: aiortc's own
    # RtcpPacket.parse rejects it, and it must not sink the rest of the compound.
    twcc_payload = struct.pack("!LL", 1, 2) + bytes.fromhex("0001000500") + b"\x00\x00\x03"
    twcc = struct.pack("!BBH", 0x80 | 0x20 | 15, 205, len(twcc_payload) // 4) + twcc_payload
    app = struct.pack("!BBHL4s", 0x80, 204, 2, 1, b"name")
    xr = struct.pack("!BBHL", 0x80, 207, 1, 1)
    sli = bytes(RtcpPsfbPacket(fmt=2, ssrc=1, media_ssrc=2, fci=b"\x00\x00\x00\x01"))
    afb = bytes(RtcpPsfbPacket(fmt=15, ssrc=1, media_ssrc=0, fci=b"GOOG\x00\x00\x00\x00"))
    data = twcc + app + xr + sli + afb + build_pli(3, 4)
    with pytest.raises(ValueError):
        RtcpPacket.parse(twcc)
    assert parse_feedback(data) == [Pli(3, 4)]


def test_sr_rr_profile_extensions_ignored() -> None:
    rr = bytes(RtcpRrPacket(ssrc=2, reports=[block(3)]))
    extended = struct.pack("!BBH", rr[0], rr[1], (len(rr) + 4) // 4 - 1) + rr[4:] + b"ext!"
    assert parse_feedback(extended) == [ReceiverReport(2, [block(3)])]


# ---------------------------------------------------------------- NACK


def test_nack_bitmask_form() -> None:
    # PID 1000, BLP 0b1000_0000_0000_0101: 1001, 1003 and 1016 lost too.
    data = struct.pack("!BBHLLHH", 0x81, 205, 3, 1, 2, 1000, 0x8005)
    assert parse_feedback(data) == [Nack(1, 2, [1000, 1001, 1003, 1016])]


def test_nack_several_fci_entries() -> None:
    data = struct.pack("!BBHLLHHHH", 0x81, 205, 4, 1, 2, 10, 0, 500, 0x0001)
    assert parse_feedback(data) == [Nack(1, 2, [10, 500, 501])]


def test_nack_wraps_sequence_numbers() -> None:
    data = struct.pack("!BBHLLHH", 0x81, 205, 3, 1, 2, 65534, 0b111)
    assert parse_feedback(data) == [Nack(1, 2, [65534, 65535, 0, 1])]


@pytest.mark.parametrize(
    "lost",
    [
        [5],
        [100, 101, 116],
        [100, 117],
        [1, 3, 5, 7, 9, 11, 13, 15, 17, 40, 41],
        list(range(300, 340)),
    ],
)
def test_build_nack_matches_aiortc(lost: list[int]) -> None:
    ours = build_nack(7, 8, lost)
    assert ours == bytes(RtcpRtpfbPacket(fmt=1, ssrc=7, media_ssrc=8, lost=lost))
    [packet] = RtcpPacket.parse(ours)
    assert isinstance(packet, RtcpRtpfbPacket) and packet.lost == lost
    assert parse_feedback(ours) == [Nack(7, 8, lost)]


def test_build_nack_across_the_wrap() -> None:
    lost = [65533, 65535, 0, 4, 20]
    data = build_nack(7, 8, lost)
    # PID 65533 with bits 1, 2, 6 (65535, 0, 4) across the wrap; 20 needs a new PID.
    assert data[12:] == struct.pack("!HHHH", 65533, 0b0100_0110, 20, 0)
    assert parse_feedback(data) == [Nack(7, 8, lost)]


def test_build_nack_empty() -> None:
    with pytest.raises(RtcpError, match="at least one"):
        build_nack(1, 2, [])


# ---------------------------------------------------------------- REMB


@pytest.mark.parametrize(
    ("bitrate", "exponent", "mantissa"),
    [
        (0, 0, 0),
        (1, 0, 1),
        (0x3FFFF, 0, 0x3FFFF),
        (0x40000, 1, 0x20000),
        (300_000, 1, 150_000),
        (1_000_000, 2, 250_000),
        (2_500_000, 4, 156_250),
        (1_000_000_000, 12, 244_140),
    ],
)
def test_remb_mantissa_exponent(bitrate: int, exponent: int, mantissa: int) -> None:
    data = build_receiver_report(1, [], remb=(bitrate, [0xABCD]))
    fci = data[8 + 12 :]
    # draft-alvestrand-rmcat-remb-03 2.2: Num SSRC (8), BR Exp (6), BR Mantissa (18).
    assert fci[:4] == b"REMB"
    assert fci[4] == 1
    assert fci[5] >> 2 == exponent
    assert ((fci[5] & 3) << 16) | (fci[6] << 8) | fci[7] == mantissa
    [remb] = [f for f in parse_feedback(data) if isinstance(f, Remb)]
    assert remb.bitrate == mantissa << exponent
    assert bitrate - remb.bitrate < 1 << exponent


def test_remb_hand_encoded() -> None:
    # 1 Mbit/s: exponent 2, mantissa 250000 = 0x3D090 -> 0x0B 0xD0 0x90.
    fci = bytes.fromhex("52454d42 01 0b d090 00000005".replace(" ", ""))
    data = bytes(RtcpPsfbPacket(fmt=15, ssrc=3, media_ssrc=0, fci=fci))
    assert parse_feedback(data) == [Remb(3, 1_000_000, [5])]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x80\xc9\x00", "header at offset 0 is truncated"),
        (b"\x40\xc9\x00\x00", "version 1"),
        (b"\x80\x60\x00\x00", "type 96"),
        (b"\x80\xc9\x00\x02\x00\x00\x00\x00", "truncated: length says 8 bytes, 4 left"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "invalid padding"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x05", "invalid padding"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x01", "type 201 at offset 0 is malformed"),
        (b"\x81\xce\x00\x01\x00\x00\x00\x01", "type 206 at offset 0 is malformed"),
        (b"\x84\xce\x00\x03" + bytes(8) + b"\x00\x00\x00\x01", "FIR FCI is 4 bytes"),
        (b"\x8f\xce\x00\x04" + bytes(8) + b"REMB\x02\x00\x00\x00", "malformed"),
        (b"\x81\xcb\x00\x00", "type 203 at offset 0 is malformed"),
        (build_pli(1, 2) + b"\x80", "header at offset 12 is truncated"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=message):
        parse_feedback(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_rtcp_error(data: bytes) -> None:
    try:
        parse_feedback(data)
    except RtcpError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 0x3F),
    st.sampled_from([200, 201, 202, 203, 204, 205, 206, 207]),
    st.binary(max_size=120),
)
def test_random_bodies_raise_only_rtcp_error(low_bits: int, packet_type: int, body: bytes) -> None:
    # A valid header in front of random bytes reaches every per-type parser.
    body += bytes(-len(body) % 4)
    data = struct.pack("!BBH", 0x80 | low_bits, packet_type, len(body) // 4) + body
    try:
        feedback = parse_feedback(data)
    except RtcpError:
        return
    assert isinstance(feedback, list)


# ---------------------------------------------------------------- NTP and clocks


def test_ntp_from_unix() -> None:
    assert ntp_from_unix(0) == 2_208_988_800 << 32
    assert ntp_from_unix(1.5) == ((2_208_988_800 + 1) << 32) | 0x80000000
    # 2036-02-07 06:28:16 UTC: NTP era 0 ends, the 64-bit value wraps.
    assert ntp_from_unix(2_085_978_496) == 0
    ntp = ntp_from_unix(1_700_000_000.25)
    assert ntp_middle(ntp) == (((1_700_000_000 + 2_208_988_800) & 0xFFFF) << 16) | 0x4000


def test_round_trip_time() -> None:
    # We sent an SR at t=100; the peer held it 0.25 s; its RR arrives at t=100.75.
    lsr = ntp_middle(ntp_from_unix(100.0))
    report = block(dlsr=int(0.25 * 65536), lsr=lsr)
    assert round_trip_time(report, ntp_from_unix(100.75)) == pytest.approx(0.5, abs=1e-4)
    assert round_trip_time(block(lsr=0), ntp_from_unix(100.75)) is None
    assert round_trip_time(report, ntp_from_unix(99.0)) is None


def test_sender_clock() -> None:
    clock = SenderClock(90_000)
    assert clock.rtp_timestamp(10.0) is None
    clock.update(1000, 10.0)
    assert clock.rtp_timestamp(10.5) == 1000 + 45_000
    assert clock.rtp_timestamp(10.0) == 1000
    clock.update(0xFFFF_FF00, 20.0)
    assert clock.rtp_timestamp(20.01) == (0xFFFF_FF00 + 900) & 0xFFFF_FFFF
    assert rtp_timestamp_at(0, 0.0, 48_000, 1.0) == 48_000
    with pytest.raises(ValueError, match="clock rate"):
        SenderClock(0)


# ---------------------------------------------------------------- ReceptionStats


def test_reception_stats_rfc3550_example() -> None:
    # First packet seq 65530; the stream wraps. RFC 3550 A.3 by hand:
    stats = ReceptionStats(ssrc=0xBEEF, base_seq=65530)

    # Highest seq 10 after one wrap: extended 65546; expected 65546-65530+1 = 17,
    # 15 received: lost 2, fraction (2 << 8) // 17 = 30.
    first = stats.report(ext_highest_seq=65546, received=15, jitter=40, now=1.0)
    assert first == RtcpReceiverInfo(
        ssrc=0xBEEF,
        fraction_lost=30,
        packets_lost=2,
        highest_sequence=65546,
        jitter=40,
        lsr=0,
        dlsr=0,
    )

    # 20 more expected (to 65566), 15 more received: interval loss 5/20 -> 64;
    # cumulative 37 - 30 = 7. The last SR arrived 1.5 s before: DLSR 98304.
    second = stats.report(
        ext_highest_seq=65566,
        received=30,
        jitter=41,
        now=11.5,
        last_sr=0x12345678,
        last_sr_at=10.0,
    )
    assert (second.fraction_lost, second.packets_lost) == (64, 7)
    assert (second.lsr, second.dlsr) == (0x12345678, 98304)

    # Three duplicates, nothing new: interval expected 0 -> fraction 0;
    # cumulative 37 - 33 = 4 (duplicates make it go down, A.3 says so).
    third = stats.report(ext_highest_seq=65566, received=33, jitter=41, now=12.0)
    assert (third.fraction_lost, third.packets_lost) == (0, 4)

    # More received than expected over the stream: a negative cumulative loss.
    fourth = stats.report(ext_highest_seq=65568, received=40, jitter=41, now=13.0)
    assert (fourth.fraction_lost, fourth.packets_lost) == (0, -1)


def test_reception_stats_wrap_of_32_bit_field_and_clamps() -> None:
    stats = ReceptionStats(ssrc=1, base_seq=0)
    report = stats.report(ext_highest_seq=(1 << 32) + 5, received=5, jitter=1 << 40, now=0.0)
    # The field is the low 32 bits; the count lost clamps to 24-bit signed.
    assert report.highest_sequence == 5
    assert report.packets_lost == (1 << 23) - 1
    assert report.jitter == 0xFFFFFFFF
    RtcpRrPacket.parse(bytes(RtcpRrPacket(ssrc=2, reports=[report]))[4:], 1)


def test_reception_stats_all_lost_in_interval_stays_8_bit() -> None:
    stats = ReceptionStats(ssrc=1, base_seq=0)
    stats.report(ext_highest_seq=9, received=10, jitter=0, now=0.0)
    report = stats.report(ext_highest_seq=19, received=10, jitter=0, now=1.0)
    assert report.fraction_lost == 255


# ---------------------------------------------------------------- KeyframeRequestLimiter


def test_keyframe_request_limiter() -> None:
    limiter = KeyframeRequestLimiter(min_interval=0.5)
    now = 100.0
    assert limiter.allow(1, now)
    # A burst of PLIs from one or many subscribers: only the first goes out.
    assert not limiter.allow(1, now)
    assert not limiter.allow(1, now + 0.1)
    assert not limiter.allow(1, now + 0.49)
    # Another publisher stream has its own budget.
    assert limiter.allow(2, now + 0.1)
    assert limiter.allow(1, now + 0.5)
    assert not limiter.allow(1, now + 0.9)
    assert limiter.allow(1, now + 1.0)
    limiter.forget(1)
    assert limiter.allow(1, now + 1.1)
    with pytest.raises(ValueError, match="negative"):
        KeyframeRequestLimiter(-1)
