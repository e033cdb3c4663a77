"""DTLS-SRTP (RFC 5764) over pyOpenSSL memory BIOs, sans-I/O.

One :class:`DtlsEndpoint` per peer. The shell feeds it the datagrams whose first
byte is in [20, 63] (RFC 7983), sends what :meth:`DtlsEndpoint.datagrams_to_send`
returns, re-arms one timer at :meth:`DtlsEndpoint.get_timer` and reads events with
:meth:`DtlsEndpoint.next_event`. After :class:`DtlsConnected` it hands the keys to
the SRTP contexts of the C path; DTLS then only carries close_notify and alerts.

Time: every method takes ``now`` (any monotonic clock, e.g. ``loop.time()``), and
the endpoint's own deadlines are kept in that clock. OpenSSL, however, keeps its
DTLS retransmission timer on the real clock and exposes no way to inject time
(``DTLS_set_timer_cb`` is not bound by pyOpenSSL). So the endpoint converts
OpenSSL's *remaining* time into a deadline in the caller's clock, and a call to
:meth:`DtlsEndpoint.handle_timer` only retransmits once OpenSSL's real timer has
also run out; if it has not, the deadline is moved to what OpenSSL says is left.
With ``now = loop.time()`` the two clocks advance together. The give-up rule
(``max_retransmissions``) is decided in the caller's clock alone.

Reflection: the SFU's endpoints do a cookie exchange first (``cookie_exchange``,
:mod:`mediaserver.sfu.dtls_cookie`): a forged source address gets nothing bigger
than what was sent from it.
"""

from __future__ import annotations

import datetime
import enum
import os
import struct
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from mediaserver.sfu import dtls_cookie
from mediaserver.sfu.address import Address
from mediaserver.sfu.dtls_fingerprint import (
    FINGERPRINT_ALGORITHMS,
    PeerCheck,
    certificate_digest,
    format_fingerprint,
    parse_fingerprint,
    verify_peer_certificate,
)
from mediaserver.sfu.errors import DtlsError as DtlsError

__all__ = [
    "DEFAULT_PROFILES",
    "DTLS_MTU",
    "SRTP_AEAD_AES_128_GCM",
    "SRTP_AEAD_AES_256_GCM",
    "SRTP_AES128_CM_HMAC_SHA1_32",
    "SRTP_AES128_CM_HMAC_SHA1_80",
    "SRTP_PROFILES",
    "DtlsCertificate",
    "DtlsClosed",
    "DtlsConnected",
    "DtlsEndpoint",
    "DtlsError",
    "DtlsEvent",
    "DtlsFailed",
    "DtlsState",
    "SrtpProfile",
    "split_records",
]

# IANA "DTLS-SRTP Protection Profiles" (RFC 5764 4.1.2, RFC 7714 14.2).
SRTP_AES128_CM_HMAC_SHA1_80 = 0x0001
SRTP_AES128_CM_HMAC_SHA1_32 = 0x0002
SRTP_AEAD_AES_128_GCM = 0x0007
SRTP_AEAD_AES_256_GCM = 0x0008

# The largest datagram we emit: fits the 1280-byte IPv6 minimum MTU with room for
# IP/UDP headers and a TURN channel header, as browsers do.
DTLS_MTU = 1200

# Datagrams larger than OpenSSL's DTLS read buffer would leave a tail in the memory
# BIO that corrupts the next datagram; no DTLS peer sends anything near this size.
MAX_DATAGRAM_SIZE = 16384

# RFC 6347 4.1: type(1) version(2) epoch(2) sequence_number(6) length(2).
DTLS_RECORD_HEADER = struct.Struct("!BHH6sH")

# RFC 7983 3: the first byte of a DTLS datagram is in [20, 63].
DTLS_FIRST_BYTE_MIN = 20
DTLS_FIRST_BYTE_MAX = 63

