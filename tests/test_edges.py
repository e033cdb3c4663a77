"""The HTTP edge over real sockets: per-address limits on /ws and media sessions, the
media-memory bound, the Origin check, security headers and who may read /metrics."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mediaserver import netns
from mediaserver.edges import CONTENT_SECURITY_POLICY
from tests.support.http_client import http_request
from tests.support.signalling_client import Client, running_server, start_and_match
from tests.support import DATA

OFFER = (DATA / "offer_aiortc.sdp").read_text()


async def get(server: Any, path: str, **headers: str) -> tuple[int, Any, str]:
    return await asyncio.to_thread(http_request, server.http_url + path, headers)


async def metric(server: Any, name: str, **labels: str) -> float:
    status, _, text = await get(server, "/metrics")
    assert status == 200
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def reply_to_offer(client: Client) -> dict[str, Any]:
    """The answer (or error) to an offer, past queued/matched news."""
    while True:
        msg = await asyncio.wait_for(client._pending.get(), 5)
        if msg["type"] in ("answer", "error"):
            return msg


async def closed_with(client: Client) -> tuple[int, str]:
    await asyncio.wait_for(client._reader, 5)
    assert client.ws.close_code is not None
    return client.ws.close_code, client.ws.close_reason or ""


# ---- item 7: one address cannot take the server ---------------------------------------


async def test_websockets_per_address_are_bounded_and_counted():
    async with running_server(max_connections_per_address=3) as server:
        held = [await Client.open(server.url, source="127.0.0.5") for _ in range(3)]
        for c in held:
            await c.hello()
        refused = await Client.open(server.url, source="127.0.0.5")
        assert await closed_with(refused) == (1008, "too many connections from this address")
        # another address is not affected
        other = await Client.open(server.url, source="127.0.0.6")
        await other.hello()
        # a closed connection frees its place
        await held[0].close()
        for _ in range(100):
            if server.hub.connections_from("127.0.0.5") == 2:
                break
            await asyncio.sleep(0.02)
        again = await Client.open(server.url, source="127.0.0.5")
        await again.hello()
        assert await metric(server, "mediaserver_websocket_refused_total", reason="per_address") == 1


async def test_a_forwarded_for_header_from_an_untrusted_peer_spreads_nothing():
    # uvicorn by default believes X-Forwarded-For from a 127.0.0.1 peer: each of these
    # would then count as another address. Only --trusted-proxy may name the client.
    async with running_server(max_connections_per_address=2) as server:
        held = []
        for i in range(2):
            held.append(await Client.open(server.url, headers={"X-Forwarded-For": f"198.51.100.{i}"}))
            await held[-1].hello()
        refused = await Client.open(server.url, headers={"X-Forwarded-For": "198.51.100.9"})
        assert await closed_with(refused) == (1008, "too many connections from this address")
        assert server.hub.connections_from("127.0.0.1") == 2


async def test_media_sessions_per_address_are_bounded():
    async with running_server(max_sessions_per_address=2, match_interest_wait=0) as server:
        same = [await Client.open(server.url, source="127.0.0.7") for _ in range(3)]
        for c in same:
            await c.hello()
            await c.send("start")
            await c.send("offer", sdp=OFFER)
        replies = [await reply_to_offer(c) for c in same]
        assert [r["type"] for r in replies] == ["answer", "answer", "error"]
        assert replies[2]["code"] == "too_many_sessions" and replies[2]["ref"] == "offer"
        # everyone else still gets media
        other = await Client.open(server.url, source="127.0.0.8")
        await other.hello()
        await other.send("start")
        await other.send("offer", sdp=OFFER)
        assert (await reply_to_offer(other))["type"] == "answer"
        # a session that ends gives its address the place back
        await same[0].send("bye")
        await closed_with(same[0])
        await same[2].send("offer", sdp=OFFER)
        assert (await reply_to_offer(same[2]))["type"] == "answer"
        assert await metric(server, "mediaserver_offers_refused_per_address_total") == 1


async def test_media_memory_bound_refuses_sessions_before_caches_exceed_it():
    # about 1.5 MiB of NACK caches per audio+video session: 4 MiB holds two
    async with running_server(max_media_memory=4) as server:
        sfu = server.sfu
        assert server.hub.node_info().capacity == 2  # placement sees the bound too
        clients = [await Client.open(server.url, source=f"127.0.1.{i}") for i in range(1, 4)]
        for c in clients:
            await c.hello()
            await c.send("start")
            await c.send("offer", sdp=OFFER)
        replies = [await reply_to_offer(c) for c in clients]
        assert [r["type"] for r in replies] == ["answer", "answer", "error"]
        assert replies[2]["code"] == "server_full"
        assert sfu.cache_committed == 2 * 2 * sfu.stream_cache_bytes <= 4 * 1024 * 1024
        await clients[0].send("bye")
        await closed_with(clients[0])
        for _ in range(100):
            if sfu.cache_committed == 2 * sfu.stream_cache_bytes:
                break
            await asyncio.sleep(0.02)
        await clients[2].send("offer", sdp=OFFER)
        assert (await reply_to_offer(clients[2]))["type"] == "answer"


@pytest.mark.parametrize("kind, fields, burst", [
    ("block", {}, 5),
    ("report", {"reason": "spam"}, 3),
])
async def test_block_and_report_are_rate_limited(kind, fields, burst):
    async with running_server() as server:
        c = await Client.open(server.url, source="127.0.0.9")
        welcome = await c.hello()
        assert kind in welcome["limits"]["rates"]
        for _ in range(burst):
            await c.send(kind, **fields)
            await c.error("out_of_order")  # not matched: refused, but it counts
        await c.send(kind, **fields)
        await c.error("rate_limited")


async def test_a_visits_blocks_are_dropped_when_it_ends():
    async with running_server() as server:
        a = await Client.open(server.url, source="127.0.0.2")
        b = await Client.open(server.url, source="127.0.0.3")
        for c in (a, b):
            await c.hello()
        await start_and_match(a, b)
        await a.send("block")
        await b.expect("partner_left")
        mm = server.hub.matchmaker
        assert mm._conflicts  # the block is there while both visits last
        await a.close()
        await b.close()
        for _ in range(100):
            if not server.hub.visitors:
                break
            await asyncio.sleep(0.02)
        assert mm._conflicts == {}


# ---- item 7: which pages may open /ws ---------------------------------------------------


async def upgrade_status(url: str, origin: str | None) -> int:
    """101 for an upgrade that went through, else the HTTP status it got."""
    headers = {"Origin": origin} if origin is not None else {}
    try:
        async with connect(url, additional_headers=headers) as ws:
            await ws.send('{"v":1,"type":"hello","age_confirmed":true}')
            assert '"welcome"' in str(await ws.recv())
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_ws_origin_is_checked_before_the_upgrade():
    async with running_server(allowed_origin="https://app.example,http://localhost:3000") as server:
        own = server.http_url  # the page this server served
        assert await upgrade_status(server.url, None) == 101  # no browser: the load generator
        assert await upgrade_status(server.url, own) == 101
        assert await upgrade_status(server.url, "https://app.example") == 101
        assert await upgrade_status(server.url, "http://localhost:3000") == 101
        assert await upgrade_status(server.url, "https://evil.example") == 403
        assert await upgrade_status(server.url, "null") == 403
        # another port of the same host is another origin (another service's page)
        assert await upgrade_status(server.url, "http://127.0.0.1:1") == 403
        assert await metric(server, "mediaserver_websocket_refused_total", reason="origin") == 3


# ---- item 10: headers on every response ---------------------------------------------------


def directives(policy: str) -> dict[str, str]:
    out = {}
    for part in policy.split(";"):
        name, _, value = part.strip().partition(" ")
        if name:
            out[name] = value
    return out


@pytest.mark.parametrize("tls", [False, True])
async def test_security_headers_on_every_response(tls):
    async with running_server(tls=tls) as server:
        responses = {
            "page": await get(server, "/"),
            "static file": await get(server, "/app.js"),
            "rest": await get(server, "/api/v1/profiles"),
            "rest error": await get(server, "/api/v1/profiles/nobody"),
            "404": await get(server, "/no/such/file"),
            "health": await get(server, "/healthz"),
        }
        assert responses["404"][0] == 404 and responses["page"][0] == 200
        for what, (status, headers, _) in responses.items():
            assert status, what
            csp = directives(headers["content-security-policy"])
            assert csp["frame-ancestors"] == "'none'", what
            assert headers["x-content-type-options"] == "nosniff", what
            assert headers["referrer-policy"] == "no-referrer", what
            hsts = headers.get("strict-transport-security")
            assert (hsts == "max-age=31536000") if tls else hsts is None, what
        # the REST docs page: its own policy for its inline <style>, still no framing
        status, headers, _ = await get(server, "/api/v1/docs")
        assert status == 200
        docs = directives(headers["content-security-policy"])
        assert docs["frame-ancestors"] == "'none'" and docs["default-src"] == "'none'"
        assert headers["x-content-type-options"] == "nosniff"
        # the header says at least what the page's own <meta> says
        page = responses["page"][2]
        meta = re.search(r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"', page)
        assert meta is not None
        header = directives(CONTENT_SECURITY_POLICY)
        for name, value in directives(meta.group(1)).items():
            assert header[name] == value, name


# ---- item 10: /metrics is private -----------------------------------------------------------


async def test_metrics_answers_loopback_only_by_default():
    async with running_server() as server:
        assert (await get(server, "/metrics"))[0] == 200
        # a proxy on this host relaying someone: not a loopback client
        assert (await get(server, "/metrics", **{"X-Forwarded-For": "203.0.113.9"}))[0] == 404
    async with running_server(trusted_proxy="127.0.0.0/8") as server:
        assert (await get(server, "/metrics", **{"X-Forwarded-For": "203.0.113.9"}))[0] == 404
        assert (await get(server, "/metrics", **{"X-Forwarded-For": "127.0.0.1"}))[0] == 200


@pytest.mark.netns
async def test_metrics_refuses_a_peer_that_is_not_loopback():
    assert netns.inside()
    async with running_server(host="0.0.0.0") as server:
        port = server.http_url.rsplit(":", 1)[1]
        lan = f"http://{netns.SERVER_IP}:{port}"
        # the same server, reached from the namespace's other address
        status, _, _ = await asyncio.to_thread(http_request, f"{lan}/metrics")
        assert status == 404
        assert (await asyncio.to_thread(http_request, f"{lan}/healthz"))[0] == 200


async def test_metrics_token():
    async with running_server(metrics_token="s3cret-token") as server:
        assert (await get(server, "/metrics"))[0] == 404  # loopback is not enough now
        assert (await get(server, "/metrics", Authorization="Bearer wrong"))[0] == 404
        status, _, text = await get(server, "/metrics", Authorization="Bearer s3cret-token")
        assert status == 200 and "mediaserver_peers" in text



# ---- the flags ---------------------------------------------------------------------------


def test_edge_flags_repeat_join_and_refuse_bad_values(tmp_path):
    from mediaserver.cli import load_config

    base = ["--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")]
    config = load_config(
        [*base, "--allowed-origin", "https://a.example", "--allowed-origin",
         "https://b.example:8443,http://c.example", "--metrics-listen", "127.0.0.1:9100",
         "--max-connections-per-address", "50", "--max-sessions-per-address", "4",
         "--max-media-memory", "512"],
        {"MEDIASERVER_METRICS_TOKEN": "t0ken"},
    )
    from mediaserver.edges import EdgePolicy

    edges = EdgePolicy.from_config(config)
    assert edges.allowed_origins == {
        "https://a.example", "https://b.example:8443", "http://c.example"
    }
    assert edges.metrics.token == "t0ken" and not edges.metrics_on_main_port
    assert edges.max_connections_per_address == 50
    assert config.max_sessions_per_address == 4
    assert config.media_memory_bytes() == 512 * 1024 * 1024
    for bad, message in [
        (["--allowed-origin", "https://a.example/path"], "is not an origin"),
        (["--allowed-origin", "ftp://a.example"], "is not an origin"),
        (["--metrics-listen", "9100"], "--metrics-listen must be HOST:PORT"),
        (["--max-sessions-per-address", "0"], "--max-sessions-per-address must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_config([*base, *bad], {})
