"""The one UDP socket of a worker, the C router that drains it, and the loop that
drives the sans-I/O Sfu (mediaserver/sfu/server.py).

The event loop watches the socket's file descriptor (`loop.add_reader`), not a
datagram protocol: uvloop's datagram_received makes a bytes object, an address
tuple and a callback per datagram, while Router.drain reads, routes, protects
and sends whole batches in C. Only STUN, DTLS and RTCP come back up to Python.

With a read hold (--read-hold-us, Router.set_read_hold; off by default), a wake-up
that found fewer than 8 packets sleeps once inside drain, at most the hold and no
longer than the current packet rate needs to bring 8, then reads again: one wake-up
then carries several packets. It is not taken where the rate would not bring 2
packets within the hold (the sleep is a wake-up of its own). What was read is sent
before the sleep; what arrives during it waits at most the hold, and so does the
event loop (signalling, timers), once per wake-up.

With the socket thread (--socket-thread, Router.start_thread), the event loop does
not watch the socket at all: a C thread of the router's own blocks in poll() on it,
reads, routes and sends without the GIL, and writes an eventfd only when STUN, DTLS,
RTCP or tapped media wait for Python. The loop watches that eventfd: a media packet
wakes one thread that runs no Python, instead of uvloop, a Python callback and drain.

The socket is dual-stack where the host has IPv6: one AF_INET6 socket on `::`
with IPV6_V6ONLY off takes IPv4 peers too (as ::ffff:a.b.c.d, which the router
keys and reports as the plain IPv4 address), so a worker still has one port, one
file descriptor and one recvmmsg loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from mediaserver._router import Router
from mediaserver.sfu.address import Address
from mediaserver.sfu.tcp import TcpMedia, is_tcp

logger = logging.getLogger(__name__)

SOCKET_BUFFER = 4 * 1024 * 1024  # absorbs bursts (a keyframe is dozens of packets)


# the kernel has no IPv6 (ipv6.disable=1, or a container without it): fall back to IPv4
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)

DUAL_STACK = ""
"""The `host` that asks for every address of both families: `::` with IPV6_V6ONLY
off, or `0.0.0.0` on a host without IPv6."""


def open_media_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket for the media port.

    Args:
        host: DUAL_STACK ("") or "::" for both families (IPv4 only where the host
            has no IPv6, for ""), "0.0.0.0" for IPv4 only, or one address of
            either family.
        port: the UDP port (0: any free one).

    Raises:
        OSError: the address cannot be bound (in use, not on this host, or "::"
            on a host without IPv6).
    """
    if host in (DUAL_STACK, "::"):
        try:
            return _bind(socket.AF_INET6, "::", port, dual_stack=True)
        except OSError as exc:
            if host == "::" or exc.errno not in _NO_IPV6:
                raise
        return _bind(socket.AF_INET, "0.0.0.0", port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return _bind(family, host, port)


def _bind(family: int, host: str, port: int, *, dual_stack: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if dual_stack:
            # whatever net.ipv6.bindv6only says: IPv4 peers come through it too
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def dual_stack(sock: socket.socket) -> bool:
    """True when `sock` takes IPv4 and IPv6 peers (IPv6 with IPV6_V6ONLY off)."""
    return (
        sock.family == socket.AF_INET6
        and sock.getsockname()[0] == "::"
        and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    )


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
        host: address to bind (DUAL_STACK: every address of both families; see
            open_media_socket).
        port: UDP port (0 picks a free one: see `port`).
        tcp_port: the ICE-TCP port on the same host (sfu/tcp.py), None for none
            (0 picks a free one).
        read_hold_us: coalesce reads: after a wake-up that found few packets, the
            router sleeps up to this long and reads again (Router.set_read_hold;
            0: off). It blocks the loop for that long, once per wake-up (the
            socket thread's, with socket_thread).
        socket_thread: read the socket from the router's C thread, not the event
            loop (see the module docstring).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_peers: int = 4096,
        cache_packets: int = 512,
        tcp_port: int | None = None,
        max_tcp: int = 1024,
        max_tcp_per_address: int = 8,
        read_hold_us: int = 0,
        socket_thread: bool = True,
    ) -> None:
        self.sock = open_media_socket(host, port)
        # an IPv4 peer's address is dotted-quad text everywhere above the router;
        # Python's sendto on an IPv6 socket needs it as ::ffff:a.b.c.d
        self._mapped = self.sock.family == socket.AF_INET6
        self.router = Router(
            self.sock.fileno(),
            max_peers=max_peers,
            max_streams=2 * max_peers,
            cache_packets=cache_packets,
            max_tcp=max_tcp,
        )
        try:
            self.router.set_read_hold(read_hold_us)
        except ValueError:
            self.sock.close()
            raise
        self.tcp: TcpMedia | None = None
        if tcp_port is not None:
            try:
                self.tcp = TcpMedia(
                    host,
                    tcp_port,
                    self.router,
                    max_connections=max_tcp,
                    max_per_address=max_tcp_per_address,
                )
            except OSError:
                self.sock.close()
                raise
        self.socket_thread = socket_thread
        self._notify_fd = -1
        self._core: DatagramCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flush_pending = False
        self.send_errors: Counter[str] = Counter()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def families(self) -> frozenset[int]:
        """The address families peers may reach this socket with."""
        if self.sock.family == socket.AF_INET:
            return frozenset({socket.AF_INET})
        if dual_stack(self.sock):
            return frozenset({socket.AF_INET, socket.AF_INET6})
        return frozenset({socket.AF_INET6})

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        core: DatagramCore,
        validated: Callable[[Address], bool] = lambda addr: False,
    ) -> None:
        """Read the socket on `loop` and drive `core` from now on. `validated(addr)`:
        a valid STUN check came from `addr` (an ICE-TCP connection may stay open)."""
        self._loop = loop
        self._core = core
        core.set_wakeup(self._wakeup)
        if self.socket_thread:
            self._notify_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            loop.add_reader(self._notify_fd, self._on_notified)
            self.router.start_thread(self._notify_fd)
        else:
            loop.add_reader(self.sock.fileno(), self._on_readable)
        if self.tcp is not None:
            self.tcp.start(loop, self._after_read, validated)
        self._schedule_timer()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._core is not None:
            self._core.set_wakeup(None)
            self._core = None
        # the thread first: it must not write an eventfd that is closed, or send
        # on a socket that is
        self.router.stop_thread()
        if self._loop is not None:
            if self._notify_fd >= 0:
                self._loop.remove_reader(self._notify_fd)
            else:
                self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        if self._notify_fd >= 0:
            os.close(self._notify_fd)
            self._notify_fd = -1
        if self.tcp is not None:
            self.tcp.close()
        self.sock.close()

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send one slow-path datagram (STUN, DTLS, SRTCP); a full buffer is a counted drop."""
        if is_tcp(addr):
            if self.tcp is None:
                self.send_errors["no_tcp"] += 1
            else:
                self.tcp.sendto(data, addr)
            return
        if self._mapped and ":" not in addr[0]:
            addr = ("::ffff:" + addr[0], addr[1])
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            self.send_errors["buffer_full"] += 1
        except OSError:
            self.send_errors["os_error"] += 1

    def _on_readable(self) -> None:
        assert self._loop is not None and self._core is not None
        now = self._loop.time()
        self.router.drain(now)
        self._after_read(now)

    def _on_notified(self) -> None:
        # the socket thread queued slow-path datagrams
        assert self._loop is not None
        try:
            os.eventfd_read(self._notify_fd)
        except BlockingIOError:
            pass  # a second notice for what an earlier pop_slow took
        self._after_read(self._loop.time())

    def _after_read(self, now: float) -> None:
        # the slow path of what a read of the UDP socket or a TCP connection brought
        assert self._core is not None
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

    def timer_changed(self) -> None:
        """The core's deadline (get_timer) moved while no timer was armed (an idle
        core has none): arm one for it. Nothing when one is armed already or the
        endpoint is not started."""
        if self._timer is None and self._loop is not None and self._core is not None:
            self._schedule_timer()

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
