"""keepalive.PingSweep alone, with recording connections: deadlines served on the
SWEEP grid, never late; stale entries skipped; a crowd due at once is served
BATCH at a time, each batch on its own loop iteration."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mediaserver.keepalive import _PING, _PONG, BATCH, SWEEP, PingSweep
from mediaserver.timer_counts import TimerCounts

pytestmark = pytest.mark.both_loops


class Recorder:
    """A connection as PingSweep sees it: what it was asked to do, and when."""

    def __init__(self, log: list[tuple[str, Any, float]], loop: asyncio.AbstractEventLoop) -> None:
        self.keepalive_generation = 0
        self.log, self.loop = log, loop

    def send_keepalive_ping(self) -> None:
        self.log.append(("ping", self, self.loop.time()))

    def keepalive_timeout(self) -> None:
        self.log.append(("timeout", self, self.loop.time()))


async def test_deadlines_are_served_on_the_grid_never_late_and_stale_ones_skipped() -> None:
    loop = asyncio.get_running_loop()
    sweep = PingSweep(loop)
    log: list[tuple[str, Any, float]] = []
    a, b, c = Recorder(log, loop), Recorder(log, loop), Recorder(log, loop)
    now = loop.time()
    sweep.add(now + 0.3, _PING, a)  # type: ignore[arg-type]
    sweep.add(now + 0.35, _PONG, b)  # type: ignore[arg-type]
    sweep.add(now + 0.4, _PING, c)  # type: ignore[arg-type]
    c.keepalive_generation += 1  # answered meanwhile: its entry is stale
    await asyncio.sleep(0.7)
    assert [(kind, conn) for kind, conn, _ in log] == [("ping", a), ("timeout", b)]
    for (_, _, at), due in zip(log, (now + 0.3, now + 0.35), strict=True):
        assert due - SWEEP - 0.01 <= at <= due + 0.02  # up to one step early, never late


async def test_a_crowd_due_at_once_goes_out_batch_by_batch() -> None:
    loop = asyncio.get_running_loop()
    sweep = PingSweep(loop)
    log: list[tuple[str, Any, float]] = []
    crowd = [Recorder(log, loop) for _ in range(2 * BATCH + 10)]
    due = loop.time() + 0.05
    for conn in crowd:
        sweep.add(due, _PING, conn)  # type: ignore[arg-type]
    iterations: list[int] = []

    def count() -> None:  # one entry per loop iteration while the sweep runs
        iterations.append(len(log))
        if len(log) < len(crowd):
            loop.call_soon(count)

    loop.call_at(due - due % SWEEP, count)
    await asyncio.sleep(0.1 + SWEEP)
    assert [conn for _, conn, _ in log] == crowd
    # never more than BATCH between two of count()'s turns
    steps = [b - a for a, b in zip([0, *iterations], iterations, strict=False)]
    assert max(steps) <= BATCH, steps


class Repinger(Recorder):
    """Answers at once: its next ping is due 1.5 s later, added during the sweep."""

    def __init__(self, sweep: PingSweep, log: list[tuple[str, Any, float]]) -> None:
        super().__init__(log, sweep.loop)
        self.sweep = sweep

    def send_keepalive_ping(self) -> None:
        super().send_keepalive_ping()
        self.sweep.add(self.loop.time() + 1.5, _PING, self)  # type: ignore[arg-type]


async def test_one_wake_up_per_grid_step_however_many_connections() -> None:
    loop = asyncio.get_running_loop()
    counts = TimerCounts()
    counts.install(loop)
    sweep = PingSweep(loop)
    log: list[tuple[str, Any, float]] = []
    conns = [Repinger(sweep, log) for _ in range(120)]
    start = loop.time()
    for i, conn in enumerate(conns):
        sweep.add(start + 0.3 + 1.5 * i / len(conns), _PING, conn)  # type: ignore[arg-type]
    await asyncio.sleep(2.0)
    assert len(log) >= len(conns)  # each pinged at least once
    # a timer for each grid step, not one per connection, nor a second one right
    # after each step for the pings the sweep itself added
    assert counts.fired["mediaserver.keepalive.PingSweep._sweep"] <= 2.0 / SWEEP + 2
