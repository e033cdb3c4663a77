"""Direct messages and calls between connections in the hub: real SQLite store,
recording connections, fake media, linked in-process buses for two nodes, virtual time
for the ring's timeout (no sleeping)."""

from __future__ import annotations

import pytest

from mediaserver.node.bus import LocalBus
from mediaserver.signalling.calls import RING_SECONDS
from mediaserver.signalling.visitors import State
from mediaserver.store import Store
from mediaserver.store.conversations import MISSED_CALL
from tests.signalling.test_hub import Node
from tests.support.hub_fakes import LinkedBus, SharedQueue, VirtualClock, settle, until
from tests.support.store import KEY


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "hub.db"), KEY)
    yield s
    s.close()


class People:
    """Two connected accounts, alice and bobby, and their conversation."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.alice, self.alice_token = store.create_profile(
            "alice", "1990-01-02", discoverable=True)
        self.bobby, self.bobby_token = store.create_profile(
            "bobby", "1990-01-02", discoverable=True)
        asked = store.request_connection(self.alice.id, "bobby")
        self.conversation = store.accept_connection(self.bobby.id, asked["id"])[
            "conversation_id"]


@pytest.fixture
def people(store):
    return People(store)


async def page(node: Node, token: str | None = None, address: str = "192.0.2.1"):
    """A page that said hello (signed in with `token`)."""
    conn = node.connect(address)
    hello = {"age_confirmed": True} if token is None else {"age_confirmed": True,
                                                             "token": token}
    await node.send(conn, "hello", **hello)
    await until(lambda: conn.sent)
    assert conn.types() == ["welcome"], conn.sent
    conn.take()
    return conn


async def send(node: Node, conn, kind: str, **fields) -> None:
    """A message, and time for the store's thread and the spawned tasks."""
    await node.send(conn, kind, **fields)
    for _ in range(20):
        await until(lambda: True)
        await settle()


@pytest.fixture
async def node(clock, store):
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    yield n
    await n.hub.close()


@pytest.fixture
async def cluster(clock, store):
    buses: dict = {}
    queue = SharedQueue(clock)
    nodes = [await Node(LinkedBus(name, buses), clock, queue, store=store).start()
             for name in ("n1", "n2")]
    yield nodes
    for n in nodes:
        await n.hub.close()


# ---- direct messages -------------------------------------------------------------------


async def test_a_direct_message_reaches_every_page_of_both_but_the_senders(node, people):
    people.store.update_conversation(people.bobby.id, people.conversation, keep_history=True)
    a1, a2 = await page(node, people.alice_token), await page(node, people.alice_token)
    b1, b2 = await page(node, people.bobby_token), await page(node, people.bobby_token)
    stranger = await page(node)
    await send(node, a1, "direct", conversation_id=people.conversation, text="hi bobby")
    [ack] = a1.take()
    assert ack["type"] == "direct_sent" and ack["conversation_id"] == people.conversation
    for conn, side in ((b1, "them"), (b2, "them"), (a2, "me")):
        [got] = conn.take()
        assert got["type"] == "direct" and got["text"] == "hi bobby"
        assert got["from"] == side and got["id"] == ack["id"]
    assert stranger.sent == []
    kept, _ = people.store.conversation_messages(people.bobby.id, people.conversation)
    assert [m["text"] for m in kept] == ["hi bobby"]
    assert people.store.conversation_messages(people.alice.id, people.conversation)[0] == []


async def test_direct_messages_never_reach_a_random_partner(node, people):
    b = await page(node, people.bobby_token, "192.0.2.2")
    stranger = await page(node, None, "192.0.2.3")
    for conn in (b, stranger):
        await send(node, conn, "start")
    assert b.visitor.state is State.MATCHED
    b.take(), stranger.take()
    a = await page(node, people.alice_token)
    await send(node, a, "direct", conversation_id=people.conversation, text="private")
    assert [m["type"] for m in b.take()] == ["direct"]
    assert stranger.sent == []


