"""Compound RTCP (RFC 3550, 4585, 5104, REMB): mediaserver.sfu.rtcp.parse_feedback.

Input: one decrypted RTCP datagram (seeds: real compound RTCP of aiortc and
Chromium, SRTCP-unprotected with the captured keys).

Bug: any exception but RtcpError (the server catches only that), or feedback
values out of their wire ranges.
"""

from __future__ import annotations

from typing import Any

from tests.fuzz.common import main

rtcp: Any = None
U32 = 0xFFFFFFFF


def load() -> None:
    global rtcp
    from mediaserver.sfu import rtcp as rtcp_module

    rtcp = rtcp_module


def test_one_input(data: bytes) -> None:
    try:
        feedback = rtcp.parse_feedback(data)
    except rtcp.RtcpError:
        return
    for item in feedback:
        if isinstance(item, rtcp.Nack) and not all(0 <= seq <= 0xFFFF for seq in item.lost):
            raise AssertionError(f"NACK sequence number out of range: {item}")
        if isinstance(item, rtcp.Remb) and item.bitrate < 0:
            raise AssertionError(f"negative REMB bitrate: {item}")
        for name in ("ssrc", "media_ssrc", "sender_ssrc"):
            value = getattr(item, name, None)
            if isinstance(value, int) and not 0 <= value <= U32:
                raise AssertionError(f"{name} out of range: {item}")


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver", "aiortc"])