# OpenSSL's DTLS1_2_VERSION: WebRTC runs DTLS 1.2, and pinning it keeps the record
# splitter in _flush() on the header format it understands.
DTLS1_2_VERSION = 0xFEFD

# RFC 5764 4.2: the exporter label for DTLS-SRTP keying material.
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"

CIPHER_LIST = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
)


@dataclass(frozen=True)
class SrtpProfile:
    """One DTLS-SRTP protection profile."""

    iana_id: int
    "The IANA id, as in :class:`DtlsConnected`'s ``profile``."

    openssl_name: bytes
    "The name ``SSL_CTX_set_tlsext_use_srtp`` takes."

    key_length: int
    "Master key length in bytes."

    salt_length: int
    "Master salt length in bytes."


SRTP_PROFILES: dict[int, SrtpProfile] = {
    p.iana_id: p
    for p in (
        SrtpProfile(SRTP_AES128_CM_HMAC_SHA1_80, b"SRTP_AES128_CM_SHA1_80", 16, 14),
        SrtpProfile(SRTP_AES128_CM_HMAC_SHA1_32, b"SRTP_AES128_CM_SHA1_32", 16, 14),
        SrtpProfile(SRTP_AEAD_AES_128_GCM, b"SRTP_AEAD_AES_128_GCM", 16, 12),
        SrtpProfile(SRTP_AEAD_AES_256_GCM, b"SRTP_AEAD_AES_256_GCM", 32, 12),
    )
}
_PROFILES_BY_NAME = {p.openssl_name: p for p in SRTP_PROFILES.values()}

# Our preference order. When we are the DTLS server, OpenSSL picks the first profile
# of *our* list that the client offered (its use_srtp parser walks the server list),
# whatever the client's order: the server's preference always wins.
DEFAULT_PROFILES: tuple[int, ...] = (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AES128_CM_HMAC_SHA1_80,
    SRTP_AEAD_AES_256_GCM,
    SRTP_AES128_CM_HMAC_SHA1_32,
)

