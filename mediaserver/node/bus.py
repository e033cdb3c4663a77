"""Messages between nodes, and which nodes are alive with what load.

A message is a dict with a type `t` (one of the bus bodies in messages.py,
which checks it on the way in and out). `send` delivers it to one node (the node
itself included: then the handler runs inline, awaited). `request` also waits
for the handler's reply. Events from one sender reach a node in the order sent
and are handled one at a time; requests are handled as they come, beside the
events, and their handlers must not make requests themselves (no deadlock:
an event handler on A may wait on a request to B while B's event handler waits
on A).

Peer ids carry their home node ("node/token"), so any node knows where a
visitor's signalling lives.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from mediaserver.node.messages import (
    BusEvent,
    BusReply,
    BusRequest,
    body_from_dict,
    body_to_dict,
    pack_envelope,
    unpack_envelope,
)

from mediaserver.node.messages import NodeInfo as NodeInfo  # the hub imports it from here
from mediaserver.node.messages import Wire

logger = logging.getLogger("mediaserver.node")

Message = Wire
"""A bus body as the handlers see it (the hub's name for messages.Wire)."""

Handler = Callable[[Message], Awaitable[Message | None]]
"""Handles one event or request (as a dict, `from` added when it came over the
bus); a request's reply is what it returns ({} for None)."""

NODE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
REQUEST_TIMEOUT = 2.0
EVENT_BACKLOG = 10_000  # events waiting to be handled; beyond: dropped and counted


def peer_id(node: str) -> str:
    """A new peer id on `node`: "node/token" (the token unguessable)."""
    return f"{node}/{secrets.token_urlsafe(12)}"


def home_node(peer: str) -> str:
    """The node a peer's WebSocket is on."""
    return peer.rpartition("/")[0]


class BusError(Exception):
    """A request got no reply in time, or the node is unknown."""


class Bus(abc.ABC):
    """The way to the other nodes; subclasses carry the bytes (`_publish`) and
    hand what arrives to `receive`.

    Args:
        node_id: this node's id (letters, digits, `_.-`).

    Raises:
        ValueError: a node id of other characters, or longer than 64.
    """

    only_known_nodes_are_live = False
    """True where the registry of sealed entries is the one proof a node is live
    (Redis): a peer of a node not in `nodes()` is then no peer. The supervisor's
    coordinator vouches for its workers itself, and a worker may hear of a match
    before it has heard of the worker holding the other visitor."""

    def __init__(self, node_id: str) -> None:
        if not NODE_ID.match(node_id):
            raise ValueError(f"node id must be 1-64 of A-Z a-z 0-9 _ . -, not {node_id!r}")
        self.node_id = node_id
        self._handler: Handler | None = None
        self._info: Callable[[], NodeInfo] = lambda: NodeInfo(node_id)
        self._replies: dict[str, asyncio.Future[Message]] = {}
        self._events: asyncio.Queue[Message] = asyncio.Queue(EVENT_BACKLOG)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.on_node_down: Callable[[str], Awaitable[None]] | None = None
        """Called once when a node that was alive stops answering (or leaves)."""
        self.dropped = 0
        """Messages dropped: malformed, no room in the event backlog, or unsendable."""
        self.rejected: Counter[str] = Counter()
        """Messages and registry entries dropped for their seal (or sender), by reason."""

    async def start(self, handler: Handler, info: Callable[[], NodeInfo]) -> None:
        """Start handling messages with `handler`; `info` is this node's current
        NodeInfo (announced to the others)."""
        self._handler = handler
        self._info = info
        self.spawn(self._consume())

    @abc.abstractmethod
    def nodes(self) -> dict[str, NodeInfo]:
        """The live nodes as last seen (this one included)."""

    @abc.abstractmethod
    async def _publish(self, node: str, data: bytes) -> None:
        """Put encoded message bytes on the way to another node."""

    async def close(self) -> None:
        """Stop the bus's tasks; requests still waiting fail with BusError."""
        for task in list(self._tasks):
            task.cancel()
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(BusError("bus closed"))

    # ---- sending -----------------------------------------------------------------

    async def send(self, node: str, msg: Message) -> None:
        """Deliver an event; to this node: handled now, inline."""
        if node == self.node_id:
            assert self._handler is not None
            await self._handler(msg)
            return
        try:
            await self._publish(node, pack_envelope(BusEvent(self.node_id, body_from_dict(msg))))
        except Exception as exc:  # noqa: BLE001 - the bus is down (or no message): counted, logged
            self.dropped += 1
            logger.warning("bus_send_failed", extra={"node": node, "error": str(exc)})

    async def request(self, node: str, msg: Message, timeout: float = REQUEST_TIMEOUT) -> Message:
        """Deliver a request and return the handler's reply.

        Raises:
            BusError: no reply within `timeout` (the node died, or the bus is down).
        """
        if node == self.node_id:
            assert self._handler is not None
            return await self._handler(msg) or {}
        rid = secrets.token_hex(8)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        try:
            request = BusRequest(self.node_id, rid, body_from_dict(msg))
            await self._publish(node, pack_envelope(request))
            return await asyncio.wait_for(fut, timeout)
        except (asyncio.TimeoutError, OSError, ConnectionError) as exc:
            raise BusError(f"node {node} did not answer {msg.get('t')!r}") from exc
        finally:
            self._replies.pop(rid, None)

    # ---- receiving ---------------------------------------------------------------

    def _reject(self, reason: str, kind: str, size: int) -> None:
        """Count a message dropped for its seal; log its kind and length, never
        its bytes (they came from whoever could write to the bus)."""
        self.rejected[reason] += 1
        n = self.rejected[reason]
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a flood cannot fill the log
            logger.warning(
                "node_message_rejected",
                extra={"reason": reason, "kind": kind, "bytes": size, "count": n},
            )

    def receive(self, data: bytes, sender: str | None = None) -> None:
        """Bytes from the transport: a reply, a request or an event (messages.py);
        anything else is dropped and counted (`dropped`).

        Args:
            sender: the node the transport vouches for (a verified seal): the
                message must name it in `from`.
        """
        try:
            envelope = unpack_envelope(data)
        except ValueError:  # garbage on the bus: counted
            self.dropped += 1
            return
        if sender is not None and envelope.sender != sender:
            self._reject("misdirected", "bus", len(data))
            return
        if isinstance(envelope, BusReply):
            fut = self._replies.get(envelope.request_id)
            if fut is not None and not fut.done():
                fut.set_result(envelope.body)
            return
        if isinstance(envelope, BusRequest):
            self.spawn(self._answer(envelope))
            return
        try:
            self._events.put_nowait(body_to_dict(envelope.body, envelope.sender))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _answer(self, request: BusRequest) -> None:
        assert self._handler is not None
        msg = body_to_dict(request.body, request.sender)
        try:
            body = await self._handler(msg)
        except Exception as exc:  # noqa: BLE001 - the asker gets the error
            logger.exception("bus request %s failed", msg.get("t"))
            body = {"error": str(exc)}
        reply = BusReply(self.node_id, request.request_id, body or {})
        with contextlib.suppress(Exception):
            await self._publish(request.sender, pack_envelope(reply))

    async def _consume(self) -> None:
        assert self._handler is not None
        while True:
            msg = await self._events.get()
            try:
                await self._handler(msg)
            except Exception:
                logger.exception("bus event %s failed", msg.get("t"))

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run `coro` as a task of the bus's: cancelled when the bus closes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _node_down(self, node: str) -> None:
        logger.warning("node_down", extra={"node": node})
        if self.on_node_down is not None:
            try:
                await self.on_node_down(node)
            except Exception:
                logger.exception("handling node %s down failed", node)


class LocalBus(Bus):
    """One node: nothing leaves the process."""

    def nodes(self) -> dict[str, NodeInfo]:
        return {self.node_id: self._info()}

    async def _publish(self, node: str, data: bytes) -> None:
        raise BusError(f"unknown node {node!r} (single node)")
