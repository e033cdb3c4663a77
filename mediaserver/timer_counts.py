"""Opt-in count of the event loop's timer callbacks, by source (--count-timers).

Each `loop.call_at` / `loop.call_later` made through the loop's Python methods (every
`asyncio.sleep`, `wait_for`, uvicorn's WebSocket pings, the SFU's timer) gets its
callback wrapped so that firing it adds one to a counter named after where it came
from: the callback's qualified name, or, for asyncio's own helpers (the wake-up of
an `asyncio.sleep`, a `wait_for` deadline), the first function outside asyncio that
armed it.
/metrics exports the counts (mediaserver_timer_callbacks_total{source}) and
benchmarks/periodic.py reads them. Off by default: the wrapper costs a closure per
timer. Timers uvloop arms inside its own C code are not seen (none of ours).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

_COUNTED = "_mediaserver_counted"


def _name(callback: Callable[..., Any]) -> str:
    func = getattr(callback, "__func__", callback)  # a bound method: its function
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{qualname}"


def source(callback: Callable[..., Any]) -> str:
    """Where a timer comes from: asyncio's helpers (an `asyncio.sleep`'s wake-up, a
    `wait_for` deadline) are named by the first caller outside asyncio."""
    name = _name(callback)
    if not name.startswith("asyncio."):
        return name
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != __name__ and not module.startswith("asyncio"):
            return f"{name.rsplit('.', 1)[-1]} in {module}.{frame.f_code.co_qualname}"
        frame = frame.f_back  # type: ignore[assignment]
    return name


class TimerCounts:
    """Counts of fired timer callbacks by source, for one event loop."""

    def __init__(self) -> None:
        self.fired: Counter[str] = Counter()

    def snapshot(self) -> dict[str, int]:
        return dict(self.fired)

    def _wrap(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        if getattr(callback, _COUNTED, False):
            return callback  # asyncio's call_later goes through call_at: once
        label = source(callback)
        fired = self.fired

        def counted(*args: Any) -> Any:
            fired[label] += 1
            return callback(*args)

        setattr(counted, _COUNTED, True)
        return counted

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count every timer armed on `loop` from now on (instance attributes shadow
        the loop's methods; uvloop's Loop and asyncio's both take them)."""
        call_at, call_later = loop.call_at, loop.call_later
        wrap = self._wrap

        def counted_call_at(
            when: float, callback: Callable[..., Any], *args: Any, context: Any = None
        ) -> asyncio.TimerHandle:
            return call_at(when, wrap(callback), *args, context=context)

        def counted_call_later(
            delay: float, callback: Callable[..., Any], *args: Any, context: Any = None
        ) -> asyncio.TimerHandle:
            return call_later(delay, wrap(callback), *args, context=context)

        loop.call_at = counted_call_at  # type: ignore[method-assign, assignment]
        loop.call_later = counted_call_later  # type: ignore[method-assign, assignment]