async def test_only_signed_in_connected_pages_may_send(node, people, store):
    anonymous = await page(node)
    await send(node, anonymous, "direct", conversation_id=people.conversation, text="x")
    assert anonymous.last("error")["code"] == "unauthorized"
    eve, eve_token = store.create_profile("eve_1", "1990-01-02")
    e = await page(node, eve_token)
    await send(node, e, "direct", conversation_id=people.conversation, text="x")
    assert e.last("error")["code"] == "not_found"
    store.block(people.bobby.id, "alice")
    a = await page(node, people.alice_token)
    await send(node, a, "direct", conversation_id=people.conversation, text="x")
    assert a.last("error")["code"] == "not_connected"
    await send(node, a, "call", conversation_id=people.conversation)
    assert a.last("error")["code"] == "not_connected" and a.visitor.call is None


async def test_a_direct_message_crosses_nodes(cluster, people):
    n1, n2 = cluster
    a = await page(n1, people.alice_token)
    b = await page(n2, people.bobby_token)
    await send(n1, a, "direct", conversation_id=people.conversation, text="over the bus")
    await until(lambda: b.sent)
    assert b.sent[0]["type"] == "direct" and b.sent[0]["text"] == "over the bus"


# ---- calls ----------------------------------------------------------------------------


async def ring(node, people, caller, *callees):
    await send(node, caller, "call", conversation_id=people.conversation)
    ringing = caller.last("call_ringing")
    for conn in callees:
        incoming = conn.last("call_incoming")
        assert incoming["call_id"] == ringing["call_id"] and incoming["from"] == "alice"
        assert incoming["conversation_id"] == people.conversation
        conn.take()
    caller.take()
    return ringing["call_id"]


async def test_a_call_is_answered_paired_like_a_match_and_hung_up(node, people):
    a = await page(node, people.alice_token)
    b1, b2 = await page(node, people.bobby_token), await page(node, people.bobby_token)
    call_id = await ring(node, people, a, b1, b2)
    await send(node, b1, "call_answer", call_id=call_id)
    assert b2.types() == ["call_ended"] and b2.sent[0]["reason"] == "answered_elsewhere"
    for conn in (a, b1):
        started = conn.last("call_started")
        assert started["call_id"] == call_id and conn.visitor.state is State.MATCHED
    assert a.visitor.partner.id == b1.visitor.id and b1.visitor.partner.id == a.visitor.id
    # the same offer/answer and forwarding as a random pair
    await send(node, a, "offer", sdp="a")
    await send(node, b1, "offer", sdp="b")
    sa, sb = a.visitor.session_id, b1.visitor.session_id
    assert {(sa, sb), (sb, sa)} <= node.media.forwarded()
    a.take(), b1.take()
    await send(node, a, "chat", text="live in the call")
    assert b1.last("chat")["text"] == "live in the call"
    await send(node, b1, "call_hangup", call_id=call_id)
    for conn in (a, b1):
        assert conn.last("call_ended")["reason"] == "hangup"
        assert conn.visitor.state is State.IDLE and conn.visitor.call is None
        assert "queued" not in conn.types()  # a call never leads to the random queue
    assert node.media.forwarded() == set()


async def test_a_ring_nobody_answers_times_out_into_a_missed_call(node, people, clock):
    a = await page(node, people.alice_token)
    b = await page(node, people.bobby_token)
    call_id = await ring(node, people, a, b)
    clock.advance(RING_SECONDS - 1)
    await node.hub.tick()
    assert a.sent == [] and b.sent == []
    clock.advance(2)
    await node.hub.tick()
    await settle()
    assert a.last("call_ended") == {"v": 1, "type": "call_ended", "call_id": call_id,
                                    "reason": "no_answer"}
    assert b.last("call_ended")["reason"] == "no_answer"
    await until(lambda: people.store.conversation_messages(
        people.bobby.id, people.conversation)[0])
    [entry] = people.store.conversation_messages(people.bobby.id, people.conversation)[0]
    assert entry["kind"] == MISSED_CALL and entry["caller"] == "alice"
    await send(node, b, "call_answer", call_id=call_id)
    assert b.last("error")["code"] == "not_found"
    assert a.visitor.call is None


