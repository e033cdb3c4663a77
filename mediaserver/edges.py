"""What the HTTP edge checks before anything else runs: security headers on every
response, which pages may open /ws (Origin), and who may read /metrics.

All of it is decided from a request's headers and client address; nothing here
does I/O of its own.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.datastructures import Headers

from mediaserver.client_address import connection_ip

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from mediaserver.config import Config

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
"""The page's own <meta> policy (web/index.html) plus frame-ancestors, which only a
header can carry: a <meta> CSP cannot stop another site framing the camera page."""

DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""The REST docs page (/api/v1/docs): no scripts or resources at all, one inline <style>."""

HSTS = "max-age=31536000"
"""A year; no includeSubDomains: other hosts of the operator's domain are not ours."""


def security_headers(tls: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers without CSP 2
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    if tls:
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


class SecurityHeaders:
    """ASGI middleware: the security headers on every HTTP response (static files,
    REST, errors, 404s), unless the response set its own.

    Args:
        tls: the server is reached over HTTPS: add Strict-Transport-Security.
    """

    def __init__(self, app: ASGIApp, tls: bool = False) -> None:
        self.app = app
        self.headers = security_headers(tls)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                present = {name.lower() for name, _ in raw}
                raw.extend(h for h in self.headers if h[0] not in present)
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---- Origin of /ws --------------------------------------------------------------


def _origin(text: str) -> str | None:
    """'scheme://host[:port]' lowercased, default port dropped; None if not an origin."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def parse_origins(text: str) -> frozenset[str]:
    """The --allowed-origin setting: comma-separated origins.

    Raises:
        ValueError: one clear line naming the entry that is not an origin.
    """
    out = set()
    for part in text.split(","):
        if not part.strip():
            continue
        origin = _origin(part)
        if origin is None:
            raise ValueError(
                f"--allowed-origin: {part.strip()!r} is not an origin (scheme://host[:port])"
            )
        out.add(origin)
    return frozenset(out)


def origin_allowed(headers: Headers, allowed: frozenset[str]) -> bool:
    """May this /ws upgrade go ahead? No Origin (not a browser: the load generator,
    aiortc tests) passes; a browser's Origin must be the page this server served
    (its host:port is the Host header) or one of `allowed`. Another site's page
    could otherwise drive a visitor's signalling with the visitor's address."""
    origin = headers.get("origin")
    if origin is None:
        return True
    parsed = _origin(origin)  # "null" (sandboxed frames, file:) is no origin: refused
    if parsed is None:
        return False
    if parsed in allowed:
        return True
    host = headers.get("host", "").strip().lower()
    return bool(host) and urlsplit(parsed).netloc == _drop_default_port(host, parsed)


def _drop_default_port(host: str, origin: str) -> str:
    default = ":443" if origin.startswith("https:") else ":80"
    return host[: -len(default)] if host.endswith(default) else host


# ---- /metrics ---------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """--metrics-listen HOST:PORT ("[::1]:9100" for IPv6).

    Raises:
        ValueError: one clear line.
    """
    host, sep, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"--metrics-listen must be HOST:PORT, not {text!r}")
    return host, int(port)


@dataclass(frozen=True)
class MetricsAccess:
    """Who may read /metrics."""

    token: str = ""
    """Bearer token asked for; empty: none."""
    loopback_only: bool = True
    """Without a token, answer loopback clients only (the main port's default)."""

    def allows(self, conn: HTTPConnection) -> bool:
        if self.token:
            scheme, _, given = conn.headers.get("authorization", "").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            )
        if not self.loopback_only:
            return True
        # a forwarding header from a peer we do not trust as a proxy means a proxy
        # on this host relays the outside world: not a loopback client
        ip = connection_ip(conn)
        if not ip or not ipaddress.ip_address(ip).is_loopback:
            return False
        proxies = getattr(conn.app.state, "trusted_proxies", ())
        return bool(proxies) or not (
            "x-forwarded-for" in conn.headers or "forwarded" in conn.headers
        )


@dataclass(frozen=True)
class EdgePolicy:
    """The edge settings create_app applies (from Config)."""

    allowed_origins: frozenset[str] = frozenset()
    max_connections_per_address: int = 20
    metrics: MetricsAccess = MetricsAccess()
    metrics_on_main_port: bool = True
    tls: bool = False

    @classmethod
    def from_config(cls, config: Config, tls: bool = False) -> EdgePolicy:
        return cls(
            allowed_origins=parse_origins(config.allowed_origin),
            max_connections_per_address=config.max_connections_per_address,
            metrics=MetricsAccess(token=config.metrics_token),
            metrics_on_main_port=not config.metrics_listen,
            tls=tls,
        )
