"""Known devices: what keeps the per-account sign-in limit from being a weapon.

Handles are public, so anyone can spend an account's free failures and keep it
locked. The account limit therefore applies to unknown clients only. A client is
known when it presents a device token that a successful sign-in of that account
handed out (`POST /sessions` answers with one; the client sends it back as
`device`); such a client is limited on its own device bucket instead (and by its
address, like everyone). A correct password with a valid TOTP code also passes a
locked account (the code is checked before any Argon2 work).

A device token is stateless: a random id and an HMAC (the data key) binding it to
the account id, so nothing is stored per device and a token of one account is
worth nothing for another (or for an account re-created under the same name).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

DEVICE_ID_BYTES = 12
MAX_DEVICE_TOKEN = 128
"""Longest `device` value read (a real one is about 60 characters)."""


def _mac(key: bytes, user_id: str, device_id: str) -> str:
    return hmac.new(
        key, f"device\x00{user_id}\x00{device_id}".encode(), hashlib.sha256
    ).hexdigest()[:32]


def new_device_token(key: bytes, user_id: str) -> str:
    """A fresh device token for a client that just signed in to `user_id`."""
    device_id = secrets.token_urlsafe(DEVICE_ID_BYTES)
    return f"{device_id}.{_mac(key, user_id, device_id)}"


def device_id(key: bytes, user_id: str, token: object) -> str | None:
    """The device's id when `token` was handed out for `user_id`, else None."""
    if not isinstance(token, str) or len(token) > MAX_DEVICE_TOKEN or not token.isascii():
        return None
    ident, _, mac = token.partition(".")
    if not ident or not hmac.compare_digest(mac, _mac(key, user_id, ident)):
        return None
    return ident

# Sign-in throttling: this many failures are free, then each further one doubles the
# wait (1 s, 2 s, 4 s, ... up to THROTTLE_CAP); failures are forgotten a day after the
# last one. Per address the allowance is larger (many people share a NAT).
THROTTLE_FREE_ACCOUNT = 5
THROTTLE_FREE_ADDRESS = 20
THROTTLE_BASE = 1.0
THROTTLE_CAP = 900.0
THROTTLE_FORGET = 86400.0
