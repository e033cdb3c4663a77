"""WebSocket keepalive on one timer per worker, not two per connection.

uvicorn's websockets-sansio protocol arms a `call_later` for every connection's
next ping and another for its pong deadline: with N idle visitors pinged every
1.5 s, N/1.5 timers a second, each its own wake-up of the worker. Here every
connection's next ping and pong deadline go into one heap per event loop, served
by one timer that fires on a SWEEP grid: the pings due in the same SWEEP go out
together (and their pongs come back together), so the worker wakes up a few
times a second however many visitors it holds.

The promise stays the one of ws_ping_interval / ws_ping_timeout (a client that
stops answering is dropped within their sum): a deadline is served at the grid
step at or before it, up to SWEEP early, never late.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import struct
import weakref

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

SWEEP = 0.25  # seconds between the grid steps that deadlines are served on
BATCH = 64  # pings (or timeouts) per loop iteration: ~2 ms of the loop at a time
_PING, _PONG = 0, 1


class PingSweep:
    """The keepalive deadlines of one event loop's connections, on one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # (when, seq, kind, connection, its generation then): a connection's older
        # entries are stale (its generation moved on) and skipped when popped
        self._heap: list[tuple[float, int, int, SweptKeepalive, int]] = []
        self._seq = itertools.count()
        self._timer: asyncio.Handle | None = None  # a TimerHandle, or call_soon's
        self._armed_at = 0.0
        self._sweeping = False  # adds made by a sweep's own work: it arms once, after

    def add(self, when: float, kind: int, conn: SweptKeepalive) -> None:
        conn.keepalive_generation += 1
        heapq.heappush(self._heap, (when, next(self._seq), kind, conn, conn.keepalive_generation))
        if not self._sweeping:
            self._arm()

    def _step(self, when: float) -> float:
        # the grid step at or before `when` (never in the past)
        return max(self.loop.time(), when - when % SWEEP)

    def _arm(self) -> None:
        if not self._heap:
            return
        at = self._step(self._heap[0][0])
        if self._timer is not None:
            if self._armed_at <= at:
                return
            self._timer.cancel()
        self._armed_at = at
        self._timer = self.loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        # the loops run a timer up to their clock's resolution early: serve the step
        # it was armed for, or it would find nothing due and fire again at once
        now = max(self.loop.time(), self._armed_at)
        self._sweeping = True
        try:
            rest = self._serve(now)
        finally:
            self._sweeping = False
        if rest:
            # the rest on the next loop iteration (no sleep, no wake-up): what came
            # in meanwhile (media, signalling) is not held up behind them
            self._armed_at = now
            self._timer = self.loop.call_soon(self._sweep)
        else:
            self._arm()

    def _serve(self, now: float) -> bool:
        """Serve up to BATCH deadlines whose grid step has come; True: more are due."""
        heap, done = self._heap, 0
        while heap and heap[0][0] - heap[0][0] % SWEEP <= now:
            if done == BATCH:
                return True
            _, _, kind, conn, generation = heapq.heappop(heap)
            if generation != conn.keepalive_generation:
                continue  # answered, rescheduled or closed since
            done += 1
            if kind == _PING:
                conn.send_keepalive_ping()
            else:
                conn.keepalive_timeout()
        return False


_sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PingSweep] = (
    weakref.WeakKeyDictionary()
)


def sweep_for(loop: asyncio.AbstractEventLoop) -> PingSweep:
    sweep = _sweeps.get(loop)
    if sweep is None:
        sweep = _sweeps[loop] = PingSweep(loop)
    return sweep


class SweptKeepalive(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with its ping and pong timers on the
    loop's PingSweep (uvicorn.Config(ws=SweptKeepalive)); the rest is uvicorn's."""

    keepalive_generation = 0

    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        sweep_for(self.loop).add(self.loop.time() + delay, _PING, self)

    def send_keepalive_ping(self) -> None:
        self.keepalive_generation += 1
        if self.close_sent or self.transport.is_closing():
            return
        # as uvicorn: a random payload, so a stale or unsolicited pong is told apart
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.ping_timeout is not None:
            sweep_for(self.loop).add(self.ping_sent_at + self.ping_timeout, _PONG, self)
        else:
            self.schedule_ping()

    def handle_pong(self, event: Frame) -> None:
        if self.pending_ping_payload is None or bytes(event.data) != self.pending_ping_payload:
            return
        self.last_ping_rtt = self.loop.time() - self.ping_sent_at
        self.pending_ping_payload = None
        if self.ping_timeout is not None:  # else the next ping is already due
            self.schedule_ping()  # and the pong deadline goes stale

    def keepalive_timeout(self) -> None:
        self.keepalive_generation += 1
        super().keepalive_timeout()

    def stop_keepalive(self) -> None:
        self.keepalive_generation += 1  # its entries in the sweep go stale
        super().stop_keepalive()
