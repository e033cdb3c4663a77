"""The signalling hub: visitors, their state, the match queue and the SFU, joined.

The WebSocket shell (ws.py) turns frames into `receive()` calls and sends what a
visitor's `send` callback is given; this module holds every decision: what a
message may do in the visitor's state, pairing, Next, chat relay, and what the
partner is told. Partners only ever learn each other's random handle.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mediaserver.matchmaker import Match, Matchmaker, MatchRefused, Ticket
from mediaserver.sfu.server import SessionClosed, SessionConnected, Sfu, SfuError, SfuEvent
from mediaserver.signalling import protocol
from mediaserver.signalling.protocol import Message, ProtocolError

logger = logging.getLogger(__name__)


class State(enum.Enum):
    NEW = "new"  # before hello
    IDLE = "idle"  # hello done, not queued
    QUEUED = "queued"
    MATCHED = "matched"
    GONE = "gone"


@dataclass(eq=False)
class Visitor:
    id: str
    """Connection id: never sent to anyone."""
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
    partner: Visitor | None = None
    queued_announced: bool = False
    effect: str | None = None
    """The effect the visitor chose for its own video."""
    revealed: bool = False
    """Mutual reveal: this visitor pressed Reveal in the current match."""
    user_id: str | None = None
    """The profile signed in with hello's token (never sent to anyone)."""
    conversation: str | None = None
    """Id of the current match's conversation (chat history of opted-in users)."""
    limits: dict[str, protocol.TokenBucket] = field(default_factory=dict)
    queued_at: float = 0.0
    """Hub clock when the visitor last entered the queue (queue-wait metric)."""

    def __post_init__(self) -> None:
        self.limits = {k: protocol.TokenBucket(*rate) for k, rate in protocol.RATES.items()}


def _handle() -> str:
    return "stranger-" + secrets.token_hex(3)


