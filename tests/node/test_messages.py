"""Every node message round-trips through the one codec; anything else is a
ValueError that says what is wrong."""

from __future__ import annotations

import msgpack
import pytest

from mediaserver.node import messages as m

SAMPLES: list[m.NodeMessage] = [
    m.PeerEvent("a/1", "b/2", "chat", {"text": "hi", "shared": ["x"]}),
    m.PeerEvent("a/1", "b/2", "typing"),
    m.CreateSession("v=0\r\n", "a/1"),
    m.CreateSession("v=0\r\n", "", restart="s1"),
    m.ConnectSessions("s1", "s2"),
    m.DisconnectSessions("s1", "s2"),
    m.CloseSession("s1"),
    m.SetEffect("s1", "blur"),
    m.SetEffect("s1", None, cover=True),
    m.CaptureStill("s1"),
    m.MediaClosed("a/1", "s1", "ice timeout", "b"),
    m.CoverFailed("a/1", "s1"),
    m.MetricsRequest(),
    m.Hello("n.w0"),
    m.RelayTo("n.w1", b"\x81\xa1t\xa4peer"),
    m.Relayed(b"\x00\xff"),
    m.LoadReport(m.NodeInfo("n.w0", "10.0.0.1", 40000, 6, 100)),
    m.LiveNodes((m.NodeInfo("n.w0"), m.NodeInfo("n.w1", sessions=2))),
    m.LiveNodes(()),
    m.NodeDown("n.w1"),
    m.MatchFound("a/1", "b/2", ("music", "film")),
    m.Enqueue(1, "a/1", "id-a", "rep-a", ("film", "music"), "en", True),
    m.CancelTicket(2, "a/1"),
    m.RecordSkip(3, "id-a", "id-b"),
    m.RecordBlock(4, "id-a", "id-b"),
    m.RecordReport(5, "rep-a", "rep-b"),
    m.Forget(6, "id-a"),
    m.QueueLength(7),
    m.CallResult(7, value=3),
    m.CallResult(1, refused="age"),
    m.CallResult(2, error="boom"),
]


def test_every_message_type_has_a_sample():
    assert {type(s) for s in SAMPLES} == set(m._KINDS.values())


@pytest.mark.parametrize("message", SAMPLES, ids=lambda s: type(s).__name__)
def test_round_trip_through_map_and_bytes(message):
    wire = m.to_wire(message)
    assert wire["t"] == message.TYPE
    assert m.from_wire(wire) == message
    assert m.unpack(m.pack(message)) == message


def test_a_peer_event_is_flat_on_the_wire_as_the_hub_sends_it():
    hub_dict = {"t": "peer", "to": "a/1", "by": "b/2", "ev": "chat", "text": "hi"}
    event = m.body_from_dict({**hub_dict, "from": "b"})
    assert event == m.PeerEvent("a/1", "b/2", "chat", {"text": "hi"})
    assert m.body_to_dict(event, "b") == {**hub_dict, "from": "b"}


@pytest.mark.parametrize(
    "envelope",
    [
        m.BusEvent("n.w0", m.PeerEvent("a/1", "b/2", "left", {"reason": "skip"})),
        m.BusRequest("n.w0", "0123abcd", m.SetEffect("s1", None, cover=True)),
        m.BusRequest("n.w1", "ff", m.MetricsRequest()),
        m.BusReply("n.w1", "ff", {"text": "# HELP"}),
        m.BusReply("n.w1", "ff", {}),
    ],
    ids=lambda e: type(e).__name__,
)
def test_envelopes_round_trip(envelope):
    assert m.unpack_envelope(m.pack_envelope(envelope)) == envelope


def test_node_info_round_trips_as_a_registry_entry():
    info = m.NodeInfo("b", "192.0.2.7", 41000, 10, 20)
    assert m.NodeInfo.decode(info.encode()) == info


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        ([1, 2], "a message is a map, not list"),
        ({"t": "nope"}, "unknown message type 'nope'"),
        ({"x": 1}, "unknown message type None"),
        ({"t": "down"}, "down: missing field 'node'"),
        ({"t": "down", "node": "a", "extra": 1}, "down: unknown field 'extra'"),
        ({"t": "down", "node": 5}, "down.node: expected str, got int"),
        ({"t": "queue_length", "call_id": True}, "queue_length.call_id: expected int, got bool"),
        ({"t": "match", "a": "x", "b": "y", "shared": "music"},
         "match.shared: expected a list, got str"),
        ({"t": "nodes", "infos": [{"id": "a", "sessions": "many"}]},
         "nodes.infos: NodeInfo.sessions: expected int, got str"),
        ({"t": "peer", "to": "a", "by": "b"}, "peer.ev: expected str, got NoneType"),
        ({"t": "effect", "session": "s", "name": 3}, "effect.name: expected str, got int"),
        ({"t": "effect", "session": "s", "name": None, "cover": 1},
         "effect.cover: expected bool, got int"),
        ({"t": "down", "nod": "a"}, "down: missing field 'node'"),
    ],
)
def test_malformed_maps_are_precise_value_errors(wire, error):
    with pytest.raises(ValueError) as info:
        m.from_wire(wire)
    assert str(info.value) == error


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xc1", "not msgpack: "),
        (msgpack.packb([1]), "a message is a map, not list"),
        (msgpack.packb({"t": "peer", "to": "a", "by": "b", "ev": "x"}), "bus message without a sender"),
        (msgpack.packb({"t": "reply", "from": "n", "rid": 1, "body": {}}), "reply needs 'rid'"),
        (msgpack.packb({"t": "hello", "node": "n", "from": "n"}), "'hello' is not a bus message"),
        (msgpack.packb({"t": "close", "session": "s", "from": "n", "rid": 7}), "'rid' must be a str"),
    ],
)
def test_malformed_envelopes_are_precise_value_errors(data, error):
    with pytest.raises(ValueError) as info:
        m.unpack_envelope(data)
    assert str(info.value).startswith(error)
