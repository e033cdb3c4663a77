"""ext/_rtp: header parse and rewrite checked against aiortc's RtpPacket."""

import pytest
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver import _rtp

def _packet(padding_size: int, **fields) -> RtpPacket:
    packet = RtpPacket(**fields)
    packet.padding_size = padding_size
    return packet


packets = st.builds(
    _packet,
    payload_type=st.integers(0, 127),
    marker=st.integers(0, 1),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    padding_size=st.integers(0, 16),
)


@settings(max_examples=300)
@given(packets, st.lists(st.integers(0, 0xFFFFFFFF), max_size=15))
def test_parse_matches_aiortc(packet, csrc):
    packet.csrc = csrc
    data = packet.serialize()
    h = _rtp.parse_header(data)
    ref = RtpPacket.parse(data)
    assert (h["payload_type"], h["marker"], h["sequence_number"], h["timestamp"], h["ssrc"]) == (
        ref.payload_type, ref.marker, ref.sequence_number, ref.timestamp, ref.ssrc)
    assert h["csrc_count"] == len(ref.csrc)
    assert h["padding_length"] == ref.padding_size
    assert data[h["header_length"]: len(data) - h["padding_length"]] == ref.payload


@settings(max_examples=200)
@given(packets, st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
       st.integers(0, 127))
def test_rewrite_matches_aiortc(packet, ssrc, seq, ts, pt):
    out = RtpPacket.parse(_rtp.rewrite(packet.serialize(), ssrc, seq, ts, pt))
    assert (out.ssrc, out.sequence_number, out.timestamp, out.payload_type) == (ssrc, seq, ts, pt)
    assert (out.marker, out.payload, out.padding_size) == (packet.marker, packet.payload,
                                                           packet.padding_size)


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_random_bytes_parse_or_value_error(data):
    try:
        h = _rtp.parse_header(data)
    except ValueError:
        return
    assert 12 <= h["header_length"] <= len(data)


@pytest.mark.parametrize("data, why", [
    (b"\x80\x60" + b"\x00" * 9, "shorter than 12 bytes"),
    (b"\x40\x60" + b"\x00" * 10, "version 1"),
    (b"\x81\x60" + b"\x00" * 10, "CSRC past the end"),
    (b"\x90\x60" + b"\x00" * 10 + b"\xbe\xde\x00\x05", "extension longer than the packet"),
    (b"\xa0\x60" + b"\x00" * 10 + b"\x00", "padding length 0"),
    (b"\xa0\x60" + b"\x00" * 10 + b"\x09", "padding longer than the payload"),
])
def test_malformed_headers(data, why):
    with pytest.raises(ValueError, match="malformed RTP packet"):
        _rtp.parse_header(data)


def test_rtcp_detection_rfc5761():
    assert _rtp.is_rtcp_packet(bytes([0x80, 200]))  # SR
    assert _rtp.is_rtcp_packet(bytes([0x81, 206]))  # PSFB
    assert not _rtp.is_rtcp_packet(bytes([0x80, 96]))
    assert not _rtp.is_rtcp_packet(bytes([0x80, 96 | 0x80]))  # marker + PT 96 = 224
    assert not _rtp.is_rtcp_packet(b"\x80")


def test_packet_cache_slots_by_sequence_number():
    cache = _rtp.RtpPacketCache(64)
    cache.put(10, b"ten")
    cache.put(65535, b"last")
    assert cache.get(10) == b"ten" and cache.get(65535) == b"last"
    cache.put(74, b"evicts ten")  # same slot: 74 % 64 == 10
    assert cache.get(10) is None and cache.get(74) == b"evicts ten"
    assert cache.get(11) is None
    with pytest.raises(ValueError):
        _rtp.RtpPacketCache(100)
    with pytest.raises(ValueError):
        cache.put(1, b"x" * 2000)
