"""The signalling protocol over a real WebSocket, in JSON and in msgpack."""

import asyncio
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.signalling import protocol
from tests.support.signalling_client import Client, running_server
from tests.support import DATA

OFFER = (DATA / "offer_aiortc.sdp").read_text()


@pytest.fixture
async def server():
    async with running_server(match_interest_wait=0.5) as srv:
        yield srv


@pytest.fixture(params=["json", "msgpack"])
def binary(request):
    return request.param == "msgpack"


async def visitor(server, binary, n, **hello):
    client = await Client.open(server.url, binary, source=f"127.0.0.{n + 1}")
    await client.hello(**hello)
    return client


async def matched_pair(server, binary, offer: bool = False):
    """Two visitors who pressed start (and offered, if asked) and were matched.
    With offers, the answer and matched messages are consumed in whatever order."""
    a, b = await visitor(server, binary, 1), await visitor(server, binary, 2)
    for client in (a, b):
        await client.send("start")
        await client.expect("queued")
        if offer:
            await client.send("offer", sdp=OFFER)
    for client in (a, b):
        if offer:
            got = {(await client._pending.get())["type"] for _ in range(2)}
            assert got == {"answer", "matched"}
        else:
            await client.expect("matched")
    return a, b


async def test_a_visit_start_offer_match_chat_next(server, binary):
    a = await visitor(server, binary, 1, interests=["Music", "chess"])
    b = await visitor(server, binary, 2, interests=["music"])
    await a.send("start")
    await a.expect("queued")
    await a.send("offer", sdp=OFFER)
    answer = await a.expect("answer")
    assert "a=ice-lite" in answer["sdp"]
    await b.send("start")
    await b.expect("queued")
    ma, mb = await a.expect("matched"), await b.expect("matched")
    assert ma["shared_interests"] == mb["shared_interests"] == ["music"]
    assert ma["partner"].startswith("stranger-") and ma["partner"] != mb["partner"]
    await b.send("offer", sdp=OFFER)
    await b.expect("answer")
    # media routed both ways once both sessions exist
    sa, sb = [v.session_id for v in server.hub.visitors.values()]
    assert server.sfu.sessions[sa].subscribers == {sb}

    await a.send("chat", text="hello stranger ✓")
    assert (await b.expect("chat"))["text"] == "hello stranger ✓"
    await b.send("typing")
    await a.expect("typing")

    await a.send("next")
    assert (await b.expect("partner_left"))["reason"] == "next"
    await b.expect("queued")
    await a.expect("queued")
    # a skipped b: they are not matched again
    await a.quiet(0.8)
    c = await visitor(server, binary, 3)
    await c.send("start")
    await c.expect("queued")
    # b waited longest: c meets b
    await c.expect("matched")
    assert (await b.expect("matched"))["partner"] == c.messages[0]["handle"]
    await a.quiet(0.1)
    for client in (a, b, c):
        await client.close()


async def test_stop_and_disconnect_tell_the_partner(server, binary):
    a, b = await matched_pair(server, binary)
    await a.send("stop")
    await a.expect("stopped")
    assert (await b.expect("partner_left"))["reason"] == "left"
    await b.expect("queued")
    await a.send("start")
    await a.expect("queued")
    await a.expect("matched")
    await b.expect("matched")
    await a.close()  # the WebSocket dies
    assert (await b.expect("partner_left"))["reason"] == "left"
    await b.expect("queued")
    await b.send("stop")
    await b.expect("stopped")
    await b.send("bye")
    await asyncio.wait_for(b._reader, 5)
    assert b.ws.close_code == 1000
    assert server.hub.visitors == {}


async def test_block_and_report(server, binary):
    a, b = await matched_pair(server, binary)
    await a.send("report", reason="spam")
    assert (await b.expect("partner_left"))["reason"] == "next"  # b cannot tell it was reported
    await b.expect("queued")
    await a.expect("queued")
    await a.expect("reported")
    await a.quiet(0.8)  # blocked: never matched again


async def test_block_ends_the_pair_for_the_visit(server, binary):
    a, b = await matched_pair(server, binary)
    await a.send("block")
    assert (await b.expect("partner_left"))["reason"] == "next"
    await b.expect("queued")
    await a.expect("queued")
    await a.quiet(0.8)  # both waiting, interest windows long over: still never paired
    c = await visitor(server, binary, 3)
    await c.send("start")
    await c.expect("queued")
    await c.expect("matched")  # the newcomer meets one of them; the other still waits
    await asyncio.sleep(0.3)
    matched = [x for x in (a, b) if x.messages[-1]["type"] == "matched"]
    assert len(matched) == 1


