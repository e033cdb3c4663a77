"""An idle Sfu arms no timer: its 0.1 s tick runs only while it has sessions
(Sfu.get_timer is None without them), and the first session starts it again, so
its timeouts still fire. Real UdpEndpoint on loopback (no datagram sent), on
both loops; the ticks are counted with timer_counts (--count-timers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mediaserver.sfu.events import SessionClosed
from mediaserver.sfu.server import TICK, Sfu, SfuConfig
from mediaserver.timer_counts import TimerCounts

pytestmark = pytest.mark.both_loops

OFFER = (Path(__file__).resolve().parents[1] / "data" / "offer_chromium.sdp").read_text()
ON_TIMER = "mediaserver.sfu.udp.UdpEndpoint._on_timer"


async def test_an_idle_sfu_stops_ticking_and_a_new_session_still_times_out() -> None:
    counts = TimerCounts()
    counts.install(asyncio.get_running_loop())
    sfu = Sfu(SfuConfig(host="127.0.0.1", udp_port=0, handshake_timeout=0.5))
    await sfu.start()
    closed: list[SessionClosed] = []
    sfu.subscribe(lambda e: closed.append(e) if isinstance(e, SessionClosed) else None)
    try:
        assert sfu.get_timer() is None
        await asyncio.sleep(10 * TICK)
        # at most the one tick start() armed before the first get_timer (the
        # endpoint asks again only after a tick): not one every TICK
        assert counts.fired[ON_TIMER] <= 1

        session = sfu.create_session(OFFER)
        assert sfu.get_timer() is not None
        ticks = counts.fired[ON_TIMER]
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not closed and loop.time() - start < 3:
            await asyncio.sleep(0.02)
        assert [(e.session_id, e.reason) for e in closed] == [(session.id, "handshake timeout")]
        elapsed = loop.time() - start
        assert 0.5 <= elapsed <= 0.5 + 3 * TICK + 0.2, elapsed
        assert counts.fired[ON_TIMER] - ticks >= 0.5 / TICK - 1  # ticking while it lived

        ticks = counts.fired[ON_TIMER]
        await asyncio.sleep(10 * TICK)
        assert counts.fired[ON_TIMER] - ticks <= 1  # idle again: the tick stops
        assert sfu.get_timer() is None

        # a second idle -> busy turn works the same
        again = sfu.create_session(OFFER)
        start = loop.time()
        while len(closed) < 2 and loop.time() - start < 3:
            await asyncio.sleep(0.02)
        assert closed[-1].session_id == again.id and closed[-1].reason == "handshake timeout"
    finally:
        await sfu.close()
