"""RTP headers (RFC 3550 5.1, 5.3.1) in ext/_rtp.pyx: parse_header, rewrite, the cache.

Input: one plaintext RTP packet (seeds: real aiortc/Chromium RTP, decrypted).
parse_header and rewrite run the same inline C (rtp_parse, rtp_rewrite_into) as the
router's per-packet path; the packet cache is the one NACKs are answered from.

Bug: any exception but ValueError; a parse whose lengths do not fit the packet; a
rewrite that is not "same packet, new SSRC/seq/timestamp/PT, no extension"; the
cache returning other bytes than were put; and (make fuzz) any ASan report.
"""

from __future__ import annotations

from typing import Any

from tests.fuzz.common import main

rtp: Any = None
cache: Any = None


def load() -> None:
    global rtp, cache
    from mediaserver import _rtp

    rtp = _rtp
    cache = _rtp.RtpPacketCache(64)


def test_one_input(data: bytes) -> None:
    rtp.is_rtcp_packet(data)
    try:
        h = rtp.parse_header(data)
    except ValueError:
        try:
            rtp.rewrite(data, 1, 2, 3, 96)
        except ValueError:
            return
        raise AssertionError("rewrite accepted a packet parse_header refused")
    header_length = h["header_length"]
    padding = h["padding_length"]
    if not 12 <= header_length <= len(data) or header_length + padding > len(data):
        raise AssertionError(f"header {header_length} + padding {padding} > {len(data)}")
    if h["extension_offset"] and h["extension_offset"] + h["extension_length"] != header_length:
        raise AssertionError(f"extension does not end the header: {h}")
    out = rtp.rewrite(data, 0xCAFEBABE, 0xBEEF, 0x12345678, 100)
    expected_len = len(data) - h["extension_length"]
    if len(out) != expected_len:
        raise AssertionError(f"rewrite made {len(out)} bytes, expected {expected_len}")
    r = rtp.parse_header(out)
    want = (0xCAFEBABE, 0xBEEF, 0x12345678, 100, h["marker"], h["csrc_count"], 0)
    got = (
        r["ssrc"],
        r["sequence_number"],
        r["timestamp"],
        r["payload_type"],
        r["marker"],
        r["csrc_count"],
        r["extension_length"],
    )
    if got != want:
        raise AssertionError(f"rewritten header {got}, expected {want}")
    if out[r["header_length"] :] != data[header_length:]:
        raise AssertionError("rewrite changed the payload")
    if 0 < len(data) <= 1536:
        cache.put(h["sequence_number"], data)
        if cache.get(h["sequence_number"]) != data:
            raise AssertionError("the cache returned other bytes")


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver"])
