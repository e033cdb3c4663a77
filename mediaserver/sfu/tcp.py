"""ICE over TCP (RFC 6544 passive candidates, RFC 4571 framing): the listening
socket of a worker and its accepted connections.

Python accepts a connection, checks the limits and hands its descriptor to the
C router (Router.tcp_open), which adds it to its epoll instance. The event loop
watches that one descriptor: when it is readable, Router.tcp_drain reads every
connection with data, splits the streams into frames and runs each through the
same per-packet path as a UDP datagram, in C: no Python object per packet, one
Python call per loop wake-up however many connections had data. Media
sent to a TCP peer goes out framed on its connection from C (sendmsg,
MSG_DONTWAIT): a full socket buffer drops packets, counted, rather than queueing.

A connection is an address of its own: (peer IP, peer port + TCP_PORT_FLAG). The
ICE rules are the UDP port's: nothing but a valid STUN check (the session's
password) makes it a session's address. The limits here are for what TCP adds,
state per connection before that check:
- at most `max_connections` at once, and `max_per_address` per client address
  key (the /64 of an IPv6 client, client_address.address_key);
- a connection that has not carried a valid check `check_timeout` seconds after
  it opened is closed (half-open, or garbage), and so is one silent for
  `idle_timeout` seconds;
- a frame longer than the MTU bound closes the connection (the router counts it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from mediaserver._router import TCP_EOF, TCP_ERROR, TCP_PORT_FLAG, TCP_TOO_BIG, Router
from mediaserver.client_address import address_key
from mediaserver.sfu.address import Address

logger = logging.getLogger(__name__)

ACCEPTS_PER_WAKEUP = 64  # a connection flood cannot hold the loop in accept()
LISTEN_BACKLOG = 128
SEND_BUFFER = 256 * 1024
"""A TCP peer's socket send buffer: about a second of video at 2 Mbit/s. A slow
reader loses packets once it is full, rather than the kernel growing it (up to
tcp_wmem's 4 MB) and the call falling further and further behind."""
SWEEP_INTERVAL = 1.0

_CLOSE_REASONS = {
    TCP_EOF: "tcp_closed_by_peer",
    TCP_ERROR: "tcp_error",
    TCP_TOO_BIG: "tcp_frame_too_big",
}


def is_tcp(addr: Address) -> bool:
    """True for the address of an ICE-TCP connection (its port carries TCP_PORT_FLAG)."""
    return addr[1] >= TCP_PORT_FLAG


def wire_port(addr: Address) -> int:
    """The port of `addr` on the wire (a TCP address without its flag)."""
    return addr[1] & 0xFFFF


def open_listener(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket: `host` as for the UDP media
    socket (sfu/udp.py open_media_socket: "" or "::" dual-stack)."""
    if host in ("", "::"):
        try:
            return _listen(socket.AF_INET6, "::", port, dual_stack=True)
        except OSError:
            if host == "::":
                raise
        return _listen(socket.AF_INET, "0.0.0.0", port)
    return _listen(socket.AF_INET6 if ":" in host else socket.AF_INET, host, port)


def _listen(family: int, host: str, port: int, *, dual_stack: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # a restarted worker rebinds while old connections sit in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _unmapped(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") and "." in host else host


@dataclass
class _Connection:
    slot: int
    sock: socket.socket
    address: Address
    key: str
    opened_at: float
    checked: bool = False


class TcpMedia:
    """The ICE-TCP port of one worker, feeding the worker's router.

    Args:
        host, port: where to listen (port 0: any free one, see `port`).
        router: the worker's Router (its max_tcp bounds `max_connections` too).
    """

    def __init__(
        self,
        host: str,
        port: int,
        router: Router,
        *,
        max_connections: int = 1024,
        max_per_address: int = 8,
        check_timeout: float = 5.0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.sock = open_listener(host, port)
        self.router = router
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.check_timeout = check_timeout
        self.idle_timeout = idle_timeout
        self.stats: Counter[str] = Counter()
        self._by_slot: dict[int, _Connection] = {}
        self._by_address: dict[Address, _Connection] = {}
        self._per_key: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_frames: Callable[[float], None] | None = None
        self._validated: Callable[[Address], bool] | None = None
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def __len__(self) -> int:
        return len(self._by_slot)

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_frames: Callable[[float], None],
        validated: Callable[[Address], bool],
    ) -> None:
        """Accept on `loop`. After each read `on_frames(now)` takes what the router
        handed up (Router.pop_slow); `validated(addr)` is True once a valid STUN
        check came from `addr` (the connection may then stay)."""
        self._loop = loop
        self._on_frames = on_frames
        self._validated = validated
        loop.add_reader(self.sock.fileno(), self._on_accept)
        loop.add_reader(self.router.tcp_epoll(), self._on_readable)
        self._sweep = loop.call_later(SWEEP_INTERVAL, self._on_sweep)

    def close(self) -> None:
        for conn in list(self._by_slot.values()):
            self._close(conn, None)
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop.remove_reader(self.router.tcp_epoll())
            self._loop = None
        self.sock.close()

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send one slow-path packet (STUN, DTLS, SRTCP) framed on the connection
        of `addr`; a closed connection or a full buffer is a counted drop."""
        conn = self._by_address.get(addr)
        if conn is None:
            self.stats["tcp_send_no_connection"] += 1
        elif not self.router.tcp_send(conn.slot, data):
            self.stats["tcp_send_dropped"] += 1

    def _on_accept(self) -> None:
        assert self._loop is not None
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ECONNABORTED, or out of descriptors (EMFILE): count it and let
                # the loop come back rather than spin on the listening socket
                self.stats["tcp_accept_errors"] += 1
                return
            host, port = _unmapped(peer[0]), int(peer[1])
            key = address_key(host)
            if len(self._by_slot) >= self.max_connections:
                self.stats["tcp_refused_full"] += 1
                sock.close()
                continue
            if self._per_key[key] >= self.max_per_address:
                self.stats["tcp_refused_per_address"] += 1
                sock.close()
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                slot, address = self.router.tcp_open(sock.fileno(), host, port)
            except (OSError, RuntimeError):
                self.stats["tcp_refused_full"] += 1
                sock.close()
                continue
            conn = _Connection(slot, sock, address, key, opened_at=self._loop.time())
            self._by_slot[slot] = conn
            self._by_address[address] = conn
            self._per_key[key] += 1
            self.stats["tcp_accepted"] += 1

    def _on_readable(self) -> None:
        assert self._loop is not None and self._on_frames is not None
        now = self._loop.time()
        closes = self.router.tcp_drain(now)
        self._on_frames(now)
        for slot, status in closes:
            conn = self._by_slot.get(slot)
            if conn is not None:
                self._close(conn, _CLOSE_REASONS.get(status, "tcp_error"))

    def _close(self, conn: _Connection, reason: str | None) -> None:
        if self._by_slot.pop(conn.slot, None) is None:
            return
        del self._by_address[conn.address]
        self._per_key[conn.key] -= 1
        if not self._per_key[conn.key]:
            del self._per_key[conn.key]
        if reason is not None:
            self.stats[reason] += 1
        self.router.tcp_close(conn.slot)  # before the descriptor can be reused
        conn.sock.close()

    def _on_sweep(self) -> None:
        if self._loop is None or self._validated is None:
            return
        now = self._loop.time()
        for conn in list(self._by_slot.values()):
            if not conn.checked:
                if self._validated(conn.address):
                    conn.checked = True
                elif now - conn.opened_at >= self.check_timeout:
                    self._close(conn, "tcp_unchecked")
                    continue
            last_rx = max(conn.opened_at, self.router.tcp_last_rx(conn.slot))
            if now - last_rx >= self.idle_timeout:
                self._close(conn, "tcp_idle")
        self._sweep = self._loop.call_later(SWEEP_INTERVAL, self._on_sweep)
