"""The data key (AES-256-GCM for personal data at rest) and sealing helpers."""

from __future__ import annotations

import functools
import os
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mediaserver.store.errors import StoreError

KEY_BYTES = 32
NONCE_BYTES = 12


def load_data_key(path: str) -> bytes:
    """Read an existing key file, refusing a bad one (wrong length, readable by others)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise StoreError(f"data key file {path!r} does not exist") from None
    except OSError as exc:
        raise StoreError(f"cannot open data key file {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"data key file {path!r} is not a regular file")
        if st.st_mode & 0o077:
            raise StoreError(
                f"data key file {path!r} has permissions {stat.S_IMODE(st.st_mode):04o}: "
                "it must not be readable or writable by group or others (chmod 600)"
            )
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise StoreError(
            f"data key file {path!r} holds {len(data) if len(data) <= KEY_BYTES else 'more than 32'}"
            f" bytes; a data key is exactly {KEY_BYTES} bytes"
        )
    return data


def load_or_create_data_key(path: str) -> bytes:
    """The data key at `path`; on first run, 32 random bytes written with mode 0600."""
    key = os.urandom(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_data_key(path)
    except OSError as exc:
        raise StoreError(f"cannot create data key file {path!r}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        written = 0
        while written < KEY_BYTES:
            written += os.write(fd, key[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return key


@functools.lru_cache(maxsize=4)
def _aead(key: bytes) -> AESGCM:
    # one cipher object per key: browsing opens every listed profile's sealed fields,
    # and setting up the key schedule each time cost more than the decryption
    return AESGCM(key)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) with a fresh random 12-byte nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, _aead(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return _aead(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise StoreError("stored data does not decrypt with this data key") from None
