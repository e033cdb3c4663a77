"""The signalling hub on its own: no WebSocket, no socket at all.

Visitors are recording connections, media is a fake service with knobs, the
queue is the real in-process matchmaker, nodes are linked in-process buses, and
time is virtual.
"""

import asyncio
from collections import deque
import base64
import hashlib
import hmac
import inspect
import json

import pytest

from mediaserver.matchmaker import Match, MatchPolicy
from mediaserver.node.bus import LocalBus
from mediaserver.node.media import MediaService
from mediaserver.sfu.errors import EffectsBusy, RestartRejected, ServerFull
from mediaserver.signalling import events, protocol
from mediaserver.signalling.visitors import State
from mediaserver.signalling.pairing import PAIR_WAIT
from mediaserver.signalling.ports import MediaPort, StorePort
from mediaserver.signalling.turn_credentials import TurnCredentials
from mediaserver.store import Store
from mediaserver.store.moderation import MAX_CHAT_LINES
from tests.support.hub_fakes import (
    Connection,
    FakeMedia,
    FakeStore,
    LinkedBus,
    SharedQueue,
    VirtualClock,
    build_hub,
    profile,
    settle,
    until,
)
from tests.support.socketless_sfu import OFFER, SocketlessCall, SocketlessPeer


def frame(kind, **fields):
    return json.dumps({"v": 1, "type": kind, **fields})


class Node:
    """One hub with its fake media, on a LocalBus or a LinkedBus."""

    def __init__(self, bus, clock, queue, **options):
        self.clock = clock
        self.media = FakeMedia(bus.node_id)
        self.hub = build_hub(bus, clock, queue.factory, self.media, **options)

    async def start(self):
        await self.hub.start()
        return self

    def connect(self, address="192.0.2.1"):
        conn = Connection()
        conn.visitor = self.hub.join(address, conn.send, conn.close)
        return conn

    async def send(self, conn, kind, **fields):
        await self.hub.receive(conn.visitor, frame(kind, **fields))
        await settle()

    async def visitor(self, address="192.0.2.1", **hello):
        conn = self.connect(address)
        await self.send(conn, "hello", age_confirmed=True, **hello)
        assert conn.types() == ["welcome"]
        conn.take()
        return conn

    async def pair(self, offer=True):
        """Two visitors who pressed start (and offered) and were matched."""
        a, b = await self.visitor("192.0.2.1"), await self.visitor("192.0.2.2")
        for c in (a, b):
            await self.send(c, "start")
            if offer:
                await self.send(c, "offer", sdp="offer")
        for c in (a, b):
            assert "matched" in c.types()
            c.take()
        return a, b


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
async def node(clock):
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock)).start()
    yield n
    await n.hub.close()


async def test_hello_welcome_carries_limits_and_report_reasons(node):
    conn = node.connect()
    await node.send(conn, "hello", age_confirmed=True, interests=["Chess"])
    (welcome,) = conn.sent
    assert welcome["type"] == "welcome" and welcome["handle"].startswith("stranger-")
    assert welcome["limits"]["report_reasons"] == list(protocol.REPORT_REASONS)
    assert welcome["limits"]["rates"]["chat"] == protocol.RATES["chat"][0]
    assert conn.visitor.state is State.IDLE and conn.visitor.interests == {"chess"}


async def test_welcome_has_no_ice_servers_without_turn(node):
    conn = node.connect()
    await node.send(conn, "hello", age_confirmed=True)
    (welcome,) = conn.sent
    assert "ice_servers" not in welcome
    assert node.hub.stats["welcomes_with_turn"] == 0


