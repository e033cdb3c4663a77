"""The coordinator's logic driven with fake connections (no sockets): workers
are message lists, or real CoordinatorLinks wired to it through the frame codec."""

from __future__ import annotations

import asyncio

import pytest

from mediaserver.matchmaker import Match, MatchPolicy, MatchRefused
from mediaserver.matchmaker.base import Ticket
from mediaserver.node import messages as m
from mediaserver.node.coordinator import (
    Coordinator,
    CoordinatorBus,
    CoordinatorLink,
    CoordinatorMatchmaker,
)
from mediaserver.node.framing import FrameDecoder, encode_frame


def coordinator() -> Coordinator:
    return Coordinator("/nonexistent/never-bound.sock", MatchPolicy())


def worker(c: Coordinator, node: str) -> list[m.CoordinatorMessage]:
    """A fake connection: what the coordinator sends it lands in the list."""
    inbox: list[m.CoordinatorMessage] = []
    c.join(node, inbox.append)
    return inbox


def enqueue(call_id: int, peer: str, age: bool = True) -> m.Enqueue:
    return m.Enqueue(call_id, peer, f"id-{peer}", f"rep-{peer}", (), None, age)


async def test_bus_bytes_are_relayed_to_the_named_worker_only():
    c = coordinator()
    a, b, x = worker(c, "n.w0"), worker(c, "n.w1"), worker(c, "n.w2")
    await c.receive("n.w0", m.RelayTo("n.w1", b"sealed"))
    await c.receive("n.w0", m.RelayTo("n.w9", b"to nobody"))
    assert (a, b, x) == ([], [m.Relayed(b"sealed")], [])


async def test_a_match_reaches_every_worker_before_the_call_that_made_it_returns():
    c = coordinator()
    a, b = worker(c, "n.w0"), worker(c, "n.w1")
    await c.receive("n.w0", enqueue(1, "n.w0/p"))
    assert a == [m.CallResult(1)]
    await c.receive("n.w1", enqueue(7, "n.w1/q"))
    match = m.MatchFound("n.w0/p", "n.w1/q", ())
    assert a == [m.CallResult(1), match]
    assert b == [match, m.CallResult(7)]


async def test_refusals_errors_and_values_come_back_in_the_result():
    c = coordinator()
    a = worker(c, "n.w0")
    await c.receive("n.w0", enqueue(1, "n.w0/p", age=False))
    await c.receive("n.w0", enqueue(2, "n.w0/q"))
    await c.receive("n.w0", m.QueueLength(3))
    await c.receive("n.w0", m.RecordSkip(4, "id-a", "id-b"))
    await c.receive("n.w0", m.Forget(5, "id-a"))
    await c.receive("n.w0", m.CancelTicket(6, "n.w0/q"))
    await c.receive("n.w0", m.QueueLength(8))
    assert a == [
        m.CallResult(1, refused="age"), m.CallResult(2), m.CallResult(3, value=1),
        m.CallResult(4), m.CallResult(5), m.CallResult(6), m.CallResult(8, value=0),
    ]  # fmt: skip


async def test_a_dead_workers_tickets_leave_the_queue_and_the_others_are_told():
    c = coordinator()
    a, b = worker(c, "n.w0"), worker(c, "n.w1")
    await c.receive("n.w0", m.LoadReport(m.NodeInfo("n.w0", sessions=2)))
    await c.receive("n.w1", m.LoadReport(m.NodeInfo("n.w1")))
    assert c.live_nodes() == m.LiveNodes((m.NodeInfo("n.w0", sessions=2), m.NodeInfo("n.w1")))
    await c.receive("n.w0", enqueue(1, "n.w0/p"))
    await c.leave("n.w0")
    assert b == [m.NodeDown("n.w0")]
    assert c.live_nodes() == m.LiveNodes((m.NodeInfo("n.w1"),))
    await c.receive("n.w1", enqueue(2, "n.w1/q"))  # nobody left to pair with
    assert b == [m.NodeDown("n.w0"), m.CallResult(2)]


