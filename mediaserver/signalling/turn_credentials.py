"""Short-lived TURN credentials for coturn's `use-auth-secret` (the "TURN REST API").

coturn (turnserver.conf `use-auth-secret` + `static-auth-secret=SECRET`) accepts a
username "<expiry unix time>:<anything>" whose password is
base64(HMAC-SHA1(SECRET, username)), until the expiry passes
(draft-uberti-behave-turn-rest-00, section 2.2). The server and coturn share only the
secret: no user database, and a credential that leaks expires by itself.

Sans-I/O: the time is an argument, the random part comes from `secrets`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

TURN_URL = re.compile(
    r"""^turns?:
    (?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*
      |\[[0-9A-Fa-f:.]+\])
    (?::[0-9]{1,5})?
    (?:\?transport=(?:udp|tcp))?$""",
    re.VERBOSE,
)
"""RFC 7065 turn:/turns: URI: host (name, IPv4 or [IPv6]), optional port and transport."""

MIN_TTL = 60
MAX_TTL = 7 * 86400
OPAQUE_BYTES = 12
"""Random bytes of the username's second half: new for every welcome, so the
username never names the visitor, and two visits never share one."""


def check_turn_url(url: str) -> str:
    """The URL, if it is a turn: or turns: URL a browser takes.

    Raises:
        ValueError: one line naming the URL and what is accepted.
    """
    port = url.rsplit("?", 1)[0].rsplit(":", 1)[-1]
    if not TURN_URL.match(url) or (port.isdigit() and not 1 <= int(port) <= 65535):
        raise ValueError(
            f"--turn-url {url!r} is not a TURN URL: turn:HOST[:PORT] or turns:HOST[:PORT], "
            "optionally ?transport=udp or ?transport=tcp"
        )
    return url


def turn_password(secret: bytes, username: str) -> str:
    """coturn's password for `username`: base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class TurnCredentials:
    """Issues the `ice_servers` entry of a welcome.

    Args (fields):
    urls: turn:/turns: URLs of the coturn servers sharing `secret`.
    secret: coturn's static-auth-secret.
    ttl: seconds a credential stays valid.
    """

    urls: tuple[str, ...]
    secret: bytes
    ttl: int = 3600

    def issue(self, now: float) -> list[dict[str, Any]]:
        """One RTCIceServer (urls, username, credential) valid until now + ttl.

        Args:
            now: the wall-clock time, seconds since the Unix epoch (coturn compares
                the expiry with its own clock).
        """
        expiry = int(now) + self.ttl
        username = f"{expiry}:{secrets.token_urlsafe(OPAQUE_BYTES)}"
        return [
            {
                "urls": list(self.urls),
                "username": username,
                "credential": turn_password(self.secret, username),
            }
        ]
