"""One machine's workers without Redis: the coordinator.

The supervisor runs it; every worker holds one Unix-socket connection to it.
It keeps the in-process match queue for all workers (matches go to every
worker, before the reply to the call that made them, as with Redis), relays
bus messages between workers, and tells every worker the live workers and
their load. A worker whose connection drops is dead: its tickets leave the
queue and the others are told.

The messages are in messages.py, their framing on the socket in framing.py.
`Coordinator` keeps its logic apart from the socket: `join(node, send)`,
`receive(node, message)` and `leave(node)` are what the socket shell (and a
test, with fake connections) calls.

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
from collections.abc import Callable
from typing import cast

from mediaserver.matchmaker import InProcessMatchmaker, Match, Matchmaker, MatchPolicy, MatchRefused
from mediaserver.matchmaker.base import OnMatch, RefusalReason, Ticket
from mediaserver.node import messages as m
from mediaserver.node.bus import Bus, Handler, NodeInfo
from mediaserver.node.framing import FrameDecoder, encode_frame

logger = logging.getLogger("mediaserver.node")

TICK = 0.25  # seconds between re-examinations of the queue
NODES_EVERY = 0.5  # seconds between broadcasts of the live workers
INFO_EVERY = 0.5  # seconds between a worker's load reports
CALL_TIMEOUT = 5.0  # seconds a worker waits for the coordinator to answer a call
READ_CHUNK = 1 << 16

SendFrame = Callable[[m.CoordinatorMessage], None]
"""Puts one message on a worker's connection (never blocks)."""