class SignallingHub:
    """Args:
    sfu: the started SFU.
    matchmaker_factory: builds the matchmaker given the hub's on_match callback.
    identity_key: secret for hashing addresses into identities (shared by nodes).
    """

    def __init__(
        self,
        sfu: Sfu,
        matchmaker_factory: Callable[[Callable[[Match], None]], Matchmaker],
        identity_key: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        mutual_reveal: bool = False,
        effects: Mapping[str, Callable[[], Any]] | None = None,
        store: Any = None,
    ) -> None:
        self.sfu = sfu
        self.matchmaker = matchmaker_factory(self._on_match)
        self.visitors: dict[str, Visitor] = {}
        self._by_session: dict[str, Visitor] = {}
        self._identity_key = identity_key or secrets.token_bytes(32)
        self._clock = clock
        self.mutual_reveal = mutual_reveal
        self._effects = effects  # name -> effect class (a new object per stream)
        self.store = store  # mediaserver.store.Store: profiles, chat history, reports
        self.stats: Counter[str] = Counter()
        self.draining = False
        """No new peers: start (and re-queueing) is refused with `draining`."""
        self.on_queue_wait: Callable[[float], None] | None = None
        """Called with the seconds from queued to matched, once per matched visitor."""
        sfu.subscribe(self._on_sfu_event)

    # ---- connections ---------------------------------------------------------------

    def join(
        self, address: str, send: Callable[[Message], None], close: Callable[[int], None]
    ) -> Visitor:
        reputation = hmac.new(self._identity_key, address.encode(), hashlib.sha256).hexdigest()
        visitor = Visitor(secrets.token_urlsafe(12), reputation, _handle(), send, close)
        self.visitors[visitor.id] = visitor
        self.stats["connections"] += 1
        logger.info("visitor_connected", extra={"visitors": len(self.visitors)})
        return visitor

    async def leave(self, visitor: Visitor) -> None:
        """The WebSocket is gone (or the visitor said bye): end everything."""
        if visitor.state is State.GONE:
            return
        await self._end_pair(visitor, requeue_self=False, reason="left")
        await self.matchmaker.cancel(visitor.id)
        visitor.state = State.GONE
        if visitor.session_id is not None:
            self._by_session.pop(visitor.session_id, None)
            self.sfu.close_session(visitor.session_id)
        self.visitors.pop(visitor.id, None)
        logger.info("visitor_left", extra={"visitors": len(self.visitors)})

    def pairs(self) -> int:
        return sum(1 for v in self.visitors.values() if v.state is State.MATCHED) // 2

    async def start_drain(self) -> None:
        """Refuse new peers; visitors waiting in the queue are taken out and told."""
        self.draining = True
        for v in list(self.visitors.values()):
            if v.state is State.QUEUED:
                await self.matchmaker.cancel(v.id)
                v.state = State.IDLE
                v.send(protocol.error("draining", "the server is shutting down", "start"))
                v.send(protocol.message("stopped"))

    async def receive(self, visitor: Visitor, frame: str | bytes) -> None:
        """One frame from the visitor; errors are answered, never raised."""
        try:
            msg = protocol.validate(protocol.decode(frame))
            await self._dispatch(visitor, msg)
        except ProtocolError as exc:
            self.stats[f"error:{exc.code}"] += 1
            visitor.send(protocol.error(exc.code, exc.message, exc.ref))
            if exc.code == "too_large":
                visitor.close(1009)

    async def tick(self) -> None:
        await self.matchmaker.tick()

    # ---- messages ----------------------------------------------------------------------

    async def _dispatch(self, v: Visitor, msg: Message) -> None:
        kind = msg["type"]
        handler: Callable[[Visitor, Message], Awaitable[None]] = getattr(self, f"_on_{kind}")
        if kind != "hello" and kind != "bye" and v.state is State.NEW:
            raise ProtocolError("out_of_order", "send hello first", kind)
        limiter = v.limits.get(kind)
        if limiter is not None and not limiter.allow(self._clock()):
            raise ProtocolError("rate_limited", f"too many {kind} messages", kind)
        await handler(v, msg)

    async def _on_hello(self, v: Visitor, msg: Message) -> None:
        if v.state is not State.NEW:
            raise ProtocolError("out_of_order", "hello was already sent", "hello")
        if msg["age_confirmed"] is not True:
            raise ProtocolError("age_required", "confirm you are 18 or older", "hello")
        v.interests = frozenset(msg.get("interests", ()))
        v.language = msg.get("language")
        if "token" in msg:
            profile = await self._sign_in(msg["token"])
            v.user_id = profile.id
            # the profile's interests feed the match queue unless hello names others
            v.interests = v.interests or frozenset(profile.interests)
            v.language = v.language or profile.language
        v.state = State.IDLE
        v.send(protocol.message("welcome", handle=v.handle, limits=protocol.limits()))

    async def _sign_in(self, token: str) -> Any:
        if self.store is None:
            raise ProtocolError("unauthorized", "profiles are off on this server", "hello")
        from mediaserver.store import StoreError

        try:
            return await asyncio.to_thread(self.store.authenticate, token)
        except StoreError:
            raise ProtocolError("unauthorized", "unknown or expired token", "hello") from None

    async def _on_start(self, v: Visitor, msg: Message) -> None:
        if v.state is not State.IDLE:
            raise ProtocolError("out_of_order", f"already {v.state.value}", "start")
        await self._enqueue(v)

    async def _on_offer(self, v: Visitor, msg: Message) -> None:
        if v.state not in (State.QUEUED, State.MATCHED):
            raise ProtocolError("out_of_order", "send start before offer", "offer")
        if v.session_id is not None:
            raise ProtocolError("out_of_order", "one offer per connection", "offer")
        try:
            session = self.sfu.create_session(msg["sdp"])
        except SfuError as exc:
            code = "server_full" if "full" in str(exc) else "offer_rejected"
            raise ProtocolError(code, str(exc), "offer") from None
        v.session_id = session.id
        self._by_session[session.id] = v
        v.send(protocol.message("answer", sdp=session.answer))
        if v.effect is not None or (self.mutual_reveal and v.partner is not None):
            applied = self._apply_video_effect(v)
            if v.effect is not None:  # the choice made before the offer is on now
                v.send(protocol.message("effect", name=v.effect, on=True, applied=applied))
        if v.partner is not None:
            self._connect_media(v, v.partner)

    async def _on_next(self, v: Visitor, msg: Message) -> None:
        if v.state is State.MATCHED:
            await self._skip(v)
        elif v.state is not State.QUEUED:
            raise ProtocolError("out_of_order", "press start first", "next")

    async def _on_stop(self, v: Visitor, msg: Message) -> None:
        if v.state is State.MATCHED:
            await self._end_pair(v, requeue_self=False, reason="left")
        elif v.state is State.QUEUED:
            await self.matchmaker.cancel(v.id)
        else:
            raise ProtocolError("out_of_order", "not queued or matched", "stop")
        v.state = State.IDLE
        v.send(protocol.message("stopped"))

    async def _on_chat(self, v: Visitor, msg: Message) -> None:
        partner = self._partner(v, "chat")
        partner.send(protocol.message("chat", text=msg["text"]))
        self.stats["chat"] += 1
        # chat history only for signed-in users who opted in (the store checks)
        for who, sender in ((v, "me"), (partner, "stranger")):
            if who.user_id is not None and who.conversation is not None and self.store is not None:
                _spawn(self._keep_chat(who.user_id, who.conversation, sender, msg["text"]))

    async def _keep_chat(self, user_id: str, conversation: str, sender: str, text: str) -> None:
        try:
            await asyncio.to_thread(
                self.store.store_chat_message, user_id, conversation, sender, text
            )
        except Exception:
            logger.exception("storing chat history failed")

    async def _on_typing(self, v: Visitor, msg: Message) -> None:
        self._partner(v, "typing").send(protocol.message("typing"))

    async def _on_report(self, v: Visitor, msg: Message) -> None:
        partner = self._partner(v, "report")
        await self.matchmaker.record_report(v.reputation, partner.reputation)
        if v.user_id is not None and self.store is not None:
            # the reporter's own record (part of its access export); nothing about the partner
            await asyncio.to_thread(self.store.record_report, v.user_id, msg["reason"])
        self.stats[f"report:{msg['reason']}"] += 1
        logger.info("report", extra={"reason": msg["reason"]})
        await self._block(v, partner)
        v.send(protocol.message("reported"))

    async def _on_block(self, v: Visitor, msg: Message) -> None:
        await self._block(v, self._partner(v, "block"))

    async def _on_effect(self, v: Visitor, msg: Message) -> None:
        name, on = msg["name"], msg["on"]
        if on:
            if self._effects is None:
                raise ProtocolError("effect_unavailable", "effects are off on this server", "effect")
            if name not in self._effects:
                known = ", ".join(sorted(self._effects))
                raise ProtocolError("bad_field", f"unknown effect {name!r} (known: {known})", "effect")
            v.effect = name
        elif v.effect == name:
            v.effect = None
        applied = self._apply_video_effect(v)
        logger.info("effect", extra={"effect": name, "on": on, "applied": applied and on})
        v.send(protocol.message("effect", name=name, on=on, applied=applied and on))

    async def _on_reveal(self, v: Visitor, msg: Message) -> None:
        partner = self._partner(v, "reveal")
        if not self.mutual_reveal:
            raise ProtocolError("out_of_order", "mutual reveal is off on this server", "reveal")
        if v.revealed:
            return
        v.revealed = True
        partner.send(protocol.message("revealed", by="partner"))
        if partner.revealed:
            for me in (v, partner):
                me.send(protocol.message("revealed", by="both"))
                self._apply_video_effect(me)

    def _apply_video_effect(self, v: Visitor) -> bool:
        """Put on v's video what it should carry now: hidden for mutual reveal
        (until both revealed in this match), else the effect it chose, else none.
        Returns whether the chosen effect is applied."""
        if v.session_id is None or self._effects is None:
            return False
        hidden = self.mutual_reveal and v.partner is not None and not (
            v.revealed and v.partner.revealed
        )
        name = "pixelate_face" if hidden else v.effect
        try:
            self.sfu.set_effect(v.session_id, self._effects[name]() if name else None)
        except SfuError as exc:
            code = "effects_busy" if "busy" in str(exc) else "effect_unavailable"
            v.send(protocol.error(code, str(exc), "effect"))
            return False
        return name is not None and name == v.effect

    async def _on_bye(self, v: Visitor, msg: Message) -> None:
        await self.leave(v)
        v.close(1000)

    # ---- pairing -----------------------------------------------------------------------

    def _partner(self, v: Visitor, kind: str) -> Visitor:
        if v.state is not State.MATCHED or v.partner is None:
            raise ProtocolError("out_of_order", "not matched", kind)
        return v.partner

    async def _enqueue(self, v: Visitor) -> None:
        if self.draining:
            raise ProtocolError("draining", "the server is shutting down; try another", "start")
        ticket = Ticket(
            peer=v.id,
            identity=v.id,  # skips and blocks last the visit
            reputation=v.reputation,
            interests=v.interests,
            language=v.language,
            age_confirmed=True,
        )
        v.state = State.QUEUED
        v.queued_at = self._clock()
        v.queued_announced = False
        try:
            await self.matchmaker.enqueue(ticket)  # may call _on_match right away
        except MatchRefused as exc:
            v.state = State.IDLE
            raise ProtocolError("refused", f"not queued: {exc}", "start") from None
        self._announce_queued(v)

    def _announce_queued(self, v: Visitor) -> None:
        # "queued" always comes before "matched", even when the match was made
        # inside enqueue(), and never for a refused ticket
        if not v.queued_announced:
            v.queued_announced = True
            v.send(protocol.message("queued"))

    def _on_match(self, match: Match) -> None:
        a, b = self.visitors.get(match.a), self.visitors.get(match.b)
        if a is None or b is None:
            return  # a peer of another node, or gone since
        if a.state is not State.QUEUED or b.state is not State.QUEUED:
            # one left the queue while the match was made (Redis is asynchronous):
            # the matchmaker took both tickets, so put the one still waiting back
            for v in (a, b):
                if v.state is State.QUEUED:
                    _spawn(self._requeue(v))
            self.stats["stale_matches"] += 1
            return
        a.partner, b.partner = b, a
        a.conversation = b.conversation = secrets.token_hex(8)
        shared = sorted(match.shared_interests)
        for me, other in ((a, b), (b, a)):
            self._announce_queued(me)
            me.state = State.MATCHED
            me.revealed = False
            extra = {"hidden": True} if self.mutual_reveal else {}
            me.send(
                protocol.message("matched", partner=other.handle, shared_interests=shared, **extra)
            )
        now = self._clock()
        for me in (a, b):
            if self.on_queue_wait is not None:
                self.on_queue_wait(max(0.0, now - me.queued_at))
            if self.mutual_reveal:
                self._apply_video_effect(me)  # every new match starts hidden
        self._connect_media(a, b)
        self.stats["matches"] += 1
        logger.info("match_made", extra={"shared_interests": len(shared)})

    def _connect_media(self, a: Visitor, b: Visitor) -> None:
        if a.session_id is None or b.session_id is None:
            return  # connected when the later offer arrives
        try:
            self.sfu.connect(a.session_id, b.session_id)
            self.sfu.connect(b.session_id, a.session_id)
        except SfuError:
            logger.warning("media session vanished before connect")

    async def _skip(self, v: Visitor) -> None:
        partner = v.partner
        if partner is not None:
            await self.matchmaker.record_skip(v.id, partner.id)
        await self._end_pair(v, requeue_self=True, reason="next")

    async def _block(self, v: Visitor, partner: Visitor) -> None:
        await self.matchmaker.record_block(v.id, partner.id)
        await self._end_pair(v, requeue_self=True, reason="next")

    async def _end_pair(self, v: Visitor, *, requeue_self: bool, reason: str) -> None:
        """End v's pair for both. The partner is told and re-queued; v is
        re-queued when it pressed Next (requeue_self)."""
        partner = v.partner
        if partner is None:
            return
        v.partner = partner.partner = None
        if v.session_id and partner.session_id:
            self.sfu.disconnect(v.session_id, partner.session_id)
            self.sfu.disconnect(partner.session_id, v.session_id)
        partner.state = State.IDLE
        v.state = State.IDLE
        logger.info("pair_ended", extra={"reason": reason})
        partner.send(protocol.message("partner_left", reason=reason))
        await self._requeue(partner)
        if requeue_self:
            await self._requeue(v)

    async def _requeue(self, v: Visitor) -> None:
        try:
            await self._enqueue(v)
        except ProtocolError as exc:
            v.send(protocol.error(exc.code, exc.message, exc.ref))

    # ---- media events ------------------------------------------------------------------

    def _on_sfu_event(self, event: SfuEvent) -> None:
        if isinstance(event, SessionConnected):
            logger.info("session_connected")
        if isinstance(event, SessionClosed):
            logger.info("session_closed", extra={"reason": event.reason.split(":")[0]})
            v = self._by_session.pop(event.session_id, None)
            if v is None or v.state is State.GONE:
                return
            # the visitor's media died: end its pair as if it left; it may offer again
            v.session_id = None
            if v.partner is not None:
                logger.info("pair_ended", extra={"reason": "media_closed"})
            self.stats[f"media_closed:{event.reason.split(':')[0]}"] += 1
            if v.partner is not None:
                partner = v.partner
                v.partner = partner.partner = None
                if partner.session_id:
                    self.sfu.disconnect(partner.session_id, event.session_id)
                partner.state = State.IDLE
                partner.send(protocol.message("partner_left", reason="left"))
                _spawn(self._requeue(partner))
            v.state = State.IDLE
            v.send(protocol.error("media_closed", f"media connection ended ({event.reason})"))
            v.send(protocol.message("stopped"))


def _spawn(coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_tasks: set[Any] = set()