async def test_a_page_in_a_random_chat_answers_busy(node, people):
    b = await page(node, people.bobby_token, "192.0.2.2")
    stranger = await page(node, None, "192.0.2.3")
    for conn in (b, stranger):
        await send(node, conn, "start")
    b.take()
    a = await page(node, people.alice_token)
    await send(node, a, "call", conversation_id=people.conversation)
    assert [m["type"] for m in a.sent] == ["call_ringing", "call_ended"]
    assert a.sent[1]["reason"] == "busy" and b.sent == []
    # and a page in a random chat cannot place a call
    await send(node, b, "call", conversation_id=people.conversation)
    assert b.last("error")["code"] == "busy"


async def test_a_caller_in_a_call_cannot_start_a_random_chat(node, people):
    a = await page(node, people.alice_token)
    b = await page(node, people.bobby_token)
    await ring(node, people, a, b)
    for kind in ("start", "call"):
        await send(node, a, kind, **({"conversation_id": people.conversation}
                                     if kind == "call" else {}))
        assert a.last("error")["code"] in ("out_of_order", "busy")
    assert a.visitor.state is State.IDLE


async def test_decline_and_an_absent_callee(node, people):
    a = await page(node, people.alice_token)
    await send(node, a, "call", conversation_id=people.conversation)
    assert a.last("call_ended")["reason"] == "unavailable"  # bobby has no page open
    b = await page(node, people.bobby_token)
    call_id = await ring(node, people, a, b)
    await send(node, b, "call_decline", call_id=call_id)
    assert a.last("call_ended")["reason"] == "declined" and a.visitor.call is None
    assert b.last("call_ended")["reason"] == "declined"


async def test_the_caller_leaving_cancels_the_ring(node, people):
    a = await page(node, people.alice_token)
    b = await page(node, people.bobby_token)
    call_id = await ring(node, people, a, b)
    await node.hub.leave(a.visitor)
    await settle()
    assert b.last("call_ended") == {"v": 1, "type": "call_ended", "call_id": call_id,
                                    "reason": "cancelled"}
    assert node.hub.calls.rings == {} and node.hub.calls.incoming == {}


async def test_a_call_across_two_nodes(cluster, people):
    n1, n2 = cluster
    a = await page(n1, people.alice_token)
    b = await page(n2, people.bobby_token)
    await send(n1, a, "call", conversation_id=people.conversation)
    await until(lambda: b.sent)
    call_id = b.last("call_incoming")["call_id"]
    await send(n2, b, "call_answer", call_id=call_id)
    await until(lambda: "call_started" in a.types() and "call_started" in b.types())
    assert b.visitor.pair_node == a.visitor.pair_node == "n1"
    await send(n1, a, "offer", sdp="a")
    await send(n2, b, "offer", sdp="b")
    await until(lambda: b.visitor.media_node == "n1")
    await settle()
    sa, sb = a.visitor.session_id, b.visitor.session_id
    assert ("n1", sb, sa) in n1.media.connects and ("n1", sa, sb) in n2.media.connects
    await send(n1, a, "call_hangup", call_id=call_id)
    await until(lambda: "call_ended" in b.types())
    assert b.visitor.state is State.IDLE and "queued" not in b.types()


async def test_a_call_starts_covered_under_mutual_reveal(clock, store, people):
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store,
                   mutual_reveal=True).start()
    try:
        a = await page(n, people.alice_token)
        b = await page(n, people.bobby_token)
        call_id = await ring(n, people, a, b)
        await send(n, b, "call_answer", call_id=call_id)
        assert a.last("call_started")["hidden"] is True
        await send(n, a, "offer", sdp="a")
        assert (a.visitor.session_id, "pixelate_face") in {
            (s, name) for _, s, name, cover in n.media.effects if cover}
        for conn in (a, b):
            await send(n, conn, "reveal")
        assert a.last("revealed")["by"] == "both"
    finally:
        await n.hub.close()


async def test_malformed_news_on_the_bus_is_counted_and_dropped(node, people):
    b = await page(node, people.bobby_token)
    for msg in (
        {"t": "peer", "to": "x", "by": "y", "ev": "user.direct", "sender": people.alice.id},
        {"t": "peer", "to": "x", "by": "y", "ev": "user.call_incoming", "call_id": 5},
        {"t": "peer", "to": "x", "by": "y", "ev": "user.dance", "call_id": "c"},
    ):
        await node.hub._on_bus(msg)
    assert node.hub.stats["bad_user_message"] == 3
    assert node.hub.stats["bad_peer_event"] == 0 and b.sent == []
