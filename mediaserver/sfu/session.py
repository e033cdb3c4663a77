"""One peer's state: its ICE credentials, DTLS endpoint, router slot and tracks."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mediaserver.sfu.address import Address
from mediaserver.sfu.dtls import DtlsEndpoint
from mediaserver.sfu.nack import NackBudget
from mediaserver.sfu.rtcp import ReceptionStats
from mediaserver.sfu.sdp import Answer, Codec


class SessionState(enum.Enum):
    NEW = "new"  # answer sent, no valid STUN yet
    CHECKING = "checking"  # address bound by ICE, DTLS under way
    CONNECTED = "connected"  # SRTP keys installed: media flows
    CLOSED = "closed"


@dataclass
class Track:
    """One media kind of a session, as negotiated."""

    kind: str
    """"audio" or "video"."""
    mid: str
    codecs: list[Codec]
    receives: bool
    """The peer sends us this kind (we may forward it)."""
    sends: bool
    """We may send the peer this kind."""
    out_stream: int | None = None
    """Router out stream carrying this kind to the peer (when `sends`)."""
    out_ssrc: int | None = None
    offered_ssrcs: list[int] = field(default_factory=list)
    """SSRCs the peer announced for this kind in its offer."""


@dataclass
class Session:
    """A WebRTC peer of the server, from its offer to close."""

    id: str
    peer: int
    """The router's slot for this peer."""
    local_ufrag: str
    local_pwd: str
    answer: str
    dtls: DtlsEndpoint
    tracks: dict[str, Track]
    """By kind."""
    rtcp_ssrc: int
    """Sender SSRC of the RTCP feedback we originate (RR, PLI, REMB)."""
    created_at: float
    state: SessionState = SessionState.NEW
    address: Address | None = None
    publishers: set[str] = field(default_factory=set)
    """Sessions forwarded to this one."""
    subscribers: set[str] = field(default_factory=set)
    """Sessions this one is forwarded to."""
    remb_bitrate: int | None = None
    """Latest REMB this peer sent (what it can receive), bits/s."""
    last_sr: dict[int, tuple[int, float]] = field(default_factory=dict)
    """Per SSRC the peer sends: (middle 32 bits of the SR's NTP time, arrival time)."""
    reception: dict[int, ReceptionStats] = field(default_factory=dict)
    """Per inbound SSRC: receiver-report bookkeeping."""
    last_report: float = float("-inf")
    """When we last sent this peer RR/SR."""
    connected_at: float = 0.0
    keyframe_pending: bool = False
    """A keyframe was asked for before the publisher's SSRC was known."""
    nack_budget: NackBudget = field(default_factory=NackBudget)
    """How many of its NACKs are answered (all its streams share it)."""
    negotiated: Answer | None = None
    """The answer in force (an ICE restart must leave its media as they are)."""
    cname: str = ""
    """The RTCP CNAME of our streams to this peer."""
    restarted_at: float | None = None
    """When the first ICE restart offer of its current silence came: its media
    timeout runs from there (sfu/restart.py)."""
    restart_pending: bool = False
    """An ICE restart was answered and no new address is nominated yet."""

    def track_by_out_ssrc(self, ssrc: int) -> Track | None:
        for track in self.tracks.values():
            if track.out_ssrc == ssrc:
                return track
        return None
