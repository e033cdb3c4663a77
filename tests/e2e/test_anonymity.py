"""Nothing about a partner reaches a peer: every frame two real peers receive is checked."""

import json
import re

import msgpack
import pytest

from mediaserver.netns import SERVER_IP
from tests.support.peers import AiortcPeer, wait_for
from tests.support.signalling_client import Client, running_server

pytestmark = pytest.mark.netns

# every field a server message may carry (docs/protocol.md)
ALLOWED = {
    "welcome": {"handle", "limits", "ice_servers"},
    "queued": set(),
    "matched": {"partner", "shared_interests"},
    "answer": {"sdp"},
    "partner_left": {"reason"},
    "chat": {"text"},
    "typing": set(),
    "stopped": set(),
    "reported": set(),
    "effect": {"name", "on", "applied"},
    "error": {"code", "message", "ref"},
}


def secrets_of(offer: str) -> list[str]:
    found = []
    for pattern in (r"a=ice-ufrag:(\S+)", r"a=ice-pwd:(\S+)", r"a=fingerprint:\S+ (\S+)",
                    r"a=ssrc:(\d+)", r"cname:(\S+)", r"a=msid:(\S+)"):
        found += re.findall(pattern, offer)
    return sorted(set(found))


async def test_frames_carry_nothing_about_the_partner():
    # with TURN on, so each welcome carries credentials: the partner's are secrets too
    async with running_server(announced_ip=SERVER_IP, turn_secret="turn-secret",
                              turn_url="turn:turn.example.org:3478?transport=tcp") as server:
        peers = [AiortcPeer(320, 240), AiortcPeer(320, 240)]
        clients = [await Client.open(server.url, binary=False, source="127.0.0.2"),
                   await Client.open(server.url, binary=True, source="127.0.0.3")]
        offers = []
        try:
            for client, interests in zip(clients, (["chess", "art"], ["chess"])):
                await client.hello(interests=interests)
                await client.send("start")
                await client.expect("queued")
            for client, peer in zip(clients, peers):
                offers.append(await peer.offer())
                await client.send("offer", sdp=offers[-1])
            for client, peer in zip(clients, peers):
                # answer and matched may come in either order: collect both
                got = {}
                for _ in range(2):
                    msg = await client._pending.get()
                    got[msg["type"]] = msg
                assert set(got) == {"answer", "matched"}
                await peer.accept(got["answer"]["sdp"])
            assert await wait_for(lambda: min(p.frames("video") for p in peers) >= 10, timeout=30)
            await clients[0].send("chat", text="hi")
            await clients[1].expect("chat")
            await clients[1].send("next")
            await clients[0].expect("partner_left")

            visitors = list(server.hub.visitors.values())
            sessions = {v.session_id: server.sfu.sessions[v.session_id] for v in visitors}
            for me, other_offer, other in ((0, offers[1], 1), (1, offers[0], 0)):
                partner = visitors[other]
                forbidden = secrets_of(other_offer) + [
                    partner.id, partner.reputation, partner.session_id,
                    sessions[partner.session_id].local_ufrag,
                    sessions[partner.session_id].local_pwd,
                ]
                first = clients[other].frames[0]  # its welcome
                welcome = msgpack.unpackb(first) if isinstance(first, bytes) else json.loads(first)
                (turn,) = welcome["ice_servers"]
                forbidden += [turn["username"], turn["username"].split(":")[1], turn["credential"]]
                assert len(forbidden) >= 11
                frames = clients[me].frames
                assert frames
                texts = []
                for frame in frames:
                    msg = msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)
                    assert set(msg) - {"v", "type"} <= ALLOWED[msg["type"]], msg
                    texts.append(frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame)
                    if msg["type"] == "answer":
                        candidates = re.findall(r"a=candidate:.*", msg["sdp"])
                        assert candidates and all(
                            f" {SERVER_IP} {server.sfu.udp_port} typ host" in c for c in candidates
                        )
                blob = "\n".join(texts)
                for secret in forbidden:
                    assert secret not in blob, secret
                # the partner's media address is nowhere either
                host, port = sessions[partner.session_id].address
                assert f"{host} {port}" not in blob and f"{host}:{port}" not in blob
        finally:
            for client in clients:
                await client.close()
            for peer in peers:
                await peer.close()