async def test_reported_by_three_people_is_refused(server, binary):
    target = await visitor(server, binary, 10)
    for n in (1, 2, 3):
        reporter = await visitor(server, binary, n)
        await reporter.send("start")
        await reporter.expect("queued")
        if n == 1:
            await target.send("start")
            await target.expect("queued")
        else:
            await target.expect("queued")
        await reporter.expect("matched")
        await target.expect("matched")
        await reporter.send("report", reason="harassment")
        assert (await target.expect("partner_left"))["reason"] == "next"
        await reporter.close()
    # re-queued after the third report: refused
    await target.error("refused")
    await target.send("start")
    await target.error("refused")


async def test_visitors_behind_one_address_meet(server, binary):
    # one household, one office, or carrier-grade NAT: the same source address
    a = await Client.open(server.url, binary, source="127.0.0.1")
    b = await Client.open(server.url, binary, source="127.0.0.1")
    for client in (a, b):
        await client.hello()
        await client.send("start")
        await client.expect("queued")
    await a.expect("matched")
    await b.expect("matched")


async def test_effect_applies_once_media_exists_and_turns_off(server, binary):
    a = await visitor(server, binary, 1)
    await a.send("effect", name="blur_background", on=True)
    msg = await a.expect("effect")
    assert (msg["name"], msg["on"], msg["applied"]) == ("blur_background", True, False)  # no media yet
    await a.send("effect", name="no_such_effect", on=True)
    assert "unknown effect" in (await a.error("bad_field"))["message"]
    await a.send("start")
    await a.expect("queued")
    await a.send("offer", sdp=OFFER)
    await a.expect("answer")
    msg = await a.expect("effect")  # the choice made before the offer is on now
    assert (msg["name"], msg["on"], msg["applied"]) == ("blur_background", True, True)
    (va,) = server.hub.visitors.values()
    assert type(server.sfu.effects[va.session_id].effect).__name__ == "BlurBackground"
    await a.send("effect", name="low_light", on=True)
    assert (await a.expect("effect"))["applied"] is True
    assert type(server.sfu.effects[va.session_id].effect).__name__ == "LowLight"
    await a.send("effect", name="low_light", on=False)
    assert (await a.expect("effect"))["applied"] is False
    assert va.session_id not in server.sfu.effects


async def test_mutual_reveal_hides_until_both_reveal_and_each_new_match(binary):
    async with running_server(mutual_reveal=True, match_interest_wait=0.0) as server:
        a, b = await visitor(server, binary, 1), await visitor(server, binary, 2)
        for client in (a, b):
            await client.send("start")
            await client.expect("queued")
            await client.send("offer", sdp=OFFER)
        got: list[dict] = [{}, {}]
        for i, c in enumerate((a, b)):
            for _ in range(2):
                m = await c._pending.get()
                got[i][m["type"]] = m
        assert all(g["matched"]["hidden"] is True for g in got)
        va, vb = server.hub.visitors.values()
        for v in (va, vb):
            assert type(server.sfu.effects[v.session_id].effect).__name__ == "PixelateFace"
        await a.send("reveal")
        assert (await b.expect("revealed"))["by"] == "partner"
        assert type(server.sfu.effects[va.session_id].effect).__name__ == "PixelateFace"
        await b.send("reveal")
        assert (await a.expect("revealed"))["by"] == "partner"
        for c in (a, b):
            assert (await c.expect("revealed"))["by"] == "both"
        assert server.sfu.effects == {}  # faces show
        await a.send("next")
        await b.expect("partner_left")
        c = await visitor(server, binary, 3)
        await c.send("start")
        await c.expect("queued")
        await c.send("offer", sdp=OFFER)
        # b waited longest: b meets c, hidden again
        await b.expect("queued")
        assert (await b.expect("matched"))["hidden"] is True
        assert type(server.sfu.effects[vb.session_id].effect).__name__ == "PixelateFace"


