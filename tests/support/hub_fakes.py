"""Small real stand-ins for what the signalling hub talks to, so the hub runs with
no socket and on virtual time: a media service, an accounts store, the visitors'
connections, and buses that link several in-process nodes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mediaserver.matchmaker import InProcessMatchmaker, Match, MatchPolicy
from mediaserver.node.bus import Bus, NodeInfo
from mediaserver.sfu.errors import NoVideo, SfuError
from mediaserver.signalling.hub import SignallingHub
from mediaserver.signalling.visitors import Visitor
from mediaserver.store import NotFound, Profile, Unauthorized


class VirtualClock:
    """Seconds that move only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeMedia:
    """The media service with knobs: records what the hub asks of each node.

    `fail_create` (an SfuError) makes the next offers fail; `fail_effects` makes
    set_effect raise it; `fail_restart` makes ICE restarts raise it; `no_video` sessions raise NoVideo on any effect.
    """

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.on_closed: Any = None
        self.on_cover_failed: Any = None
        self.sessions: dict[str, tuple[str, str]] = {}
        """session id -> (node, owner), open ones."""
        self.connects: list[tuple[str, str, str]] = []
        self.disconnects: list[tuple[str, str, str]] = []
        self.closed: list[tuple[str, str]] = []
        self.effects: list[tuple[str, str, str | None, bool]] = []
        self.owned_closed_for: list[str] = []
        self.fail_create: SfuError | None = None
        self.fail_effects: SfuError | None = None
        self.fail_restart: SfuError | None = None
        self.restarts: list[tuple[str, str, str]] = []
        """(node, session, sdp) of each ICE restart answered."""
        self.no_video: set[str] = set()
        self.stills: list[tuple[str, str]] = []
        """(node, session) of every still asked for."""
        self.still: bytes | SfuError = b"\xff\xd8\xff fake jpeg"
        """What capture_still returns (or raises)."""
        self._next = 0

    async def create_session(self, node: str, sdp: str, owner: str) -> tuple[str, str]:
        if self.fail_create is not None:
            raise self.fail_create
        self._next += 1
        session = f"{self.node_id}-s{self._next}"
        self.sessions[session] = (node, owner)
        return session, f"answer to {sdp}"

    async def restart_ice(self, node: str, session: str, sdp: str) -> str:
        if self.fail_restart is not None:
            raise self.fail_restart
        if self.sessions.get(session, (None,))[0] != node:
            raise SfuError(f"no session {session!r}")
        self.restarts.append((node, session, sdp))
        return f"restart answer to {sdp}"

    async def connect(self, node: str, publisher: str, subscriber: str) -> None:
        self.connects.append((node, publisher, subscriber))

    async def disconnect(self, node: str, publisher: str, subscriber: str) -> None:
        self.disconnects.append((node, publisher, subscriber))

    async def close_session(self, node: str, session: str) -> None:
        self.sessions.pop(session, None)
        self.closed.append((node, session))

    async def set_effect(
        self, node: str, session: str, name: str | None, *, cover: bool = False
    ) -> None:
        if session in self.no_video:
            raise NoVideo("no video")
        if self.fail_effects is not None:
            raise self.fail_effects
        self.effects.append((node, session, name, cover))

    async def capture_still(self, node: str, session: str) -> bytes:
        self.stills.append((node, session))
        if isinstance(self.still, SfuError):
            raise self.still
        return self.still

    async def handle_still(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {}

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {}

    def close_owned_by(self, node: str) -> int:
        self.owned_closed_for.append(node)
        return 0

    def forwarded(self) -> set[tuple[str, str]]:
        """(publisher, subscriber) pairs connected and not disconnected since."""
        links = {(p, s) for _, p, s in self.connects}
        return links - {(p, s) for _, p, s in self.disconnects}

    async def end(self, session: str, reason: str = "ice timeout") -> None:
        """The session dies on its own (as the SFU reports it)."""
        node, owner = self.sessions.pop(session)
        await self.on_closed(owner, session, reason)


def profile(user_id: str, born: str = "1990-01-01", **fields: Any) -> Profile:
    base: dict[str, Any] = dict(
        id=user_id, username=user_id, date_of_birth=born, bio="", interests=[],
        language=None, created_at=0.0, updated_at=0.0, last_seen_at=0.0,
        opted_out=False, chat_history_consent=True,
    )
    base.update(fields)
    return Profile(**base)


class FakeStore:
    """Profiles by bearer token, ages given outright, and what the hub stored."""

    def __init__(self) -> None:
        self.tokens: dict[str, Profile] = {}
        self.ages: dict[str, int] = {}
        self.chat: list[tuple[str, str, str, str]] = []
        self.reports: list[tuple[str, str]] = []
        self.filed: list[dict[str, Any]] = []
        self.bans: dict[str, float] = {}
        """Ban ends by account id or address hash (math.inf: for good)."""
        self.dismissed: dict[str, int] = {}
        """Dismissed reports by reporter address hash."""
        """Ban ends by account id or address hash (math.inf: for good)."""
        """Reports kept for the moderators (file_chat_report's arguments)."""
        self.shared: list[str] = []
        self.gone: set[str] = set()
        """Users whose profile vanished (share_profile_card fails)."""

    def add(self, token: str, p: Profile, age: int = 30) -> None:
        self.tokens[token] = p
        self.ages[p.id] = age

    def authenticate(self, token: str) -> Profile:
        if token not in self.tokens:
            raise Unauthorized("invalid_token", "unknown token")
        return self.tokens[token]

    def age(self, profile: Profile) -> int:
        return self.ages[profile.id]

    def store_chat_message(
        self, user_id: str, conversation_id: str, sender: str, text: str
    ) -> bool:
        self.chat.append((user_id, conversation_id, sender, text))
        return True

    def record_report(self, reporter_user_id: str, reason: str) -> None:
        self.reports.append((reporter_user_id, reason))

    def file_chat_report(
        self, reason: str, *, reported_address: str, reported_user_id: str | None,
        reporter_address: str, reporter_user_id: str | None,
        chat: list[dict[str, str]] | None = None,
        frame: bytes | None = None, frame_missing: str | None = None,
    ) -> str:
        self.filed.append({"reason": reason, "reported_address": reported_address,
                           "reported_user_id": reported_user_id,
                           "reporter_address": reporter_address,
                           "reporter_user_id": reporter_user_id, "chat": chat})
        # the still's evidence only when there is some (the older tests compare whole rows)
        self.filed[-1].update({k: v for k, v in (("frame", frame),
                               ("frame_missing", frame_missing)) if v is not None})
        return f"r{len(self.filed)}"

    def reporter_dismissals(self, reporter_address: str) -> int:
        return self.dismissed.get(reporter_address, 0)

    def ban_until(self, user_id: str | None, address: str) -> float | None:
        ends = [self.bans[s] for s in (user_id, address) if s is not None and s in self.bans]
        return max(ends) if ends else None

    def share_profile_card(self, user_id: str) -> dict[str, Any]:
        if user_id in self.gone:
            raise NotFound("profile gone")
        self.shared.append(user_id)
        return {"handle": user_id, "bio": "hi"}


@dataclass
class Connection:
    """A visitor's connection as the hub sees it: what it was sent, how it closed."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    visitor: Visitor | None = None

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    def close(self, code: int) -> None:
        self.closed.append(code)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]

    def take(self) -> list[dict[str, Any]]:
        """What was sent since the last take."""
        out, self.sent = self.sent, []
        return out

    def last(self, kind: str) -> dict[str, Any]:
        return [m for m in self.sent if m["type"] == kind][-1]


class LinkedBus(Bus):
    """A node's bus in a cluster of in-process nodes: bytes go straight to the
    other node's bus, as the Redis transport would deliver them."""

    def __init__(self, node_id: str, cluster: dict[str, LinkedBus]) -> None:
        super().__init__(node_id)
        self.cluster = cluster
        cluster[node_id] = self

    def nodes(self) -> dict[str, NodeInfo]:
        return {n: bus._info() for n, bus in self.cluster.items()}

    async def _publish(self, node: str, data: bytes) -> None:
        if node not in self.cluster:
            raise ConnectionError(f"no node {node}")
        self.cluster[node].receive(data, sender=self.node_id)

    async def kill(self) -> None:
        """This node dies: it leaves the cluster and every other node notices."""
        del self.cluster[self.node_id]
        await self.close()
        for bus in list(self.cluster.values()):
            await bus._node_down(self.node_id)


class SharedQueue:
    """One in-process matchmaker for several hubs: every hub hears every match,
    as with the Redis matchmaker's match channel."""

    def __init__(self, clock: VirtualClock, policy: MatchPolicy | None = None) -> None:
        self.listeners: list[Any] = []
        self.matchmaker = InProcessMatchmaker(policy or MatchPolicy(), self._emit, clock)

    def _emit(self, match: Match) -> None:
        for on_match in self.listeners:
            on_match(match)

    def factory(self, on_match: Any) -> InProcessMatchmaker:
        self.listeners.append(on_match)
        return self.matchmaker


async def settle(rounds: int = 50) -> None:
    """Let background tasks (the bus's consumers, spawned settles) run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(condition: Any, rounds: int = 2000) -> None:
    """Run the loop until `condition()` (threads of asyncio.to_thread included)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


def build_hub(
    bus: Bus,
    clock: VirtualClock,
    matchmaker_factory: Any,
    media: FakeMedia | None = None,
    **options: Any,
) -> SignallingHub:
    return SignallingHub(
        media or FakeMedia(bus.node_id),
        matchmaker_factory,
        b"k" * 32,
        clock,
        bus=bus,
        **options,
    )
