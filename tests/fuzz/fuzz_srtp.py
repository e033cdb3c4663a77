"""SRTP/SRTCP (RFC 3711, 7714) transforms of ext/_srtp.pyx: Srtp.unprotect[_rtcp].

Input: byte 0 picks the profile (bits 0-1: AEAD_AES_128_GCM, AES_CM_SHA1_80,
AES_CM_SHA1_32, AEAD_AES_256_GCM) and the mode (bits 2-3); the rest is the packet.
Modes: 0 unprotect it as SRTP, 1 as SRTCP (what a peer sends, under fixed keys);
2/3 protect it as RTP/RTCP, then unprotect: the plaintext must come back, and a
second unprotect of the same bytes must be refused as a replay. Seeds: real
aiortc/Chromium packets, re-protected with the fixed keys below (modes 0/1) and
in plaintext (modes 2/3).

Bug: any exception but SrtpError, a round trip that changes the packet, an
accepted replay, or (under AddressSanitizer, make fuzz) any memory error.
"""

from __future__ import annotations

from typing import Any

from tests.fuzz.common import main

srtp: Any = None
PROFILES: list[int] = []


def load() -> None:
    global srtp
    from mediaserver import _srtp

    srtp = _srtp
    PROFILES[:] = [
        _srtp.PROFILE_AEAD_AES_128_GCM,
        _srtp.PROFILE_AES128_CM_SHA1_80,
        _srtp.PROFILE_AES128_CM_SHA1_32,
        _srtp.PROFILE_AEAD_AES_256_GCM,
    ]


def keys(profile: int) -> tuple[bytes, bytes]:
    """The fixed master key and salt of a profile (seeds are protected with them)."""
    key_len, salt_len = srtp.profile_key_salt_lengths(profile)
    return bytes(range(1, key_len + 1)), bytes(range(101, 101 + salt_len))


def test_one_input(data: bytes) -> None:
    if not data:
        return
    profile = PROFILES[data[0] & 3]
    mode = (data[0] >> 2) & 3
    packet = data[1:]
    rx = srtp.Srtp(profile, *keys(profile))
    if mode < 2:
        try:
            plain = rx.unprotect(packet) if mode == 0 else rx.unprotect_rtcp(packet)
        except srtp.SrtpError:
            return
        if len(plain) >= len(packet):
            raise AssertionError("unprotect did not remove the tag")
        return
    tx = srtp.Srtp(profile, *keys(profile))
    try:
        protected = tx.protect(packet) if mode == 2 else tx.protect_rtcp(packet)
    except srtp.SrtpError:
        return
    unprotect = rx.unprotect if mode == 2 else rx.unprotect_rtcp
    plain = unprotect(protected)
    if plain != packet:
        raise AssertionError(f"round trip changed the packet: {packet.hex()} -> {plain.hex()}")
    try:
        unprotect(protected)
    except srtp.SrtpError as exc:
        if exc.status != srtp.SRTP_ERR_REPLAY:
            raise AssertionError(f"replay refused with {exc.status}, not SRTP_ERR_REPLAY") from exc
    else:
        raise AssertionError("a replayed packet was accepted")


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver"])
