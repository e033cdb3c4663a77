"""Self-signed test certificates (the `cryptography` package) for the TLS tests."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOSTS = ("localhost", "127.0.0.1", "10.77.0.1", "10.77.0.2")
"""Names the test certificates are valid for: loopback and the namespace's veth pair."""


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    """PEM certificate (self-signed: it is its own CA)."""
    key: Path
    """PEM private key, unencrypted."""
    serial: int
    spki_sha256: str
    """Base64 SHA-256 of the public key (Chromium's --ignore-certificate-errors-spki-list)."""

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate only (hostname checked)."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_cert(directory: Path, name: str = "server", hosts: tuple[str, ...] = HOSTS) -> CertFiles:
    """A new key and a certificate for `hosts`, valid from an hour ago for a day,
    written to directory/name.pem and directory/name.key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mediaserver test {name}")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CertFiles(
        cert_path, key_path, serial, base64.b64encode(hashlib.sha256(spki).digest()).decode()
    )


def serial_of(der: bytes) -> int:
    """The serial number of a DER certificate (what a TLS peer presented)."""
    return x509.load_der_x509_certificate(der).serial_number
