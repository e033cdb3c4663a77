"""Who is on the other end of a connection: the client address every per-address
limit and the reputation key use.

Behind a reverse proxy the TCP peer is the proxy, so the real client is read from
`X-Forwarded-For`, but only when the peer is one of the `--trusted-proxy` networks:
anyone else could write the header. The header is read from the right (the hop the
nearest trusted proxy added) and the first address that is not itself a trusted
proxy is the client.

IPv6 clients are keyed on their /64: one device is given a whole /64 and can rotate
addresses inside it at will, so a per-address limit or a ban on the full address
would be no limit at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IPV6_KEY_PREFIX = 64
"""Bits of an IPv6 address that identify one client (the /64 a device is given)."""


def parse_trusted_proxies(text: str) -> tuple[Network, ...]:
    """The `--trusted-proxy` setting: comma-separated CIDRs (or single addresses).

    Raises:
        ValueError: one clear line naming the entry that is not a network.
    """
    networks: list[Network] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"--trusted-proxy: {part!r} is not an IP address or network (CIDR)"
            ) from None
    return tuple(networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:5000"
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # "::ffff:203.0.113.7" from a dual-stack socket
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Iterable[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def client_ip(peer: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str:
    """The client's address as text ("" when unknown).

    Args:
        peer: the TCP peer's host, as the ASGI server reports it.
        forwarded_for: the X-Forwarded-For header (all of its values joined by ",").
        proxies: the trusted proxy networks; () trusts no header.
    """
    ip = _ip(peer or "")
    if ip is None:
        return ""
    if not proxies or not forwarded_for or not _trusted(ip, proxies):
        return str(ip)
    for hop in reversed(forwarded_for.split(",")):
        hop_ip = _ip(hop)
        if hop_ip is None:
            break  # a garbled hop: trust nothing further left than the last good one
        ip = hop_ip
        if not _trusted(ip, proxies):
            break
    return str(ip)


def address_key(address: str) -> str:
    """The text a per-address limit, a refusal or a report is keyed on: an IPv4
    address as is, an IPv6 address as its /64 network.

    Transition addresses are keyed on the IPv4 address they carry, the one client
    behind them: 6to4 (2002::/16, a whole /48 per IPv4 address, so 65,536 /64s to
    rotate through) and Teredo (2001::/32, whose /64 is the relay's and would put
    every client of one relay under one key). An IPv4-mapped address is the IPv4
    address; a zone (fe80::1%eth0) is dropped.
    """
    ip = _ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None:
            return str(ip.sixtofour)
        if ip.teredo is not None:
            return str(ip.teredo[1])
        bare = ipaddress.IPv6Address(ip.packed)  # without its zone
        return str(ipaddress.IPv6Network((bare, IPV6_KEY_PREFIX), strict=False))
    return str(ip)


def connection_ip(conn: HTTPConnection) -> str:
    """The client address of a request or WebSocket, through the app's trusted
    proxies (`app.state.trusted_proxies`, set from --trusted-proxy)."""
    proxies: tuple[Network, ...] = getattr(conn.app.state, "trusted_proxies", ())
    forwarded = ",".join(conn.headers.getlist("x-forwarded-for")) or None
    return client_ip(conn.client.host if conn.client else None, forwarded, proxies)