async def test_welcome_carries_fresh_turn_credentials_when_configured(clock):
    turn = TurnCredentials(("turns:turn.example.org:443?transport=tcp",), b"secret", ttl=900)
    node = await Node(LocalBus("n1"), clock, SharedQueue(clock), turn=turn,
                      wall_clock=lambda: 1_800_000_000.0).start()  # fmt: skip
    try:
        servers = []
        for address in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
            conn = node.connect(address)
            await node.send(conn, "hello", age_confirmed=True)
            (welcome,) = conn.sent
            (server,) = welcome["ice_servers"]
            assert server["urls"] == ["turns:turn.example.org:443?transport=tcp"]
            assert server["username"].startswith("1800000900:")
            mac = hmac.new(b"secret", server["username"].encode(), hashlib.sha1).digest()
            assert base64.b64decode(server["credential"]) == mac
            # neither the handle nor the address is in it
            assert welcome["handle"] not in server["username"] and "192" not in server["username"]
            servers.append(server)
        # two welcomes, even to one address, never share a username
        assert len({s["username"] for s in servers}) == 3
        assert node.hub.stats["welcomes_with_turn"] == 3
    finally:
        await node.hub.close()


async def test_every_client_message_has_one_handler(node):
    assert set(node.hub.handlers) == set(protocol.CLIENT_MESSAGES)


@pytest.mark.parametrize(
    "frames, code",
    [
        ([frame("start")], "out_of_order"),  # before hello
        (["{not json"], "bad_json"),
        ([json.dumps({"v": 2, "type": "hello"})], "unsupported_version"),
        ([frame("dance")], "unknown_type"),
        ([frame("hello", age_confirmed=False)], "age_required"),
        ([frame("hello", age_confirmed=True), frame("hello", age_confirmed=True)], "out_of_order"),
        ([frame("hello", age_confirmed=True), frame("chat", text="hi")], "out_of_order"),
        ([frame("hello", age_confirmed=True), frame("offer", sdp="x")], "out_of_order"),
        ([frame("hello", age_confirmed=True), frame("stop")], "out_of_order"),
        ([frame("hello", age_confirmed=True), frame("next")], "out_of_order"),
        ([frame("hello", age_confirmed=True), frame("reveal")], "out_of_order"),
        ([frame("hello", age_confirmed=True), frame("report", reason="rude")], "bad_field"),
        ([frame("hello", age_confirmed=True),
          frame("report", reason="spam", include_chat="yes")], "bad_field"),
        ([frame("hello", age_confirmed=True, token="t")], "unauthorized"),  # no store
    ],
)
async def test_bad_messages_are_answered_with_their_error(node, frames, code):
    conn = node.connect()
    for f in frames:
        await node.hub.receive(conn.visitor, f)
    err = conn.sent[-1]
    assert err["type"] == "error" and err["code"] == code
    assert node.hub.stats[f"error:{code}"] == 1
    assert conn.closed == []


async def test_a_frame_too_large_closes_the_connection(node):
    conn = node.connect()
    await node.hub.receive(conn.visitor, "x" * (protocol.MAX_FRAME_BYTES + 1))
    assert conn.sent[-1]["code"] == "too_large" and conn.closed == [1009]


async def test_start_match_offer_answer_and_media_forwarded_both_ways(node):
    a, b = await node.visitor("192.0.2.1"), await node.visitor("192.0.2.2")
    await node.send(a, "start")
    assert a.types() == ["queued"]
    await node.send(a, "offer", sdp="offer a")
    assert a.last("answer")["sdp"] == "answer to offer a"
    await node.send(b, "start")
    assert b.types() == ["queued", "matched"]
    assert a.last("matched")["partner"] == b.visitor.handle
    assert b.last("matched")["partner"] == a.visitor.handle
    await node.send(b, "offer", sdp="offer b")
    sa, sb = a.visitor.session_id, b.visitor.session_id
    assert node.media.forwarded() == {(sa, sb), (sb, sa)}
    assert node.hub.pairs() == 1.0


async def test_an_offer_refused_by_the_media_is_told_by_its_type(node):
    a = await node.visitor()
    await node.send(a, "start")
    node.media.fail_create = ServerFull("no room: with a message that says offer_rejected")
    await node.send(a, "offer", sdp="x")
    assert a.sent[-1]["code"] == "server_full"
    assert a.visitor.offering is False and a.visitor.session_id is None


