"""The hub's record of each visitor and of its partner; no I/O.

A visitor moves NEW -(hello)-> IDLE -(start)-> QUEUED -(match)-> MATCHED, back
to IDLE on stop or when a pair ends (and to QUEUED again on next), and GONE when
it leaves. The hub and its feature handlers read and change these records.
"""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mediaserver.rate_limit import TokenBucket
from mediaserver.signalling import protocol
from mediaserver.signalling.protocol import Message, ProtocolError
from mediaserver.store.moderation import MAX_CHAT_LINES


class State(enum.Enum):
    NEW = "new"  # before hello
    IDLE = "idle"  # hello done, not queued
    QUEUED = "queued"
    MATCHED = "matched"
    GONE = "gone"


def handle_for(peer: str) -> str:
    """The visitor's public name: a one-way digest of its random id."""
    return "stranger-" + hashlib.sha256(peer.encode()).hexdigest()[:6]


@dataclass(eq=False)
class Partner:
    """The other visitor of a pair, as this node knows it (it may live on another node)."""

    id: str
    handle: str
    node: str
    """Its home node: where its WebSocket, and so its news, is."""
    session: str | None = None
    """Its media session on the pair's node, once it has one."""
    revealed: bool = False


@dataclass(eq=False)
class Visitor:
    id: str
    """Connection id ("node/token"): never sent to anyone."""
    reputation: str
    """Stable opaque key (HMAC of the address): reports count, and refusals
    stick, under it. Skips and blocks are kept per visit (the id)."""
    handle: str
    """The only name a partner ever sees."""
    send: Callable[[Message], None]
    close: Callable[[int], None]
    state: State = State.NEW
    interests: frozenset[str] = frozenset()
    language: str | None = None
    session_id: str | None = None
    """The visitor's SFU session, from its offer."""
    media_node: str | None = None
    """The node holding session_id."""
    partner: Partner | None = None
    pair_node: str | None = None
    """The node the current pair's media is placed on."""
    pending_pair: tuple[str, float] | None = None
    """(partner id, since): the queue matched us with a visitor of another node,
    whose node has not confirmed the pair yet."""
    queued_announced: bool = False
    effect: str | None = None
    """The effect the visitor chose for its own video."""
    revealed: bool = False
    """Mutual reveal: this visitor pressed Reveal in the current match."""
    user_id: str | None = None
    """The profile signed in with hello's token (never sent to anyone)."""
    conversation: str | None = None
    """Id of the current match's conversation (chat history of opted-in users)."""
    limits: dict[str, TokenBucket] = field(default_factory=dict)
    queued_at: float = 0.0
    """Hub clock when the visitor last entered the queue (queue-wait metric)."""
    forwarded: tuple[str, str] | None = None
    """(partner's session, ours): the forwarding already set up to this visitor,
    so the partner's "media" news and our own settling connect it once."""
    address: str = ""
    """address_key of the client's address: per-address limits count under it."""
    offering: bool = False
    """An offer is being turned into a session (it counts toward the address's)."""
    call: str | None = None
    """The call between connections this page is in (ringing out, answering or
    connected; mediaserver.signalling.calls): never queued for a random pair then."""
    chat_lines: deque[tuple[str, str]] = field(
        default_factory=lambda: deque(maxlen=MAX_CHAT_LINES))
    """The current pair's last chat lines, ("me" | "partner", text), relayed and
    held here only for a report that asks to include them; emptied when the pair
    ends."""

    def __post_init__(self) -> None:
        self.limits = {k: TokenBucket(*rate) for k, rate in protocol.RATES.items()}


def busy(v: Visitor) -> bool:
    """In a random chat (queued or matched) or a call: a call to it answers busy."""
    return v.state in (State.QUEUED, State.MATCHED) or v.call is not None


def require_partner(v: Visitor, kind: str) -> Partner:
    """v's partner, for a message that needs one.

    Raises:
        ProtocolError: out_of_order (v is not matched), with `kind` as its ref.
    """
    if v.state is not State.MATCHED or v.partner is None:
        raise ProtocolError("out_of_order", "not matched", kind)
    return v.partner
