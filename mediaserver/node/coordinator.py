"""One machine's workers without Redis: the coordinator.

The supervisor runs it; every worker holds one Unix-socket connection to it.
It keeps the in-process match queue for all workers (matches go to every
worker, before the reply to the call that made them, as with Redis), relays
bus messages between workers, and tells every worker the live workers and
their load. A worker whose connection drops is dead: its tickets leave the
queue and the others are told.

Frames: 4-byte big-endian length, then a msgpack map with a type `t`.

Whoever can connect to the socket can join as a worker (and see every visitor's
signalling), so only this user may: the socket is 0600 in a directory of its
own that only this user can enter (the supervisor makes one with mkdtemp).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import struct
from collections.abc import Callable
from typing import Any

import msgpack

from mediaserver.matchmaker import InProcessMatchmaker, Match, Matchmaker, MatchPolicy, MatchRefused
from mediaserver.matchmaker.base import OnMatch, Ticket
from mediaserver.node.bus import Bus, Handler, NodeInfo

logger = logging.getLogger("mediaserver.node")

MAX_FRAME = 1 << 20
TICK = 0.25  # seconds between re-examinations of the queue
NODES_EVERY = 0.5  # seconds between broadcasts of the live workers
INFO_EVERY = 0.5  # seconds between a worker's load reports
_OPS = (
    "enqueue", "cancel", "record_skip", "record_block", "record_report", "queue_length",
    "forget",
)


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    msg = msgpack.unpackb(await reader.readexactly(size))
    if not isinstance(msg, dict):
        raise ValueError("frame is not a map")
    return msg


def write_frame(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    data = msgpack.packb(msg)
    writer.write(struct.pack(">I", len(data)) + data)


class Coordinator:
    def __init__(self, path: str, policy: MatchPolicy) -> None:
        self.path = path
        self.matchmaker = InProcessMatchmaker(policy, self._on_match)
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._infos: dict[str, bytes] = {}
        self._owner: dict[str, str] = {}  # peer -> worker that queued it
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Raises:
        PermissionError: the socket's directory is open to group or others.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        st = os.stat(directory)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise PermissionError(
                f"coordinator directory {directory!r} must be this user's, mode 0700, "
                f"not {stat.S_IMODE(st.st_mode):04o}"
            )
        # bound with a umask that leaves it 0600 from the start (no window for a
        # connect between bind and chmod)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._tasks = [asyncio.create_task(self._ticker()), asyncio.create_task(self._announce())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.close()

    def _broadcast(self, msg: dict[str, Any]) -> None:
        for writer in list(self._writers.values()):
            with contextlib.suppress(Exception):
                write_frame(writer, msg)

    def _on_match(self, match: Match) -> None:
        for peer in (match.a, match.b):
            self._owner.pop(peer, None)
        self._broadcast(
            {"t": "match", "a": match.a, "b": match.b, "shared": list(match.shared_interests)}
        )

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.matchmaker.tick()
            except Exception:
                logger.exception("coordinator tick failed")

    async def _announce(self) -> None:
        while True:
            await asyncio.sleep(NODES_EVERY)
            self._broadcast({"t": "nodes", "infos": list(self._infos.values())})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node = ""
        try:
            hello = await read_frame(reader)
            node = str(hello["node"])
            self._writers[node] = writer
            logger.info("worker_joined", extra={"node": node})
            while True:
                msg = await read_frame(reader)
                await self._handle(node, writer, msg)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError):
            pass
        finally:
            writer.close()
            if node and self._writers.get(node) is writer:
                await self._worker_gone(node)

    async def _worker_gone(self, node: str) -> None:
        del self._writers[node]
        self._infos.pop(node, None)
        doomed = [peer for peer, owner in self._owner.items() if owner == node]
        for peer in doomed:
            self._owner.pop(peer, None)
            await self.matchmaker.cancel(peer)
        logger.warning("worker_gone", extra={"node": node, "tickets_cancelled": len(doomed)})
        self._broadcast({"t": "down", "node": node})

    async def _handle(self, node: str, writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
        t = msg.get("t")
        if t == "to":
            target = self._writers.get(str(msg.get("node")))
            if target is not None:
                write_frame(target, {"t": "msg", "data": msg.get("data")})
        elif t == "info":
            self._infos[node] = bytes(msg["data"])
        elif t == "mm":
            reply: dict[str, Any] = {"t": "mm_reply", "id": msg.get("id")}
            try:
                reply["ok"] = await self._call(node, str(msg["op"]), list(msg.get("args", ())))
            except MatchRefused as exc:
                reply["refused"] = exc.reason
            except Exception as exc:  # noqa: BLE001 - the worker gets the error
                reply["error"] = str(exc)
            write_frame(writer, reply)

    async def _call(self, node: str, op: str, args: list[Any]) -> Any:
        if op not in _OPS:
            raise ValueError(f"unknown matchmaker call {op!r}")
        mm = self.matchmaker
        if op == "enqueue":
            peer, identity, reputation, interests, language, age = args
            ticket = Ticket(
                peer=peer, identity=identity, reputation=reputation,
                interests=frozenset(interests), language=language, age_confirmed=age,
            )
            self._owner[peer] = node
            try:
                await mm.enqueue(ticket)
            except MatchRefused:
                self._owner.pop(peer, None)
                raise
            return None
        if op == "cancel":
            self._owner.pop(args[0], None)
            await mm.cancel(args[0])
            return None
        if op == "queue_length":
            return await mm.queue_length()
        method: Callable[..., Any] = getattr(mm, op)
        await method(*args)
        return None


class CoordinatorLink:
    """A worker's connection to the coordinator, shared by its bus and matchmaker."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0
        self._calls: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.bus: CoordinatorBus | None = None
        self.matchmaker: CoordinatorMatchmaker | None = None
        self.on_lost: Callable[[], None] | None = None
        """The coordinator is gone (the supervisor died): the worker should exit."""
        self._task: asyncio.Task[None] | None = None

    async def connect(self, path: str) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(path)
        write_frame(self._writer, {"t": "hello", "node": self.node_id})
        self._task = asyncio.create_task(self._read())

    def send(self, msg: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("coordinator connection closed")
        write_frame(self._writer, msg)

    async def call(self, op: str, *args: Any) -> Any:
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[rid] = fut
        try:
            self.send({"t": "mm", "id": rid, "op": op, "args": list(args)})
            reply = await asyncio.wait_for(fut, 5.0)
        finally:
            self._calls.pop(rid, None)
        if "refused" in reply:
            raise MatchRefused(reply["refused"])
        if "error" in reply:
            raise RuntimeError(f"coordinator: {reply['error']}")
        return reply.get("ok")

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while True:
                msg = await read_frame(self._reader)
                self._dispatch(msg)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(ConnectionError("coordinator connection lost"))
        logger.error("coordinator_lost")
        if self.on_lost is not None:
            self.on_lost()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        t = msg.get("t")
        if t == "mm_reply":
            fut = self._calls.get(int(msg.get("id") or 0))
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif t == "match" and self.matchmaker is not None:
            shared = tuple(str(s) for s in msg.get("shared", ()))
            self.matchmaker.deliver(Match(str(msg["a"]), str(msg["b"]), shared))
        elif t == "msg" and self.bus is not None:
            self.bus._deliver(bytes(msg["data"]))
        elif t == "nodes" and self.bus is not None:
            self.bus.update_nodes([bytes(i) for i in msg.get("infos", ())])
        elif t == "down" and self.bus is not None:
            self.bus.node_gone(str(msg["node"]))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()


class CoordinatorMatchmaker(Matchmaker):
    def __init__(self, link: CoordinatorLink, policy: MatchPolicy, on_match: OnMatch) -> None:
        super().__init__(policy, on_match)
        self._link = link
        link.matchmaker = self

    def deliver(self, match: Match) -> None:
        self._emit([match])

    async def enqueue(self, ticket: Ticket) -> None:
        if not ticket.age_confirmed:
            raise MatchRefused("age")
        await self._link.call(
            "enqueue", ticket.peer, ticket.identity, ticket.reputation,
            sorted(ticket.interests), ticket.language, ticket.age_confirmed,
        )

    async def cancel(self, peer: str) -> None:
        await self._link.call("cancel", peer)

    async def record_skip(self, identity: str, other_identity: str) -> None:
        await self._link.call("record_skip", identity, other_identity)

    async def record_block(self, identity: str, other_identity: str) -> None:
        await self._link.call("record_block", identity, other_identity)

    async def record_report(self, reporter_identity: str, reported_identity: str) -> None:
        await self._link.call("record_report", reporter_identity, reported_identity)

    async def forget(self, identity: str) -> None:
        await self._link.call("forget", identity)

    async def tick(self) -> None:
        """The coordinator ticks the shared queue itself."""

    async def queue_length(self) -> int:
        return int(await self._link.call("queue_length"))

    async def close(self) -> None:
        """The link is closed with the bus."""


class CoordinatorBus(Bus):
    def __init__(self, link: CoordinatorLink) -> None:
        super().__init__(link.node_id)
        self._link = link
        link.bus = self
        self._alive: dict[str, NodeInfo] = {}

    async def start(self, handler: Handler, info: Callable[[], NodeInfo]) -> None:
        await super().start(handler, info)
        self._report()
        self._spawn(self._reporter())

    def _report(self) -> None:
        with contextlib.suppress(ConnectionError):
            self._link.send({"t": "info", "data": self._info().encode()})

    async def _reporter(self) -> None:
        while True:
            await asyncio.sleep(INFO_EVERY)
            self._report()

    def nodes(self) -> dict[str, NodeInfo]:
        alive = dict(self._alive)
        alive[self.node_id] = self._info()
        return alive

    def update_nodes(self, infos: list[bytes]) -> None:
        alive: dict[str, NodeInfo] = {}
        for raw in infos:
            with contextlib.suppress(Exception):
                info = NodeInfo.decode(raw)
                alive[info.id] = info
        self._alive = alive

    def node_gone(self, node: str) -> None:
        self._alive.pop(node, None)
        if node != self.node_id:
            self._spawn(self._node_down(node))

    async def _publish(self, node: str, data: bytes) -> None:
        self._link.send({"t": "to", "node": node, "data": data})

    async def close(self) -> None:
        await super().close()
        await self._link.close()
