"""The one UDP socket of a worker, the C router that drains it, and the loop that
drives the sans-I/O Sfu (mediaserver/sfu/server.py).

The event loop watches the socket's file descriptor (`loop.add_reader`), not a
datagram protocol: uvloop's datagram_received makes a bytes object, an address
tuple and a callback per datagram, while Router.drain reads, routes, protects
and sends whole batches in C. Only STUN, DTLS and RTCP come back up to Python.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from mediaserver._router import Router
from mediaserver.sfu.address import Address

logger = logging.getLogger(__name__)

SOCKET_BUFFER = 4 * 1024 * 1024  # absorbs bursts (a keyframe is dozens of packets)


class DatagramCore(Protocol):
    """What the endpoint drives: the Sfu's sans-I/O side (time is an argument)."""

    def receive_slow(
        self, kind: int, peer: int, addr: Address, data: bytes, now: float
    ) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def set_wakeup(self, wakeup: Callable[[], None] | None) -> None: ...


class UdpEndpoint:
    """Binds the media port, pumps it through a Router, and drives a DatagramCore:
    hands it the slow-path datagrams, runs its timer, sends what it queues.

    Args:
        host: address to bind ("0.0.0.0" for all).
        port: UDP port (0 picks a free one: see `port`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_peers: int = 4096,
        cache_packets: int = 512,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                self.sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.router = Router(
            self.sock.fileno(),
            max_peers=max_peers,
            max_streams=2 * max_peers,
            cache_packets=cache_packets,
        )
        self._core: DatagramCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flush_pending = False
        self.send_errors: Counter[str] = Counter()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self, loop: asyncio.AbstractEventLoop, core: DatagramCore) -> None:
        """Read the socket on `loop` and drive `core` from now on."""
        self._loop = loop
        self._core = core
        core.set_wakeup(self._wakeup)
        loop.add_reader(self.sock.fileno(), self._on_readable)
        self._schedule_timer()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._core is not None:
            self._core.set_wakeup(None)
            self._core = None
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send one slow-path datagram (STUN, DTLS, SRTCP); a full buffer is a counted drop."""
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            self.send_errors["buffer_full"] += 1
        except OSError:
            self.send_errors["os_error"] += 1

    def _on_readable(self) -> None:
        assert self._loop is not None and self._core is not None
        now = self._loop.time()
        if self.router.drain(now):
            for kind, peer, addr, data in self.router.pop_slow():
                try:
                    self._core.receive_slow(kind, peer, addr, data, now)
                except Exception:
                    # a bug in one slow-path handler must not stop the socket
                    self.send_errors["handler_error"] += 1
                    logger.exception("slow-path handler failed")
        self._flush()

    def _wakeup(self) -> None:
        # the core queued a datagram outside our callbacks (an API call): send it
        # on the next loop iteration, once however many follow
        if not self._flush_pending and self._loop is not None:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._core is None or self._loop is None:
            return
        for data, addr in self._core.datagrams_to_send(self._loop.time()):
            self.sendto(data, addr)

    def _schedule_timer(self) -> None:
        assert self._loop is not None and self._core is not None
        deadline = self._core.get_timer()
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        if self._core is None or self._loop is None:
            return
        try:
            self._core.handle_timer(self._loop.time())
            self._flush()
        finally:
            self._schedule_timer()
