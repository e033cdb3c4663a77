"""--count-timers: the event loop's fired timer callbacks, counted by source
(mediaserver/timer_counts.py), on uvloop and asyncio's own loop. The server's
/metrics export is tests/tools/test_bench_periodic.py's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

from mediaserver.timer_counts import TimerCounts

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


async def _sleeper(times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(0.001)


class _Ticker:
    def __init__(self, loop: asyncio.AbstractEventLoop, left: int) -> None:
        self.loop, self.left = loop, left
        self.done = loop.create_future()

    def on_timer(self) -> None:
        self.left -= 1
        if self.left:
            self.loop.call_later(0.001, self.on_timer)
        else:
            self.done.set_result(None)


@pytest.mark.parametrize("make_loop", LOOPS.values(), ids=list(LOOPS))
def test_counts_fired_timers_by_source(make_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    loop = make_loop()
    counts = TimerCounts()
    try:
        counts.install(loop)

        async def main() -> None:
            ticker = _Ticker(loop, 4)
            loop.call_at(loop.time() + 0.001, ticker.on_timer)
            cancelled = loop.call_later(5, ticker.on_timer)
            cancelled.cancel()  # never fires: not counted
            await asyncio.gather(_sleeper(3), ticker.done)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), 0.001)

        loop.run_until_complete(main())
    finally:
        loop.close()
    fired = counts.snapshot()
    assert fired[f"{__name__}._Ticker.on_timer"] == 4
    # asyncio.sleep's wake-up is named by the coroutine that slept, once each
    # (asyncio's call_later goes through call_at: not counted twice)
    assert fired[f"_set_result_unless_cancelled in {__name__}._sleeper"] == 3
    assert (
        fired[f"_release_waiter in {__name__}.test_counts_fired_timers_by_source.<locals>.main"]
        == 1
    )
    assert sum(fired.values()) == 8
