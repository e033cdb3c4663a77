"""Privacy controls beyond the basic requests (the helpers and the schema step here;
the operations in store/controls_store.py): restriction of processing, objections
per purpose, legal holds, under-age reports from guardians without an account, and
the sealed fields a correction request carries.

Restriction (a completed `restriction` request): the account's data is only stored,
not processed, until the owner lifts it (lift_restriction). What stops:
  - browsing: it is listed to no one (SocialStore.browse);
  - matching and sharing: a signalling hello with its token is treated as an
    anonymous one (its profile's interests and language feed no match queue, it has
    no account to share), and share_profile_card refuses;
  - chat history: store_chat_message keeps nothing.
What goes on: the owner signs in, reads, corrects, exports or deletes it; retention.

Objection (a completed `objection` request naming a purpose of OBJECTION_PURPOSES)
turns that processing off until the owner lifts it (lift_objection):
  - chat_history: the stored chat is deleted, consent is withdrawn, and nothing is
    kept while the objection stands (even if consent is given again);
  - matching_by_interests: the profile's interests feed neither the random chat's
    match queue nor browsing's ranking and interest filter, its own or others'
    (its card still shows them: showing is not matching).

Legal hold (an operator's `mediaserver accounts hold`): every deletion waits while
it stands (a deletion request stays open and says so, DELETE /profiles/{id} opens
one, retention and a confirmed under-age report leave the account); the data stays.
The reason and each operator action are in the audit log.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from mediaserver.store import crypto
from mediaserver.store.errors import Invalid
from mediaserver.store.limits import DAY, OBJECTION_PURPOSES

REQUEST_DUE_SECONDS = 45 * DAY

MIGRATION = [
    "ALTER TABLE users ADD COLUMN links_sealed BLOB",
    "ALTER TABLE users ADD COLUMN location_sealed BLOB",
    "ALTER TABLE users ADD COLUMN show_links INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN show_location INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN restricted_at REAL",
    "ALTER TABLE users ADD COLUMN legal_hold_at REAL",
    "ALTER TABLE privacy_requests ADD COLUMN purpose TEXT",
    # a correction's fields, sealed; cleared once applied or rejected
    "ALTER TABLE privacy_requests ADD COLUMN fields_sealed BLOB",
    """CREATE TABLE objections (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        purpose TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (user_id, purpose)
    )""",
    """CREATE TABLE guardian_reports (
        id TEXT PRIMARY KEY,
        reported_user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        contact_email_sealed BLOB NOT NULL,
        details_sealed BLOB NOT NULL,
        at REAL NOT NULL
    )""",
    "CREATE INDEX guardian_reports_reported ON guardian_reports(reported_user_id)",
]
"""The schema step of this module (appended to schema.MIGRATIONS)."""


def _aad(table: str, field: str, row_id: str) -> bytes:
    return table.encode() + b"\x00" + field.encode() + b"\x00" + row_id.encode()


def seal_value(key: bytes, table: str, field: str, row_id: str, plaintext: bytes) -> bytes:
    """nonce || ciphertext, the AAD naming the table, the field and the row."""
    nonce, ciphertext = crypto.seal(key, plaintext, _aad(table, field, row_id))
    return nonce + ciphertext


def open_value(key: bytes, table: str, field: str, row_id: str, sealed: bytes) -> bytes:
    blob = bytes(sealed)
    return crypto.open_sealed(key, blob[:crypto.NONCE_BYTES], blob[crypto.NONCE_BYTES:],
                              _aad(table, field, row_id))


def held(conn: sqlite3.Connection, user_id: str) -> bool:
    """Whether a legal hold stands on the account."""
    row = conn.execute("SELECT legal_hold_at FROM users WHERE id = ?", (user_id,)).fetchone()
    return row is not None and row[0] is not None


def objects_to(conn: sqlite3.Connection, user_id: str, purpose: str) -> bool:
    return conn.execute("SELECT 1 FROM objections WHERE user_id = ? AND purpose = ?",
                        (user_id, purpose)).fetchone() is not None


def validate_purpose(value: object) -> str:
    if not isinstance(value, str) or value not in OBJECTION_PURPOSES:
        raise Invalid("purpose", "must be one of " + ", ".join(OBJECTION_PURPOSES))
    return value


def guardian_reports(conn: sqlite3.Connection, key: bytes) -> list[dict[str, Any]]:
    """The guardians' reports, decrypted, oldest first."""
    return [
        {"report_id": rid, "reported_user_id": uid, "at": at, "source": "guardian",
         "contact_email": open_value(key, "guardian_reports", "contact_email", rid,
                                     email).decode(),
         "details": open_value(key, "guardian_reports", "details", rid, details).decode()}
        for rid, uid, email, details, at in conn.execute(
            "SELECT id, reported_user_id, contact_email_sealed, details_sealed, at"
            " FROM guardian_reports ORDER BY at, id")
    ]
