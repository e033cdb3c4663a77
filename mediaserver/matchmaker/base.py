"""The matchmaker interface: tickets in, matches out.

The rules every implementation follows (tests/test_matchmaker.py runs one suite
against all of them, and checks them against a brute-force model):

* A pair (x, y) of waiting tickets is *allowed* at time ``now`` when
  - they belong to different identities,
  - no skip between the two identities (either direction) happened within
    ``skip_cooldown``, and no block (either direction) within ``block_ttl``,
  - each one's interest window allows the other: a ticket with interests (its
    language counts as one) accepts, during its first ``interest_wait`` seconds,
    only a ticket sharing at least one of them; after that, or with no
    interests at all, anyone.
* The queue is kept *stable*: whenever a ticket arrives (``enqueue``) or time
  passes (``tick``, and the start of every ``enqueue``), pairs are made
  greedily until no allowed pair is left: the longest-waiting ticket that has
  any allowed partner is paired with its longest-waiting allowed partner. So an
  arriving ticket is paired at once with the oldest waiter it may meet, and a
  waiter whose interest window ends is re-examined by the next ``tick``.
* ``Match.a`` is the longer-waiting ticket; ``shared_interests`` are the
  interests (not the language) both tickets list, sorted.
* Only age-confirmed tickets are accepted; a reputation (``Ticket.reputation``,
  by default the identity) reported by
  ``report_threshold`` distinct reporters within ``report_window`` is refused for
  ``refuse_for`` seconds. A refused ``enqueue`` also withdraws the peer's
  earlier ticket, if any: a refused peer is not in the queue.

Time comes from the ``clock`` given to the constructor (seconds, a float; tests
pass a fake clock). It is read once per call and never goes backwards inside a
matchmaker (a clock that steps back is held at its last value).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Clock",
    "Match",
    "MatchPolicy",
    "MatchRefused",
    "Matchmaker",
    "OnMatch",
    "RefusalReason",
    "Ticket",
]

logger = logging.getLogger("mediaserver.matchmaker")

RefusalReason = Literal["age", "reported"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """A peer asking to be paired."""

    peer: str
    """Connection id (one visit). One ticket per peer: a new one replaces the old."""
    identity: str
    """Opaque key that skips and blocks are kept for; two tickets of one identity
    are never paired. The signalling hub uses the visit (connection) itself: a
    block lasts the visit, and people behind one address (a household, an
    office, carrier-grade NAT) can still meet."""
    interests: frozenset[str] = frozenset()
    """Preferred topics; matched exactly (the signalling layer lowercases them)."""
    language: str | None = None
    """Preferred language; counts as one more interest during the interest window."""
    age_confirmed: bool = False
    """The visitor confirmed the age gate; tickets without it are refused."""
    reputation: str = ""
    """Stable key reports are counted and refusals applied under (an HMAC of the
    address, or an account id), so reconnecting does not evade a refusal;
    empty: the identity."""

    @property
    def reputation_key(self) -> str:
        return self.reputation or self.identity


@dataclass(frozen=True, slots=True)
class Match:
    """Two peers paired by the matchmaker."""

    a: str
    """Peer id of the longer-waiting ticket."""
    b: str
    """Peer id of the other ticket."""
    shared_interests: tuple[str, ...]
    """Interests both tickets listed, sorted (the language is not among them)."""


class MatchRefused(Exception):
    """``enqueue`` refused the ticket.

    Attributes:
        reason: ``"age"`` (the ticket is not age-confirmed) or ``"reported"`` (the
            identity was reported by too many distinct people recently).
    """

    def __init__(self, reason: RefusalReason) -> None:
        super().__init__(reason)
        self.reason: RefusalReason = reason


@dataclass
class MatchPolicy:
    """The knobs of the matching rules (seconds unless said otherwise)."""

    interest_wait: float = 3.0
    """Seconds a ticket with interests prefers a shared interest before anyone."""
    skip_cooldown: float = 30.0
    """No re-match of two identities after a skip (Next), in both directions."""
    block_ttl: float = 86400.0
    """A block lasts this long ("permanent within the session": long enough)."""
    report_window: float = 3600.0
    """Distinct reporters are counted within this window."""
    report_threshold: int = 3
    """This many distinct reporters within the window -> refused."""
    refuse_for: float = 3600.0
    """How long a reported identity is refused."""


OnMatch = Callable[[Match], None]
Clock = Callable[[], float]


class Matchmaker(abc.ABC):
    """The random-match queue.

    Args:
        policy: the matching rules' knobs.
        on_match: called once per match, with no lock held, from the event loop;
            an exception it raises is logged and does not stop other matches.
        clock: seconds as a float; ``time.time`` by default. Tests pass a fake one.
    """

    def __init__(
        self,
        policy: MatchPolicy,
        on_match: OnMatch,
        clock: Clock = time.time,
    ) -> None:
        self.policy = policy
        self._on_match = on_match
        self._clock = clock
        self._last_now = float("-inf")

    def _now(self) -> float:
        now = self._clock()
        if now < self._last_now:
            return self._last_now
        self._last_now = now
        return now

    def _emit(self, matches: Iterable[Match]) -> None:
        for match in matches:
            try:
                self._on_match(match)
            except Exception:
                logger.exception("on_match failed for %r", match)

    async def start(self) -> None:
        """Connect and get ready now (optional: the first call does it anyway).

        The Redis implementation subscribes to the match channel here; a node
        that only listens (never enqueues) should call it.
        """

    @abc.abstractmethod
    async def enqueue(self, ticket: Ticket) -> None:
        """Join the queue, replacing an earlier ticket of the same peer.

        Pairs the ticket at once with the oldest waiter it may meet, if any
        (``on_match`` is called before this returns on the node that made the
        match); otherwise it waits.

        Raises:
            MatchRefused: not age-confirmed (``"age"``) or refused after reports
                (``"reported"``); the peer is then not in the queue.
        """

    @abc.abstractmethod
    async def cancel(self, peer: str) -> None:
        """Leave the queue (no-op if the peer is not waiting)."""

    @abc.abstractmethod
    async def record_skip(self, identity: str, other_identity: str) -> None:
        """``identity`` pressed Next on ``other_identity``: no re-match for a while."""

    @abc.abstractmethod
    async def record_block(self, identity: str, other_identity: str) -> None:
        """``identity`` blocked ``other_identity``: never paired within ``block_ttl``."""

    @abc.abstractmethod
    async def record_report(self, reporter_identity: str, reported_identity: str) -> None:
        """Count a report; enough distinct reporters refuse the reported one.

        Both arguments are reputation keys (``Ticket.reputation_key``). A report
        also blocks the two keys as identities, as ``record_block`` does: where
        reputation and identity differ, record the block by identity too. Record the report before re-queueing the
        reported peer, so that a refusal applies to that ``enqueue``.
        """

    @abc.abstractmethod
    async def forget(self, identity: str) -> None:
        """The visit of ``identity`` ended: its skips and blocks (both directions)
        go now. A visit id is never used again, so they could never apply; kept,
        they would pile up for ``block_ttl`` with every visit that blocked someone."""

    async def cancel_node(self, node: str) -> int:
        """Take out the tickets of a dead node's peers (ids "node/..."); how many.

        A shared queue outlives the nodes that fill it; an in-process one dies
        with its node (nothing to do).
        """
        return 0

    async def set_ban(self, key: str, until: float | None) -> None:
        """Share a moderator's ban with every node: ``key`` (keyed: an address
        hash or an account's HMAC) is banned until ``until`` (``math.inf``: for
        good; None: lifted). A queue of one machine keeps none: the store (one
        SQLite file for its workers) is where bans are checked."""

    async def banned_until(self, keys: list[str]) -> float | None:
        """The end of the longest shared ban on any of ``keys`` (``math.inf``: for
        good), None when none holds (or none is shared)."""
        return None

    @abc.abstractmethod
    async def tick(self) -> None:
        """Apply the passing of time (interest windows, expired skips/blocks).

        The server calls it every ~0.25 s.
        """

    @abc.abstractmethod
    async def queue_length(self) -> int:
        """How many tickets are waiting."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release resources (connections, background tasks)."""
