"""The bus over Redis: pub/sub channel per node, and a registry of live nodes.

    {prefix}nodes        SET of node ids that registered
    {prefix}info:{id}    the node's NodeInfo, PX 4 s, refreshed every 2 s: a node
                         whose key is gone is dead
    {prefix}n:{id}       the node's pub/sub channel

Registry entries and messages are sealed with the cluster secret (auth.py):
an entry or a message without a valid seal is dropped and counted, so a node
that does not know the secret is never chosen for placement, and nothing it
publishes reaches a visitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mediaserver.matchmaker.redis import COMMAND_TIMEOUT
from mediaserver.node.auth import PURPOSE_BUS, PURPOSE_NODE, Rejected, Sealer
from mediaserver.node.bus import Bus, Handler, NodeInfo

logger = logging.getLogger("mediaserver.node")

DEFAULT_PREFIX = "mediaserver:node:"
REFRESH = 2.0  # seconds between registry refreshes
TTL_MS = 4000  # a node missing two refreshes is dead: its peers learn it within 5 s
WATCH = 0.5  # seconds between reads of the registry
# After Redis was unreachable, or came back empty (a restart without persistence
# forgets the registry), no node is taken for dead for this long: every live
# node re-registers within one REFRESH, so only a real death outlasts it.
GRACE = TTL_MS / 1000
ENTRY_MAX_AGE = 10.0  # seconds a sealed registry entry counts (a copy cannot outlive its node long)


class RedisBus(Bus):
    """The bus over Redis pub/sub, with the registry of live nodes.

    Args:
    url: redis://, rediss:// or unix:// URL, with user:password if Redis wants them.
    node_id: this node's id.
    secret: the cluster secret every node shares (seals messages and entries).
    clock: wall-clock seconds (seals carry the sender's time; nodes compare them).
    """

    only_known_nodes_are_live = True

    def __init__(
        self,
        url: str,
        node_id: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        secret: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(node_id)
        self._url = url
        self._prefix = prefix
        self._sealer = Sealer(secret)
        self._clock = clock
        self._redis: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=COMMAND_TIMEOUT, socket_connect_timeout=COMMAND_TIMEOUT
        )
        self._pubsub: Any = None
        self._alive: dict[str, NodeInfo] = {}
        self._grace_until = 0.0
        self._epoch: Any = None  # the registry's incarnation: a new one means Redis lost it

    def _channel(self, node: str) -> str:
        return f"{self._prefix}n:{node}"

    async def start(self, handler: Handler, info: Callable[[], NodeInfo]) -> None:
        """Subscribe to this node's channel, register in the registry, read it
        once, then keep both fresh."""
        await super().start(handler, info)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self._channel(self.node_id))
        await self._refresh()
        await self._watch_once()
        self.spawn(self._listen())
        self.spawn(self._heartbeat())
        self.spawn(self._watch())

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(f"{self._prefix}info:{self.node_id}")
            await self._redis.srem(f"{self._prefix}nodes", self.node_id)
        await super().close()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    def nodes(self) -> dict[str, NodeInfo]:
        alive = dict(self._alive)
        alive[self.node_id] = self._info()  # our own load is always current
        return alive

    async def _publish(self, node: str, data: bytes) -> None:
        sealed = self._sealer.seal(PURPOSE_BUS, self.node_id, node, data, self._clock())
        await self._redis.publish(self._channel(node), sealed)

    def _receive(self, data: Any) -> None:
        """A message from our channel: delivered only when its seal is good."""
        if not isinstance(data, bytes):
            self._reject("unsigned", "bus", len(str(data)))
            return
        try:
            opened = self._sealer.open(data, PURPOSE_BUS, self._clock(), recipient=self.node_id)
        except Rejected as exc:
            self._reject(exc.reason, "bus", len(data))
            return
        self.receive(opened.payload, sender=opened.sender)

    async def _listen(self) -> None:
        while True:
            try:
                async for item in self._pubsub.listen():
                    if item.get("type") == "message":
                        self._receive(item["data"])
            except (RedisError, OSError) as exc:
                logger.warning("bus_listen_failed", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.subscribe(self._channel(self.node_id))

    async def _refresh(self) -> None:
        entry = self._sealer.seal(
            PURPOSE_NODE, self.node_id, self.node_id, self._info().encode(), self._clock()
        )
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(f"{self._prefix}info:{self.node_id}", entry, px=TTL_MS)
        pipe.sadd(f"{self._prefix}nodes", self.node_id)
        await pipe.execute()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            try:
                await self._refresh()
            except (RedisError, OSError) as exc:
                self._grace()
                logger.warning("node_refresh_failed", extra={"error": str(exc)})

    def _grace(self) -> None:
        self._grace_until = asyncio.get_running_loop().time() + GRACE

    async def _check_epoch(self) -> None:
        key = f"{self._prefix}epoch"
        epoch = await self._redis.get(key)
        if epoch is None:
            await self._redis.set(key, secrets.token_hex(8), nx=True)
            epoch = await self._redis.get(key)
        if self._epoch is not None and epoch != self._epoch:
            # Redis restarted empty: register again now, and let the others do so
            self._grace()
            logger.warning("node_registry_lost")
            await self._refresh()
        self._epoch = epoch

    async def _watch_once(self) -> None:
        await self._check_epoch()
        members: set[bytes] = await self._redis.smembers(f"{self._prefix}nodes")  # type: ignore[assignment]
        ids = sorted(m.decode() for m in members)
        if not ids:
            return
        infos: list[bytes | None] = await self._redis.mget(  # type: ignore[assignment]
            [f"{self._prefix}info:{i}" for i in ids]
        )
        alive: dict[str, NodeInfo] = {}
        gone = []
        for node, raw in zip(ids, infos):
            if raw is None:
                gone.append(node)
                continue
            info = self._entry(node, raw)
            if info is not None:
                alive[node] = info
        if gone:
            await self._redis.srem(f"{self._prefix}nodes", *gone)
        before = self._alive
        if asyncio.get_running_loop().time() < self._grace_until:
            for node, seen in before.items():  # not dead yet: maybe not registered again
                alive.setdefault(node, seen)
        self._alive = alive
        for node in before:
            if node not in alive and node != self.node_id:
                await self._node_down(node)

    def _entry(self, node: str, raw: bytes) -> NodeInfo | None:
        """The NodeInfo in a registry entry sealed by that node; None (counted)
        for anything else: a node without the secret is no node."""
        try:
            opened = self._sealer.open(
                raw, PURPOSE_NODE, self._clock(), recipient=node, once=False,
                max_age=ENTRY_MAX_AGE,
            )  # fmt: skip
            if opened.sender != node:
                raise Rejected("misdirected")
            info = NodeInfo.decode(opened.payload)
            if info.id != node:
                raise Rejected("misdirected")
        except Rejected as exc:
            self._reject(exc.reason, "node_entry", len(raw))
            return None
        except Exception:  # noqa: BLE001 - sealed by a node, but not an entry
            self._reject("malformed", "node_entry", len(raw))
            return None
        return info

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH)
            try:
                await self._watch_once()
            except (RedisError, OSError) as exc:
                # Redis is down: keep the nodes last seen (no false deaths)
                self._grace()
                logger.warning("node_watch_failed", extra={"error": str(exc)})