async def test_a_second_offer_restarts_ice_on_the_same_session(node):
    a, b = await node.pair()
    session, forwarded = a.visitor.session_id, node.media.forwarded()
    await node.send(a, "offer", sdp="restart offer")
    assert a.sent == [protocol.message("answer", sdp="restart answer to restart offer")]
    assert node.media.restarts == [("n1", session, "restart offer")]
    # the same session, pair and forwarding; the partner hears nothing of it
    assert a.visitor.session_id == session and a.visitor.state is State.MATCHED
    assert node.media.forwarded() == forwarded and node.media.closed == []
    assert b.sent == []
    assert node.hub.stats["ice_restarts"] == 1


async def test_a_second_offer_that_is_no_ice_restart_is_refused_and_changes_nothing(node):
    a, b = await node.pair()
    session = a.visitor.session_id
    node.media.fail_restart = RestartRejected("an ICE restart keeps the DTLS certificate")
    await node.send(a, "offer", sdp="another certificate")
    [error] = a.sent
    assert error["code"] == "restart_rejected" and error["ref"] == "offer"
    assert "keeps the DTLS certificate" in error["message"]
    assert a.visitor.session_id == session and a.visitor.offering is False
    assert b.sent == [] and node.media.closed == []


async def test_an_ice_restart_across_nodes_goes_to_the_node_of_the_session(cluster):
    n1, n2 = cluster
    a, b = await n1.visitor("192.0.2.1"), await n2.visitor("192.0.2.2")
    await n1.send(a, "start")
    await n1.send(a, "offer", sdp="a")
    await n2.send(b, "start")
    await n2.send(b, "offer", sdp="b")
    await settle()
    assert b.visitor.media_node == "n1"
    b.take()
    await n2.send(b, "offer", sdp="b moved")
    assert n2.media.restarts == [("n1", b.visitor.session_id, "b moved")]
    assert b.types() == ["answer"]


async def test_the_real_media_service_answers_a_restart_over_the_bus():
    call = SocketlessCall()
    peer = SocketlessPeer(call, ("127.0.0.1", 40001))
    peer.connect()
    service = MediaService(call.sfu, LocalBus("n1"))
    offer = peer.restart_offer("rst1", "x" * 22)
    reply = service.handle({"t": "create", "owner": "", "restart": peer.id, "sdp": offer})
    assert "a=ice-ufrag:" in reply["answer"] and reply["answer"] == peer.session.answer
    reply = service.handle({"t": "create", "owner": "", "restart": peer.id, "sdp": offer})  # again
    assert reply["code"] == "restart_rejected" and "must restart ICE" in reply["error"]
    with pytest.raises(RestartRejected, match="must restart ICE"):
        await service.restart_ice("n1", peer.id, offer)


async def test_an_ice_restart_crosses_the_bus_to_the_real_sfu_holding_the_session(clock):
    # two nodes with real media services and (socketless) Sfus, on linked buses that
    # carry the real wire format: b's WebSocket is on n2, its media on n1
    buses, queue, sfus, nodes = {}, SharedQueue(clock), {}, []
    for name in ("n1", "n2"):
        bus = LinkedBus(name, buses)
        sfus[name] = SocketlessCall().sfu
        node = Node.__new__(Node)
        node.clock, node.media = clock, MediaService(sfus[name], bus)
        node.hub = build_hub(bus, clock, queue.factory, node.media)
        nodes.append(await node.start())
    n1, n2 = nodes
    try:
        a, b = await n1.visitor("192.0.2.1"), await n2.visitor("192.0.2.2")
        await n1.send(a, "start")
        await n1.send(a, "offer", sdp=OFFER)
        await n2.send(b, "start")
        await settle()
        await n2.send(b, "offer", sdp=OFFER)
        await settle()
        assert b.visitor.media_node == "n1" and sfus["n2"].sessions == {}
        session = sfus["n1"].sessions[b.visitor.session_id]
        first = session.answer
        b.take()

        restart = OFFER.replace("a=ice-ufrag:gwse", "a=ice-ufrag:rst1").replace(
            "a=ice-pwd:0/Ae9XPhetpJSkBuUXbcmY1j", "a=ice-pwd:restartpasswordrestartp"
        )
        await n2.send(b, "offer", sdp=restart)
        await settle()
        [answer] = b.sent
        assert answer["type"] == "answer" and answer["sdp"] == session.answer != first
        assert sfus["n1"].counters()["ice_restarts"] == 1
        assert b.visitor.session_id == session.id

        # the same offer again is no restart: refused with its code, across the bus
        b.take()
        await n2.send(b, "offer", sdp=restart)
        await settle()
        [error] = b.sent
        assert error["code"] == "restart_rejected" and "must restart ICE" in error["message"]
        assert a.types().count("partner_left") == 0
    finally:
        for node in nodes:
            await node.hub.close()


