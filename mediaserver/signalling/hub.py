"""The signalling hub: visitors, their state, the match queue and the SFU, joined.

The WebSocket shell (ws.py) turns frames into `receive()` calls and sends what a
visitor's `send` callback is given; the hub holds no I/O of its own. It is the
visitor state machine (hello, start, offer, next, stop, bye) and two dispatch
tables, one for visitors' messages and one for peer events; the rest lives in:

- pairing.py: the queue, the pair's media, ending a pair, node-down recovery;
- conversation.py: chat, typing, report, block, share_profile;
- video.py: effects and mutual reveal;
- direct.py and calls.py: messages and calls between connections (signed-in
  pages), which reach an account's pages on every node and never touch random pairs.

A partner may live on another node (several workers or machines): everything
one partner does to the other goes as a peer event (events.py) over the bus
(inline when both are here), and each side's node handles its own visitor: its
messages, its media session and its direction of forwarding. Partners only
ever learn each other's random handle.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mediaserver.client_address import address_key
from mediaserver.matchmaker import Match, Matchmaker
from mediaserver.node.bus import Bus, LocalBus, NodeInfo, peer_id
from mediaserver.node.bus import Message as BusMessage
from mediaserver.node.media import MediaService
from mediaserver.sfu.server import (
    RestartRejected,
    ServerFull,
    SessionClosed,
    SessionConnected,
    Sfu,
    SfuError,
    SfuEvent,
)
from mediaserver.signalling import direct, events, protocol
from mediaserver.signalling.bans import Bans
from mediaserver.signalling.calls import Calls
from mediaserver.signalling.conversation import Conversation
from mediaserver.signalling.pairing import Pairing
from mediaserver.signalling.ports import MediaPort, StorePort
from mediaserver.signalling.protocol import Message, ProtocolError
from mediaserver.signalling.turn_credentials import TurnCredentials
from mediaserver.signalling.video import VideoEffects
from mediaserver.signalling.visitors import State, Visitor, handle_for
from mediaserver.store import Profile, StoreError
from mediaserver.store.moderation import Ban

logger = logging.getLogger(__name__)

MessageHandler = Callable[[Visitor, Message], Awaitable[None]]
"""Handles one validated client message of a visitor past hello."""

MEDIA_REQUESTS = frozenset({"create", "connect", "disconnect", "close", "effect"})
"""Bus requests the media service serves (mediaserver.node.media)."""


class SignallingHub:
    """Args:
    media: media sessions on any node (MediaService, or a fake in tests).
    matchmaker_factory: builds the matchmaker given the hub's on_match callback.
    identity_key: secret for hashing addresses into identities (shared by nodes).
    clock: seconds, for rate limits and the queue's waits.
    bus: the way to the other nodes (media's too).
    node_info: what this node announces (its capacity 0 while draining).
    mutual_reveal: every match starts with both faces covered.
    effects: name -> effect class; None: the effects are not installed.
    store: profiles, chat history and reports; None: accounts are off.
    max_sessions_per_address: media sessions one address may hold here.
    turn: issues TURN credentials for each welcome (`ice_servers`); None: no TURN.
    wall_clock: Unix time, for the credentials' expiry (coturn checks it).
    """

    def __init__(
        self,
        media: MediaPort,
        matchmaker_factory: Callable[[Callable[[Match], None]], Matchmaker],
        identity_key: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        bus: Bus,
        node_info: Callable[[], NodeInfo] | None = None,
        mutual_reveal: bool = False,
        effects: Mapping[str, Callable[[], Any]] | None = None,
        store: StorePort | None = None,
        max_sessions_per_address: int = 8,
        turn: TurnCredentials | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.turn = turn
        self._wall_clock = wall_clock
        self.node_id = bus.node_id
        self.media = media
        self._node_info = node_info or (lambda: NodeInfo(self.node_id))
        self.visitors: dict[str, Visitor] = {}
        self._arrived = asyncio.Event()  # a visitor came: tick() has work again
        self._by_address: dict[str, set[Visitor]] = {}
        """address_key -> its connected visitors (per-address limits)."""
        self.max_sessions_per_address = max_sessions_per_address
        self._identity_key = identity_key or secrets.token_bytes(32)
        self._clock = clock
        self.mutual_reveal = mutual_reveal
        self.store = store
        self.stats: Counter[str] = Counter()
        self.video = VideoEffects(media, effects, mutual_reveal, self.stats, self._tell)
        self.pairing = Pairing(
            bus, media, self.visitors, self.stats, clock, mutual_reveal, self.video
        )
        self.conversation = Conversation(self.pairing, store, self.stats)
        self.direct = direct.DirectMessages(bus, self.visitors, store, self.stats)
        self.calls = Calls(bus, self.visitors, self.pairing, store, clock, self.stats,
                           mutual_reveal)
        self.matchmaker = matchmaker_factory(self.pairing.on_match)
        self.pairing.matchmaker = self.matchmaker
        self.bans = Bans(store, self.matchmaker, self._identity_key, self.stats)
        self.pairing.ban_check = self.bans.check
        self.on_request: Callable[[Message], Awaitable[Message | None]] | None = None
        """Bus requests the hub does not know (the app's: metrics of every worker)."""
        media.on_closed = self.pairing.media_closed
        media.on_cover_failed = self._on_cover_failed
        bus.on_node_down = self.pairing.node_down
        # a visitor's message type -> its handler; hello and bye come in any state
        self.handlers: dict[str, MessageHandler] = {
            "hello": self._on_hello,
            "start": self._on_start,
            "offer": self._on_offer,
            "next": self._on_next,
            "stop": self._on_stop,
            "bye": self._on_bye,
            "chat": self.conversation.on_chat,
            "typing": self.conversation.on_typing,
            "report": self.conversation.on_report,
            "block": self.conversation.on_block,
            "share_profile": self.conversation.on_share_profile,
            "effect": self.video.on_effect,
            "reveal": self.video.on_reveal,
            "direct": self.direct.on_direct,
            "call": self.calls.on_call,
            "call_answer": self.calls.on_answer,
            "call_decline": self.calls.on_decline,
            "call_hangup": self.calls.on_hangup,
        }
        assert self.handlers.keys() == protocol.CLIENT_MESSAGES.keys()

    @classmethod
    def with_sfu(
        cls,
        sfu: Sfu,
        matchmaker_factory: Callable[[Callable[[Match], None]], Matchmaker],
        identity_key: bytes | None = None,
        *,
        bus: Bus | None = None,
        effects: Mapping[str, Callable[[], Any]] | None = None,
        store: StorePort | None = None,
        mutual_reveal: bool = False,
        max_sessions_per_address: int = 8,
        turn: TurnCredentials | None = None,
    ) -> SignallingHub:
        """The hub of a node serving media with `sfu` (bus None: the only node)."""
        bus = bus or LocalBus("local")

        def node_info() -> NodeInfo:
            return NodeInfo(
                id=bus.node_id,
                announced_ip=sfu.config.announced_ip,
                udp_port=sfu.udp_port if sfu.udp is not None else 0,
                sessions=len(sfu.sessions),
                capacity=sfu.capacity,
            )

        hub = cls(
            MediaService(sfu, bus, effects),
            matchmaker_factory,
            identity_key,
            bus=bus,
            node_info=node_info,
            mutual_reveal=mutual_reveal,
            effects=effects,
            store=store,
            max_sessions_per_address=max_sessions_per_address,
            turn=turn,
        )
        sfu.subscribe(_log_sfu_event)
        return hub

    async def start(self) -> None:
        await self.bus.start(self._on_bus, self.node_info)
        await self.matchmaker.start()

    async def close(self) -> None:
        await self.matchmaker.close()
        await self.bus.close()

    def node_info(self) -> NodeInfo:
        """What this node announces; no room for new pairs while draining."""
        info = self._node_info()
        if self.draining:
            info.capacity = 0
        return info

    @property
    def draining(self) -> bool:
        """No new peers: start (and re-queueing) is refused with `draining`."""
        return self.pairing.draining

    @property
    def on_queue_wait(self) -> Callable[[float], None] | None:
        """Called with the seconds from queued to matched, once per matched visitor."""
        return self.pairing.on_queue_wait

    @on_queue_wait.setter
    def on_queue_wait(self, callback: Callable[[float], None] | None) -> None:
        self.pairing.on_queue_wait = callback

    # ---- connections ---------------------------------------------------------------

    def join(
        self, address: str, send: Callable[[Message], None], close: Callable[[int], None]
    ) -> Visitor:
        """A new connection from `address`; `send` and `close` reach its client."""
        # keyed on the /64 for IPv6: rotating addresses inside it escapes nothing
        key = address_key(address)
        reputation = hmac.new(self._identity_key, key.encode(), hashlib.sha256).hexdigest()
        vid = peer_id(self.node_id)
        visitor = Visitor(vid, reputation, handle_for(vid), send, close, address=key)
        self.visitors[visitor.id] = visitor
        self._arrived.set()
        self._by_address.setdefault(key, set()).add(visitor)
        self.stats["connections"] += 1
        logger.info("visitor_connected", extra={"visitors": len(self.visitors)})
        return visitor

    async def leave(self, visitor: Visitor) -> None:
        """The WebSocket is gone (or the visitor said bye): end everything."""
        if visitor.state is State.GONE:
            return
        await self.calls.left(visitor)
        await self.pairing.end_pair(visitor, requeue_self=False, reason="left")
        try:
            await self.matchmaker.cancel(visitor.id)
            await self.matchmaker.forget(visitor.id)  # its skips and blocks end with it
        except Exception:  # the queue is unreachable: the visitor still leaves
            logger.exception("cancelling a ticket failed")
        visitor.state = State.GONE
        visitor.pending_pair = None
        self.visitors.pop(visitor.id, None)
        self._forget_address(visitor)
        await self.pairing.drop_session(visitor)
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

    async def spread_bans(self, bans: list[Ban]) -> None:
        """A moderator's decision touched these bans: share where they stand with
        every node (the REST API calls it)."""
        await self.bans.spread(bans)

    def pairs(self) -> float:
        """Pairs with a visitor here: a pair split over two nodes counts half on each."""
        return sum(0.5 for v in self.visitors.values() if v.state is State.MATCHED)

    async def start_drain(self) -> None:
        """Refuse new peers; visitors waiting in the queue are taken out and told."""
        self.pairing.draining = True
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
            visitor.send(protocol.error(exc.code, exc.message, exc.ref, **exc.fields))
            if exc.code == "too_large":
                visitor.close(1009)

    def has_timed_work(self) -> bool:
        """Whether tick() has anything to serve: every queue wait, pending match and
        call belongs to a visitor of this node (rings and incoming calls may
        outlive theirs). An idle node's tick loop waits in until_timed_work()."""
        return bool(self.visitors or self.calls.rings or self.calls.incoming)

    async def until_timed_work(self) -> None:
        """Return once has_timed_work() (at once if it has)."""
        while not self.has_timed_work():
            self._arrived.clear()
            await self._arrived.wait()

    async def tick(self) -> None:
        """Every ~0.25 s: the queue's own timers, then stale cross-node matches."""
        await self.matchmaker.tick()
        await self.pairing.requeue_stale(self._clock())
        await self.calls.tick(self._clock())

    # ---- the visitor state machine -----------------------------------------------------

    async def _dispatch(self, v: Visitor, msg: Message) -> None:
        kind = msg["type"]
        handler = self.handlers[kind]
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
            store, profile = await self._sign_in(msg["token"])
            # accounts may start at 13 (--min-age) but random video chat is 18+
            if await asyncio.to_thread(store.age, profile) < 18:
                raise ProtocolError("age_required", "random video chat is for 18 and older", "hello")
            if not profile.restricted:  # restricted: joins as an anonymous visitor
                v.user_id = profile.id
                # the profile's interests feed the match queue unless hello names
                # others, or the owner objected to matching by interests
                if "matching_by_interests" not in profile.objections:
                    v.interests = v.interests or frozenset(profile.interests)
                v.language = v.language or profile.language
        await self.bans.check(v, "hello")
        v.state = State.IDLE
        ice_servers = None
        if self.turn is not None:
            # a fresh random username each time: a credential never names the visitor
            ice_servers = self.turn.issue(self._wall_clock())
            self.stats["welcomes_with_turn"] += 1
        v.send(protocol.welcome(v.handle, ice_servers))

    async def _sign_in(self, token: str) -> tuple[StorePort, Profile]:
        store = self.store
        if store is None:
            raise ProtocolError("unauthorized", "profiles are off on this server", "hello")
        try:
            return store, await asyncio.to_thread(store.authenticate, token)
        except StoreError:
            raise ProtocolError("unauthorized", "unknown or expired token", "hello") from None

    async def _on_start(self, v: Visitor, msg: Message) -> None:
        if v.state is not State.IDLE:
            raise ProtocolError("out_of_order", f"already {v.state.value}", "start")
        if v.call is not None:
            raise ProtocolError("out_of_order", "hang up the call first", "start")
        await self.bans.check(v, "start")  # a ban decided since hello
        await self.pairing.enqueue(v)

    async def _on_offer(self, v: Visitor, msg: Message) -> None:
        if v.offering:
            raise ProtocolError("out_of_order", "the last offer is still being answered", "offer")
        if v.session_id is not None and v.media_node is not None:
            await self._restart_ice(v, v.media_node, v.session_id, msg["sdp"])
            return
        if v.state not in (State.QUEUED, State.MATCHED):
            raise ProtocolError("out_of_order", "send start before offer", "offer")
        if self._sessions_from(v.address) >= self.max_sessions_per_address:
            # one address holding every slot would leave everyone else server_full
            raise ProtocolError(
                "too_many_sessions",
                f"{self.max_sessions_per_address} media sessions from your address already",
                "offer",
            )
        # a pair's media lives on its node; a waiting visitor's on this one if it has room
        node = v.pair_node if v.partner is not None and v.pair_node else self.pairing.place([])
        v.offering = True
        try:
            session, answer = await self.media.create_session(node, msg["sdp"], v.id)
        except SfuError as exc:
            code = "server_full" if isinstance(exc, ServerFull) else "offer_rejected"
            raise ProtocolError(code, str(exc), "offer") from None
        finally:
            v.offering = False
        if v.id not in self.visitors or v.session_id is not None:  # left (or offered) meanwhile
            await self.pairing.close_quietly(node, session)
            return
        v.session_id, v.media_node = session, node
        v.send(protocol.message("answer", sdp=answer))
        if v.effect is not None or (self.mutual_reveal and v.partner is not None):
            applied = await self.video.apply(v)
            if v.effect is not None:  # the choice made before the offer is on now
                v.send(protocol.message("effect", name=v.effect, on=True, applied=applied))
        await self.pairing.settle_media(v)

    async def _restart_ice(self, v: Visitor, node: str, session: str, sdp: str) -> None:
        """A second offer on the visitor's session: an ICE restart (its network
        changed). Answered on the same session: the pair and the partner see nothing
        but a short freeze."""
        v.offering = True
        try:
            answer = await self.media.restart_ice(node, session, sdp)
        except RestartRejected as exc:
            raise ProtocolError("restart_rejected", str(exc), "offer") from None
        except SfuError as exc:  # the session closed meanwhile, or its node is gone
            raise ProtocolError("offer_rejected", str(exc), "offer") from None
        finally:
            v.offering = False
        if v.session_id != session:  # closed (media_closed was sent) meanwhile
            return
        self.stats["ice_restarts"] += 1
        v.send(protocol.message("answer", sdp=answer))

    async def _on_next(self, v: Visitor, msg: Message) -> None:
        if v.call is not None:
            raise ProtocolError("out_of_order", "hang up to end a call", "next")
        if v.state is State.MATCHED:
            await self.pairing.skip(v)
        elif v.state is not State.QUEUED:
            raise ProtocolError("out_of_order", "press start first", "next")

    async def _on_stop(self, v: Visitor, msg: Message) -> None:
        if v.state is State.MATCHED:
            await self.pairing.end_pair(v, requeue_self=False, reason="left")
        elif v.state is State.QUEUED:
            await self.matchmaker.cancel(v.id)
            v.pending_pair = None
        else:
            raise ProtocolError("out_of_order", "not queued or matched", "stop")
        v.state = State.IDLE
        v.send(protocol.message("stopped"))

    async def _on_bye(self, v: Visitor, msg: Message) -> None:
        await self.leave(v)
        v.close(1000)

    # ---- the bus: peer events and media requests ---------------------------------------

    async def _tell(self, v: Visitor, event: events.PeerEvent) -> None:
        await self.pairing.tell(v, event)

    async def _on_cover_failed(self, owner: str, session: str) -> None:
        await self.video.cover_failed(self.visitors.get(owner), session)

    async def _on_bus(self, msg: BusMessage) -> BusMessage | None:
        t = msg.get("t")
        if logger.isEnabledFor(logging.DEBUG):  # one dict per bus message otherwise
            logger.debug(
                "bus_message", extra={"t": t, "ev": msg.get("ev"), "from_node": msg.get("from")}
            )
        if direct.news_kind(msg) is not None:  # before any pair: never a partner's
            await self._on_user_news(msg)
        elif t == events.BUS_TYPE:
            try:
                peer = events.decode(msg)
            except ValueError as exc:
                self.stats["bad_peer_event"] += 1
                logger.warning("bad_peer_event", extra={"error": str(exc)})
                return None
            await self._on_peer(peer)
        elif t == "media_closed":
            await self.pairing.media_closed(
                str(msg["peer"]), str(msg["session"]), str(msg["reason"])
            )
        elif t == "cover_failed":
            await self._on_cover_failed(str(msg["peer"]), str(msg["session"]))
        elif t in MEDIA_REQUESTS:
            return self.media.handle(msg)
        elif t == "still":  # waits for a keyframe: not one of the immediate requests
            return await self.media.handle_still(msg)
        elif self.on_request is not None:
            return await self.on_request(msg)
        return None

    async def _on_user_news(self, msg: BusMessage) -> None:
        """`user.` news: a direct message for an account's pages, or a call's control."""
        try:
            if direct.news_kind(msg) == "direct":
                self.direct.deliver(msg)
            else:
                await self.calls.on_bus(msg)
        except ValueError as exc:
            self.stats["bad_user_message"] += 1
            logger.warning("bad_user_message", extra={"error": str(exc)})

    async def _on_peer(self, peer: events.PeerMessage) -> None:
        """One peer event for a visitor of this node, to its feature's handler."""
        event = peer.event
        if isinstance(event, events.Pair):
            await self.pairing.on_pair(peer.to, peer.by, event)
            return
        me = self.visitors.get(peer.to)
        if me is None:
            return
        if isinstance(event, events.Left):
            await self.pairing.on_left(me, peer.by, event)
            return
        if me.partner is None or me.partner.id != peer.by:
            return  # news of an earlier pair
        match event:
            case events.MediaReady():
                await self.pairing.on_partner_media(me, event)
            case events.Chat():
                self.conversation.on_partner_chat(me, event)
            case events.Typing():
                self.conversation.on_partner_typing(me)
            case events.ProfileCard():
                self.conversation.on_partner_card(me, event)
            case events.Report():
                await self.conversation.on_reported(me, event)
            case events.VideoWithheld():
                self.video.on_partner_withheld(me)
            case events.Revealed():
                await self.video.on_partner_revealed(me)


def _log_sfu_event(event: SfuEvent) -> None:
    if isinstance(event, SessionConnected):
        logger.info("session_connected")
    elif isinstance(event, SessionClosed):
        logger.info("session_closed", extra={"reason": event.reason.split(":")[0]})
