"""The Redis matchmaker: several server nodes share one queue.

Every step that reads and changes the queue is one call of one Lua script, so
it is atomic across nodes: "pair the oldest allowed waiter or add the caller",
"re-examine the waiters whose recheck is due", "cancel", "record a skip/block",
"record a report". The rules are the in-process ones (see base.py); the data
structures mirror memory.py:

    {prefix}seq              counter: arrival order
    {prefix}q                ZSET peer -> arrival number: every waiter
    {prefix}open             ZSET peer -> arrival number: waiters open to anyone
                             (no interests, or interest window over)
    {prefix}k:i:{interest}   ZSET peer -> arrival number, per interest
    {prefix}k:l:{language}   ZSET peer -> arrival number, per language
    {prefix}due              ZSET peer -> time of its next re-examination
    {prefix}t:{peer}         HASH id (identity), s (arrival number), t (arrival
                             time), k (JSON list of its k: keys), o ("1" = open)
    {prefix}c:{n}:{a}{b}     STRING: a skip/block between identity a (n = its
                             length) and b is active until this time; set for
                             both orders, with PX so Redis forgets it afterwards
    {prefix}ci:{identity}    SET: the identities it has a skip/block with (PX as
                             long as its longest), so a visit's end drops them all
    {prefix}r:{identity}     ZSET reporter -> time, trimmed to the report window
    {prefix}x:{reputation}   STRING: refused until this time (PX)
    {prefix}b:{key}          STRING: a moderator's ban until this time ("inf": for
                             good; PX past the end), key "a:" + address hash or
                             "u:" + HMAC of the account id (signalling/bans.py)

Times are the node's ``clock()`` passed into the script (never Redis's own
clock), so tests can use a fake one; the PX lifetimes only garbage-collect, with
a margin, and are never what decides whether a skip is active.

Matches made by any node are published on one channel (``mediaserver:matches``
by default) by the script itself. Every RedisMatchmaker subscribes and calls
``on_match`` for every match it hears; the node whose call made a match calls
``on_match`` before that call returns and skips its own message. With a
``sealer`` (the nodes' cluster secret) the script publishes nothing: the node
publishes the matches sealed (node/auth.py, base64), and a message on the
channel without a good seal is dropped, so whoever can publish to Redis cannot
pair two visitors.

The script reads keys it computes (not passed in KEYS), so it needs a
standalone Redis (or Redis Cluster with every key in one hash slot: give a
prefix like ``{mm}:``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mediaserver.node.auth import PURPOSE_MATCH, Rejected, Sealer

from .base import Clock, Match, Matchmaker, MatchPolicy, MatchRefused, OnMatch, Ticket
from .redis_script import QUEUE_SCRIPT

__all__ = ["RedisMatchmaker"]

logger = logging.getLogger("mediaserver.matchmaker")

DEFAULT_CHANNEL = "mediaserver:matches"
DEFAULT_PREFIX = "mediaserver:mm:"

# Keys with a lifetime outlive it by this much (ms): they only garbage-collect,
# the stored time decides, and node clocks may differ a little.
_PX_MARGIN_MS = 60_000
# Due waiters handled by one script call (bounds the time Redis is busy).
_DUE_BATCH = 1000
# Operations in one script call, and script calls on their way at once.
_MAX_BATCH = 256
_MAX_INFLIGHT = 2

# An operation waiting to be sent: name, now, arguments, its result.
_Op = tuple[str, str, tuple[str, ...], "asyncio.Future[str]"]
# Redis is down or unreachable (redis-py has retried already).
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

COMMAND_TIMEOUT = 2.0
"""Seconds a Redis command may take before Redis counts as unreachable. Without
it a Redis that hangs with its connections open (stopped, swapping) holds every
caller until it answers. Blocking pub/sub reads are exempt (redis-py 8.1+), so
an idle channel is not an outage."""



def _px(seconds: float) -> str:
    return str(max(1, int(seconds * 1000)) + _PX_MARGIN_MS)


def _tokens(ticket: Ticket) -> list[str]:
    toks = ["i:" + i for i in sorted(ticket.interests)]
    if ticket.language is not None:
        toks.append("l:" + ticket.language)
    return toks


def _decode_matches(data: str) -> list[Match]:
    matches = []
    for a, b, shared in json.loads(data):
        # cjson encodes an empty list as {}
        matches.append(Match(a, b, tuple(sorted(shared)) if isinstance(shared, list) else ()))
    return matches


class RedisMatchmaker(Matchmaker):
    """The queue in Redis, shared by every node that points at it.

    Args:
        url: a redis:// (or rediss://, unix://) URL.
        policy: the matching rules' knobs; every node must use the same.
        on_match: called for every match made by any node (from a background
            task for matches made elsewhere).
        clock: seconds as a float; ``time.time`` by default.
        channel: the pub/sub channel for matches.
        prefix: the prefix of every key (the queue's namespace).
        client: an existing ``redis.asyncio.Redis`` (``decode_responses=True``)
            to use instead of connecting to ``url``; not closed by ``close``.
        sealer: seals the matches this node publishes and opens the others';
            None: plain messages from the script (one trusted Redis).
    """

    def __init__(
        self,
        url: str,
        policy: MatchPolicy,
        on_match: OnMatch,
        clock: Clock = time.time,
        *,
        channel: str = DEFAULT_CHANNEL,
        prefix: str = DEFAULT_PREFIX,
        client: aioredis.Redis | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        super().__init__(policy, on_match, clock)
        self._own_client = client is None
        self._redis: aioredis.Redis = (
            client
            if client is not None
            else aioredis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=COMMAND_TIMEOUT,
                socket_connect_timeout=COMMAND_TIMEOUT,
            )
        )
        self._script = self._redis.register_script(QUEUE_SCRIPT)
        self._channel = channel
        self._sealer = sealer
        self.rejected: Counter[str] = Counter()
        """Channel messages dropped for their seal, by reason."""
        self._prefix = prefix
        self.node_id = uuid.uuid4().hex
        self._own_mark = self.node_id + "\n"
        self._started = False
        self._start_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._closed = False
        self._pending: list[_Op] = []
        self._flush_scheduled = False
        self._inflight = 0
        self._sending: set[asyncio.Task[None]] = set()
        # This node's waiters, in arrival order: a redis-server that restarts
        # without persistence forgets the queue, so they are put back from here.
        self._waiting: dict[str, Ticket] = {}
        # Cancels that could not reach Redis: sent again when it is back.
        self._unsent_cancels: set[str] = set()
        self._resync = False  # put the waiters back at the next tick that reaches Redis
        self._down = False  # in an outage (logged once)
        self._epoch: str | None = None  # the queue's incarnation; a new one means it was lost

    async def start(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            await self._subscribe()
            self._listener = asyncio.create_task(self._listen(), name="matchmaker-listener")
            self._started = True

    async def _subscribe(self) -> None:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self._channel)
        # Wait for the confirmation, so that no match published after start()
        # returns can be missed.
        while True:
            msg = await pubsub.get_message(timeout=5.0)
            if msg is None:
                raise RedisTimeoutError("no confirmation of SUBSCRIBE")
            if msg["type"] == "subscribe":
                break
        self._pubsub = pubsub

    async def _listen(self) -> None:
        while not self._closed:
            try:
                async for msg in self._pubsub.listen():
                    if msg["type"] == "message":
                        self._on_message(msg["data"])
            except (RedisConnectionError, RedisTimeoutError, OSError):
                if self._closed:
                    return
                # redis-py already retried; matches published until we are back
                # are lost for this node.
                logger.warning("match channel lost; subscribing again", exc_info=True)
            if not self._closed:
                await self._resubscribe()

    async def _resubscribe(self) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        backoff = 0.05
        while not self._closed:
            await asyncio.sleep(backoff)
            try:
                await self._subscribe()
                return
            except (RedisConnectionError, RedisTimeoutError, OSError):
                backoff = min(backoff * 2, 5.0)

    def _on_message(self, data: str) -> None:
        if self._sealer is not None:
            try:
                opened = self._sealer.open_text(data, PURPOSE_MATCH, time.time())
                if opened.sender == self.node_id:
                    return  # this node called on_match already
                matches = _decode_matches(opened.payload.decode())
            except (Rejected, ValueError, TypeError) as exc:
                reason = exc.reason if isinstance(exc, Rejected) else "malformed"
                self.rejected[reason] += 1
                n = self.rejected[reason]
                if n & (n - 1) == 0:  # 1st, 2nd, 4th...: a flood cannot fill the log
                    logger.warning("match message dropped (%d chars): %s", len(data), reason)
                return
            self._emit(matches)
            return
        if data.startswith(self._own_mark):
            return  # this node called on_match already
        try:
            matches = _decode_matches(data.partition("\n")[2])
        except (ValueError, TypeError) as exc:
            # its length and why, never its text: anyone who can publish to Redis wrote it
            logger.warning(
                "bad message on the match channel (%d chars): %s", len(data), type(exc).__name__
            )
            return
        self._emit(matches)

    # -- calls: concurrent operations share one script call -------------------

    def _call(self, op: str, now: float, *args: str) -> asyncio.Future[str]:
        """Queue one operation for the next script call; its future gets its result.

        Operations issued while a call is on its way go in the next one (at most
        ``_MAX_BATCH`` each, ``_MAX_INFLIGHT`` calls at a time), so under load a
        node makes far fewer round trips than operations; alone, an operation is
        sent at the next turn of the event loop.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        self._pending.append((op, repr(now), args, fut))
        if not self._flush_scheduled and self._inflight < _MAX_INFLIGHT:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._pending and self._inflight < _MAX_INFLIGHT:
            batch = self._pending[:_MAX_BATCH]
            del self._pending[:_MAX_BATCH]
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Op]) -> None:
        argv: list[str | int] = [
            self._prefix,
            repr(float(self.policy.interest_wait)),
            self.node_id,
            "" if self._sealer is not None else self._channel,
            _DUE_BATCH,
        ]
        for op, now, args, _ in batch:
            argv += (op, now, len(args), *args)
        try:
            if not self._started:
                await self.start()
            result: list[str] = await self._script(args=argv)
        except BaseException as e:
            for *_, fut in batch:
                if not fut.done():
                    if isinstance(e, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            # on_match first, so that it runs before the enqueue that made the
            # match returns
            if result[0]:
                self._emit(_decode_matches(result[0]))
                if self._sealer is not None:
                    task = asyncio.get_running_loop().create_task(self._publish(result[0]))
                    self._sending.add(task)
                    task.add_done_callback(self._sending.discard)
            for (*_, fut), r in zip(batch, result[1:], strict=True):
                if not fut.done():
                    fut.set_result(r)
        finally:
            self._inflight -= 1
            if self._pending and not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    async def _publish(self, matches: str) -> None:
        """Tell the other nodes, sealed (the script could not: Lua has no HMAC)."""
        assert self._sealer is not None
        sealed = self._sealer.seal_text(PURPOSE_MATCH, self.node_id, matches, time.time())
        try:
            await self._redis.publish(self._channel, sealed)
        except _UNREACHABLE as exc:  # the other nodes see the outage too: they put
            self._outage("publish", exc)  # back their waiters, this match's included

    # -- the interface ---------------------------------------------------------

    # -- Redis outages -----------------------------------------------------------
    #
    # While Redis is unreachable, enqueue and cancel are kept here and never
    # raise (the visitor keeps waiting; the signalling hub has no way to handle
    # a lost queue), skips, blocks and reports are dropped with a warning, and
    # tick does nothing. The first tick that reaches Redis again (or that finds
    # a new queue epoch: Redis restarted between two ticks) puts this node's
    # waiters back, in their arrival order.

    def _outage(self, what: str, exc: BaseException) -> None:
        self._resync = True
        if not self._down:
            self._down = True
            logger.warning("match queue unreachable (%s): %s; waiters kept here", what, exc)

    def _emit(self, matches: Iterable[Match]) -> None:
        matches = list(matches)
        for m in matches:
            self._waiting.pop(m.a, None)
            self._waiting.pop(m.b, None)
        super()._emit(matches)

    async def _check_epoch(self) -> None:
        key = self._prefix + "epoch"
        epoch = await self._redis.get(key)
        if epoch is None:
            await self._redis.set(key, uuid.uuid4().hex, nx=True)
            epoch = await self._redis.get(key)
        if self._epoch is not None and epoch != self._epoch:
            self._resync = True  # Redis lost the queue (restart, flush)
        self._epoch = None if epoch is None else str(epoch)

    async def _put_back(self) -> None:
        cancels = list(self._unsent_cancels)
        tickets = list(self._waiting.values())
        now = self._now()
        ops = [self._call("cancel", now, p) for p in cancels]
        ops += [
            self._call("enqueue", now, t.peer, t.identity, t.reputation_key, *_tokens(t))
            for t in tickets
        ]
        results = await asyncio.gather(*ops)  # one script call, in arrival order
        self._unsent_cancels.difference_update(cancels)
        for t, status in zip(tickets, results[len(cancels) :], strict=True):
            if status == "refused":  # reported meanwhile: out, as enqueue would say
                self._waiting.pop(t.peer, None)
        self._resync = False
        self._down = False
        logger.warning("match queue reachable again: %d waiters put back", len(tickets))

    async def enqueue(self, ticket: Ticket) -> None:
        if not ticket.age_confirmed:
            await self.cancel(ticket.peer)
            raise MatchRefused("age")
        self._unsent_cancels.discard(ticket.peer)
        self._waiting.pop(ticket.peer, None)  # a new ticket goes to the back
        self._waiting[ticket.peer] = ticket
        try:
            status = await self._call(
                "enqueue",
                self._now(),
                ticket.peer,
                ticket.identity,
                ticket.reputation_key,
                *_tokens(ticket),
            )
        except _UNREACHABLE as exc:
            self._outage("enqueue", exc)
            return  # waiting here; put in the queue when Redis is back
        if status == "refused":
            self._waiting.pop(ticket.peer, None)
            raise MatchRefused("reported")

    async def cancel(self, peer: str) -> None:
        self._waiting.pop(peer, None)
        try:
            await self._call("cancel", self._now(), peer)
        except _UNREACHABLE as exc:
            self._unsent_cancels.add(peer)
            self._outage("cancel", exc)

    async def _conflict(self, a: str, b: str, ttl: float) -> None:
        if a == b:
            return
        now = self._now()
        try:
            await self._call("conflict", now, a, b, repr(now + ttl), _px(ttl))
        except _UNREACHABLE as exc:
            self._outage("skip/block", exc)

    async def forget(self, identity: str) -> None:
        try:
            await self._call("forget", self._now(), identity)
        except _UNREACHABLE as exc:
            self._outage("forget", exc)  # the PX lifetimes collect them later

    async def record_skip(self, identity: str, other_identity: str) -> None:
        await self._conflict(identity, other_identity, self.policy.skip_cooldown)

    async def record_block(self, identity: str, other_identity: str) -> None:
        await self._conflict(identity, other_identity, self.policy.block_ttl)

    async def record_report(self, reporter_identity: str, reported_identity: str) -> None:
        if reporter_identity == reported_identity:
            return
        await self.record_block(reporter_identity, reported_identity)
        now = self._now()
        p = self.policy
        try:
            await self._call(
                "report",
                now,
                reporter_identity,
                reported_identity,
                repr(now - p.report_window),
                _px(p.report_window),
                str(p.report_threshold),
                repr(now + p.refuse_for),
                _px(p.refuse_for),
            )
        except _UNREACHABLE as exc:
            self._outage("report", exc)

    async def set_ban(self, key: str, until: float | None) -> None:
        # where the bans on the key stand (the store computed it): set as is
        name = self._prefix + "b:" + key
        now = self._now()
        if until is None or until <= now:
            await self._redis.delete(name)
        elif math.isinf(until):
            await self._redis.set(name, "inf")
        else:
            await self._redis.set(name, repr(until), px=int(_px(until - now)))

    async def banned_until(self, keys: list[str]) -> float | None:
        if not keys:
            return None
        try:
            values = await self._redis.mget([self._prefix + "b:" + k for k in keys])
        except _UNREACHABLE as exc:
            # the store's copy is still checked; Redis's only adds other nodes' bans
            self._outage("ban check", exc)
            return None
        now = self._now()
        found = [float(v) for v in values if v is not None]
        found = [u for u in found if u > now]
        return max(found) if found else None

    async def tick(self) -> None:
        now = self._now()
        try:
            while int(await self._call("tick", now)) >= _DUE_BATCH:
                pass
            await self._check_epoch()
            if self._resync:
                await self._put_back()
        except _UNREACHABLE as exc:
            self._outage("tick", exc)

    async def queue_length(self) -> int:
        n: int = await self._redis.zcard(self._prefix + "q")
        return n

    async def cancel_node(self, node: str) -> int:
        prefix = f"{node}/"
        waiting: list[bytes] = await self._redis.zrange(self._prefix + "q", 0, -1)  # type: ignore[assignment]
        # the client decodes responses (str), unless one was passed in that does not
        names = (w.decode() if isinstance(w, bytes) else str(w) for w in waiting)
        doomed = [p for p in names if p.startswith(prefix)]
        for peer in doomed:
            await self.cancel(peer)
        return len(doomed)

    async def close(self) -> None:
        self._closed = True
        while self._pending or self._sending:  # let operations already issued finish
            if self._sending:
                await asyncio.gather(*self._sending, return_exceptions=True)
            else:
                await asyncio.sleep(0)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
        if self._own_client:
            await self._redis.aclose()
