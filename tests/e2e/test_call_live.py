"""A call between two connected accounts, live: the real app (REST + /ws + SFU), two
accounts made and connected over REST, two aiortc peers in the namespace. One calls,
the other answers, both decode the other's video through the same SFU path a random
pair uses; a hang-up ends it for both without queueing either for a random chat."""

import asyncio

import httpx
import pytest

from mediaserver.netns import SERVER_IP
from mediaserver.signalling.visitors import State
from tests.support.http_client import http_get
from tests.support.peers import AiortcPeer, wait_for
from tests.support.signalling_client import Client, running_server

pytestmark = pytest.mark.netns


async def account(http: httpx.AsyncClient, username: str) -> dict:
    r = await http.post("/profiles", json={"username": username, "date_of_birth": "1990-05-17",
                                           "discoverable": True})
    assert r.status_code == 201, r.text
    return r.json()


async def test_two_connections_call_see_each_other_and_hang_up():
    async with running_server(announced_ip=SERVER_IP) as server:
        async with httpx.AsyncClient(base_url=server.http_url + "/api/v1") as http:
            alice, bobby = await account(http, "alice"), await account(http, "bobby")
            auth = {name: {"Authorization": f"Bearer {user['token']}"}
                    for name, user in (("alice", alice), ("bobby", bobby))}
            asked = (await http.post("/connections", headers=auth["bobby"],
                                     json={"handle": "alice"})).json()
            accepted = await http.post(f"/connections/{asked['id']}/accept",
                                       headers=auth["alice"])
            conversation = accepted.json()["conversation_id"]
        a = await Client.open(server.url, source="127.0.0.2")
        b = await Client.open(server.url, source="127.0.0.3")
        peers = {"a": AiortcPeer(), "b": AiortcPeer()}
        try:
            await a.hello(token=alice["token"])
            await b.hello(token=bobby["token"])
            await b.send("call", conversation_id=conversation)
            call_id = (await b.expect("call_ringing"))["call_id"]
            incoming = await a.expect("call_incoming")
            assert incoming["call_id"] == call_id and incoming["from"] == "bobby"
            await a.send("call_answer", call_id=call_id)
            for client, peer in ((a, peers["a"]), (b, peers["b"])):
                started = await client.expect("call_started")
                assert started["conversation_id"] == conversation
                await client.send("offer", sdp=await peer.offer())
                await peer.accept((await client.expect("answer"))["sdp"])
            # both decode the other's video
            assert await wait_for(
                lambda: min(p.frames("video") for p in peers.values()) >= 30, 60)
            await b.send("call_hangup", call_id=call_id)
            for client in (a, b):
                ended = await client.expect("call_ended")
                assert ended["call_id"] == call_id and ended["reason"] == "hangup"
            visitors = list(server.hub.visitors.values())
            assert len(visitors) == 2
            for v in visitors:
                assert v.state is State.IDLE and v.partner is None and v.call is None
            await a.quiet(0.5)  # nobody was put in the random queue
            await b.quiet(0.1)
            status, text = await asyncio.to_thread(http_get, server.http_url + "/metrics")
            assert status == 200
            assert 'mediaserver_calls_total{outcome="answered",worker="0"} 1.0' in text, text
        finally:
            for client in (a, b):
                await client.close()
            for peer in peers.values():
                await peer.close()
