"""The signalling hub: visitors, their state, the match queue and the SFU, joined.

The WebSocket shell (ws.py) turns frames into `receive()` calls and sends what a
visitor's `send` callback is given; this module holds every decision: what a
message may do in the visitor's state, pairing, Next, chat relay, and what the
partner is told. Partners only ever learn each other's random handle.

A partner may live on another node (several workers or machines): everything
one partner does to the other goes as a peer event over the bus (inline when
both are here), and each side's node handles its own visitor: its messages,
its media session and its direction of forwarding.
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

from mediaserver.client_address import address_key
from mediaserver.matchmaker import Match, Matchmaker, MatchRefused, Ticket
from mediaserver.node.bus import Bus, LocalBus, NodeInfo, home_node, peer_id
from mediaserver.node.bus import Message as BusMessage
from mediaserver.node.media import MediaService
from mediaserver.sfu.server import (
    ServerFull,
    SessionClosed,
    SessionConnected,
    Sfu,
    SfuError,
    SfuEvent,
)
from mediaserver.signalling import protocol
from mediaserver.signalling.protocol import Message, ProtocolError
from mediaserver.signalling.video import VideoEffects

logger = logging.getLogger(__name__)


PAIR_WAIT = 2.0
"""Seconds the node of a match's second visitor waits for the first one's node
to confirm the pair; after that (that node died, or its visitor left) the
visitor is queued again."""


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
    limits: dict[str, protocol.TokenBucket] = field(default_factory=dict)
    queued_at: float = 0.0
    """Hub clock when the visitor last entered the queue (queue-wait metric)."""
    forwarded: tuple[str, str] | None = None
    """(partner's session, ours): the forwarding already set up to this visitor,
    so the partner's "media" news and our own settling connect it once."""
    address: str = ""
    """address_key of the client's address: per-address limits count under it."""
    offering: bool = False
    """An offer is being turned into a session (it counts toward the address's)."""

    def __post_init__(self) -> None:
        self.limits = {k: protocol.TokenBucket(*rate) for k, rate in protocol.RATES.items()}


class SignallingHub:
    """Args:
    sfu: the started SFU.
    matchmaker_factory: builds the matchmaker given the hub's on_match callback.
    identity_key: secret for hashing addresses into identities (shared by nodes).
    bus: the way to the other nodes; None: this is the only one.
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
        bus: Bus | None = None,
        max_sessions_per_address: int = 8,
    ) -> None:
        self.sfu = sfu
        self.bus = bus or LocalBus("local")
        self.node_id = self.bus.node_id
        self.media = MediaService(sfu, self.bus, effects)
        self.media.on_closed = self._on_media_closed
        self.media.on_cover_failed = self._on_cover_failed
        self.bus.on_node_down = self._on_node_down
        self.matchmaker = matchmaker_factory(self._on_match)
        self.visitors: dict[str, Visitor] = {}
        self._by_address: dict[str, set[Visitor]] = {}
        """address_key -> its connected visitors (per-address limits)."""
        self.max_sessions_per_address = max_sessions_per_address
        self._identity_key = identity_key or secrets.token_bytes(32)
        self._clock = clock
        self.mutual_reveal = mutual_reveal
        self._effects = effects  # name -> effect class (a new object per stream)
        self.store = store  # mediaserver.store.Store: profiles, chat history, reports
        self.stats: Counter[str] = Counter()
        self.video = VideoEffects(self.media, effects, mutual_reveal, self.stats, self._tell)
        self.draining = False
        """No new peers: start (and re-queueing) is refused with `draining`."""
        self.on_queue_wait: Callable[[float], None] | None = None
        """Called with the seconds from queued to matched, once per matched visitor."""
        self.on_request: Callable[[Message], Awaitable[Message | None]] | None = None
        """Bus requests the hub does not know (the app's: metrics of every worker)."""
        sfu.subscribe(self._on_sfu_event)

    async def start(self) -> None:
        await self.bus.start(self._on_bus, self.node_info)
        await self.matchmaker.start()

    async def close(self) -> None:
        await self.matchmaker.close()
        await self.bus.close()

    def node_info(self) -> NodeInfo:
        sfu = self.sfu
        return NodeInfo(
            id=self.node_id,
            announced_ip=sfu.config.announced_ip,
            udp_port=sfu.udp_port if sfu.udp is not None else 0,
            sessions=len(sfu.sessions),
            capacity=0 if self.draining else sfu.capacity,
        )

    # ---- connections ---------------------------------------------------------------

    def join(
        self, address: str, send: Callable[[Message], None], close: Callable[[int], None]
    ) -> Visitor:
        # keyed on the /64 for IPv6: rotating addresses inside it escapes nothing
        key = address_key(address)
        reputation = hmac.new(self._identity_key, key.encode(), hashlib.sha256).hexdigest()
        vid = peer_id(self.node_id)
        visitor = Visitor(vid, reputation, handle_for(vid), send, close, address=key)
        self.visitors[visitor.id] = visitor
        self._by_address.setdefault(key, set()).add(visitor)
        self.stats["connections"] += 1
        logger.info("visitor_connected", extra={"visitors": len(self.visitors)})
        return visitor

    async def leave(self, visitor: Visitor) -> None:
        """The WebSocket is gone (or the visitor said bye): end everything."""
        if visitor.state is State.GONE:
            return
        await self._end_pair(visitor, requeue_self=False, reason="left")
        try:
            await self.matchmaker.cancel(visitor.id)
            await self.matchmaker.forget(visitor.id)  # its skips and blocks end with it
        except Exception:  # the queue is unreachable: the visitor still leaves
            logger.exception("cancelling a ticket failed")
        visitor.state = State.GONE
        visitor.pending_pair = None
        self.visitors.pop(visitor.id, None)
        self._forget_address(visitor)
        await self._drop_session(visitor)
        logger.info("visitor_left", extra={"visitors": len(self.visitors)})

    def connections_from(self, address: str) -> int:
        """Visitors connected here from this address (IPv6: its /64)."""
        return len(self._by_address.get(address_key(address), ()))

    def _forget_address(self, visitor: Visitor) -> None:
        same = self._by_address.get(visitor.address)
        if same is not None:
            same.discard(visitor)
            if not same:
                del self._by_address[visitor.address]

    def _sessions_from(self, address: str) -> int:
        return sum(
            1 for v in self._by_address.get(address, ()) if v.session_id is not None or v.offering
        )

    def pairs(self) -> float:
        """Pairs with a visitor here: a pair split over two nodes counts half on each."""
        return sum(0.5 for v in self.visitors.values() if v.state is State.MATCHED)

    async def start_drain(self) -> None:
        """Refuse new peers; visitors waiting in the queue are taken out and told."""
        self.draining = True
        for v in list(self.visitors.values()):
            if v.state is State.QUEUED:
                await self.matchmaker.cancel(v.id)
                v.state = State.IDLE
                v.pending_pair = None
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
        now = self._clock()
        for v in list(self.visitors.values()):
            if v.pending_pair is not None and now - v.pending_pair[1] > PAIR_WAIT:
                # the other node never confirmed: its visitor left, or it died
                v.pending_pair = None
                if v.state is State.QUEUED:
                    self.stats["stale_matches"] += 1
                    await self._requeue(v)

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
            # accounts may start at 13 (--min-age) but random video chat is 18+
            if await asyncio.to_thread(self.store.age, profile) < 18:
                raise ProtocolError("age_required", "random video chat is for 18 and older", "hello")
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
        if v.session_id is not None or v.offering:
            raise ProtocolError("out_of_order", "one offer per connection", "offer")
        if self._sessions_from(v.address) >= self.max_sessions_per_address:
            # one address holding every slot would leave everyone else server_full
            raise ProtocolError(
                "too_many_sessions",
                f"{self.max_sessions_per_address} media sessions from your address already",
                "offer",
            )
        # a pair's media lives on its node; a waiting visitor's on this one if it has room
        node = v.pair_node if v.partner is not None and v.pair_node else self._place([])
        v.offering = True
        try:
            session, answer = await self.media.create_session(node, msg["sdp"], v.id)
        except SfuError as exc:
            code = "server_full" if isinstance(exc, ServerFull) else "offer_rejected"
            raise ProtocolError(code, str(exc), "offer") from None
        finally:
            v.offering = False
        if v.id not in self.visitors or v.session_id is not None:  # left (or offered) meanwhile
            await self._close_quietly(node, session)
            return
        v.session_id, v.media_node = session, node
        v.send(protocol.message("answer", sdp=answer))
        if v.effect is not None or (self.mutual_reveal and v.partner is not None):
            applied = await self._apply_video_effect(v)
            if v.effect is not None:  # the choice made before the offer is on now
                v.send(protocol.message("effect", name=v.effect, on=True, applied=applied))
        await self._settle_media(v)

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
            v.pending_pair = None
        else:
            raise ProtocolError("out_of_order", "not queued or matched", "stop")
        v.state = State.IDLE
        v.send(protocol.message("stopped"))

    async def _on_chat(self, v: Visitor, msg: Message) -> None:
        self._partner(v, "chat")
        await self._tell(v, "chat", text=msg["text"])
        self.stats["chat"] += 1
        # chat history only for signed-in users who opted in (the store checks);
        # the partner's node keeps its own visitor's copy
        if v.user_id is not None and v.conversation is not None and self.store is not None:
            _spawn(self._keep_chat(v.user_id, v.conversation, "me", msg["text"]))

    async def _keep_chat(self, user_id: str, conversation: str, sender: str, text: str) -> None:
        try:
            await asyncio.to_thread(
                self.store.store_chat_message, user_id, conversation, sender, text
            )
        except Exception:
            logger.exception("storing chat history failed")

    async def _on_typing(self, v: Visitor, msg: Message) -> None:
        self._partner(v, "typing")
        await self._tell(v, "typing")

    async def _on_report(self, v: Visitor, msg: Message) -> None:
        partner = self._partner(v, "report")
        # the partner's node counts it under its visitor's reputation, before re-queueing it
        await self._tell(v, "report", reputation=v.reputation)
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
        applied = await self._apply_video_effect(v)
        logger.info("effect", extra={"effect": name, "on": on, "applied": applied and on})
        v.send(protocol.message("effect", name=name, on=on, applied=applied and on))

    async def _on_reveal(self, v: Visitor, msg: Message) -> None:
        partner = self._partner(v, "reveal")
        if not self.mutual_reveal:
            raise ProtocolError("out_of_order", "mutual reveal is off on this server", "reveal")
        if v.revealed:
            return
        v.revealed = True
        await self._tell(v, "revealed")
        if partner.revealed and v.partner is partner:
            v.send(protocol.message("revealed", by="both"))
            await self._apply_video_effect(v)

    async def _apply_video_effect(self, v: Visitor) -> bool:
        """Put on v's video what it should carry now: hidden for mutual reveal
        (until both revealed in this match), else the effect it chose, else none.
        Returns whether the chosen effect is applied."""
        return await self.video.apply(v)

    async def _on_cover_failed(self, owner: str, session: str) -> None:
        await self.video.cover_failed(self.visitors.get(owner), session)

    async def _on_share_profile(self, v: Visitor, msg: Message) -> None:
        """Consent, given by this visitor alone: its partner gets its public card
        (handle, photo URL, bio, interests) and nothing more. A new match starts
        anonymous again."""
        partner = self._partner(v, "share_profile")
        if v.user_id is None or self.store is None:
            raise ProtocolError(
                "unauthorized", "sign in (hello with a token) to share a profile", "share_profile"
            )
        from mediaserver.store import StoreError

        try:
            # records the consent too
            card = await asyncio.to_thread(self.store.share_profile_card, v.user_id)
        except StoreError:
            raise ProtocolError("unauthorized", "your profile is gone", "share_profile") from None
        if v.partner is not partner:
            return  # the pair ended while the card was read: it goes to nobody
        await self._tell(v, "profile_card", card=card)
        v.send(protocol.message("profile_shared"))

    async def _on_bye(self, v: Visitor, msg: Message) -> None:
        await self.leave(v)
        v.close(1000)

    # ---- pairing -----------------------------------------------------------------------

    def _partner(self, v: Visitor, kind: str) -> Partner:
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
        v.pending_pair = None
        try:
            await self.matchmaker.enqueue(ticket)  # may call _on_match right away
        except MatchRefused as exc:
            v.state = State.IDLE
            raise ProtocolError("refused", f"not queued: {exc}", "start") from None
        except Exception:
            # the shared queue (coordinator, Redis) did not answer: say so, stay idle
            logger.exception("enqueue failed")
            v.state = State.IDLE
            raise ProtocolError(
                "unavailable", "the match queue is unavailable; try again", "start"
            ) from None
        self._announce_queued(v)

    def _announce_queued(self, v: Visitor) -> None:
        # "queued" always comes before "matched", even when the match was made
        # inside enqueue(), and never for a refused ticket
        if not v.queued_announced:
            v.queued_announced = True
            v.send(protocol.message("queued"))

    def _place(self, prefer: list[str | None]) -> str:
        """The node for a pair's (or a waiting visitor's) media: of the nodes in
        `prefer` that hold a session already (no new offer needed), the least
        loaded with room; else the least loaded node with room (this one on a tie);
        else this one."""
        nodes = self.bus.nodes()
        for pool in ([nodes[n] for n in prefer if n in nodes], list(nodes.values())):
            roomy = [n for n in pool if n.has_room]
            if roomy:
                best = min(roomy, key=lambda n: (n.load, n.id != self.node_id, n.id))
                if best.id != self.node_id:
                    # count it now: the registry shows it only at the next refresh,
                    # and a burst of offers should not all pick the same node
                    best.sessions += 1
                return best.id
        return self.node_id

    def _on_match(self, match: Match) -> None:
        mine_a = home_node(match.a) == self.node_id
        mine_b = home_node(match.b) == self.node_id
        a, b = self.visitors.get(match.a), self.visitors.get(match.b)
        shared = sorted(match.shared_interests)
        if mine_a and mine_b:
            if a is None or b is None or a.state is not State.QUEUED or b.state is not State.QUEUED:
                # one left the queue while the match was made (Redis is asynchronous):
                # the matchmaker took both tickets, so put the one still waiting back
                for v in (a, b):
                    if v is not None and v.state is State.QUEUED:
                        _spawn(self._requeue(v))
                self.stats["stale_matches"] += 1
                return
            node = self._place([a.media_node, b.media_node])
            self._pair_up(a, b.id, node, shared)
            self._pair_up(b, a.id, node, shared)
            self._log_match(shared)
            _spawn(self._settle_pair(a, b))
        elif mine_a:
            # the longer waiter's node places the pair and tells the other node
            if a is None or a.state is not State.QUEUED:
                _spawn(self._send_peer(match.b, match.a, "left", reason="left"))
                self.stats["stale_matches"] += 1
                return
            if self.bus.only_known_nodes_are_live and home_node(match.b) not in self.bus.nodes():
                # no live (sealed) node holds b: a match forged on the match channel,
                # or b's node just died. Nothing goes b's way; a queues again.
                self.stats["stale_matches"] += 1
                _spawn(self._requeue(a))
                return
            node = self._place([a.media_node])
            self._pair_up(a, match.b, node, shared)
            self._log_match(shared)
            _spawn(self._confirm_pair(a, match.b, node, shared))
        elif mine_b and b is not None and b.state is State.QUEUED:
            b.pending_pair = (match.a, self._clock())  # a's node confirms it

    def _log_match(self, shared: list[str]) -> None:
        self.stats["matches"] += 1
        logger.info("match_made", extra={"shared_interests": len(shared)})

    async def _confirm_pair(self, a: Visitor, b: str, node: str, shared: list[str]) -> None:
        await self._send_peer(b, a.id, "pair", node=node, shared=shared)
        await self._settle_pair(a)

    async def _settle_pair(self, *visitors: Visitor) -> None:
        for v in visitors:
            if self.mutual_reveal and v.partner is not None:
                await self._apply_video_effect(v)  # every new match starts hidden
        for v in visitors:
            await self._settle_media(v)

    def _pair_up(self, me: Visitor, other: str, node: str, shared: list[str]) -> None:
        me.partner = Partner(other, handle_for(other), home_node(other))
        me.pending_pair = None
        me.pair_node = node
        me.conversation = secrets.token_hex(8)
        self._announce_queued(me)
        me.state = State.MATCHED
        me.revealed = False
        extra = {"hidden": True} if self.mutual_reveal else {}
        me.send(
            protocol.message("matched", partner=me.partner.handle, shared_interests=shared, **extra)
        )
        if self.on_queue_wait is not None:
            self.on_queue_wait(max(0.0, self._clock() - me.queued_at))

    async def _settle_media(self, me: Visitor) -> None:
        """Bring me's media to its pair's node: announce its session there to the
        partner, or, when its session is on another node, ask for a new offer."""
        node = me.pair_node
        if me.partner is None or node is None or me.session_id is None:
            return  # the offer (or a new one) is still to come
        if me.media_node != node:
            await self._drop_session(me)
            self.stats["reoffers"] += 1
            me.send(protocol.message("reoffer"))  # a fresh RTCPeerConnection offers
            return
        await self._tell(me, "media", session=me.session_id)
        await self._connect_if_ready(me)

    async def _connect_if_ready(self, me: Visitor) -> None:
        """Forward the partner's media to me (each side connects its own direction)."""
        p = me.partner
        if p is None or p.session is None or me.session_id is None or me.media_node is None:
            return
        if me.media_node != me.pair_node:
            return
        link = (p.session, me.session_id)
        if me.forwarded == link:
            return
        try:
            await self.media.connect(me.media_node, p.session, me.session_id)
        except SfuError:
            logger.warning("media session vanished before connect")
            return
        me.forwarded = link

    async def _skip(self, v: Visitor) -> None:
        partner = v.partner
        if partner is not None:
            await self.matchmaker.record_skip(v.id, partner.id)
        await self._end_pair(v, requeue_self=True, reason="next")

    async def _block(self, v: Visitor, partner: Partner) -> None:
        await self.matchmaker.record_block(v.id, partner.id)
        await self._end_pair(v, requeue_self=True, reason="next")

    async def _end_pair(self, v: Visitor, *, requeue_self: bool, reason: str) -> None:
        """End v's pair for both. The partner is told and re-queued; v is
        re-queued when it pressed Next (requeue_self)."""
        partner = v.partner
        if partner is None:
            return
        await self._unpair(v)
        v.state = State.IDLE
        logger.info("pair_ended", extra={"reason": reason})
        await self._send_peer(partner.id, v.id, "left", reason=reason)
        if requeue_self:
            await self._requeue(v)

    async def _unpair(self, v: Visitor) -> None:
        """Forget v's partner and stop forwarding its media to v."""
        p = v.partner
        v.partner = None
        v.pair_node = None
        v.forwarded = None
        if p is not None and p.session and v.session_id and v.media_node:
            try:
                await self.media.disconnect(v.media_node, p.session, v.session_id)
            except SfuError:
                pass  # its node is gone: nothing is forwarded any more
        if p is not None:
            await self.video.pair_ended(v)

    async def _partner_gone(self, v: Visitor, reason: str) -> None:
        await self._unpair(v)
        v.state = State.IDLE
        v.send(protocol.message("partner_left", reason=reason))
        await self._requeue(v)

    async def _requeue(self, v: Visitor) -> None:
        try:
            await self._enqueue(v)
        except ProtocolError as exc:
            v.send(protocol.error(exc.code, exc.message, exc.ref))

    async def _drop_session(self, v: Visitor) -> None:
        if v.session_id is not None and v.media_node is not None:
            node, session = v.media_node, v.session_id
            v.session_id = v.media_node = None
            await self._close_quietly(node, session)

    async def _close_quietly(self, node: str, session: str) -> None:
        try:
            await self.media.close_session(node, session)
        except SfuError:
            pass  # its node is gone, and the session with it

    # ---- between partners (maybe on two nodes) -----------------------------------------

    async def _tell(self, v: Visitor, event: str, **fields: Any) -> None:
        if v.partner is not None:
            await self._send_peer(v.partner.id, v.id, event, **fields)

    async def _send_peer(self, to: str, by: str, event: str, **fields: Any) -> None:
        await self.bus.send(home_node(to), {"t": "peer", "to": to, "by": by, "ev": event, **fields})

    async def _on_bus(self, msg: BusMessage) -> BusMessage | None:
        t = msg.get("t")
        if logger.isEnabledFor(logging.DEBUG):  # one dict per bus message otherwise
            logger.debug(
                "bus_message", extra={"t": t, "ev": msg.get("ev"), "from_node": msg.get("from")}
            )
        if t == "peer":
            await self._on_peer(msg)
        elif t == "media_closed":
            await self._on_media_closed(str(msg["peer"]), str(msg["session"]), str(msg["reason"]))
        elif t == "cover_failed":
            await self._on_cover_failed(str(msg["peer"]), str(msg["session"]))
        elif t in ("create", "connect", "disconnect", "close", "effect"):
            return self.media.handle(msg)
        elif self.on_request is not None:
            return await self.on_request(msg)
        return None

    async def _on_peer(self, msg: BusMessage) -> None:
        me = self.visitors.get(str(msg.get("to")))
        by, event = str(msg.get("by")), msg.get("ev")
        if event == "pair":
            if me is None or me.state is not State.QUEUED:  # it left, or is paired already
                await self._send_peer(by, str(msg.get("to")), "left", reason="left")
                return
            await self.matchmaker.cancel(me.id)  # in case it queued again meanwhile
            self._pair_up(me, by, str(msg["node"]), [str(s) for s in msg.get("shared", ())])
            await self._settle_pair(me)
            return
        if me is None:
            return
        if event == "left" and me.pending_pair is not None and me.pending_pair[0] == by:
            me.pending_pair = None  # the match was stale: wait for another
            if me.state is State.QUEUED:
                self.stats["stale_matches"] += 1
                await self._requeue(me)
            return
        p = me.partner
        if p is None or p.id != by:
            return  # news of an earlier pair
        if event == "media":
            p.session = str(msg["session"])
            await self._connect_if_ready(me)
        elif event == "chat":
            me.send(protocol.message("chat", text=msg["text"]))
            if me.user_id is not None and me.conversation is not None and self.store is not None:
                _spawn(self._keep_chat(me.user_id, me.conversation, "stranger", str(msg["text"])))
        elif event == "typing":
            me.send(protocol.message("typing"))
        elif event == "video_withheld":
            me.send(protocol.video_withheld("partner"))
        elif event == "revealed":
            p.revealed = True
            me.send(protocol.message("revealed", by="partner"))
            if me.revealed:
                me.send(protocol.message("revealed", by="both"))
                await self._apply_video_effect(me)
        elif event == "profile_card":
            me.send(protocol.message("profile_card", card=msg["card"]))
        elif event == "report":
            await self.matchmaker.record_report(str(msg["reputation"]), me.reputation)
        elif event == "left":
            await self._partner_gone(me, str(msg.get("reason", "left")))

    # ---- media and node events ---------------------------------------------------------

    def _on_sfu_event(self, event: SfuEvent) -> None:
        if isinstance(event, SessionConnected):
            logger.info("session_connected")
        elif isinstance(event, SessionClosed):
            logger.info("session_closed", extra={"reason": event.reason.split(":")[0]})

    async def _on_media_closed(self, owner: str, session: str, reason: str) -> None:
        """The visitor's media died: end its pair as if it left; it may offer again."""
        v = self.visitors.get(owner)
        if v is None or v.state is State.GONE or v.session_id != session:
            return
        v.session_id = v.media_node = None
        self.stats[f"media_closed:{reason.split(':')[0]}"] += 1
        if v.partner is not None:
            logger.info("pair_ended", extra={"reason": "media_closed"})
            partner = v.partner
            await self._unpair(v)
            await self._send_peer(partner.id, v.id, "left", reason="left")
        if v.state is State.QUEUED:
            await self.matchmaker.cancel(v.id)
        v.state = State.IDLE
        v.pending_pair = None
        v.send(protocol.error("media_closed", f"media connection ended ({reason})"))
        v.send(protocol.message("stopped"))

    async def _on_node_down(self, node: str) -> None:
        """Another node died: its sessions' owners here, and the partners of its
        visitors, are told and queued again; its tickets leave the queue."""
        closed = self.media.close_owned_by(node)
        for v in list(self.visitors.values()):
            if v.media_node == node:
                # the pair's media node is gone: a new offer goes to a live one
                v.session_id = v.media_node = None
                partner = v.partner
                if partner is not None:
                    await self._unpair(v)
                    await self._send_peer(partner.id, v.id, "left", reason="left")
                    v.state = State.IDLE
                    v.send(protocol.message("partner_left", reason="left"))
                v.send(protocol.message("reoffer"))
                if v.state is State.IDLE and partner is not None:
                    await self._requeue(v)
            elif v.partner is not None and v.partner.node == node:
                await self._partner_gone(v, "left")
            elif v.pending_pair is not None and home_node(v.pending_pair[0]) == node:
                v.pending_pair = None
                if v.state is State.QUEUED:
                    await self._requeue(v)
        cancelled = await self.matchmaker.cancel_node(node)
        logger.warning(
            "node_down_handled",
            extra={"node": node, "sessions_closed": closed, "tickets_cancelled": cancelled},
        )


def _spawn(coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_tasks: set[Any] = set()
