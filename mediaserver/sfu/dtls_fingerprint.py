"""The SDP fingerprint as the DTLS trust anchor (RFC 8122 5, RFC 5763 5): hash names,
parsing a=fingerprint, and the check of the peer's certificate during the handshake."""

from __future__ import annotations

import hashlib

from OpenSSL import SSL, crypto

from mediaserver.sfu import dtls_cookie
from mediaserver.sfu.errors import DtlsError

# SDP "a=fingerprint" hash names (RFC 8122 5) we can check -> hashlib names, weakest
# first: when a peer gives several algorithms, the strongest one present is checked.
FINGERPRINT_ALGORITHMS: dict[str, str] = {
    "sha-1": "sha1",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}
_ALGORITHM_STRENGTH = list(FINGERPRINT_ALGORITHMS)


def format_fingerprint(digest: bytes) -> str:
    """As SDP writes a digest: upper-case hex pairs joined by colons."""
    return ":".join(f"{b:02X}" for b in digest)


def certificate_digest(algorithm: str, der: bytes) -> bytes:
    """The `algorithm` (an SDP hash name) digest of a DER certificate."""
    # RFC 8122 5: the fingerprint is the hash of the DER certificate. Hashing the
    # bytes, not a parsed certificate, means no parser can choke on a peer's cert.
    return hashlib.new(FINGERPRINT_ALGORITHMS[algorithm], der).digest()


def parse_fingerprint(algorithm: str, value: str) -> tuple[str, bytes]:
    """(hash name, digest) of an a=fingerprint; DtlsError for bad hex or a wrong length."""
    name = algorithm.strip().lower()
    text = value.strip().replace(":", "")
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        raise DtlsError(f"fingerprint {value!r} is not colon-separated hex") from None
    if name in FINGERPRINT_ALGORITHMS:
        expected = hashlib.new(FINGERPRINT_ALGORITHMS[name]).digest_size
        if len(digest) != expected:
            raise DtlsError(f"{name} fingerprint has {len(digest)} bytes, expected {expected}")
    return name, digest


class PeerCheck:
    """Per-connection verification state, reached from the shared context's callback.

    Kept apart from DtlsEndpoint so the Connection holds no reference back to it.
    """

    def __init__(self, fingerprints: list[tuple[str, bytes]]) -> None:
        # RFC 8122 5: check against the strongest hash function the peer offered.
        strongest = max(
            (name for name, _ in fingerprints if name in FINGERPRINT_ALGORITHMS),
            key=_ALGORITHM_STRENGTH.index,
        )
        self.algorithm = strongest
        self.digests = {d for name, d in fingerprints if name == strongest}
        self.failure: str | None = None
        self.cookies = dtls_cookie.SourceCookies()

    def check(self, certificate: crypto.X509) -> bool:
        try:
            der = crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)
        except crypto.Error:
            self.failure = "peer certificate cannot be encoded"
            return False
        digest = certificate_digest(self.algorithm, der)
        if digest in self.digests:
            return True
        self.failure = (
            f"peer certificate {self.algorithm} fingerprint {format_fingerprint(digest)} "
            "matches no remote fingerprint"
        )
        return False


def verify_peer_certificate(  # the SSL_CTX verify callback
    connection: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int
) -> bool:
    # OpenSSL's own verdict (self-signed, no trusted root) is meaningless here: the
    # SDP fingerprint is the trust anchor (RFC 5763 5), so only the leaf is checked.
    if depth != 0:
        return True
    check = connection.get_app_data()
    if not isinstance(check, PeerCheck):
        return False
    try:
        return check.check(cert)
    except Exception as exc:  # noqa: BLE001 - pyOpenSSL re-raises it out of do_handshake()
        check.failure = f"peer certificate check failed: {exc!r}"
        return False