async def test_too_many_sessions_from_one_address(clock):
    queue = SharedQueue(clock)
    n = await Node(LocalBus("n1"), clock, queue, max_sessions_per_address=1).start()
    a, b = await n.visitor("192.0.2.9"), await n.visitor("192.0.2.9")
    for c in (a, b):
        await n.send(c, "start")
        await n.send(c, "offer", sdp="x")
    assert "answer" in a.types()
    assert b.sent[-1]["code"] == "too_many_sessions"
    await n.hub.close()


async def test_chat_and_typing_reach_the_partner_only(node):
    a, b = await node.pair()
    await node.send(a, "chat", text="hello ✓")
    await node.send(b, "typing")
    assert b.sent == [protocol.message("chat", text="hello ✓")]
    assert a.sent == [protocol.message("typing")]


async def test_next_ends_the_pair_and_requeues_both(node):
    a, b = await node.pair()
    links = node.media.forwarded()
    await node.send(a, "next")
    assert b.types() == ["partner_left", "queued"] and b.sent[0]["reason"] == "next"
    assert a.types() == ["queued"]
    assert node.media.forwarded() == set() and len(links) == 2
    assert a.visitor.state is State.QUEUED and b.visitor.state is State.QUEUED
    # the skip is remembered: the two are not matched again right away
    assert a.visitor.partner is None and b.visitor.partner is None


async def test_stop_when_queued_and_when_matched(node):
    a, b = await node.pair()
    await node.send(a, "stop")
    assert a.types() == ["stopped"] and a.visitor.state is State.IDLE
    assert b.types() == ["partner_left", "queued"] and b.sent[0]["reason"] == "left"
    b.take()
    await node.send(b, "stop")
    assert b.types() == ["stopped"] and b.visitor.state is State.IDLE


async def test_bye_leaves_closes_and_frees_the_session(node):
    a, b = await node.pair()
    session = a.visitor.session_id
    await node.send(a, "bye")
    assert a.closed == [1000] and a.visitor.id not in node.hub.visitors
    assert ("n1", session) in node.media.closed
    assert b.types() == ["partner_left", "queued"]
    assert node.hub.connections_from("192.0.2.1") == 0


async def test_report_counts_against_the_partner_and_ends_the_pair(clock):
    # two reporters are enough to refuse the reported address
    queue = SharedQueue(clock, MatchPolicy(report_threshold=2))
    n = await Node(LocalBus("n1"), clock, queue).start()
    target = await n.visitor("198.51.100.7")
    for i in range(2):
        reporter = await n.visitor(f"192.0.2.{10 + i}")
        await n.send(target, "start")
        await n.send(reporter, "start")
        assert reporter.visitor.state is State.MATCHED, i
        target.take(), reporter.take()
        await n.send(reporter, "report", reason="spam")
        assert reporter.types() == ["queued", "reported"]
        await n.send(reporter, "stop")
        if i == 0:
            # told only that the stranger moved on, then queued again
            assert target.types() == ["partner_left", "queued"]
            assert target.sent[0]["reason"] == "next"
            await n.send(target, "stop")
    assert target.sent[-1]["type"] == "error" and target.sent[-1]["code"] == "refused"
    assert n.hub.stats["report:spam"] == 2
    await n.hub.close()


