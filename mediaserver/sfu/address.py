"""The one home of `Address`, the (host, port) of a UDP peer, for every sfu module,
and of the announced addresses (the host candidates of every answer)."""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

Address: TypeAlias = tuple[str, int]
"""A (host, port) pair, as the C router (mediaserver._router) gives it: an IPv4
peer as dotted-quad text (also when it reached a dual-stack socket as
::ffff:a.b.c.d), an IPv6 peer in its compressed form."""


def parse_announced_ips(text: str) -> tuple[str, ...]:
    """The `--announced-ip` setting: one IPv4 and/or one IPv6 address, comma-separated
    (the flag may be repeated: its values are joined with commas). IPv4 first, the
    order the answer lists their candidates in.

    Raises:
        ValueError: one clear line: not an address, two of one family, or an address
            no peer can send to (unspecified, multicast, IPv6 link-local, which needs
            a scope).
    """
    by_version: dict[int, str] = {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("--announced-ip must give an IPv4 or IPv6 address")
    for part in parts:
        try:
            ip = ipaddress.ip_address(part)
        except ValueError:
            raise ValueError(
                f"--announced-ip must be an IPv4 or IPv6 address, not {part!r}"
            ) from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_unspecified or ip.is_multicast or (ip.version == 6 and ip.is_link_local):
            raise ValueError(f"--announced-ip {part!r} is not an address peers can send to")
        if ip.version in by_version:
            raise ValueError(
                f"--announced-ip takes one IPv{ip.version} address, not "
                f"{by_version[ip.version]!r} and {str(ip)!r}"
            )
        by_version[ip.version] = str(ip)
    return tuple(by_version[v] for v in (4, 6) if v in by_version)