ERRORS = [
    # (frames before, the bad message, expected code)
    ([], {"v": 1, "type": "start"}, "out_of_order"),
    ([], {"v": 1, "type": "hello", "age_confirmed": False}, "age_required"),
    ([], {"v": 1, "type": "hello"}, "bad_field"),
    ([], {"v": 1, "type": "hello", "age_confirmed": "yes"}, "bad_field"),
    ([], {"v": 1, "type": "hello", "age_confirmed": True, "interests": "music"}, "bad_field"),
    ([], {"v": 1, "type": "hello", "age_confirmed": True, "interests": ["x" * 33]}, "bad_field"),
    ([], {"v": 2, "type": "hello", "age_confirmed": True}, "unsupported_version"),
    ([], {"type": "hello", "age_confirmed": True}, "unsupported_version"),
    ([], {"v": 1, "type": "dance"}, "unknown_type"),
    ([], {"v": 1}, "unknown_type"),
    ([], [1, 2], "not_an_object"),
    (["hello"], {"v": 1, "type": "hello", "age_confirmed": True}, "out_of_order"),
    (["hello"], {"v": 1, "type": "offer", "sdp": OFFER}, "out_of_order"),
    (["hello"], {"v": 1, "type": "chat", "text": "hi"}, "out_of_order"),
    (["hello"], {"v": 1, "type": "next"}, "out_of_order"),
    (["hello"], {"v": 1, "type": "stop"}, "out_of_order"),
    (["hello"], {"v": 1, "type": "report", "reason": "spam"}, "out_of_order"),
    (["hello"], {"v": 1, "type": "block"}, "out_of_order"),
    (["hello", "start"], {"v": 1, "type": "start"}, "out_of_order"),
    (["hello", "start"], {"v": 1, "type": "offer", "sdp": "not sdp"}, "offer_rejected"),
    (["hello", "start"], {"v": 1, "type": "offer", "sdp": 5}, "bad_field"),
    (["hello", "start", "offer"], {"v": 1, "type": "offer", "sdp": OFFER}, "restart_rejected"),
    (["hello"], {"v": 1, "type": "chat", "text": ""}, "bad_field"),
    (["hello"], {"v": 1, "type": "chat", "text": "x" * 1001}, "bad_field"),
    (["hello"], {"v": 1, "type": "report", "reason": "ugly"}, "bad_field"),
    (["hello"], {"v": 1, "type": "effect", "name": "blur", "on": 1}, "bad_field"),
]


@pytest.mark.parametrize("before, bad, code", ERRORS)
async def test_bad_messages_get_an_error_and_the_connection_lives(server, binary, before, bad, code):
    client = await Client.open(server.url, binary)
    for kind in before:
        if kind == "hello":
            await client.hello()
        elif kind == "start":
            await client.send("start")
            await client.expect("queued")
        elif kind == "offer":
            await client.send("offer", sdp=OFFER)
            await client.expect("answer")
    await client.send(raw=bad)
    msg = await client.error(code)
    assert msg["ref"] in (None, bad.get("type") if isinstance(bad, dict) else None)
    # still usable afterwards
    await client.send("effect", name="x", on=False)
    if "hello" in before:
        await client.expect("effect")
    else:
        await client.error("out_of_order")
    await client.close()


@pytest.mark.parametrize("frame, code", [
    ("{", "bad_json"),
    ("NaN", "bad_json"),
    ("[" * 100_00, "bad_json"),
    ('"just a string"', "not_an_object"),
    (b"\xc1", "bad_msgpack"),
    (b"\x92\x01\x02", "not_an_object"),
    (msgpack.packb({"v": 1, "type": 7}), "unknown_type"),
    (msgpack.packb({1: 2}), "bad_msgpack"),
])
async def test_undecodable_frames(server, frame, code):
    client = await Client.open(server.url)
    await client.send(raw=frame)
    await client.error(code)
    await client.hello()
    await client.close()


async def test_replies_follow_the_encoding_of_the_last_frame(server):
    client = await Client.open(server.url, binary=True)
    await client.hello()
    assert isinstance(client.frames[-1], bytes)
    client.binary = False
    await client.send("effect", name="x", on=False)
    await client.expect("effect")
    assert isinstance(client.frames[-1], str)


async def test_oversized_frame_closes_with_1009(server, binary):
    client = await Client.open(server.url, binary)
    await client.hello()
    await client.send("chat", text="x" * (protocol.MAX_FRAME_BYTES + 10))
    await asyncio.wait_for(client._reader, 5)
    assert client.ws.close_code == 1009


