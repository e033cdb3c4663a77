"""The database schema: its migrations, SCHEMA_VERSION and migrate()."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from mediaserver.store import (
    connection_rows,
    controls,
    moderation_rows,
    notice_schema,
    sealed_fields,
    shares,
)
from mediaserver.store.errors import StoreError
from mediaserver.store.limits import SESSION_TTL

# Schema migrations: MIGRATIONS[i] takes the database from user_version i to i + 1.
# Append only; never edit a step that has shipped. A step is SQL statements, or a
# function of the connection and the data key (a step that seals data).
Step = list[str] | Callable[[sqlite3.Connection, bytes], None]
MIGRATIONS: list[Step] = [
    [
        """CREATE TABLE users (
            id TEXT PRIMARY KEY,
            username TEXT NOT NULL UNIQUE COLLATE NOCASE,
            date_of_birth TEXT NOT NULL,
            bio TEXT NOT NULL DEFAULT '',
            interests TEXT NOT NULL DEFAULT '[]',
            language TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_seen_at REAL NOT NULL,
            flagged_at REAL,
            opted_out INTEGER NOT NULL DEFAULT 0,
            chat_history_consent INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX users_last_seen ON users(last_seen_at)",
        """CREATE TABLE tokens (
            token_hash TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX tokens_user ON tokens(user_id)",
        """CREATE TABLE consents (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            granted INTEGER NOT NULL,
            source TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX consents_user ON consents(user_id)",
        """CREATE TABLE chat_messages (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            conversation_id TEXT NOT NULL,
            at REAL NOT NULL,
            nonce BLOB NOT NULL,
            ciphertext BLOB NOT NULL
        )""",
        "CREATE INDEX chat_user ON chat_messages(user_id)",
        "CREATE INDEX chat_conversation ON chat_messages(conversation_id, at)",
        """CREATE TABLE reports (
            id INTEGER PRIMARY KEY,
            reporter_user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            reason TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX reports_reporter ON reports(reporter_user_id)",
        """CREATE TABLE privacy_requests (
            id TEXT PRIMARY KEY,
            user_id TEXT REFERENCES users(id) ON DELETE SET NULL,
            type TEXT NOT NULL,
            status TEXT NOT NULL,
            received_at REAL NOT NULL,
            due_at REAL NOT NULL,
            completed_at REAL,
            reason TEXT,
            export_nonce BLOB,
            export_ciphertext BLOB
        )""",
        "CREATE INDEX requests_user ON privacy_requests(user_id)",
        "CREATE INDEX requests_status ON privacy_requests(status, received_at)",
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            request_id TEXT,
            event TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_request ON audit_log(request_id)",
        """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
           BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
        """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
           BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    ],
    # 1 -> 2: accounts. Existing tokens become kind 'profile' (the creation token,
    # no expiry) so they keep working; sign-in sessions are kind 'session'.
    [
        "ALTER TABLE users ADD COLUMN password_hash TEXT",
        "ALTER TABLE users ADD COLUMN discoverable INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN totp_nonce BLOB",
        "ALTER TABLE users ADD COLUMN totp_ciphertext BLOB",
        "ALTER TABLE users ADD COLUMN totp_enabled INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX users_discoverable ON users(discoverable)",
        "ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'profile'",
        "ALTER TABLE tokens ADD COLUMN expires_at REAL",
        "CREATE INDEX tokens_expiry ON tokens(expires_at)",
        """CREATE TABLE recovery_codes (
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            code_hash TEXT NOT NULL,
            used_at REAL,
            PRIMARY KEY (user_id, code_hash)
        )""",
        """CREATE TABLE photos (
            user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            public_id TEXT NOT NULL UNIQUE,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            nonce BLOB NOT NULL,
            ciphertext BLOB NOT NULL
        )""",
        """CREATE TABLE blocks (
            blocker_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            blocked_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            PRIMARY KEY (blocker_id, blocked_id)
        )""",
        "CREATE INDEX blocks_blocked ON blocks(blocked_id)",
        """CREATE TABLE account_reports (
            id TEXT PRIMARY KEY,
            reported_user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            reporter_user_id TEXT REFERENCES users(id) ON DELETE SET NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX account_reports_reported ON account_reports(reported_user_id)",
        "CREATE INDEX account_reports_reporter ON account_reports(reporter_user_id)",
        # key: an HMAC (data key) of the username or address, never the name itself
        """CREATE TABLE login_throttle (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            last_failure_at REAL NOT NULL
        )""",
    ],
    # 2 -> 3: per-share photo capabilities (store/shares.py); the creation token of an
    # account that has a password becomes a session made when it was: it expires like
    # one (it could not be listed, revoked or ended by a password change)
    [
        *shares.MIGRATION,
        f"UPDATE tokens SET kind = 'session', expires_at = created_at + {SESSION_TTL}"
        " WHERE kind = 'profile' AND user_id IN"
        " (SELECT id FROM users WHERE password_hash IS NOT NULL)",
    ],
    # 3 -> 4: username, date of birth, bio, interests and language sealed with the
    # data key; the username column becomes its blind index (store/sealed_fields.py)
    sealed_fields.migrate_seal_users,
    # privacy controls: links and location (sealed), restriction, objections, legal
    # hold, guardians' reports, a correction's fields (store/controls.py)
    controls.MIGRATION,
    # connections between accounts, their conversations and each side's sealed copy
    connection_rows.MIGRATION,
    # mail outbox, notices, name and e-mail (sealed), sessions' ids, policy versions
    notice_schema.MIGRATION,
    # the moderation desk: the moderator role, reports kept for review, decisions,
    # bans, appeals (store/moderation_rows.py)
    moderation_rows.MIGRATION,
    # a report's still of the reported video (JPEG, sealed), kept as its evidence
    moderation_rows.STILL_MIGRATION,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, key: bytes | None = None) -> int:
    """Bring the schema to SCHEMA_VERSION; returns how many steps ran (0: up to date).
    `key` (the data key) is needed only when a sealing step has to run.

    Each step and its user_version bump commit together, so a crash mid-migration
    leaves the previous version intact and the next open re-runs the step."""
    applied = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {version} is newer than this code "
                    f"({SCHEMA_VERSION}): refusing to open it"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return applied
            step = MIGRATIONS[version]
            if callable(step):
                if key is None:
                    raise StoreError(f"schema step {version} -> {version + 1} needs the data key")
                step(conn, key)
            else:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
            applied += 1
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