class Coordinator:
    """The shared match queue and the relay between one machine's workers.

    Args:
        path: the Unix socket to listen on (its directory must be this user's, 0700).
        policy: the match queue's rules.
    """

    def __init__(self, path: str, policy: MatchPolicy) -> None:
        self.path = path
        self.matchmaker = InProcessMatchmaker(policy, self._on_match)
        self._workers: dict[str, SendFrame] = {}
        self._infos: dict[str, NodeInfo] = {}
        self._owner: dict[str, str] = {}  # peer -> worker that queued it
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.StreamWriter] = set()
        self.dropped = 0
        """Frames from workers dropped for a body that is no message."""

    # ---- the logic, without the socket -------------------------------------------------

    def join(self, node: str, send: SendFrame) -> None:
        """A worker connected (and said Hello); `send` reaches it."""
        self._workers[node] = send
        logger.info("worker_joined", extra={"node": node})

    def is_connected(self, node: str, send: SendFrame) -> bool:
        """Whether `send` is still the connection of worker `node` (a restarted
        worker of the same id replaces it)."""
        return self._workers.get(node) is send

    async def leave(self, node: str) -> None:
        """A worker's connection dropped: it is dead. Its tickets leave the queue;
        the others are told."""
        del self._workers[node]
        self._infos.pop(node, None)
        doomed = [peer for peer, owner in self._owner.items() if owner == node]
        for peer in doomed:
            self._owner.pop(peer, None)
            await self.matchmaker.cancel(peer)
        logger.warning("worker_gone", extra={"node": node, "tickets_cancelled": len(doomed)})
        self.broadcast(m.NodeDown(node))

    async def receive(self, node: str, message: m.CoordinatorMessage) -> None:
        """One message from worker `node`."""
        if isinstance(message, m.RelayTo):
            target = self._workers.get(message.node)
            if target is not None:
                target(m.Relayed(message.data))
        elif isinstance(message, m.LoadReport):
            self._infos[node] = message.info
        elif isinstance(message, m.TICKET_CALLS):
            call = cast(m.TicketCall, message)
            result = m.CallResult(call.call_id)
            try:
                result = m.CallResult(call.call_id, value=await self._call(node, call))
            except MatchRefused as exc:
                result = m.CallResult(call.call_id, refused=exc.reason)
            except Exception as exc:  # noqa: BLE001 - the worker gets the error
                result = m.CallResult(call.call_id, error=str(exc))
            sender = self._workers.get(node)
            if sender is not None:
                sender(result)
        # anything else only goes the other way: ignored

    def broadcast(self, message: m.CoordinatorMessage) -> None:
        """`message` to every worker."""
        for send in list(self._workers.values()):
            with contextlib.suppress(Exception):
                send(message)

    def live_nodes(self) -> m.LiveNodes:
        """The workers alive, as their last load reports say."""
        return m.LiveNodes(tuple(self._infos.values()))

    def _on_match(self, match: Match) -> None:
        for peer in (match.a, match.b):
            self._owner.pop(peer, None)
        self.broadcast(m.MatchFound(match.a, match.b, tuple(match.shared_interests)))

    async def _call(self, node: str, call: m.TicketCall) -> int | None:
        mm = self.matchmaker
        if isinstance(call, m.Enqueue):
            ticket = Ticket(
                peer=call.peer, identity=call.identity, reputation=call.reputation,
                interests=frozenset(call.interests), language=call.language,
                age_confirmed=call.age_confirmed,
            )  # fmt: skip
            self._owner[call.peer] = node
            try:
                await mm.enqueue(ticket)
            except MatchRefused:
                self._owner.pop(call.peer, None)
                raise
        elif isinstance(call, m.CancelTicket):
            self._owner.pop(call.peer, None)
            await mm.cancel(call.peer)
        elif isinstance(call, m.QueueLength):
            return await mm.queue_length()
        elif isinstance(call, m.RecordSkip):
            await mm.record_skip(call.identity, call.other_identity)
        elif isinstance(call, m.RecordBlock):
            await mm.record_block(call.identity, call.other_identity)
        elif isinstance(call, m.RecordReport):
            await mm.record_report(call.identity, call.other_identity)
        else:
            await mm.forget(call.identity)
        return None

    # ---- the socket shell --------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the socket (0600), tick the queue and announce the live workers.

        Raises:
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
        """Stop listening and drop every worker's connection (they exit)."""
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()

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
            self.broadcast(self.live_nodes())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(message: m.CoordinatorMessage) -> None:
            writer.write(encode_frame(message))

        decoder = FrameDecoder()
        node = ""
        self._connections.add(writer)
        try:
            while True:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    break
                dropped = decoder.dropped
                messages = decoder.feed(chunk)
                self.dropped += decoder.dropped - dropped
                for message in messages:
                    if not node:
                        if not isinstance(message, m.Hello):
                            return  # a connection says who it is first
                        node = message.node
                        self.join(node, send)
                    else:
                        await self.receive(node, message)
        except (ConnectionError, ValueError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            if node and self.is_connected(node, send):
                await self.leave(node)


class CoordinatorLink:
    """A worker's connection to the coordinator, shared by its bus and matchmaker.

    `connect` opens the Unix socket; `attach` takes any other way to the
    coordinator (a test's), with `receive` called for what comes back.
    """

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._transmit: SendFrame | None = None
        self._decoder = FrameDecoder()
        self._last_call_id = 0
        self._calls: dict[int, asyncio.Future[m.CallResult]] = {}
        self.bus: CoordinatorBus | None = None
        self.matchmaker: CoordinatorMatchmaker | None = None
        self.on_lost: Callable[[], None] | None = None
        """The coordinator is gone (the supervisor died): the worker should exit."""
        self._task: asyncio.Task[None] | None = None

    async def connect(self, path: str) -> None:
        """Connect to the coordinator's socket at `path` and say Hello."""
        self._reader, writer = await asyncio.open_unix_connection(path)
        self._writer = writer

        def transmit(message: m.CoordinatorMessage) -> None:
            if writer.is_closing():
                raise ConnectionError("coordinator connection closed")
            writer.write(encode_frame(message))

        self.attach(transmit)
        self._task = asyncio.create_task(self._read())

    def attach(self, transmit: SendFrame) -> None:
        """Use `transmit` to reach the coordinator, and say Hello through it."""
        self._transmit = transmit
        transmit(m.Hello(self.node_id))

    def send(self, message: m.CoordinatorMessage) -> None:
        """Raises:
        ConnectionError: the connection is closed.
        """
        if self._transmit is None:
            raise ConnectionError("not connected to the coordinator")
        self._transmit(message)

    def new_call_id(self) -> int:
        """An id for the next ticket call (pairs its CallResult with it)."""
        self._last_call_id += 1
        return self._last_call_id

    async def call(self, call: m.TicketCall) -> int | None:
        """Make a ticket call and return its value.

        Raises:
            MatchRefused: the queue refused the ticket.
            RuntimeError: the call failed in the coordinator.
            ConnectionError, asyncio.TimeoutError: no answer.
        """
        fut: asyncio.Future[m.CallResult] = asyncio.get_running_loop().create_future()
        self._calls[call.call_id] = fut
        try:
            self.send(call)
            result = await asyncio.wait_for(fut, CALL_TIMEOUT)
        finally:
            self._calls.pop(call.call_id, None)
        if result.refused is not None:
            raise MatchRefused(cast(RefusalReason, result.refused))
        if result.error is not None:
            raise RuntimeError(f"coordinator: {result.error}")
        return result.value

    def receive(self, message: m.CoordinatorMessage) -> None:
        """One message from the coordinator."""
        if isinstance(message, m.CallResult):
            fut = self._calls.get(message.call_id)
            if fut is not None and not fut.done():
                fut.set_result(message)
        elif isinstance(message, m.MatchFound) and self.matchmaker is not None:
            self.matchmaker.deliver(Match(message.a, message.b, message.shared))
        elif isinstance(message, m.Relayed) and self.bus is not None:
            self.bus.receive(message.data)
        elif isinstance(message, m.LiveNodes) and self.bus is not None:
            self.bus.update_nodes(list(message.infos))
        elif isinstance(message, m.NodeDown) and self.bus is not None:
            self.bus.node_gone(message.node)

    async def _read(self) -> None:
        assert self._reader is not None
        why = "closed"
        try:
            while True:
                chunk = await self._reader.read(READ_CHUNK)
                if not chunk:
                    break
                for message in self._decoder.feed(chunk):
                    self.receive(message)
        except (ConnectionError, ValueError) as exc:
            why = str(exc) or type(exc).__name__
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(ConnectionError("coordinator connection lost"))
        logger.error("coordinator_lost", extra={"error": why})
        if self.on_lost is not None:
            self.on_lost()

    async def close(self) -> None:
        """Stop reading and close the connection."""
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()


class CoordinatorMatchmaker(Matchmaker):
    """The shared queue of the coordinator, seen from one worker."""

    def __init__(self, link: CoordinatorLink, policy: MatchPolicy, on_match: OnMatch) -> None:
        super().__init__(policy, on_match)
        self._link = link
        link.matchmaker = self

    def deliver(self, match: Match) -> None:
        """A match the coordinator made: to this worker's hub."""
        self._emit([match])

    async def enqueue(self, ticket: Ticket) -> None:
        if not ticket.age_confirmed:
            raise MatchRefused("age")
        await self._link.call(
            m.Enqueue(
                self._link.new_call_id(), ticket.peer, ticket.identity, ticket.reputation,
                tuple(sorted(ticket.interests)), ticket.language, ticket.age_confirmed,
            )
        )  # fmt: skip

    async def cancel(self, peer: str) -> None:
        await self._link.call(m.CancelTicket(self._link.new_call_id(), peer))

    async def record_skip(self, identity: str, other_identity: str) -> None:
        await self._link.call(m.RecordSkip(self._link.new_call_id(), identity, other_identity))

    async def record_block(self, identity: str, other_identity: str) -> None:
        await self._link.call(m.RecordBlock(self._link.new_call_id(), identity, other_identity))

    async def record_report(self, reporter_identity: str, reported_identity: str) -> None:
        await self._link.call(
            m.RecordReport(self._link.new_call_id(), reporter_identity, reported_identity)
        )

    async def forget(self, identity: str) -> None:
        await self._link.call(m.Forget(self._link.new_call_id(), identity))

    async def tick(self) -> None:
        """The coordinator ticks the shared queue itself."""

    async def queue_length(self) -> int:
        return int(await self._link.call(m.QueueLength(self._link.new_call_id())) or 0)

    async def close(self) -> None:
        """The link is closed with the bus."""


class CoordinatorBus(Bus):
    """The bus between one machine's workers, relayed by the coordinator."""

    def __init__(self, link: CoordinatorLink) -> None:
        super().__init__(link.node_id)
        self._link = link
        link.bus = self
        self._alive: dict[str, NodeInfo] = {}

    async def start(self, handler: Handler, info: Callable[[], NodeInfo]) -> None:
        await super().start(handler, info)
        self._report()
        self.spawn(self._reporter())

    def _report(self) -> None:
        with contextlib.suppress(ConnectionError):
            self._link.send(m.LoadReport(self._info()))

    async def _reporter(self) -> None:
        while True:
            await asyncio.sleep(INFO_EVERY)
            self._report()

    def nodes(self) -> dict[str, NodeInfo]:
        alive = dict(self._alive)
        alive[self.node_id] = self._info()
        return alive

    def update_nodes(self, infos: list[NodeInfo]) -> None:
        """The live workers, as the coordinator last announced them."""
        self._alive = {info.id: info for info in infos}

    def node_gone(self, node: str) -> None:
        """The coordinator says worker `node` died."""
        self._alive.pop(node, None)
        if node != self.node_id:
            self.spawn(self._node_down(node))

    async def _publish(self, node: str, data: bytes) -> None:
        self._link.send(m.RelayTo(node, data))

    async def close(self) -> None:
        await super().close()
        await self._link.close()