class DtlsCertificate:
    """An ECDSA P-256 self-signed certificate and its key, shared by all sessions.

    Args:
        key: the private key.
        certificate: the certificate for ``key``.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate
        # One SSL_CTX per profile list: building a context per session would load
        # the key and certificate each time.
        self._contexts: dict[tuple[int, ...], SSL.Context] = {}

    @classmethod
    def generate(cls, *, valid_days: int = 365) -> DtlsCertificate:
        """Generate a fresh key and a self-signed certificate with a random name."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, os.urandom(16).hex())])
        # Not a protocol class: reading the clock once here is fine. The day of slack
        # covers peers whose clocks run behind (WebRTC does not check dates anyway).
        now = datetime.datetime.now(tz=datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    def fingerprint(self, algorithm: str = "sha-256") -> tuple[str, str]:
        """Return ``(algorithm, "AB:CD:...")`` as written in SDP's a=fingerprint.

        Raises:
            DtlsError: for a hash name other than sha-1/256/384/512.
        """
        name = algorithm.lower()
        if name not in FINGERPRINT_ALGORITHMS:
            raise DtlsError(f"unsupported fingerprint algorithm {algorithm!r}")
        digest = certificate_digest(name, self.certificate.public_bytes(Encoding.DER))
        return name, format_fingerprint(digest)

    def _context(self, profiles: tuple[int, ...]) -> SSL.Context:
        context = self._contexts.get(profiles)
        if context is None:
            context = SSL.Context(SSL.DTLS_METHOD)
            context.set_min_proto_version(DTLS1_2_VERSION)
            context.set_max_proto_version(DTLS1_2_VERSION)
            context.set_options(
                SSL.OP_NO_QUERY_MTU  # a memory BIO has no MTU to query: ours is set
                | SSL.OP_NO_TICKET
                | SSL.OP_NO_RENEGOTIATION
                | SSL.OP_CIPHER_SERVER_PREFERENCE
            )
            # A resumed session skips the certificate exchange, and with it the
            # fingerprint check against *this* session's SDP: never resume.
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            # WebRTC peers always present a certificate (RFC 8827 6.5); whether it
            # is the right one is decided against the SDP fingerprint (dtls_fingerprint.py).
            context.set_verify(
                SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify_peer_certificate
            )
            context.use_certificate(self.certificate)
            context.use_privatekey(self.key)
            context.check_privatekey()
            context.set_cipher_list(CIPHER_LIST)
            context.set_tlsext_use_srtp(b":".join(SRTP_PROFILES[p].openssl_name for p in profiles))
            # only connections with OP_COOKIE_EXCHANGE (cookie_exchange=True) ask
            dtls_cookie.install(context)
            self._contexts[profiles] = context
        return context


def _ssl_reason(exc: Exception) -> str:
    # pyOpenSSL puts OpenSSL's error queue, [(lib, func, reason), ...], in args[0].
    if exc.args and isinstance(exc.args[0], list):
        reasons = [str(e[2]) for e in exc.args[0] if isinstance(e, tuple) and len(e) == 3]
        if reasons:
            return "; ".join(reasons)
    return str(exc) or type(exc).__name__


def split_records(data: bytes) -> list[bytes] | None:
    """Split a run of DTLS 1.2 records (RFC 6347 4.1); None if it does not parse."""
    records = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < DTLS_RECORD_HEADER.size:
            return None
        length = DTLS_RECORD_HEADER.unpack_from(data, pos)[4]
        end = pos + DTLS_RECORD_HEADER.size + length
        if end > len(data):
            return None
        records.append(data[pos:end])
        pos = end
    return records


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class DtlsConnected:
    """The handshake finished, the peer is who the SDP said, SRTP keys are ready."""

    profile: int
    "The IANA id of the negotiated SRTP protection profile."

    local_key: bytes
    "Master key we protect our outbound SRTP/SRTCP with."

    local_salt: bytes
    "Master salt we protect our outbound SRTP/SRTCP with."

    remote_key: bytes
    "Master key the peer protects with (we unprotect with it)."

    remote_salt: bytes
    "Master salt the peer protects with (we unprotect with it)."


@dataclass(frozen=True)
class DtlsFailed:
    """The handshake or the connection failed; the endpoint is dead."""

    reason: str
    "What went wrong, for logs."


@dataclass(frozen=True)
class DtlsClosed:
    """The peer sent close_notify; we answered with ours."""


DtlsEvent = DtlsConnected | DtlsFailed | DtlsClosed


class DtlsState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


# ---------------------------------------------------------------- endpoint


class DtlsEndpoint:
    """One DTLS-SRTP association, driven by datagrams and a clock passed in.

    Args:
        certificate: our certificate (one per process).
        role: ``"server"`` (we answer a ClientHello; what the SFU does, since it
            answers browsers' offers with a=setup:passive) or ``"client"`` (synthetic
            peers in tests and the load generator; call :meth:`connect`).
        remote_fingerprints: ``(algorithm, value)`` pairs from the peer's SDP, e.g.
            ``("sha-256", "AB:CD:...")``. Unknown algorithms are ignored, but at
            least one must be sha-1, sha-256, sha-384 or sha-512.
        profiles: IANA ids of the SRTP profiles to offer (client) or accept (server),
            most preferred first. The server's order decides: OpenSSL picks the
            first profile of the server's list that the client offered.
        mtu: the largest datagram to emit.
        max_retransmissions: retransmissions of one flight before giving up; with
            OpenSSL's 1 s initial timer doubling, 4 gives up 31 s after a flight.
        cookie_exchange: server role: answer a ClientHello with a HelloVerifyRequest
            (RFC 6347 4.2.1) until one comes back with the cookie made for its
            ``source`` (see :meth:`receive_datagram`). Until then the endpoint keeps
            no handshake state and sends nothing bigger than the datagram it
            answers, so a spoofed source gets no flight and no retransmissions;
            afterwards :attr:`proven_source` is the source that returned the cookie.
            Every DTLS client (browsers, aiortc, our client role) answers one.

    Raises:
        DtlsError: for an unknown role or profile, no usable fingerprint, or a
            cookie exchange asked of a client.
    """

    def __init__(
        self,
        certificate: DtlsCertificate,
        role: str,
        remote_fingerprints: Sequence[tuple[str, str]],
        profiles: Sequence[int] = DEFAULT_PROFILES,
        *,
        mtu: int = DTLS_MTU,
        max_retransmissions: int = 4,
        cookie_exchange: bool = False,
    ) -> None:
        if role not in ("server", "client"):
            raise DtlsError(f"role must be 'server' or 'client', not {role!r}")
        if cookie_exchange and role != "server":
            raise DtlsError("only a server endpoint asks for a cookie")
        if not profiles:
            raise DtlsError("at least one SRTP profile is needed")
        for p in profiles:
            if p not in SRTP_PROFILES:
                raise DtlsError(f"unknown SRTP protection profile {p:#06x}")
        if len(set(profiles)) != len(profiles):
            raise DtlsError("SRTP protection profiles are repeated")
        parsed = [parse_fingerprint(a, v) for a, v in remote_fingerprints]
        if not any(name in FINGERPRINT_ALGORITHMS for name, _ in parsed):
            raise DtlsError("no remote fingerprint with sha-1, sha-256, sha-384 or sha-512")
        if max_retransmissions < 0:
            raise DtlsError("max_retransmissions must not be negative")

        self.role = role
        self.state = DtlsState.NEW
        self.drops: Counter[str] = Counter()
        """Datagrams ignored, by reason: ``not_dtls`` (first byte not 20-63, RFC 7983),
        ``oversize``, ``not_started`` (client before :meth:`connect`), ``closed``
        (after close or failure), ``not_client_hello`` (nothing a HelloVerifyRequest
        answers, before the cookie exchange); and ``application_data`` records dropped."""
        self.retransmissions = 0
        "Flights OpenSSL retransmitted on timeout."
        self.cookie_requests = 0
        "HelloVerifyRequests sent (cookie exchange)."
        self.proven_source: Address | None = None
        """With ``cookie_exchange``: the source that returned our cookie (it receives
        what is sent to it); the handshake runs from then on."""

        self._mtu = mtu
        self._max_retransmissions = max_retransmissions
        self._check = PeerCheck(parsed)
        self._events: deque[DtlsEvent] = deque()
        self._outgoing: list[bytes] = []
        self._timer_at: float | None = None
        # Retransmissions since our last flight was answered; reset on progress.
        self._flight_timeouts = 0

        self._ssl = SSL.Connection(certificate._context(tuple(profiles)), None)
        self._ssl.set_app_data(self._check)
        self._ssl.set_ciphertext_mtu(mtu)
        if role == "server":
            self._ssl.set_accept_state()
        else:
            self._ssl.set_connect_state()
        self._listening = cookie_exchange
        if cookie_exchange:
            if SSL.OP_COOKIE_EXCHANGE is None:  # pragma: no cover - OpenSSL built without
                raise DtlsError("this OpenSSL has no DTLS cookie exchange")
            self._ssl.set_options(SSL.OP_COOKIE_EXCHANGE)

    # ------------------------------------------------------------ public API

    def connect(self, now: float) -> None:
        """Client role: start the handshake (queue the ClientHello).

        Raises:
            DtlsError: if this endpoint is a server or was already started.
        """
        if self.role != "client":
            raise DtlsError("only a client endpoint initiates the handshake")
        if self.state is not DtlsState.NEW:
            raise DtlsError(f"connect() on an endpoint that is {self.state.value}")
        self.state = DtlsState.CONNECTING
        self._handshake(now)

    def receive_datagram(self, data: bytes, now: float, source: Address | None = None) -> None:
        """Feed one UDP datagram from the peer. Never raises for bad input.

        ``source`` is where it came from; only the cookie exchange reads it.
        """
        if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            self.drops["closed"] += 1
            return
        if not data or not DTLS_FIRST_BYTE_MIN <= data[0] <= DTLS_FIRST_BYTE_MAX:
            self.drops["not_dtls"] += 1
            return
        if len(data) > MAX_DATAGRAM_SIZE:
            self.drops["oversize"] += 1
            return
        if self.state is DtlsState.NEW:
            if self.role == "client":
                # Nothing to answer before we sent a ClientHello.
                self.drops["not_started"] += 1
                return
            if self._listening:
                self._listen(data, now, source)
                return
            self.state = DtlsState.CONNECTING

        # A datagram from the peer means our last flight arrived (or the peer
        # retransmitted): the give-up count restarts, as OpenSSL's own does.
        self._flight_timeouts = 0
        try:
            self._ssl.bio_write(data)
        except SSL.Error as exc:  # pragma: no cover - a memory BIO write does not fail
            self._fail(now, f"cannot buffer datagram: {_ssl_reason(exc)}")
            return
        if self.state is DtlsState.CONNECTING:
            self._handshake(now)
        if self.state is DtlsState.CONNECTED:
            self._read(now)
        self._flush()
        self._update_timer(now)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Return the datagrams to send now, each at most ``mtu`` bytes."""
        self._flush()
        datagrams, self._outgoing = self._outgoing, []
        return datagrams

    def get_timer(self) -> float | None:
        """Return when :meth:`handle_timer` should be called, or None."""
        return self._timer_at

    def handle_timer(self, now: float) -> None:
        """Retransmit the last flight or give up, if the timer is due."""
        if self._timer_at is None or now < self._timer_at:
            return
        if self.state is not DtlsState.CONNECTING:
            self._timer_at = None
            return
        if self._flight_timeouts >= self._max_retransmissions:
            self._fail(
                now,
                f"handshake timed out after {self._flight_timeouts} retransmissions",
            )
            return
        try:
            retransmitted = self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            # OpenSSL gives up on its own after 12 timeouts (DTLS1_TMO_ALERT_COUNT).
            self._fail(now, f"handshake timed out: {_ssl_reason(exc)}")
            return
        if retransmitted:
            self.retransmissions += 1
            self._flight_timeouts += 1
        self._flush()
        self._update_timer(now)

    def next_event(self) -> DtlsEvent | None:
        """Pop the next event, or None."""
        return self._events.popleft() if self._events else None

    def close(self, now: float) -> None:
        """Send close_notify and stop. No event is emitted for our own close."""
        if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            return
        if self.state is DtlsState.CONNECTED:
            self._shutdown()
        self.state = DtlsState.CLOSED
        self._timer_at = None

    # ------------------------------------------------------------ internals

    def _listen(self, data: bytes, now: float, source: Address | None) -> None:
        """The cookie exchange (:mod:`mediaserver.sfu.dtls_cookie`): no state, and
        nothing bigger than ``data`` back, until the cookie returns from ``source``."""
        self._check.cookies.set_source(source)
        queued = len(self._outgoing)
        verified = dtls_cookie.listen(self._ssl, data)
        if not verified:
            self._flush()
            replies = self._outgoing[queued:] if verified is False else []
            del self._outgoing[queued:]
            # the HelloVerifyRequest, not retransmitted: the client repeats its hello
            for reply in replies:
                if len(reply) <= len(data):
                    self._outgoing.append(reply)
                    self.cookie_requests += 1
            if not replies:
                self.drops["not_client_hello"] += 1
            return
        self._listening = False
        self.proven_source = source
        self.state = DtlsState.CONNECTING
        self._flight_timeouts = 0
        self._handshake(now)  # the ClientHello waits in OpenSSL's buffer
        self._flush()
        self._update_timer(now)

    def _handshake(self, now: float) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._update_timer(now)
            return
        except SSL.Error as exc:
            self._fail(now, self._check.failure or f"handshake failed: {_ssl_reason(exc)}")
            return
        self._connected(now)

    def _connected(self, now: float) -> None:
        # The verify callback already refused a wrong certificate; this catches a
        # handshake that skipped it (it never should).
        peer = self._ssl.get_peer_certificate()
        if peer is None:
            self._fail(now, "peer sent no certificate", alert=True)
            return
        if not self._check.check(peer):
            self._fail(now, self._check.failure or "fingerprint mismatch", alert=True)
            return

        profile = _PROFILES_BY_NAME.get(self._ssl.get_selected_srtp_profile())
        if profile is None:
            self._fail(now, "no common SRTP protection profile", alert=True)
            return

        # RFC 5764 4.2: client_write_SRTP_master_key | server_write_SRTP_master_key |
        # client_write_SRTP_master_salt | server_write_SRTP_master_salt.
        k, s = profile.key_length, profile.salt_length
        material = self._ssl.export_keying_material(EXPORTER_LABEL, 2 * (k + s))
        client_key, server_key = material[0:k], material[k : 2 * k]
        client_salt, server_salt = material[2 * k : 2 * k + s], material[2 * k + s :]
        self.state = DtlsState.CONNECTED
        if self.role == "client":
            event = DtlsConnected(profile.iana_id, client_key, client_salt, server_key, server_salt)
        else:
            event = DtlsConnected(profile.iana_id, server_key, server_salt, client_key, client_salt)
        self._events.append(event)
        self._flush()
        self._update_timer(now)

    def _read(self, now: float) -> None:
        # Drain decrypted application data: SSL_read also answers a retransmitted
        # final flight from the peer (our Finished was lost) and reads alerts.
        while True:
            try:
                self._ssl.recv(65536)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self._shutdown()
                self.state = DtlsState.CLOSED
                self._timer_at = None
                self._events.append(DtlsClosed())
                return
            except SSL.Error as exc:
                self._fail(now, f"connection failed: {_ssl_reason(exc)}")
                return
            # Data channels (SCTP over DTLS) are not served yet.
            self.drops["application_data"] += 1

    def _shutdown(self) -> None:
        try:
            self._ssl.shutdown()
        except SSL.Error:
            pass
        self._flush()

    def _fail(self, now: float, reason: str, *, alert: bool = False) -> None:
        if alert:
            # pyOpenSSL cannot send an arbitrary alert; close_notify at least tells
            # the peer to stop.
            self._shutdown()
        else:
            # OpenSSL has queued its fatal alert, if any: send it.
            self._flush()
        self.state = DtlsState.FAILED
        self._timer_at = None
        self._events.append(DtlsFailed(reason))

    def _flush(self) -> None:
        """Move what OpenSSL wrote into datagrams of at most ``mtu`` bytes."""
        chunks = []
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.Error:  # WantReadError: the BIO is empty
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return
        data = b"".join(chunks)
        # A memory BIO is a byte stream: the record boundaries OpenSSL intended as
        # datagrams are lost. Records never straddle datagrams (RFC 6347 4.1.1), so
        # split on record headers and pack whole records up to the MTU.
        records = split_records(data)
        if records is None:  # pragma: no cover - OpenSSL writes whole records
            self._outgoing.append(data)
            return
        datagram = b""
        for record in records:
            if datagram and len(datagram) + len(record) > self._mtu:
                self._outgoing.append(datagram)
                datagram = b""
            datagram += record
        if datagram:
            self._outgoing.append(datagram)

    def _update_timer(self, now: float) -> None:
        if self.state is not DtlsState.CONNECTING:
            self._timer_at = None
            return
        remaining = self._ssl.DTLSv1_get_timeout()
        if remaining is None:
            self._timer_at = None
        else:
            # A floor keeps a shell from spinning if OpenSSL's clock lags ours.
            self._timer_at = now + max(remaining, 0.001)
