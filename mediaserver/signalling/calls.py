"""Calls between connections: ring every free page of the callee (on any node), answer,
decline, hang up, and a ring that times out leaves a missed-call entry. No I/O of its
own: the bus carries the control (`user.` news, see direct.py), the hub's clock and
tick time the rings.

The caller's node owns a call while it rings (`Ring`). Each node with pages of the
callee tells the free ones (`call_incoming`) and acks "ringing", "busy" (it has pages,
none free) or "absent"; once every node acked without one ringing, the call ends at
once (busy or unavailable). The first page to answer wins; the caller's node pairs the
two pages exactly as a random match is paired (pairing.py: the same offer/answer, the
same router, effects and mutual reveal), except that a call never leads back to the
random queue and its chat is not kept as random-chat history.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mediaserver.node.bus import Bus, home_node
from mediaserver.signalling import events, protocol
from mediaserver.signalling.direct import (
    news_kind,
    pages_of,
    signed_in,
    store_call,
    text_of,
    to_every_node,
    user_news,
)
from mediaserver.signalling.pairing import Pairing, spawn
from mediaserver.signalling.ports import StorePort
from mediaserver.signalling.protocol import Message, ProtocolError
from mediaserver.signalling.visitors import Partner, State, Visitor, busy, handle_for

logger = logging.getLogger("mediaserver.signalling.hub")

RING_SECONDS = 30.0
"""A call nobody answers ends after this long (a missed call)."""
INCOMING_GRACE = 10.0
"""A callee node forgets a ring this long after its deadline if no end was heard
(the caller's node died)."""
CALL_ENDINGS = ("declined", "no_answer", "busy", "unavailable", "cancelled")
"""How a ring ends without an answer (the calls metric's outcomes beside answered)."""
MISSED = frozenset({"no_answer", "busy", "unavailable", "cancelled"})
"""Endings of a ring that leave a missed-call entry for the callee."""


@dataclass
class Ring:
    """A call ringing out, kept by the caller's node."""

    call_id: str
    conversation_id: str
    caller: str
    """The calling page's peer id."""
    caller_handle: str
    callee_user: str
    deadline: float
    waiting: set[str] = field(default_factory=set)
    """Nodes that have not acked yet."""
    ringing: bool = False
    busy: bool = False


@dataclass
class Incoming:
    """A call ringing on this node's pages of the callee."""

    caller: str
    conversation_id: str
    callee_user: str
    deadline: float
    pages: set[str] = field(default_factory=set)


class Calls:
    """Args:
    bus: the way to every node.
    visitors: the hub's visitors (shared, by id).
    pairing: pairs the two pages once answered (and ends the pair on hang-up).
    store: the accounts store (None: accounts are off).
    clock: the hub's clock (seconds).
    stats: the hub's counters.
    mutual_reveal: a call starts covered too.
    """

    def __init__(
        self, bus: Bus, visitors: dict[str, Visitor], pairing: Pairing,
        store: StorePort | None,
        clock: Callable[[], float], stats: Counter[str], mutual_reveal: bool,
    ) -> None:
        self.bus = bus
        self.visitors = visitors
        self.pairing = pairing
        self.store = store
        self._clock = clock
        self.stats = stats
        self.mutual_reveal = mutual_reveal
        self.rings: dict[str, Ring] = {}
        self.incoming: dict[str, Incoming] = {}

    # ---- the page's messages ----------------------------------------------------------

    async def on_call(self, v: Visitor, msg: Message) -> None:
        user_id = signed_in(v, "call")
        if self.store is None:
            raise ProtocolError("unauthorized", "profiles are off on this server", "call")
        if busy(v):
            raise ProtocolError("busy", "end the chat or call you are in first", "call")
        callee, caller_handle = await store_call(
            "call", self.store.call_peer, user_id, msg["conversation_id"])
        if busy(v) or v.state is State.GONE:  # it started something, or left, meanwhile
            raise ProtocolError("busy", "end the chat or call you are in first", "call")
        ring = Ring(secrets.token_hex(12), msg["conversation_id"], v.id, caller_handle,
                    callee, self._clock() + RING_SECONDS)
        self.rings[ring.call_id] = ring
        v.call = ring.call_id
        self.stats["calls"] += 1
        v.send(protocol.message("call_ringing", call_id=ring.call_id,
                                conversation_id=ring.conversation_id))
        ring.waiting = set(self.bus.nodes()) or {self.bus.node_id}
        for node in sorted(ring.waiting):
            await self.bus.send(node, self._user(
                "call_incoming", call_id=ring.call_id, user=callee, caller=v.id,
                conversation_id=ring.conversation_id, caller_handle=caller_handle))

    async def on_answer(self, v: Visitor, msg: Message) -> None:
        call_id = msg["call_id"]
        incoming = self._incoming_for(v, call_id, "call_answer")
        if busy(v):
            raise ProtocolError("busy", "end the chat or call you are in first", "call_answer")
        v.call = call_id  # held for this call until the caller's node pairs us
        await self.bus.send(home_node(incoming.caller), self._user(
            "call_answer", call_id=call_id, peer=v.id))

    async def on_decline(self, v: Visitor, msg: Message) -> None:
        call_id = msg["call_id"]
        incoming = self._incoming_for(v, call_id, "call_decline")
        await self.bus.send(home_node(incoming.caller), self._user(
            "call_decline", call_id=call_id, peer=v.id))

    async def on_hangup(self, v: Visitor, msg: Message) -> None:
        call_id = msg["call_id"]
        if v.call != call_id:
            raise ProtocolError("not_found", "no such call", "call_hangup")
        if v.partner is not None:  # connected: ends for both, as leaving a pair does
            await self.pairing.end_pair(v, requeue_self=False, reason="hangup")
            return
        ring = self.rings.get(call_id)
        if ring is not None and ring.caller == v.id:
            await self._end_ring(ring, "cancelled")
        else:  # answered, not yet connected: the caller's node hears we are gone
            self.pairing.call_over(v, "hangup")

    async def left(self, v: Visitor) -> None:
        """The page is leaving: a call it is ringing out ends (a missed call)."""
        ring = self.rings.get(v.call or "")
        if ring is not None and ring.caller == v.id:
            await self._end_ring(ring, "cancelled")

    async def tick(self, now: float) -> None:
        """Rings past their deadline end as missed; stale incoming records go."""
        for ring in [r for r in self.rings.values() if r.deadline <= now]:
            await self._end_ring(ring, "no_answer")
        for call_id, incoming in list(self.incoming.items()):
            if incoming.deadline + INCOMING_GRACE <= now:
                self._close_incoming(call_id, "no_answer")

    # ---- the bus ----------------------------------------------------------------------

    async def on_bus(self, msg: dict[str, Any]) -> None:
        """A call's `user.` bus message (ValueError: malformed)."""
        kind = news_kind(msg)
        (call_id,) = text_of(msg, "call_id")
        if kind == "call_incoming":
            await self._ring_here(msg, call_id)
        elif kind == "call_ack":
            await self._on_ack(call_id, *text_of(msg, "node", "answer"))
        elif kind == "call_answer":
            await self._on_answered(call_id, *text_of(msg, "peer"))
        elif kind == "call_decline":
            ring = self.rings.get(call_id)
            if ring is not None:
                await self._end_ring(ring, "declined")
        elif kind == "call_connected":
            await self._on_connected(call_id, *text_of(
                msg, "peer", "caller", "node", "conversation_id"))
        elif kind == "call_over":
            (reason,) = text_of(msg, "reason")
            self._close_incoming(call_id, reason, keep=msg.get("keep"))
        else:
            raise ValueError(f"unknown user bus message {str(kind)[:40]!r}")

    async def _ring_here(self, msg: dict[str, Any], call_id: str) -> None:
        """Ring this node's free pages of the callee; ack to the caller's node."""
        user, caller, conversation_id, caller_handle = text_of(
            msg, "user", "caller", "conversation_id", "caller_handle")
        pages = list(pages_of(self.visitors, user))
        free = [p for p in pages if not busy(p)]
        if free:
            self.incoming[call_id] = Incoming(caller, conversation_id, user,
                                              self._clock() + RING_SECONDS,
                                              {p.id for p in free})
            for page in free:
                page.send(protocol.message("call_incoming", call_id=call_id,
                                           conversation_id=conversation_id,
                                           **{"from": caller_handle}))
        answer = "ringing" if free else "busy" if pages else "absent"
        await self.bus.send(home_node(caller), self._user(
            "call_ack", call_id=call_id, node=self.bus.node_id, answer=answer))

    async def _on_ack(self, call_id: str, node: str, answer: str) -> None:
        ring = self.rings.get(call_id)
        if ring is None:
            if answer == "ringing":  # it ended meanwhile: stop that node's ringing
                await self.bus.send(node, self._user("call_over", call_id=call_id,
                                                     reason="cancelled"))
            return
        ring.waiting.discard(node)
        ring.ringing = ring.ringing or answer == "ringing"
        ring.busy = ring.busy or answer == "busy"
        if not ring.waiting and not ring.ringing:
            await self._end_ring(ring, "busy" if ring.busy else "unavailable")

    async def _on_answered(self, call_id: str, peer: str) -> None:
        """A page of the callee answered: pair it with the caller's page."""
        ring = self.rings.pop(call_id, None)
        caller = None if ring is None else self.visitors.get(ring.caller)
        if ring is None or caller is None or caller.call != call_id:
            await self.bus.send(home_node(peer), self._user(
                "call_over", call_id=call_id, reason="cancelled"))
            return
        node = self.pairing.place([caller.media_node])
        await self._connect(caller, peer, node, ring.conversation_id)
        await self.bus.send(home_node(peer), self._user(
            "call_connected", call_id=call_id, peer=peer, caller=caller.id, node=node,
            conversation_id=ring.conversation_id))
        # the callee's other pages stop ringing
        await to_every_node(self.bus, self._user(
            "call_over", call_id=call_id, reason="answered_elsewhere", keep=peer))
        self.stats["calls_answered"] += 1

    async def _on_connected(
        self, call_id: str, peer: str, by: str, node: str, conversation_id: str
    ) -> None:
        """The caller's node paired its page with ours: ours joins (or, gone, says so)."""
        me = self.visitors.get(peer)
        if me is None or me.call != call_id or me.partner is not None:
            await self.pairing.send_peer(by, peer, events.Left("hangup"))
            return
        await self._connect(me, by, node, conversation_id)

    async def _connect(self, me: Visitor, other: str, node: str, conversation_id: str) -> None:
        """Pair `me` with `other` the way a random match pairs (pairing.py)."""
        me.partner = Partner(other, handle_for(other), home_node(other))
        me.pair_node = node
        me.conversation = None  # a call's chat is never kept as random-chat history
        me.state = State.MATCHED
        me.revealed = False
        extra = {"hidden": True} if self.mutual_reveal else {}
        me.send(protocol.message("call_started", call_id=me.call,
                                 conversation_id=conversation_id, **extra))
        await self.pairing.settle_pair(me)

    # ---- ending a ring ----------------------------------------------------------------

    async def _end_ring(self, ring: Ring, reason: str) -> None:
        self.rings.pop(ring.call_id, None)
        caller = self.visitors.get(ring.caller)
        if caller is not None and caller.call == ring.call_id:
            self.pairing.call_over(caller, reason)
        self.stats[f"calls_ended:{reason}"] += 1
        await to_every_node(self.bus, self._user(
            "call_over", call_id=ring.call_id, reason=reason))
        if reason in MISSED and self.store is not None:
            spawn(self._record_missed(self.store, ring))  # the callee's missed-call notice

    async def _record_missed(self, store: StorePort, ring: Ring) -> None:
        try:
            await store_call("call", store.record_missed_call, ring.callee_user,
                             ring.conversation_id, ring.caller_handle)
        except ProtocolError:
            logger.warning("recording a missed call failed")

    def _close_incoming(self, call_id: str, reason: str, keep: Any = None) -> None:
        """The call ended (or was answered elsewhere): its ringing pages here stop,
        but `keep` (the page that answered)."""
        incoming = self.incoming.pop(call_id, None)
        if incoming is None:
            return
        for page_id in incoming.pages:
            page = self.visitors.get(page_id)
            if page is None or page_id == keep:
                continue
            if page.call == call_id and page.partner is None:
                self.pairing.call_over(page, reason)  # answered as the call ended
            elif page.call is None:
                page.send(protocol.message("call_ended", call_id=call_id, reason=reason))

    # ---- helpers ----------------------------------------------------------------------

    def _incoming_for(self, v: Visitor, call_id: str, kind: str) -> Incoming:
        incoming = self.incoming.get(call_id)
        if incoming is None or v.id not in incoming.pages or v.user_id != incoming.callee_user:
            raise ProtocolError("not_found", "no such call", kind)
        return incoming

    def _user(self, kind: str, call_id: str, **fields: Any) -> dict[str, Any]:
        """A call's control message, about the call, from this node."""
        return user_news(kind, call_id, self.bus.node_id, call_id=call_id, **fields)