async def test_a_restarted_worker_replaces_the_old_connection():
    c = coordinator()
    old: list[m.CoordinatorMessage] = []
    new: list[m.CoordinatorMessage] = []
    send_old, send_new = old.append, new.append
    c.join("n.w0", send_old)
    c.join("n.w0", send_new)
    assert not c.is_connected("n.w0", send_old) and c.is_connected("n.w0", send_new)
    await c.receive("n.w0", m.QueueLength(1))
    assert (old, new) == ([], [m.CallResult(1, value=0)])


# ---- workers' links wired to the coordinator through the frame codec ----------------


class Wire:
    """Worker `node`'s connection: frames both ways, in order, through the codec."""

    def __init__(self, c: Coordinator, link: CoordinatorLink) -> None:
        self.c, self.link = c, link
        self.up: asyncio.Queue[bytes] = asyncio.Queue()
        self.to_coordinator, self.to_worker = FrameDecoder(), FrameDecoder()
        self.node = ""
        self.pump = asyncio.ensure_future(self._pump())
        link.attach(lambda msg: self.up.put_nowait(encode_frame(msg)))

    def down(self, msg: m.CoordinatorMessage) -> None:
        for message in self.to_worker.feed(encode_frame(msg)):
            self.link.receive(message)

    async def _pump(self) -> None:
        while True:
            for message in self.to_coordinator.feed(await self.up.get()):
                if isinstance(message, m.Hello):
                    self.node = message.node
                    self.c.join(message.node, self.down)
                else:
                    await self.c.receive(self.node, message)


async def test_two_workers_buses_and_queues_through_one_coordinator():
    c = coordinator()
    links = [CoordinatorLink("n.w0"), CoordinatorLink("n.w1")]
    wires = [Wire(c, link) for link in links]
    buses = [CoordinatorBus(link) for link in links]
    matches: list[list[Match]] = [[], []]
    queues = [
        CoordinatorMatchmaker(link, MatchPolicy(), got.append)
        for link, got in zip(links, matches)
    ]
    events: list[dict[str, object]] = []

    async def handler_w1(msg: dict[str, object]) -> dict[str, object] | None:
        if msg["t"] == "metrics":
            return {"text": "w1 metrics"}
        events.append(msg)
        return None

    async def handler_w0(msg: dict[str, object]) -> dict[str, object] | None:
        return None

    await buses[0].start(handler_w0, lambda: m.NodeInfo("n.w0"))
    await buses[1].start(handler_w1, lambda: m.NodeInfo("n.w1", sessions=4))
    try:
        await asyncio.sleep(0.05)  # the first load reports reach the coordinator
        c.broadcast(c.live_nodes())
        assert buses[0].nodes()["n.w1"].sessions == 4

        peer_event = {"t": "peer", "to": "n.w1/q", "by": "n.w0/p", "ev": "chat", "text": "hi"}
        await buses[0].send("n.w1", peer_event)
        reply = await buses[0].request("n.w1", {"t": "metrics"})
        assert reply == {"text": "w1 metrics"}
        assert events == [{**peer_event, "from": "n.w0"}]

        await queues[0].enqueue(Ticket("n.w0/p", "id-p", age_confirmed=True))
        await queues[1].enqueue(Ticket("n.w1/q", "id-q", age_confirmed=True))
        assert matches == [[Match("n.w0/p", "n.w1/q", ())]] * 2
        assert await queues[0].queue_length() == 0
        with pytest.raises(MatchRefused):
            await queues[0].enqueue(Ticket("n.w0/r", "id-r", age_confirmed=False))

        down: list[str] = []

        async def on_down(node: str) -> None:
            down.append(node)

        buses[1].on_node_down = on_down
        wires[0].pump.cancel()
        await c.leave("n.w0")
        await asyncio.sleep(0)
        assert down == ["n.w0"] and "n.w0" not in buses[1].nodes()
    finally:
        for wire in wires:
            wire.pump.cancel()
        for bus in buses:
            await bus.close()
