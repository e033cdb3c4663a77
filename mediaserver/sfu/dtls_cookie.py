"""The DTLS cookie exchange (RFC 6347 4.2.1) of DtlsEndpoint's server role.

Before its handshake starts, a server endpoint made with ``cookie_exchange=True``
(the SFU's) feeds each datagram to OpenSSL's stateless ``DTLSv1_listen``, which
answers a ClientHello with a HelloVerifyRequest whose cookie is an HMAC of the
datagram's source address under the endpoint's own random key. Only a ClientHello
that brings that cookie back from the same source starts the handshake. So an
address that has not shown it receives (the owner of a session can sign an ICE
nomination "from" any address) gets one 44-byte datagram per ClientHello of at
least 150, never retransmitted (the client retransmits its ClientHello instead),
and never the certificate flight.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from OpenSSL import SSL

from mediaserver.sfu.address import Address

__all__ = ["COOKIE_LENGTH", "SourceCookies", "install", "listen"]


# 16 bytes of HMAC-SHA256: the HelloVerifyRequest (44 bytes) stays well under the
# smallest ClientHello that can carry the cookie back.
COOKIE_LENGTH = 16


class SourceCookies:
    """One endpoint's cookies: an HMAC of the source of the datagram at hand."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._source = b""

    def set_source(self, source: Address | None) -> None:
        """Name the source of the datagram about to be fed to :func:`listen`."""
        self._source = b"" if source is None else f"{source[0]}|{source[1]}".encode()

    def cookie(self) -> bytes:
        return hmac.new(self._key, self._source, hashlib.sha256).digest()[:COOKIE_LENGTH]

    def verify(self, cookie: bytes) -> bool:
        return hmac.compare_digest(cookie, self.cookie())


def _cookies(connection: SSL.Connection) -> SourceCookies:
    # the connection's app data (DtlsEndpoint's per-connection state) holds them
    cookies = getattr(connection.get_app_data(), "cookies", None)
    if not isinstance(cookies, SourceCookies):  # pragma: no cover - set by DtlsEndpoint
        raise TypeError("a DTLS connection without its cookies")
    return cookies


def _generate(connection: SSL.Connection) -> bytes:
    return _cookies(connection).cookie()


def _verify(connection: SSL.Connection, cookie: bytes) -> bool:
    return _cookies(connection).verify(cookie)


def install(context: SSL.Context) -> None:
    """Let the context's connections with ``OP_COOKIE_EXCHANGE`` ask for cookies
    (nothing, if the OpenSSL in use has no cookie exchange)."""
    if SSL.OP_COOKIE_EXCHANGE is not None:
        context.set_cookie_generate_callback(_generate)
        context.set_cookie_verify_callback(_verify)


def listen(connection: SSL.Connection, data: bytes) -> bool | None:
    """Feed one datagram to ``DTLSv1_listen``.

    Returns True for a ClientHello with the cookie of the source named with
    :meth:`SourceCookies.set_source` (OpenSSL keeps it: the handshake may start),
    False for anything else (a HelloVerifyRequest may wait in the write BIO: a
    ClientHello without the cookie, or with a wrong one), None when OpenSSL
    refused the datagram outright.
    """
    try:
        connection.bio_write(data)
        connection.DTLSv1_listen()
    except SSL.WantReadError:
        return False
    except SSL.Error:
        return None
    return True
