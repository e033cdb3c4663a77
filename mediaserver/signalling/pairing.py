"""Pairing: the queue, the pair's media placement and forwarding, ending a pair,
and recovery when a partner's node dies. Partners may live on two nodes: what
one does to the other goes as a peer event (mediaserver.signalling.events).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from mediaserver.matchmaker import Match, Matchmaker, MatchRefused, Ticket
from mediaserver.node.bus import Bus, home_node
from mediaserver.sfu.server import SfuError
from mediaserver.signalling import events, protocol
from mediaserver.signalling.ports import MediaPort
from mediaserver.signalling.protocol import ProtocolError
from mediaserver.signalling.video import VideoEffects
from mediaserver.signalling.visitors import Partner, State, Visitor, handle_for

logger = logging.getLogger("mediaserver.signalling.hub")

PAIR_WAIT = 2.0
"""Seconds the node of a match's second visitor waits for the first one's node
to confirm the pair; after that (that node died, or its visitor left) the
visitor is queued again."""


class Pairing:
    """Args:
    bus: the way to the other nodes (peer events, the live nodes for placement).
    media: media sessions on any node.
    visitors: the hub's visitors (shared, by id).
    stats: the hub's counters.
    clock: the hub's clock (seconds).
    mutual_reveal: every match starts with both faces covered.
    video: what each visitor's video carries.
    """

    def __init__(
        self,
        bus: Bus,
        media: MediaPort,
        visitors: dict[str, Visitor],
        stats: Counter[str],
        clock: Callable[[], float],
        mutual_reveal: bool,
        video: VideoEffects,
    ) -> None:
        self.bus = bus
        self.node_id = bus.node_id
        self.media = media
        self.visitors = visitors
        self.stats = stats
        self._clock = clock
        self.mutual_reveal = mutual_reveal
        self.video = video
        self.matchmaker: Matchmaker | None = None
        """Set by the hub once built (the matchmaker needs on_match first)."""
        self.ban_check: Callable[[Visitor, str], Awaitable[None]] | None = None
        """Set by the hub: raises ProtocolError `banned` when a moderator's ban
        holds on the visitor (signalling/bans.py); re-queueing checks it too."""
        self.draining = False
        """No new peers: (re)queueing is refused with `draining`."""
        self.on_queue_wait: Callable[[float], None] | None = None

    @property
    def queue(self) -> Matchmaker:
        assert self.matchmaker is not None, "the hub sets the matchmaker"
        return self.matchmaker

    # ---- the queue ---------------------------------------------------------------------

    async def enqueue(self, v: Visitor) -> None:
        """Put v in the queue and tell it `queued` (a match may come first).

        Raises:
            ProtocolError: draining, refused (reported too often) or unavailable.
        """
        if v.state is State.GONE:
            return  # it left while a check was awaited: its ticket would be a ghost
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
            await self.queue.enqueue(ticket)  # may call on_match right away
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

    async def requeue(self, v: Visitor) -> None:
        """Queue v again; a refusal (a ban decided while v was queued or matched
        too) is told to v, not raised."""
        try:
            if self.ban_check is not None:
                await self.ban_check(v, "start")
            await self.enqueue(v)
        except ProtocolError as exc:
            v.send(protocol.error(exc.code, exc.message, exc.ref, **exc.fields))

    async def requeue_stale(self, now: float) -> None:
        """Visitors whose cross-node match was never confirmed queue again."""
        for v in list(self.visitors.values()):
            if v.pending_pair is not None and now - v.pending_pair[1] > PAIR_WAIT:
                # the other node never confirmed: its visitor left, or it died
                v.pending_pair = None
                if v.state is State.QUEUED:
                    self.stats["stale_matches"] += 1
                    await self.requeue(v)

    def place(self, prefer: list[str | None]) -> str:
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

    # ---- making a pair -----------------------------------------------------------------

    def on_match(self, match: Match) -> None:
        """The matchmaker's callback (for Redis: every node gets every match)."""
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
                        spawn(self.requeue(v))
                self.stats["stale_matches"] += 1
                return
            node = self.place([a.media_node, b.media_node])
            self._pair_up(a, b.id, node, shared)
            self._pair_up(b, a.id, node, shared)
            self._log_match(shared)
            spawn(self.settle_pair(a, b))
        elif mine_a:
            # the longer waiter's node places the pair and tells the other node
            if a is None or a.state is not State.QUEUED:
                spawn(self.send_peer(match.b, match.a, events.Left("left")))
                self.stats["stale_matches"] += 1
                return
            if self.bus.only_known_nodes_are_live and home_node(match.b) not in self.bus.nodes():
                # no live (sealed) node holds b: a match forged on the match channel,
                # or b's node just died. Nothing goes b's way; a queues again.
                self.stats["stale_matches"] += 1
                spawn(self.requeue(a))
                return
            node = self.place([a.media_node])
            self._pair_up(a, match.b, node, shared)
            self._log_match(shared)
            spawn(self._confirm_pair(a, match.b, node, shared))
        elif mine_b and b is not None and b.state is State.QUEUED:
            b.pending_pair = (match.a, self._clock())  # a's node confirms it

    def _log_match(self, shared: list[str]) -> None:
        self.stats["matches"] += 1
        logger.info("match_made", extra={"shared_interests": len(shared)})

    async def _confirm_pair(self, a: Visitor, b: str, node: str, shared: list[str]) -> None:
        await self.send_peer(b, a.id, events.Pair(node, tuple(shared)))
        await self.settle_pair(a)

    async def on_pair(self, to: str, by: str, event: events.Pair) -> None:
        """The other node placed the pair of its visitor `by` and ours `to`."""
        me = self.visitors.get(to)
        if me is None or me.state is not State.QUEUED:  # it left, or is paired already
            await self.send_peer(by, to, events.Left("left"))
            return
        await self.queue.cancel(me.id)  # in case it queued again meanwhile
        self._pair_up(me, by, event.node, list(event.shared))
        await self.settle_pair(me)

    async def settle_pair(self, *visitors: Visitor) -> None:
        """A new pair (a match or an answered call): cover, then bring the media."""
        for v in visitors:
            if self.mutual_reveal and v.partner is not None:
                await self.video.apply(v)  # every new match starts hidden
        for v in visitors:
            await self.settle_media(v)

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

    # ---- the pair's media --------------------------------------------------------------

    async def settle_media(self, me: Visitor) -> None:
        """Bring me's media to its pair's node: announce its session there to the
        partner, or, when its session is on another node, ask for a new offer."""
        node = me.pair_node
        if me.partner is None or node is None or me.session_id is None:
            return  # the offer (or a new one) is still to come
        if me.media_node != node:
            await self.drop_session(me)
            self.stats["reoffers"] += 1
            me.send(protocol.message("reoffer"))  # a fresh RTCPeerConnection offers
            return
        await self.tell(me, events.MediaReady(me.session_id))
        await self._connect_if_ready(me)

    async def on_partner_media(self, me: Visitor, event: events.MediaReady) -> None:
        """The partner's session on the pair's node is ready."""
        if me.partner is not None:
            me.partner.session = event.session
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

    async def drop_session(self, v: Visitor) -> None:
        if v.session_id is not None and v.media_node is not None:
            node, session = v.media_node, v.session_id
            v.session_id = v.media_node = None
            await self.close_quietly(node, session)

    async def close_quietly(self, node: str, session: str) -> None:
        try:
            await self.media.close_session(node, session)
        except SfuError:
            pass  # its node is gone, and the session with it

    # ---- ending a pair -----------------------------------------------------------------

    async def skip(self, v: Visitor) -> None:
        """Next: v moves on; the pair is remembered so it is not made again soon."""
        partner = v.partner
        if partner is not None:
            await self.queue.record_skip(v.id, partner.id)
        await self.end_pair(v, requeue_self=True, reason="next")

    async def block(self, v: Visitor, partner: Partner) -> None:
        await self.queue.record_block(v.id, partner.id)
        await self.end_pair(v, requeue_self=True, reason="next")

    async def end_pair(self, v: Visitor, *, requeue_self: bool, reason: str) -> None:
        """End v's pair for both. The partner is told and re-queued; v is
        re-queued when it pressed Next (requeue_self)."""
        partner = v.partner
        if partner is None:
            return
        await self.unpair(v)
        v.state = State.IDLE
        logger.info("pair_ended", extra={"reason": reason})
        await self.send_peer(partner.id, v.id, events.Left(reason))
        if self.call_over(v, reason):
            return  # a call between connections never leads to the random queue
        if requeue_self:
            await self.requeue(v)

    @staticmethod
    def call_over(v: Visitor, reason: str) -> bool:
        """v's call (if any) has ended: tell it. Returns whether v was in a call."""
        if v.call is None:
            return False
        call, v.call = v.call, None
        v.send(protocol.message("call_ended", call_id=call, reason=reason))
        return True

    async def unpair(self, v: Visitor) -> None:
        """Forget v's partner and stop forwarding its media to v."""
        p = v.partner
        v.partner = None
        v.chat_lines.clear()  # a report's evidence is the live pair's only
        v.pair_node = None
        v.forwarded = None
        if p is not None and p.session and v.session_id and v.media_node:
            try:
                await self.media.disconnect(v.media_node, p.session, v.session_id)
            except SfuError:
                pass  # its node is gone: nothing is forwarded any more
        if p is not None:
            await self.video.pair_ended(v)

    async def partner_gone(self, v: Visitor, reason: str) -> None:
        await self.unpair(v)
        v.state = State.IDLE
        if self.call_over(v, reason):
            return
        v.send(protocol.message("partner_left", reason=reason))
        await self.requeue(v)

    async def on_left(self, me: Visitor, by: str, event: events.Left) -> None:
        """The partner (or the visitor of a stale cross-node match) left."""
        if me.pending_pair is not None and me.pending_pair[0] == by:
            me.pending_pair = None  # the match was stale: wait for another
            if me.state is State.QUEUED:
                self.stats["stale_matches"] += 1
                await self.requeue(me)
            return
        if me.partner is not None and me.partner.id == by:
            await self.partner_gone(me, event.reason)

    async def media_closed(self, owner: str, session: str, reason: str) -> None:
        """The visitor's media died: end its pair as if it left; it may offer again."""
        v = self.visitors.get(owner)
        if v is None or v.state is State.GONE or v.session_id != session:
            return
        v.session_id = v.media_node = None
        self.stats[f"media_closed:{reason.split(':')[0]}"] += 1
        if v.partner is not None:
            logger.info("pair_ended", extra={"reason": "media_closed"})
            partner = v.partner
            await self.unpair(v)
            await self.send_peer(partner.id, v.id, events.Left("left"))
        self.call_over(v, "media_closed")
        if v.state is State.QUEUED:
            await self.queue.cancel(v.id)
        v.state = State.IDLE
        v.pending_pair = None
        v.send(protocol.error("media_closed", f"media connection ended ({reason})"))
        v.send(protocol.message("stopped"))

    async def node_down(self, node: str) -> None:
        """Another node died: its sessions' owners here, and the partners of its
        visitors, are told and queued again; its tickets leave the queue."""
        closed = self.media.close_owned_by(node)
        for v in list(self.visitors.values()):
            if v.media_node == node:
                # the pair's media node is gone: a new offer goes to a live one
                v.session_id = v.media_node = None
                partner = v.partner
                was_call = False
                if partner is not None:
                    await self.unpair(v)
                    await self.send_peer(partner.id, v.id, events.Left("left"))
                    v.state = State.IDLE
                    was_call = self.call_over(v, "left")
                    if not was_call:
                        v.send(protocol.message("partner_left", reason="left"))
                v.send(protocol.message("reoffer"))
                if v.state is State.IDLE and partner is not None and not was_call:
                    await self.requeue(v)
            elif v.partner is not None and v.partner.node == node:
                await self.partner_gone(v, "left")
            elif v.pending_pair is not None and home_node(v.pending_pair[0]) == node:
                v.pending_pair = None
                if v.state is State.QUEUED:
                    await self.requeue(v)
        cancelled = await self.queue.cancel_node(node)
        logger.warning(
            "node_down_handled",
            extra={"node": node, "sessions_closed": closed, "tickets_cancelled": cancelled},
        )

    # ---- between partners (maybe on two nodes) -----------------------------------------

    async def tell(self, v: Visitor, event: events.PeerEvent) -> None:
        """Send `event` to v's partner, wherever it lives (nothing when unpaired)."""
        if v.partner is not None:
            await self.send_peer(v.partner.id, v.id, event)

    async def send_peer(self, to: str, by: str, event: events.PeerEvent) -> None:
        await self.bus.send(home_node(to), events.encode(to, by, event))


def spawn(coro: Awaitable[Any]) -> None:
    """Run coro in the background, keeping a reference until it ends."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_tasks: set[Any] = set()
