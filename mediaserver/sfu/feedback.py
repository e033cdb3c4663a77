"""What a subscriber's RTCP asks of the Sfu, sorted out of one datagram (sans-I/O).

The Sfu then acts on it: NACKs through the session's budget (sfu/nack.py) to the
router's cache or on to the publisher, PLI/FIR as keyframe requests to the
publisher (rate-limited there), REMB and SR kept on the session for the reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediaserver.sfu import rtcp
from mediaserver.sfu.session import Session


@dataclass
class FeedbackRequests:
    """The requests of one RTCP datagram about the streams we send a session."""

    nacked: dict[int, list[int]] = field(default_factory=dict)
    """Out stream -> sequence numbers its NACKs ask for, as listed (duplicates too)."""
    keyframes: list[int] = field(default_factory=list)
    """Out streams a PLI or FIR asks a keyframe of, one entry per request."""
    nacks: int = 0
    """NACK packets about a stream we send."""
    nack_packets: int = 0
    """Sequence numbers those NACKs list."""
    keyframe_requests: int = 0
    """PLI and FIR entries, about any stream."""


def sort_feedback(session: Session, items: list[rtcp.Feedback], now: float) -> FeedbackRequests:
    """Sort `items` (rtcp.parse_feedback of one datagram from `session`) into requests;
    REMB and SR only update `session` (its remb_bitrate and last_sr, at `now`)."""
    requests = FeedbackRequests()
    for item in items:
        if isinstance(item, rtcp.Nack):
            track = session.track_by_out_ssrc(item.media_ssrc)
            if track is not None and track.out_stream is not None:
                requests.nacks += 1
                requests.nack_packets += len(item.lost)
                requests.nacked.setdefault(track.out_stream, []).extend(item.lost)
        elif isinstance(item, (rtcp.Pli, rtcp.Fir)):
            requests.keyframe_requests += 1
            track = session.track_by_out_ssrc(item.media_ssrc)
            if track is not None and track.out_stream is not None:
                requests.keyframes.append(track.out_stream)
        elif isinstance(item, rtcp.Remb):
            session.remb_bitrate = item.bitrate
        elif isinstance(item, rtcp.SenderReport):
            session.last_sr[item.ssrc] = ((item.ntp_timestamp >> 16) & 0xFFFFFFFF, now)
    return requests
