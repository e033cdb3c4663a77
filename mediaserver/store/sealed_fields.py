"""Personal profile fields sealed at rest: each of a user's username, date of birth,
bio, interests, language, links and location is its own AES-256-GCM value (nonce || ciphertext of its
JSON) whose AAD names the user id and the column, so a value moved to another row or
field fails to open. Lookups by username go through a blind index: an HMAC-SHA256 of
the case-folded name under a key derived from the data key (UNIQUE in the table), so
SQL never sees a name. Also the schema step that converts plaintext rows."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from typing import Any

from mediaserver.store import crypto

SEALED_IN_V4 = ("username", "date_of_birth", "bio", "interests", "language")
"""The fields the 3 -> 4 step sealed (fixed: that step has shipped)."""
PERSONAL_COLUMNS = (*SEALED_IN_V4, "links", "location")
SEALED = {name: f"{name}_sealed" for name in PERSONAL_COLUMNS}
"""Field name -> the users column holding its sealed value."""


def _index_key(key: bytes) -> bytes:
    # its own key: the blind index never shares HMAC input space with other data-key uses
    return hmac.new(key, b"blind-index\x00users.username", hashlib.sha256).digest()


def username_index(key: bytes, username: str) -> str:
    """The blind index of a username: equal for names equal case-insensitively."""
    return hmac.new(_index_key(key), username.casefold().encode("utf-8"),
                    hashlib.sha256).hexdigest()


def field_aad(user_id: str, field: str) -> bytes:
    return b"users\x00" + field.encode() + b"\x00" + user_id.encode()


def seal_field(key: bytes, user_id: str, field: str, value: Any) -> bytes:
    nonce, ciphertext = crypto.seal(
        key, json.dumps(value).encode("utf-8"), field_aad(user_id, field))
    return nonce + ciphertext


def open_field(key: bytes, user_id: str, field: str, sealed: bytes) -> Any:
    """The value sealed for this user and field (StoreError if it was sealed for
    another, or with another key)."""
    blob = bytes(sealed)
    return json.loads(crypto.open_sealed(
        key, blob[:crypto.NONCE_BYTES], blob[crypto.NONCE_BYTES:], field_aad(user_id, field)))


def seal_profile_fields(key: bytes, user_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Column -> value to write for the given personal fields (the username's index too)."""
    out: dict[str, Any] = {SEALED[name]: seal_field(key, user_id, name, value)
                           for name, value in fields.items()}
    if "username" in fields:
        out["username_index"] = username_index(key, fields["username"])
    return out


def migrate_seal_users(conn: sqlite3.Connection, key: bytes) -> None:
    """Schema step: the plaintext personal columns become sealed ones; the username
    column becomes the blind index (keeping its UNIQUE constraint). Rewriting the rows
    and dropping the columns under secure_delete zeroes the plaintext in the file; the
    store truncates the WAL after migrating."""
    conn.execute("ALTER TABLE users RENAME COLUMN username TO username_index")
    for name in SEALED_IN_V4:
        conn.execute(f"ALTER TABLE users ADD COLUMN {SEALED[name]} BLOB")
    rows = conn.execute(
        "SELECT id, username_index, date_of_birth, bio, interests, language FROM users"
    ).fetchall()
    for user_id, username, dob, bio, interests, language in rows:
        values = seal_profile_fields(key, user_id, {
            "username": username, "date_of_birth": dob, "bio": bio,
            "interests": list(json.loads(interests)), "language": language})
        conn.execute(
            "UPDATE users SET " + ", ".join(f"{c} = ?" for c in values) + " WHERE id = ?",
            (*values.values(), user_id))
    for column in ("date_of_birth", "bio", "interests", "language"):
        conn.execute(f"ALTER TABLE users DROP COLUMN {column}")
