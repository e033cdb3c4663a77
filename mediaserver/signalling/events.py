"""Peer events: what one partner's node tells the other's (or itself, when both
visitors are here), as typed values with one encoding onto the bus.

On the bus a peer event is the dict `{"t": "peer", "to": <peer id>, "by": <peer
id>, "ev": <kind>, **fields}`; `encode` builds it and `decode` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

BUS_TYPE = "peer"
"""The bus message type `t` that carries a peer event."""


@dataclass(frozen=True)
class Pair:
    """The longer waiter's node placed the pair: the receiver's visitor is matched."""

    KIND: ClassVar[str] = "pair"
    node: str
    """The node the pair's media is placed on."""
    shared: tuple[str, ...] = ()
    """The interests both visitors named."""


@dataclass(frozen=True)
class Left:
    """The sender's visitor left the pair (or the match was stale)."""

    KIND: ClassVar[str] = "left"
    reason: str = "left"
    """"left" or "next" (block and report say "next" too)."""


@dataclass(frozen=True)
class MediaReady:
    """The sender's visitor has a media session on the pair's node."""

    KIND: ClassVar[str] = "media"
    session: str


@dataclass(frozen=True)
class Chat:
    KIND: ClassVar[str] = "chat"
    text: str


@dataclass(frozen=True)
class Typing:
    KIND: ClassVar[str] = "typing"


@dataclass(frozen=True)
class VideoWithheld:
    """The sender's face cover could not run: its video is not forwarded."""

    KIND: ClassVar[str] = "video_withheld"


@dataclass(frozen=True)
class Revealed:
    """The sender's visitor pressed Reveal."""

    KIND: ClassVar[str] = "revealed"


@dataclass(frozen=True)
class ProfileCard:
    """The sender's visitor shared its public profile card."""

    KIND: ClassVar[str] = "profile_card"
    card: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """The sender's visitor reported the receiver's: count it under its reputation,
    and keep the report for the moderators (the receiver's node knows who the
    reported visitor is)."""

    KIND: ClassVar[str] = "report"
    reputation: str
    """The reporter's reputation key (its keyed address hash)."""
    reason: str = "other"
    reporter_user_id: str | None = None
    """The reporter's account, when it is signed in."""
    chat: tuple[tuple[str, str], ...] = ()
    """Evidence the reporter chose to send: the pair's last chat lines, each
    ("reporter" | "reported", text)."""
    include_frame: bool = False
    """The reporter asked for a still of the receiver's video (its node takes it)."""


PeerEvent = (
    Pair | Left | MediaReady | Chat | Typing | VideoWithheld | Revealed | ProfileCard | Report
)

EVENT_TYPES: dict[str, type[PeerEvent]] = {
    cls.KIND: cls
    for cls in (Pair, Left, MediaReady, Chat, Typing, VideoWithheld, Revealed, ProfileCard, Report)
}


@dataclass(frozen=True)
class PeerMessage:
    """A peer event with its addressing."""

    to: str
    """The receiving visitor's peer id (its home node gets the message)."""
    by: str
    """The sending visitor's peer id."""
    event: PeerEvent


def encode(to: str, by: str, event: PeerEvent) -> dict[str, Any]:
    """The bus message for `event` from visitor `by` to visitor `to`."""
    body = {f.name: getattr(event, f.name) for f in fields(event)}
    if isinstance(event, Pair):
        body["shared"] = list(event.shared)
    if isinstance(event, Report):
        body["chat"] = [list(line) for line in event.chat]
    return {"t": BUS_TYPE, "to": to, "by": by, "ev": event.KIND, **body}


def decode(msg: dict[str, Any]) -> PeerMessage:
    """Read a peer event off the bus.

    Raises:
        ValueError: not a peer event, an unknown kind, or a field missing or of
            the wrong type.
    """
    if msg.get("t") != BUS_TYPE:
        raise ValueError(f"not a peer event: t={msg.get('t')!r}")
    kind = msg.get("ev")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown peer event {str(kind)[:40]!r}")
    to, by = msg.get("to"), msg.get("by")
    if not isinstance(to, str) or not isinstance(by, str):
        raise ValueError(f"peer event {kind} without to/by")
    event: PeerEvent
    if cls is Pair:
        shared = msg.get("shared", ())
        if not isinstance(shared, (list, tuple)):
            raise ValueError("pair: shared must be a list")
        event = Pair(_text(msg, "node"), tuple(str(s) for s in shared))
    elif cls is Left:
        event = Left(str(msg.get("reason", "left")))
    elif cls is MediaReady:
        event = MediaReady(_text(msg, "session"))
    elif cls is Chat:
        event = Chat(_text(msg, "text"))
    elif cls is ProfileCard:
        card = msg.get("card")
        if not isinstance(card, dict):
            raise ValueError("profile_card: card must be an object")
        event = ProfileCard(card)
    elif cls is Report:
        event = _report(msg)
    elif cls is Typing:
        event = Typing()
    elif cls is VideoWithheld:
        event = VideoWithheld()
    else:
        event = Revealed()
    return PeerMessage(to, by, event)


def _report(msg: dict[str, Any]) -> Report:
    reporter = msg.get("reporter_user_id")
    if reporter is not None and not isinstance(reporter, str):
        raise ValueError("report: reporter_user_id must be a string or null")
    chat = msg.get("chat", ())
    if not isinstance(chat, (list, tuple)) or not all(
            isinstance(line, (list, tuple)) and len(line) == 2
            and all(isinstance(part, str) for part in line) for line in chat):
        raise ValueError("report: chat must be a list of [from, text]")
    include_frame = msg.get("include_frame", False)
    if not isinstance(include_frame, bool):
        raise ValueError("report: include_frame must be a boolean")
    return Report(_text(msg, "reputation"), str(msg.get("reason", "other")), reporter,
                  tuple((str(a), str(b)) for a, b in chat), include_frame)


def _text(msg: dict[str, Any], name: str) -> str:
    value = msg.get(name)
    if not isinstance(value, str):
        raise ValueError(f"peer event {msg.get('ev')}: {name} must be a string")
    return value
