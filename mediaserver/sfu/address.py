"""The one home of `Address`, the (host, port) of a UDP peer, for every sfu module."""

from __future__ import annotations

from typing import TypeAlias

Address: TypeAlias = tuple[str, int]
"""An IPv4 (host, port) pair, as sockets and the C router (mediaserver._router) give it."""
