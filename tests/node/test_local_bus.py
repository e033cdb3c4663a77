"""The in-process bus (one node), and what every bus does with bytes from its
transport: typed envelopes in, malformed ones dropped and counted."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from mediaserver.node import messages as m
from mediaserver.node.bus import BusError, LocalBus


class Recorder:
    def __init__(self, reply: dict[str, object] | None = None) -> None:
        self.got: list[dict[str, object]] = []
        self.reply = reply

    async def __call__(self, msg: dict[str, object]) -> dict[str, object] | None:
        self.got.append(msg)
        return self.reply


async def started(handler: Recorder, node: str = "solo") -> LocalBus:
    bus = LocalBus(node)
    await bus.start(handler, lambda: m.NodeInfo(node, sessions=3))
    return bus


async def test_to_itself_an_event_is_handled_inline_and_a_request_answered():
    handler = Recorder({"text": "metrics"})
    bus = await started(handler)
    try:
        event = {"t": "peer", "to": "solo/a", "by": "solo/b", "ev": "typing"}
        await bus.send("solo", event)
        assert handler.got == [event]  # before send returned
        assert await bus.request("solo", {"t": "metrics"}) == {"text": "metrics"}
        handler.reply = None
        assert await bus.request("solo", {"t": "metrics"}) == {}
        assert bus.nodes() == {"solo": m.NodeInfo("solo", sessions=3)}
    finally:
        await bus.close()


async def test_no_other_node_a_send_is_counted_a_request_raises():
    bus = await started(Recorder())
    try:
        await bus.send("other", {"t": "peer", "to": "other/a", "by": "solo/b", "ev": "chat"})
        assert bus.dropped == 1
        with pytest.raises(BusError, match="unknown node 'other'"):
            await bus.request("other", {"t": "metrics"})
    finally:
        await bus.close()


def test_a_node_id_is_checked():
    with pytest.raises(ValueError, match="node id must be"):
        LocalBus("a b")


async def test_bytes_from_the_transport_reach_the_handler_as_the_hub_reads_them():
    handler = Recorder()
    bus = await started(handler)
    try:
        event = m.PeerEvent("solo/a", "far/b", "chat", {"text": "hi"})
        bus.receive(m.pack_envelope(m.BusEvent("far", event)), sender="far")
        for _ in range(3):
            await asyncio.sleep(0)
        assert handler.got == [
            {"t": "peer", "to": "solo/a", "by": "far/b", "ev": "chat", "text": "hi", "from": "far"}
        ]
    finally:
        await bus.close()


async def test_malformed_or_misdirected_bytes_are_dropped_and_counted():
    handler = Recorder()
    bus = await started(handler)
    try:
        bus.receive(b"\xc1 not msgpack")
        bus.receive(msgpack.packb({"t": "peer", "to": "solo/a", "from": "far"}))  # no by, ev
        bus.receive(msgpack.packb({"t": "launch", "from": "far"}))  # unknown type
        bus.receive(m.pack_envelope(m.BusEvent("far", m.CloseSession("s"))), sender="near")
        for _ in range(3):
            await asyncio.sleep(0)
        assert handler.got == []
        assert bus.dropped == 3
        assert bus.rejected == {"misdirected": 1}
    finally:
        await bus.close()


async def test_a_reply_from_the_transport_ends_the_request_waiting_for_it():
    sent: list[bytes] = []

    class CapturingBus(LocalBus):
        async def _publish(self, node: str, data: bytes) -> None:
            sent.append(data)

    bus = CapturingBus("solo")
    await bus.start(Recorder(), lambda: m.NodeInfo("solo"))
    try:
        asking = asyncio.ensure_future(bus.request("far", {"t": "close", "session": "s"}))
        await asyncio.sleep(0.01)
        request = m.unpack_envelope(sent[0])
        assert isinstance(request, m.BusRequest)
        assert request.body == m.CloseSession("s") and request.sender == "solo"
        bus.receive(m.pack_envelope(m.BusReply("far", request.request_id, {"ok": 1})))
        assert await asking == {"ok": 1}
    finally:
        await bus.close()