async def test_block_ends_the_pair_and_requeues_both(node):
    a, b = await node.pair()
    await node.send(a, "block")
    assert a.types() == ["queued"] and b.types() == ["partner_left", "queued"]
    assert b.sent[0]["reason"] == "next"


async def test_signed_in_share_profile_and_chat_history(clock):
    store = FakeStore()
    store.add("tok-a", profile("alice", interests=["chess"]))
    store.add("tok-b", profile("bob", interests=["chess"]))
    store.add("tok-kid", profile("kid"), age=15)
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    kid = n.connect("192.0.2.5")
    await n.send(kid, "hello", age_confirmed=True, token="tok-kid")
    await until(lambda: kid.sent)
    assert kid.sent[-1]["code"] == "age_required"
    unknown = n.connect("192.0.2.6")
    await n.send(unknown, "hello", age_confirmed=True, token="nope")
    await until(lambda: unknown.sent)
    assert unknown.sent[-1]["code"] == "unauthorized"

    a, b = n.connect("192.0.2.1"), n.connect("192.0.2.2")
    for conn, token in ((a, "tok-a"), (b, "tok-b")):
        await n.send(conn, "hello", age_confirmed=True, token=token)
        await until(lambda c=conn: c.sent)
        assert c_type(conn) == "welcome"
    assert a.visitor.interests == {"chess"}  # the profile's, as hello named none
    for conn in (a, b):
        await n.send(conn, "start")
    await until(lambda: "matched" in b.types())
    a.take(), b.take()

    await n.send(a, "share_profile")
    await until(lambda: a.sent)
    assert a.types() == ["profile_shared"]
    assert b.sent == [protocol.message("profile_card", card={"handle": "alice", "bio": "hi"})]
    store.gone.add("bob")
    await n.send(b, "share_profile")
    await until(lambda: b.types() != ["profile_card"])
    assert b.sent[-1]["code"] == "unauthorized" and a.types() == ["profile_shared"]

    await n.send(a, "chat", text="hi bob")
    await until(lambda: len(store.chat) == 2)
    conversation = a.visitor.conversation
    assert sorted(store.chat) == sorted([
        ("alice", conversation, "me", "hi bob"),
        ("bob", b.visitor.conversation, "stranger", "hi bob"),
    ])
    await n.send(a, "report", reason="harassment")
    await until(lambda: store.reports and store.filed)
    assert store.reports == [("alice", "harassment")]
    # kept for the moderators, filed by the reported visitor's node: who was reported
    # (its keyed address hash and account) and who reported, no chat unless asked
    assert store.filed == [{
        "reason": "harassment", "reported_address": b.visitor.reputation,
        "reported_user_id": "bob", "reporter_address": a.visitor.reputation,
        "reporter_user_id": "alice", "chat": None}]
    assert a.visitor.reputation != b.visitor.reputation
    await n.hub.close()


async def test_report_with_chat_carries_the_pairs_last_lines(clock):
    store = FakeStore()
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    a, b = await n.pair()
    await n.send(a, "chat", text="a line of a pair that ended")
    assert len(a.visitor.chat_lines) == 1 and len(b.visitor.chat_lines) == 1
    await n.send(a, "next")
    # the pair ended: neither side holds its lines any more
    assert a.visitor.chat_lines == deque() and b.visitor.chat_lines == deque()
    await n.send(a, "bye")
    await n.send(b, "bye")
    a, b = await n.pair()
    await n.send(a, "chat", text="hi")
    await n.send(b, "chat", text="something awful")
    await n.send(b, "chat", text="x" * 1000)
    for i in range(30):
        clock.advance(1)  # the chat rate limit
        await n.send(a, "chat", text=f"line {i}")
    await n.send(a, "report", reason="harassment", include_chat=True)
    await until(lambda: store.filed)
    (filed,) = store.filed
    assert filed["reported_address"] == b.visitor.reputation
    # the last MAX_CHAT_LINES lines, each side named from the reporter's view
    assert len(filed["chat"]) == MAX_CHAT_LINES
    assert filed["chat"][-1] == {"from": "reporter", "text": "line 29"}
    assert a.visitor.chat_lines == deque()  # the pair ended: nothing held any more
    # without include_chat (or with it false) no line goes
    a2, b2 = await n.pair()
    await n.send(a2, "chat", text="hello")
    await n.send(b2, "report", reason="spam", include_chat=False)
    await until(lambda: len(store.filed) == 2)
    assert store.filed[1]["chat"] is None
    await n.hub.close()