async def test_rate_limits(server, binary):
    client = await visitor(server, binary, 1)
    seen = []
    for _ in range(7):
        await client.send("start")
        msg = await asyncio.wait_for(client._pending.get(), 5)
        seen.append(msg["type"] if msg["type"] != "error" else msg["code"])
        if msg["type"] == "queued":
            await client.send("stop")
            await client.expect("stopped")
    # start allows a burst of 5, then 1/s: within a quick loop the 6th is refused
    assert seen[:5] == ["queued"] * 5
    assert "rate_limited" in seen[5:]


# ---- sans-I/O: decode + validate ----------------------------------------------------


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_random_frames_only_raise_protocol_errors(frame):
    try:
        protocol.validate(protocol.decode(frame))
    except protocol.ProtocolError as exc:
        assert exc.code in {
            "bad_json", "bad_msgpack", "not_an_object", "unsupported_version", "unknown_type",
            "bad_field",
        }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500)
@given(st.sampled_from(sorted(protocol.CLIENT_MESSAGES)), st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_random_fields_only_raise_protocol_errors(kind, fields):
    msg = {**fields, "v": 1, "type": kind}
    for encoded in (protocol.encode(msg, False), protocol.encode(msg, True)):
        try:
            clean = protocol.validate(protocol.decode(encoded))
        except protocol.ProtocolError as exc:
            assert exc.code == "bad_field" and exc.ref == kind
        else:
            assert clean["type"] == kind


@pytest.mark.parametrize("offers", ["before", "after", "mixed"])
async def test_each_direction_of_a_pair_is_connected_once(server, offers, monkeypatch):
    # Both sides settle their media and each hears of the other's: whatever the
    # order of offers and match, the forwarding (and the keyframe request that
    # comes with it) is set up once per direction.
    calls = []
    connect = server.sfu.connect

    def counting_connect(publisher, subscriber):
        calls.append((publisher, subscriber))
        connect(publisher, subscriber)

    monkeypatch.setattr(server.sfu, "connect", counting_connect)
    a, b = await visitor(server, False, 1), await visitor(server, False, 2)
    early = {"before": (a, b), "after": (), "mixed": (a,)}[offers]
    for client in (a, b):
        await client.send("start")
        await client.expect("queued")
        if client in early:
            await client.send("offer", sdp=OFFER)
    for client in (a, b):
        want = {"matched", "answer"} if client in early else {"matched"}
        assert {(await client._pending.get())["type"] for _ in want} == want
    for client in (a, b):
        if client not in early:
            await client.send("offer", sdp=OFFER)
            await client.expect("answer")
    sa, sb = [v.session_id for v in server.hub.visitors.values()]
    for _ in range(100):
        if len(set(calls)) == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # let any second connect arrive
    assert sorted(calls) == sorted([(sa, sb), (sb, sa)])
    # Across nodes a side may settle after it heard the partner's news: settling
    # again (and the partner hearing of it again) connects nothing more.
    for v in list(server.hub.visitors.values()):
        await server.hub.pairing.settle_media(v)
    await asyncio.sleep(0.1)
    assert len(calls) == 2


async def test_websocket_compression_is_not_negotiated(server):
    # permessage-deflate would hold a zlib compressor and decompressor (~46 KB)
    # per idle connection: a client that offers it gets plain frames.
    from websockets.asyncio.client import connect

    async with connect(server.url) as ws:  # offers permessage-deflate by default
        assert ws.request.headers.get("Sec-WebSocket-Extensions")
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        await ws.send('{"v": 1, "type": "hello", "age_confirmed": true}')
        assert '"welcome"' in await ws.recv()


async def test_a_visitor_that_stops_answering_pings_is_dropped_and_its_partner_told(server):
    # A vanished network (no FIN, no RST) leaves the TCP connection open: only the
    # WebSocket pings (every 1.5 s, 2.5 s to answer) find it. The client stops
    # reading, so it answers no ping; its partner must hear of it within 5 s.
    a, b = await matched_pair(server, False)
    loop = asyncio.get_running_loop()
    b.ws.transport.pause_reading()
    t0 = loop.time()
    left = await a.expect("partner_left", timeout=8)
    took = loop.time() - t0
    assert left["reason"] == "left"
    assert took < 5.0, took
    await a.expect("queued")
    # B's leaving goes on after A is told (A's re-queue, the queue's cancel are awaited)
    for _ in range(200):
        if len(server.hub.visitors) == 1:
            break
        await asyncio.sleep(0.01)
    assert len(server.hub.visitors) == 1, server.hub.visitors


async def test_dead_media_ends_the_pair(server, binary):
    a, b = await matched_pair(server, binary, offer=True)
    # the SFU closes a's media (what its 4 s media timeout or consent expiry does)
    (va,) = [v for v in server.hub.visitors.values() if v.handle == a.messages[0]["handle"]]
    server.sfu.close_session(va.session_id, "media timeout")
    await a.error("media_closed")
    await a.expect("stopped")
    assert (await b.expect("partner_left"))["reason"] == "left"
    await b.expect("queued")
    # a may offer again and come back
    await a.send("start")
    await a.expect("queued")
    await a.send("offer", sdp=OFFER)
    got = sorted([(await a._pending.get())["type"] for _ in range(2)])
    assert got == ["answer", "matched"]


async def test_a_silent_websocket_is_dropped_and_its_partner_told(server, binary):
    a, b = await matched_pair(server, binary)
    loop = asyncio.get_running_loop()
    started = loop.time()
    a.ws.transport.pause_reading()  # a's network dies: no pongs, no close
    msg = await b.expect("partner_left", timeout=8)
    assert msg["reason"] == "left"
    assert loop.time() - started < 5.0


async def test_a_match_with_someone_no_longer_queued_requeues_the_other(server, binary):
    # what a Redis match crossing a stop looks like: the matchmaker took both tickets
    from mediaserver.matchmaker import Match

    a, b = await visitor(server, binary, 1), await visitor(server, binary, 2)
    await a.send("start")
    await a.expect("queued")
    va, vb = list(server.hub.visitors.values())
    await server.hub.matchmaker.cancel(va.id)  # as if the matchmaker had taken it
    server.hub.pairing.on_match(Match(va.id, vb.id, ()))  # b never pressed start
    await a.expect("queued")  # a is back in the queue
    await b.quiet(0.2)
    await b.send("start")
    await b.expect("queued")
    assert (await a.expect("matched"))["partner"] == b.messages[0]["handle"]


async def test_effects_beyond_the_cap_are_refused(binary):
    async with running_server(max_effect_streams=1) as server:
        a, b = await matched_pair(server, binary, offer=True)
        await a.send("effect", name="low_light", on=True)
        assert (await a.expect("effect"))["applied"] is True
        await b.send("effect", name="low_light", on=True)
        assert "busy" in (await b.error("effects_busy"))["message"]
        assert (await b.expect("effect"))["applied"] is False
        await a.send("effect", name="low_light", on=False)
        await a.expect("effect")
        await b.send("effect", name="low_light", on=True)  # room again
        assert (await b.expect("effect"))["applied"] is True


async def test_profile_token_feeds_interests_and_keeps_opted_in_chat(server, binary):
    store = server.hub.store
    alice, alice_token = store.create_profile(
        "alice", "1990-01-01", interests=["chess", "jazz"], chat_history_consent=True
    )
    _, bob_token = store.create_profile("bob", "1991-02-02", interests=["jazz"])
    bad = await Client.open(server.url, binary, source="127.0.0.9")
    await bad.send("hello", age_confirmed=True, token="not-a-token")
    await bad.error("unauthorized")
    a = await Client.open(server.url, binary, source="127.0.0.2")
    b = await Client.open(server.url, binary, source="127.0.0.3")
    await a.hello(token=alice_token)
    await b.hello(token=bob_token)
    for client in (a, b):
        await client.send("start")
        await client.expect("queued")
    assert (await a.expect("matched"))["shared_interests"] == ["jazz"]  # from the profiles
    await b.expect("matched")
    await a.send("chat", text="kept for alice")
    await b.expect("chat")
    await b.send("chat", text="from the stranger")
    await a.expect("chat")
    for _ in range(50):
        history = store.chat_history(alice.id)
        if len(history) == 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(m["text"] for m in history) == ["from the stranger", "kept for alice"]
    assert {m["sender"] for m in history} == {"me", "stranger"}
