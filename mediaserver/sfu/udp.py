"""The one UDP socket of a worker, and the C router that drains it.

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

from mediaserver._router import Router
from mediaserver.sfu.address import Address

SlowHandler = Callable[[int, int, Address, bytes, float], None]

logger = logging.getLogger(__name__)

SOCKET_BUFFER = 4 * 1024 * 1024  # absorbs bursts (a keyframe is dozens of packets)


class UdpEndpoint:
    """Binds the media port and pumps it through a Router.

    Args:
        host: address to bind ("0.0.0.0" for all).
        port: UDP port (0 picks a free one: see `port`).
        on_slow: called for each slow-path datagram as
            (kind, peer, addr, data, now), kind one of Router's SLOW_* values.
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_slow: SlowHandler,
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
        self._on_slow = on_slow
        self._loop: asyncio.AbstractEventLoop | None = None
        self.send_errors: Counter[str] = Counter()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send one slow-path datagram (STUN, DTLS); a full buffer is a counted drop."""
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            self.send_errors["buffer_full"] += 1
        except OSError:
            self.send_errors["os_error"] += 1

    def _on_readable(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        if self.router.drain(now):
            for kind, peer, addr, data in self.router.pop_slow():
                try:
                    self._on_slow(kind, peer, addr, data, now)
                except Exception:
                    # a bug in one slow-path handler must not stop the socket
                    self.send_errors["handler_error"] += 1
                    logger.exception("slow-path handler failed")
