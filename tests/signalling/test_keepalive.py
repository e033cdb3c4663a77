"""WebSocket keepalive (mediaserver/keepalive.py): every connection's pings and pong
deadlines on one timer per worker. A client that stops answering is still dropped
within ws_ping_interval + ws_ping_timeout (4 s) and its visitor goes; clients that
answer stay; the pings go out on a few sweeps a second, not one timer each."""

from __future__ import annotations

import asyncio

import pytest

from mediaserver.keepalive import SWEEP, SweptKeepalive
from mediaserver.timer_counts import TimerCounts
from tests.support.signalling_client import Client, running_server

pytestmark = pytest.mark.both_loops

INTERVAL, TIMEOUT = 1.5, 2.5  # app.uvicorn_config's ws_ping_interval / ws_ping_timeout


async def test_a_client_that_stops_answering_pings_is_dropped_within_4_s() -> None:
    async with running_server() as server:
        client = await Client.open(server.url)
        await client.hello()
        assert len(server.hub.visitors) == 1
        loop = asyncio.get_running_loop()
        # stop reading: the client library answers no ping from now on
        client.ws.transport.pause_reading()
        went = loop.time()
        while server.hub.visitors and loop.time() - went < 10:
            await asyncio.sleep(0.02)
        gone = loop.time() - went
        assert not server.hub.visitors
        # a ping at most INTERVAL after the last pong, its pong awaited TIMEOUT;
        # each up to one SWEEP early, never late
        assert INTERVAL + TIMEOUT - 1.0 <= gone <= INTERVAL + TIMEOUT + 0.3, gone
        client.ws.transport.abort()


async def test_answering_clients_stay_and_their_pings_share_one_timer() -> None:
    counts = TimerCounts()
    counts.install(asyncio.get_running_loop())
    async with running_server() as server:
        clients = [await Client.open(server.url, source=f"127.0.0.{2 + i}") for i in range(30)]
        for client in clients:
            await client.hello()
        fired = dict(counts.fired)
        await asyncio.sleep(2 * INTERVAL + 0.5)
        assert len(server.hub.visitors) == 30
        assert all(c.ws.close_code is None for c in clients)
        conns = [c for c in server.server_state.connections if isinstance(c, SweptKeepalive)]
        assert len(conns) == 30
        now = asyncio.get_running_loop().time()
        assert all(c.ping_sent_at > 0 for c in conns)  # each was pinged
        # and answered: no ping is left unanswered past its deadline
        # (last_ping_rtt can be 0.0: uvloop's clock has 1 ms steps)
        assert all(c.pending_ping_payload is None or now - c.ping_sent_at < TIMEOUT for c in conns)
        sweeps = counts.fired["mediaserver.keepalive.PingSweep._sweep"] - fired.get(
            "mediaserver.keepalive.PingSweep._sweep", 0
        )
        # 30 clients pinged about 2 times each in 3.5 s: at most one sweep per step
        assert 1 <= sweeps <= (2 * INTERVAL + 0.5) / SWEEP + 1
        assert not any("keepalive_ping" in s or "keepalive_timeout" in s for s in counts.fired)
        for client in clients:
            await client.close()