def c_type(conn):
    return conn.sent[-1]["type"]


async def test_share_profile_needs_a_signed_in_visitor(node):
    a, b = await node.pair()
    await node.send(a, "share_profile")
    assert a.sent[-1]["code"] == "unauthorized" and b.sent == []


async def test_mutual_reveal_covers_until_both_reveal(clock):
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), mutual_reveal=True).start()
    a, b = await n.pair()
    sa, sb = a.visitor.session_id, b.visitor.session_id
    assert ("n1", sa, "pixelate_face", True) in n.media.effects
    assert ("n1", sb, "pixelate_face", True) in n.media.effects
    n.media.effects.clear()
    await n.send(a, "reveal")
    assert b.sent == [protocol.message("revealed", by="partner")] and a.sent == []
    await n.send(a, "reveal")  # a second reveal changes nothing
    assert len(b.sent) == 1
    await n.send(b, "reveal")
    assert a.sent == [protocol.message("revealed", by="partner"),
                      protocol.message("revealed", by="both")]
    assert b.sent[-1] == protocol.message("revealed", by="both")
    assert {(s, name) for _, s, name, _ in n.media.effects} == {(sa, None), (sb, None)}
    await n.hub.close()


async def test_reveal_is_refused_when_off(node):
    a, _ = await node.pair()
    await node.send(a, "reveal")
    assert a.sent[-1]["code"] == "out_of_order"


async def test_a_cover_that_cannot_run_withholds_the_video(clock):
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), mutual_reveal=True).start()
    n.media.fail_effects = EffectsBusy("all covers busy")
    a, b = await n.visitor("192.0.2.1"), await n.visitor("192.0.2.2")
    for c in (a, b):
        await n.send(c, "start")
        await n.send(c, "offer", sdp="x")
    assert protocol.video_withheld("yours") in a.sent
    assert protocol.video_withheld("partner") in a.sent
    assert n.hub.stats["cover_failed:effects_busy"] == 2
    await n.hub.close()


async def test_effects(clock):
    effects = {"blur_face": object}
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), effects=effects).start()
    a = await n.visitor()
    await n.send(a, "effect", name="sparkles", on=True)
    assert a.sent[-1]["code"] == "bad_field"
    await n.send(a, "effect", name="blur_face", on=True)  # before the offer: remembered
    assert a.sent[-1] == protocol.message("effect", name="blur_face", on=True, applied=False)
    await n.send(a, "start")
    a.take()
    await n.send(a, "offer", sdp="x")
    assert a.sent[-1] == protocol.message("effect", name="blur_face", on=True, applied=True)
    assert n.media.effects[-1][2:] == ("blur_face", False)
    n.media.fail_effects = EffectsBusy("busy")
    await n.send(a, "effect", name="blur_face", on=True)
    assert [m["code"] for m in a.sent if m["type"] == "error"] == ["effects_busy"]
    await n.hub.close()


async def test_effects_off_on_this_server(node):
    a = await node.visitor()
    await node.send(a, "effect", name="blur_face", on=True)
    assert a.sent[-1]["code"] == "effect_unavailable"


async def test_rate_limits_on_virtual_time(node):
    a, b = await node.pair()
    burst = int(protocol.RATES["chat"][1])
    for i in range(burst + 1):
        await node.send(a, "chat", text=str(i))
    assert a.sent[-1]["code"] == "rate_limited" and len(b.sent) == burst
    node.clock.advance(1.0)  # 3 per second come back
    await node.send(a, "chat", text="again")
    assert b.sent[-1]["text"] == "again"


