"""What the Sfu tells its owner (the signalling hub, the node bus): passed to the
callbacks given to `Sfu.subscribe`, in the order they happen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class SessionConnected:
    session_id: str
    """ICE and DTLS done: media flows from now on."""


@dataclass(frozen=True)
class SessionClosed:
    session_id: str
    reason: str
    """"closed", "consent expired", "media timeout", "handshake timeout",
    "dtls failed: ...", "dtls closed"."""


@dataclass(frozen=True)
class KeyframeNeeded:
    session_id: str
    """The publisher asked for a keyframe (a subscriber's PLI/FIR)."""
    ssrc: int


@dataclass(frozen=True)
class CoverFailed:
    session_id: str
    """The face cover on this session's video failed on every frame lately (a broken
    model, say): its video is withheld now, as when a cover cannot start."""


SfuEvent = Union[SessionConnected, SessionClosed, KeyframeNeeded, CoverFailed]
