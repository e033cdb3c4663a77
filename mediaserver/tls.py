"""Built-in HTTPS and WSS: the server's SSLContext from --tls-cert / --tls-key, and
its renewal on SIGHUP.

A renewal loads the new files into the *same* SSLContext the listener holds:
OpenSSL copies the certificate into each connection when its handshake starts, so
new handshakes get the new certificate and established connections keep theirs.
"""

from __future__ import annotations

import logging
import ssl

logger = logging.getLogger("mediaserver")


class TlsError(ValueError):
    """The certificate or key cannot be used (one clear line naming the flag)."""


def _load_into(context: ssl.SSLContext, cert: str, key: str) -> None:
    """load_cert_chain with errors that say which file and what is wrong."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as exc:
            raise TlsError(f"{flag} {path!r}: cannot read: {exc.strerror or exc}") from None
        if b"-----BEGIN " not in text:
            raise TlsError(f"{flag} {path!r}: not a PEM file")
    try:
        # a password callback that refuses: an encrypted key would otherwise prompt
        # on the terminal (and hang a server started by systemd)
        context.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKey:
        raise TlsError(f"--tls-key {key!r} is encrypted: give an unencrypted key") from None
    except ssl.SSLError as exc:
        reason = getattr(exc, "reason", None) or ""
        if reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"--tls-key {key!r} does not match --tls-cert {cert!r}") from None
        raise TlsError(
            f"--tls-cert {cert!r} / --tls-key {key!r}: not a usable PEM certificate and "
            f"private key ({reason or exc})"
        ) from None


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKey


def _new_context() -> ssl.SSLContext:
    # the server defaults (no client certificates, modern ciphers), TLS 1.2 at least
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # uvicorn speaks HTTP/1.1 only
    return context


def check_files(cert: str, key: str) -> None:
    """Both given or neither; when given, a readable PEM certificate and matching key.

    Raises:
        TlsError: one clear line.
    """
    if bool(cert) != bool(key):
        given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
        raise TlsError(f"{given} needs {missing} too (give both or neither)")
    if cert:
        _load_into(_new_context(), cert, key)


class ServerTls:
    """The listener's SSLContext and the files it came from."""

    def __init__(self, cert: str, key: str) -> None:
        """Load the certificate and key.

        Raises:
            TlsError: unreadable files, not PEM, key not matching the certificate.
        """
        self.cert = cert
        self.key = key
        self.context = _new_context()
        _load_into(self.context, cert, key)

    def reload(self) -> bool:
        """Load the files again into the live context (SIGHUP, after a renewal).
        A broken replacement is logged and the certificate in use is kept."""
        try:
            # a trial on a scratch context first: a failed load_cert_chain can leave a
            # context with the new certificate and the old key, which no handshake fits
            _load_into(_new_context(), self.cert, self.key)
            _load_into(self.context, self.cert, self.key)
        except TlsError as exc:
            logger.error("tls_reload_failed", extra={"error": str(exc)})
            return False
        logger.info("tls_reloaded", extra={"cert": self.cert})
        return True