async def test_media_closed_ends_the_pair_and_the_visitor_may_offer_again(node):
    a, b = await node.pair()
    await node.media.end(a.visitor.session_id)
    await settle()
    assert a.types() == ["error", "stopped"] and a.sent[0]["code"] == "media_closed"
    assert b.types() == ["partner_left", "queued"]
    assert a.visitor.session_id is None and node.hub.stats["media_closed:ice timeout"] == 1


async def test_draining_refuses_start_and_takes_waiters_out(node):
    a, b = await node.visitor("192.0.2.1"), await node.visitor("192.0.2.2")
    await node.send(a, "start")
    a.take()
    await node.hub.start_drain()
    assert a.types() == ["error", "stopped"] and node.hub.node_info().capacity == 0
    await node.send(b, "start")
    assert b.sent[-1]["code"] == "draining"


# ---- several nodes -------------------------------------------------------------------


@pytest.fixture
async def cluster(clock):
    buses = {}
    queue = SharedQueue(clock)
    nodes = [await Node(LinkedBus(name, buses), clock, queue).start() for name in ("n1", "n2")]
    yield nodes
    for n in nodes:
        await n.hub.close()


async def test_a_pair_across_two_nodes(cluster):
    n1, n2 = cluster
    a, b = await n1.visitor("192.0.2.1"), await n2.visitor("192.0.2.2")
    await n1.send(a, "start")
    await n1.send(a, "offer", sdp="a")
    await n2.send(b, "start")
    await settle()
    assert a.last("matched")["partner"] == b.visitor.handle
    assert b.last("matched")["partner"] == a.visitor.handle
    # the longer waiter's node holds the pair's media: b offers there
    assert b.visitor.pair_node == "n1"
    await n2.send(b, "offer", sdp="b")
    await settle()
    assert b.visitor.media_node == "n1"
    sa, sb = a.visitor.session_id, b.visitor.session_id
    assert ("n1", sb, sa) in n1.media.connects and ("n1", sa, sb) in n2.media.connects
    a.take(), b.take()
    await n1.send(a, "chat", text="across")
    await settle()
    assert b.sent == [protocol.message("chat", text="across")]
    await n2.send(b, "next")
    await settle()
    assert a.types() == ["partner_left", "queued"] and a.sent[0]["reason"] == "next"


async def test_a_node_down_requeues_the_partners_of_its_visitors(cluster, clock):
    n1, n2 = cluster
    a, b = await n1.visitor("192.0.2.1"), await n2.visitor("192.0.2.2")
    await n1.send(a, "start")
    await n2.send(b, "start")
    await settle()
    assert a.visitor.state is State.MATCHED
    a.take()
    await n2.hub.bus.kill()
    await settle()
    assert a.types() == ["partner_left", "queued"] and a.sent[0]["reason"] == "left"
    assert n1.media.owned_closed_for == ["n2"]
    assert a.visitor.partner is None and a.visitor.state is State.QUEUED


async def test_the_node_holding_the_pairs_media_dies(cluster):
    n1, n2 = cluster
    b, a = await n2.visitor("192.0.2.2"), await n1.visitor("192.0.2.1")
    await n2.send(b, "start")  # b waits longer: its node places the pair, on itself
    await n1.send(a, "start")
    await settle()
    assert a.visitor.pair_node == "n2"
    await n1.send(a, "offer", sdp="a")
    await settle()
    assert a.visitor.media_node == "n2"
    a.take()
    await n2.hub.bus.kill()
    await settle()
    assert a.types() == ["partner_left", "reoffer", "queued"]
    assert a.visitor.session_id is None and a.visitor.state is State.QUEUED


async def test_an_unconfirmed_cross_node_match_requeues_after_the_wait(cluster, clock):
    n1, n2 = cluster
    b = await n2.visitor("192.0.2.2")
    await n2.send(b, "start")
    b.take()
    # a match naming a visitor of n1 that n1 never confirms (n1 lost it)
    n2.hub.pairing.on_match(Match("n1/gone", b.visitor.id, ()))
    assert b.visitor.pending_pair is not None
    clock.advance(PAIR_WAIT + 0.1)
    await n2.hub.tick()
    assert b.visitor.pending_pair is None and n2.hub.stats["stale_matches"] == 1
    assert b.visitor.state is State.QUEUED


