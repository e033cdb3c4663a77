"""The TCP listening sockets of the HTTP port and the metrics port.

`::` means both families here, as it does for the media socket (sfu/udp.py):
asyncio's and uvloop's create_server, and socket.create_server, set IPV6_V6ONLY
on an IPv6 socket, so `--host ::` would otherwise refuse every IPv4 visitor.
"""

from __future__ import annotations

import socket

BACKLOG = 2048  # uvicorn's default


def tcp_listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening TCP socket on (host, port): dual-stack for "::", IPv6 for
    another address with a colon, IPv4 otherwise.

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
