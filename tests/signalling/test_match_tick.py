"""The match queue's 0.25 s tick (app._tick) runs only while the node has visitors
(or calls outliving theirs): an empty node sleeps until one comes. What the tick
serves still happens: two visitors with no interest in common are paired once
the interest wait (--match-interest-wait) has run out, which only a tick notices."""

from __future__ import annotations

import asyncio

import pytest

from mediaserver.app import MATCH_TICK
from mediaserver.timer_counts import TimerCounts
from tests.support.signalling_client import Client, running_server

pytestmark = pytest.mark.both_loops

TICK_SOURCE = "_set_result_unless_cancelled in mediaserver.app._tick"


async def test_an_empty_node_does_not_tick_and_interest_waits_still_run_out() -> None:
    counts = TimerCounts()
    counts.install(asyncio.get_running_loop())
    async with running_server(match_interest_wait=0.5) as server:
        await asyncio.sleep(6 * MATCH_TICK)
        assert counts.fired[TICK_SOURCE] == 0
        assert not server.hub.has_timed_work()

        a = await Client.open(server.url, source="127.0.0.2")
        await a.hello(interests=["chess"])
        b = await Client.open(server.url, source="127.0.0.3")
        await b.hello(interests=["jazz"])
        loop = asyncio.get_running_loop()
        started = loop.time()
        for client in (a, b):
            await client.send("start")
            await client.expect("queued")
        for client in (a, b):
            matched = await client.expect("matched", timeout=3)
            assert matched["shared_interests"] == []
        waited = loop.time() - started
        assert 0.5 <= waited <= 0.5 + 2 * MATCH_TICK + 0.3, waited
        assert counts.fired[TICK_SOURCE] >= 2  # ticking while they are here

        await a.close()
        await b.close()
        while server.hub.visitors:
            await asyncio.sleep(0.02)
        await asyncio.sleep(2 * MATCH_TICK)  # at most the tick already asleep
        ticks = counts.fired[TICK_SOURCE]
        await asyncio.sleep(6 * MATCH_TICK)
        assert counts.fired[TICK_SOURCE] == ticks  # empty again: no tick