# ---- peer events on the bus ----------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        events.Pair("n2", ("chess", "go")),
        events.Left("next"),
        events.MediaReady("s1"),
        events.Chat("hi ✓"),
        events.Typing(),
        events.VideoWithheld(),
        events.Revealed(),
        events.ProfileCard({"handle": "alice"}),
        events.Report("abc"),
        events.Report("abc", "nudity", "alice", (("reported", "hi"), ("reporter", "stop"))),
    ],
)
def test_peer_events_round_trip_through_the_bus_encoding(event):
    msg = events.encode("n1/x", "n2/y", event)
    assert msg["t"] == "peer" and msg["ev"] == event.KIND
    assert events.decode(msg) == events.PeerMessage("n1/x", "n2/y", event)


@pytest.mark.parametrize(
    "msg",
    [
        {"t": "peer", "to": "a/b", "by": "c/d", "ev": "dance"},
        {"t": "peer", "to": "a/b", "by": "c/d", "ev": "chat"},
        {"t": "peer", "to": "a/b", "by": "c/d", "ev": "media", "session": 5},
        {"t": "peer", "to": "a/b", "ev": "typing"},
        {"t": "peer", "to": "a/b", "by": "c/d", "ev": "profile_card", "card": "x"},
        {"t": "peer", "to": "a/b", "by": "c/d", "ev": "report", "reputation": "r",
         "reporter_user_id": 5},
        {"t": "peer", "to": "a/b", "by": "c/d", "ev": "report", "reputation": "r",
         "chat": [["reported"]]},
    ],
)
async def test_malformed_peer_events_are_dropped_and_counted(node, msg):
    with pytest.raises(ValueError):
        events.decode(msg)
    await node.hub.bus.send("n1", msg)
    assert node.hub.stats["bad_peer_event"] == 1


def test_the_real_store_and_media_service_fit_the_ports():
    # mypy checks the types where app.py builds the hub with them; this, the names
    for port, real in ((StorePort, Store), (MediaPort, MediaService)):
        for name, member in inspect.getmembers(port, inspect.isfunction):
            if not name.startswith("_"):
                real_params = inspect.signature(getattr(real, name)).parameters
                assert list(real_params) == list(inspect.signature(member).parameters), name


async def test_restricted_profile_joins_anonymously_and_an_objection_keeps_interests_out(clock):
    store = FakeStore()
    store.add("tok-r", profile("restricted_one", interests=["chess"], language="en",
                               restricted=True))
    store.add("tok-o", profile("objector", interests=["chess"],
                               objections=("matching_by_interests",)))
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    r, o = n.connect("192.0.2.1"), n.connect("192.0.2.2")
    for conn, token in ((r, "tok-r"), (o, "tok-o")):
        await n.send(conn, "hello", age_confirmed=True, token=token)
        await until(lambda c=conn: c.sent)
        assert c_type(conn) == "welcome"
    # restricted: stored only, so nothing of the profile is used, as if anonymous
    assert (r.visitor.user_id, r.visitor.interests, r.visitor.language) == (
        None, frozenset(), None)
    # objected to matching by interests: signed in, its interests left out
    assert (o.visitor.user_id, o.visitor.interests) == ("objector", frozenset())
    for conn in (r, o):
        await n.send(conn, "start")
    await until(lambda: "matched" in r.types())
    r.take()
    await n.send(r, "share_profile")
    await until(lambda: r.sent)
    assert r.sent[-1]["code"] == "unauthorized" and store.shared == []
    await n.send(r, "chat", text="not kept")
    await until(lambda: store.chat)
    for _ in range(50):  # a store call the hub would have started runs by now
        await asyncio.sleep(0.001)
    assert [c[0] for c in store.chat] == ["objector"]  # the restricted side keeps nothing
    await n.hub.close()
