"""The RTCP reports the Sfu sends each connected peer every REPORT_INTERVAL (sans-I/O).

A receiver report (with REMB) on what the peer sends us, and a sender report per
stream we send it. Built from the router's counters; the Sfu protects and sends.
"""

from __future__ import annotations

from collections.abc import Iterable

from mediaserver._router import Router
from mediaserver.sfu import rtcp
from mediaserver.sfu.session import Session

REPORT_INTERVAL = 1.0  # RR/SR/REMB per session (RFC 3550 allows more for 2-party)


def remb_bitrate(subscribers: Iterable[Session], ceiling: int) -> int:
    """What a publisher may send, bits/s: the least any of its subscribers can
    take (their latest REMB), within our ceiling."""
    bitrate = ceiling
    for sub in subscribers:
        if sub.remb_bitrate:
            bitrate = min(bitrate, sub.remb_bitrate)
    return bitrate


def receiver_report(session: Session, router: Router, bitrate: int, now: float) -> bytes | None:
    """RR + REMB (`bitrate`) for the streams the peer sends us; None before any arrived."""
    blocks = []
    for stream in router.in_stats(session.peer):
        ssrc = int(stream["ssrc"])
        stats = session.reception.get(ssrc)
        if stats is None:
            stats = session.reception[ssrc] = rtcp.ReceptionStats(ssrc, int(stream["base_seq"]))
        last_sr = session.last_sr.get(ssrc)
        blocks.append(
            stats.report(
                ext_highest_seq=int(stream["ext_highest_seq"]),
                received=int(stream["received"]),
                jitter=int(stream["jitter"]),
                now=now,
                last_sr=last_sr[0] if last_sr else None,
                last_sr_at=last_sr[1] if last_sr else None,
            )
        )
    if not blocks:
        return None
    ssrcs = [b.ssrc for b in blocks]
    return rtcp.build_receiver_report(session.rtcp_ssrc, blocks, remb=(bitrate, ssrcs))


def sender_reports(session: Session, router: Router, now: float, wall: float) -> list[bytes]:
    """One SR per stream we have started sending the peer; `wall` is Unix time (NTP field)."""
    packets = []
    for track in session.tracks.values():
        if track.out_stream is None:
            continue
        out = router.out_stats(track.out_stream)
        if not out["started"]:
            continue
        rtp_ts = (
            int(out["last_timestamp"])
            + int((now - float(out["last_time"])) * int(out["clock_rate"]))
        ) & 0xFFFFFFFF
        packets.append(rtcp.build_sender_report(
            int(out["ssrc"]),
            rtcp.ntp_from_unix(wall),
            rtp_ts,
            int(out["packets"]) & 0xFFFFFFFF,
            int(out["octets"]) & 0xFFFFFFFF,
        ))
    return packets
