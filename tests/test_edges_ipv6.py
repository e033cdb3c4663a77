"""The per-address limits of the HTTP edge for IPv6 clients, over real WebSockets:
addresses named by a trusted proxy (X-Forwarded-For), one /64 counted as one client."""

from __future__ import annotations

from tests.support.signalling_client import Client, running_server
from tests.test_edges import OFFER, closed_with, metric, reply_to_offer

PROXY = "127.0.0.1/32"  # the test client connects from here and names the visitor


def via(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_websockets_per_address_count_one_64_as_one_client():
    async with running_server(max_connections_per_address=2, trusted_proxy=PROXY) as server:
        held = []
        for address in ("2001:db8:1:2::1", "2001:db8:1:2::2"):
            held.append(await Client.open(server.url, headers=via(address)))
            await held[-1].hello()
        # a third address of the same /64 is the same device
        refused = await Client.open(server.url, headers=via("2001:db8:1:2:ffff::3"))
        assert await closed_with(refused) == (1008, "too many connections from this address")
        # the next /64 is someone else
        other = await Client.open(server.url, headers=via("2001:db8:1:3::1"))
        await other.hello()
        assert server.hub.connections_from("2001:db8:1:2::77") == 2
        assert (
            await metric(server, "mediaserver_websocket_refused_total", reason="per_address") == 1
        )


async def test_media_sessions_per_address_count_one_64_as_one_client():
    async with running_server(
        max_sessions_per_address=1, match_interest_wait=0, trusted_proxy=PROXY
    ) as server:
        clients = []
        for address in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:3::1"):
            clients.append(await Client.open(server.url, headers=via(address)))
            await clients[-1].hello()
            await clients[-1].send("start")
            await clients[-1].send("offer", sdp=OFFER)
        replies = [await reply_to_offer(c) for c in clients]
        assert [r["type"] for r in replies] == ["answer", "error", "answer"]
        assert replies[1]["code"] == "too_many_sessions"
        assert await metric(server, "mediaserver_offers_refused_per_address_total") == 1
