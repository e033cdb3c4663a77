"""SQLite storage: profiles, tokens, consents, encrypted chat history, reports,
privacy requests with an append-only audit log, and retention.

One connection per Store, opened with check_same_thread=False and guarded by a lock:
any one thread at a time may call it. WAL, synchronous=FULL (a commit that returned
survives a kill or power loss), foreign keys on, secure_delete on (deleted personal
data is overwritten in the file, not just unlinked from the b-tree).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Self

from mediaserver.store import crypto

DAY = 86400.0
REQUEST_DUE_SECONDS = 45 * DAY
CHAT_RETENTION_SECONDS = 183 * DAY  # 6 months after the conversation's last message
INACTIVE_SECONDS = 365 * DAY  # 12 months without being seen: flagged for notice
GRACE_SECONDS = 30 * DAY  # flagged this long and still not seen: deleted
EXPORT_RETENTION_SECONDS = 30 * DAY  # a completed access export is kept this long
LAST_SEEN_RESOLUTION = 60.0  # authenticate() rewrites last_seen_at at most this often

REQUEST_TYPES = ("access", "correction", "deletion", "opt_out", "withdraw_consent")
OPT_OUT_SOURCES = ("request", "gpc")
MIN_AGE = 18

_USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_BIO = 500
MAX_INTERESTS = 10
MAX_INTEREST_LEN = 32
MAX_REPORT_REASON = 1000
MAX_CHAT_TEXT = 10_000


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class NotFound(StoreError):
    """Unknown id, or not this user's (REST maps to 404)."""


class Conflict(StoreError):
    """E.g. username taken (REST: 409)."""


class Invalid(StoreError):
    """A value the store refuses (REST: 422); .field names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Profile:
    id: str
    username: str
    date_of_birth: str
    bio: str
    interests: list[str]
    language: str | None
    created_at: float
    updated_at: float
    last_seen_at: float
    opted_out: bool
    chat_history_consent: bool


@dataclass(frozen=True)
class PrivacyRequest:
    id: str
    type: str
    status: str
    received_at: float
    due_at: float
    completed_at: float | None
    reason: str | None
    export: dict[str, Any] | None


# Schema migrations: MIGRATIONS[i] takes the database from user_version i to i + 1.
# Append only; never edit a step that has shipped.
MIGRATIONS: list[list[str]] = [
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
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; returns how many steps ran (0: up to date).

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
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
            applied += 1
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _validate_username(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("username", "must be a string")
    if not _USERNAME.fullmatch(value):
        raise Invalid("username", "3-32 characters: letters, digits, _ . -")
    return value


def _validate_bio(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("bio", "must be a string")
    if len(value) > MAX_BIO:
        raise Invalid("bio", f"at most {MAX_BIO} characters")
    if "\x00" in value:
        raise Invalid("bio", "must not contain NUL characters")
    return value


def _validate_interests(value: object) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise Invalid("interests", "must be a list of strings")
    if len(value) > MAX_INTERESTS:
        raise Invalid("interests", f"at most {MAX_INTERESTS} interests")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise Invalid("interests", "must be a list of strings")
        item = item.strip().lower()
        if not 1 <= len(item) <= MAX_INTEREST_LEN or "\x00" in item:
            raise Invalid("interests", f"each interest is 1-{MAX_INTEREST_LEN} characters")
        if item not in out:
            out.append(item)
    return out


def _validate_language(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("language", "must be a string or null")
    if not 2 <= len(value) <= 16 or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise Invalid("language", "2-16 characters (a language tag such as en or pt-BR)")
    return value


def _validate_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(field, "must be true or false")
    return value


class Store:
    def __init__(
        self, path: str, data_key: bytes, clock: Callable[[], float] = time.time
    ) -> None:
        if not isinstance(data_key, bytes) or len(data_key) != crypto.KEY_BYTES:
            raise StoreError(f"data key must be {crypto.KEY_BYTES} bytes")
        self._key = data_key
        self._clock = clock
        self._lock = threading.RLock()
        self.path = path
        if path != ":memory:" and not os.path.exists(path):
            # Personal data: the file (and its -wal/-shm, which SQLite creates with
            # the same mode) is readable by the owner only.
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot create database {path!r}: {exc.strerror}") from None
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path!r}: {exc}") from None
        try:
            self._conn.execute("PRAGMA busy_timeout = 10000")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if path != ":memory:" and str(mode).lower() != "wal":
                raise StoreError(f"database {path!r} cannot use WAL mode (got {mode})")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA secure_delete = ON")
            self.migrations_applied = migrate(self._conn)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"cannot open database {path!r}: {exc}") from None
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    # -- plumbing -----------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate the WAL to zero bytes."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: IMMEDIATE for writes (takes the write lock
        up front, so no upgrade deadlock), deferred for reads (a consistent snapshot
        that does not block a writer in another process). SQLite errors surface as
        StoreError."""
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._conn
            if conn.in_transaction:  # nested (e.g. process_pending -> record_opt_out)
                yield conn
                return
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(f"database error: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"database error: {exc}") from exc
                raise

    def _now(self) -> float:
        return float(self._clock())

    def _today(self) -> _dt.date:
        return _dt.datetime.fromtimestamp(self._now(), tz=_dt.UTC).date()

    def _audit(
        self, conn: sqlite3.Connection, request_id: str | None, event: str, **detail: Any
    ) -> None:
        conn.execute(
            "INSERT INTO audit_log (at, request_id, event, detail) VALUES (?, ?, ?, ?)",
            (self._now(), request_id, event, json.dumps(detail, sort_keys=True)),
        )

    def _validate_dob(self, value: object) -> str:
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            raise Invalid("date_of_birth", "expected YYYY-MM-DD")
        try:
            dob = _dt.date.fromisoformat(value)
        except ValueError:
            raise Invalid("date_of_birth", "expected YYYY-MM-DD") from None
        today = self._today()
        age = today.year - dob.year - ((today.month, today.day) < (dob.month, dob.day))
        if age < MIN_AGE:
            raise Invalid("date_of_birth", "must be 18 or older")
        if age > 130:
            raise Invalid("date_of_birth", "not a plausible date of birth")
        return value

    @staticmethod
    def _profile(row: sqlite3.Row | tuple[Any, ...]) -> Profile:
        return Profile(
            id=row[0],
            username=row[1],
            date_of_birth=row[2],
            bio=row[3],
            interests=list(json.loads(row[4])),
            language=row[5],
            created_at=row[6],
            updated_at=row[7],
            last_seen_at=row[8],
            opted_out=bool(row[9]),
            chat_history_consent=bool(row[10]),
        )

    _PROFILE_COLS = (
        "id, username, date_of_birth, bio, interests, language, created_at, updated_at,"
        " last_seen_at, opted_out, chat_history_consent"
    )

    def _get_profile(self, conn: sqlite3.Connection, user_id: object) -> Profile:
        if not isinstance(user_id, str):
            raise NotFound("no such user")
        row = conn.execute(
            f"SELECT {self._PROFILE_COLS} FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        if row is None:
            raise NotFound("no such user")
        return self._profile(row)

    @staticmethod
    def _chat_aad(user_id: str, conversation_id: str) -> bytes:
        return b"chat\x00" + user_id.encode() + b"\x00" + conversation_id.encode()

    @staticmethod
    def _export_aad(user_id: str, request_id: str) -> bytes:
        return b"export\x00" + user_id.encode() + b"\x00" + request_id.encode()

    # -- profiles and tokens ------------------------------------------------------------

    def create_profile(
        self,
        username: str,
        date_of_birth: str,
        bio: str = "",
        interests: Iterable[str] = (),
        language: str | None = None,
        chat_history_consent: bool = False,
    ) -> tuple[Profile, str]:
        username = _validate_username(username)
        dob = self._validate_dob(date_of_birth)
        bio = _validate_bio(bio)
        interest_list = _validate_interests(
            list(interests) if isinstance(interests, (set, frozenset)) else interests
        )
        language = _validate_language(language)
        consent = _validate_bool("chat_history_consent", chat_history_consent)
        user_id = secrets.token_urlsafe(12)
        token = secrets.token_urlsafe(32)
        with self._tx() as conn:
            now = self._now()
            try:
                conn.execute(
                    "INSERT INTO users (id, username, date_of_birth, bio, interests, language,"
                    " created_at, updated_at, last_seen_at, chat_history_consent)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (user_id, username, dob, bio, json.dumps(interest_list), language,
                     now, now, now, int(consent)),
                )
            except sqlite3.IntegrityError:
                raise Conflict("username is taken") from None
            conn.execute(
                "INSERT INTO tokens (token_hash, user_id, created_at) VALUES (?, ?, ?)",
                (hash_token(token), user_id, now),
            )
            if consent:
                conn.execute(
                    "INSERT INTO consents (user_id, kind, granted, source, at)"
                    " VALUES (?, 'chat_history', 1, 'profile', ?)",
                    (user_id, now),
                )
            return self._get_profile(conn, user_id), token

    def authenticate(self, token: str) -> Profile:
        if not isinstance(token, str) or not token:
            raise NotFound("unknown token")
        with self._tx() as conn:
            row = conn.execute(
                "SELECT t.user_id, u.last_seen_at, u.flagged_at FROM tokens t"
                " JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
                (hash_token(token),),
            ).fetchone()
            if row is None:
                raise NotFound("unknown token")
            user_id, last_seen, flagged_at = row
            now = self._now()
            # Seen again: clears an inactivity flag. last_seen_at is only rewritten once
            # it is LAST_SEEN_RESOLUTION old, so a burst of requests is not a burst of
            # fsynced writes (retention works in days).
            if flagged_at is not None or now - last_seen >= LAST_SEEN_RESOLUTION:
                conn.execute(
                    "UPDATE users SET last_seen_at = ?, flagged_at = NULL WHERE id = ?",
                    (now, user_id),
                )
            return self._get_profile(conn, user_id)

    def get_profile(self, user_id: str) -> Profile:
        with self._tx(write=False) as conn:
            return self._get_profile(conn, user_id)

    _UPDATABLE = (
        "username", "bio", "interests", "language", "date_of_birth", "chat_history_consent"
    )

    def update_profile(self, user_id: str, **fields: Any) -> Profile:
        for name in fields:
            if name not in self._UPDATABLE:
                raise Invalid(name, "unknown field")
        values: dict[str, Any] = {}
        if "username" in fields:
            values["username"] = _validate_username(fields["username"])
        if "bio" in fields:
            values["bio"] = _validate_bio(fields["bio"])
        if "interests" in fields:
            values["interests"] = json.dumps(_validate_interests(fields["interests"]))
        if "language" in fields:
            values["language"] = _validate_language(fields["language"])
        if "date_of_birth" in fields:
            values["date_of_birth"] = self._validate_dob(fields["date_of_birth"])
        consent: bool | None = None
        if "chat_history_consent" in fields:
            consent = _validate_bool("chat_history_consent", fields["chat_history_consent"])
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            if values:
                values["updated_at"] = self._now()
                assignments = ", ".join(f"{name} = ?" for name in values)
                try:
                    conn.execute(
                        f"UPDATE users SET {assignments} WHERE id = ?",
                        (*values.values(), user_id),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict("username is taken") from None
            if consent is not None:
                self._set_consent(conn, user_id, consent, "profile")
            return self._get_profile(conn, user_id)

    def delete_user(self, user_id: str) -> None:
        with self._tx() as conn:
            self._delete_user(conn, user_id, reason="profile_delete", request_id=None)
        self._scrub_wal()

    def _delete_user(
        self, conn: sqlite3.Connection, user_id: str, reason: str, request_id: str | None
    ) -> None:
        self._get_profile(conn, user_id)
        counts = {
            "chat_messages": conn.execute(
                "DELETE FROM chat_messages WHERE user_id = ?", (user_id,)).rowcount,
            "tokens": conn.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,)).rowcount,
            "consents": conn.execute(
                "DELETE FROM consents WHERE user_id = ?", (user_id,)).rowcount,
            "reports": conn.execute(
                "DELETE FROM reports WHERE reporter_user_id = ?", (user_id,)).rowcount,
            # Requests stay (type, status, timestamps) but lose the link and any export.
            "requests_kept": conn.execute(
                "UPDATE privacy_requests SET user_id = NULL, export_nonce = NULL,"
                " export_ciphertext = NULL WHERE user_id = ?",
                (user_id,),
            ).rowcount,
        }
        conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
        self._audit(conn, request_id, "account_deleted", reason=reason, **counts)

    def _scrub_wal(self) -> None:
        """After a deletion, old page images holding the deleted data may still sit in
        the WAL: checkpoint and truncate it (best effort: a reader may hold it)."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass

    # -- consents and opt-out ------------------------------------------------------------

    def record_opt_out(self, user_id: str, source: str) -> None:
        if source not in OPT_OUT_SOURCES:
            raise Invalid("source", "must be request or gpc")
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            if profile.opted_out:
                return  # already recorded; Sec-GPC on every request writes nothing more
            now = self._now()
            conn.execute(
                "UPDATE users SET opted_out = 1, updated_at = ? WHERE id = ?", (now, user_id)
            )
            conn.execute(
                "INSERT INTO consents (user_id, kind, granted, source, at)"
                " VALUES (?, 'opt_out', 1, ?, ?)",
                (user_id, source, now),
            )

    def set_chat_history_consent(self, user_id: str, granted: bool) -> None:
        granted = _validate_bool("granted", granted)
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            self._set_consent(conn, user_id, granted, "profile")

    def _set_consent(
        self, conn: sqlite3.Connection, user_id: str, granted: bool, source: str
    ) -> int:
        """Record the consent change; withdrawing it deletes the stored chat. Returns
        how many messages were deleted."""
        now = self._now()
        current = conn.execute(
            "SELECT chat_history_consent FROM users WHERE id = ?", (user_id,)
        ).fetchone()[0]
        if bool(current) != granted:
            conn.execute(
                "UPDATE users SET chat_history_consent = ?, updated_at = ? WHERE id = ?",
                (int(granted), now, user_id),
            )
            conn.execute(
                "INSERT INTO consents (user_id, kind, granted, source, at)"
                " VALUES (?, 'chat_history', ?, ?, ?)",
                (user_id, int(granted), source, now),
            )
        if granted:
            return 0
        return int(
            conn.execute("DELETE FROM chat_messages WHERE user_id = ?", (user_id,)).rowcount
        )

    # -- chat history and reports ------------------------------------------------------

    def store_chat_message(
        self, user_id: str, conversation_id: str, sender: str, text: str
    ) -> bool:
        if not isinstance(conversation_id, str) or not 1 <= len(conversation_id) <= 128:
            raise Invalid("conversation_id", "1-128 characters")
        if not isinstance(sender, str) or len(sender) > 128:
            raise Invalid("sender", "at most 128 characters")
        if not isinstance(text, str) or len(text) > MAX_CHAT_TEXT:
            raise Invalid("text", f"at most {MAX_CHAT_TEXT} characters")
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            if not profile.chat_history_consent or profile.opted_out:
                return False
            plaintext = json.dumps({"sender": sender, "text": text}).encode()
            nonce, ciphertext = crypto.seal(
                self._key, plaintext, self._chat_aad(user_id, conversation_id)
            )
            conn.execute(
                "INSERT INTO chat_messages (user_id, conversation_id, at, nonce, ciphertext)"
                " VALUES (?, ?, ?, ?, ?)",
                (user_id, conversation_id, self._now(), nonce, ciphertext),
            )
            return True

    def chat_history(self, user_id: str) -> list[dict[str, Any]]:
        with self._tx(write=False) as conn:
            return self._chat_history(conn, user_id)

    def _chat_history(self, conn: sqlite3.Connection, user_id: str) -> list[dict[str, Any]]:
        self._get_profile(conn, user_id)
        out: list[dict[str, Any]] = []
        for conversation_id, at, nonce, ciphertext in conn.execute(
            "SELECT conversation_id, at, nonce, ciphertext FROM chat_messages"
            " WHERE user_id = ? ORDER BY at, id",
            (user_id,),
        ):
            message = json.loads(
                crypto.open_sealed(
                    self._key, nonce, ciphertext, self._chat_aad(user_id, conversation_id)
                )
            )
            out.append({
                "conversation_id": conversation_id,
                "at": at,
                "sender": message["sender"],
                "text": message["text"],
            })
        return out

    def record_report(self, reporter_user_id: str, reason: str) -> None:
        if not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REPORT_REASON:
            raise Invalid("reason", f"1-{MAX_REPORT_REASON} characters")
        with self._tx() as conn:
            self._get_profile(conn, reporter_user_id)
            conn.execute(
                "INSERT INTO reports (reporter_user_id, reason, at) VALUES (?, ?, ?)",
                (reporter_user_id, reason, self._now()),
            )

    # -- privacy requests --------------------------------------------------------------

    _REQUEST_COLS = (
        "id, type, status, received_at, due_at, completed_at, reason, user_id,"
        " export_nonce, export_ciphertext"
    )

    def _request(self, row: tuple[Any, ...]) -> PrivacyRequest:
        export: dict[str, Any] | None = None
        if row[8] is not None and row[7] is not None:
            export = json.loads(
                crypto.open_sealed(self._key, row[8], row[9], self._export_aad(row[7], row[0]))
            )
        return PrivacyRequest(
            id=row[0], type=row[1], status=row[2], received_at=row[3], due_at=row[4],
            completed_at=row[5], reason=row[6], export=export,
        )

    def submit_request(self, user_id: str, type: str) -> PrivacyRequest:
        if type not in REQUEST_TYPES:
            raise Invalid("type", "must be one of " + ", ".join(REQUEST_TYPES))
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            request_id = secrets.token_urlsafe(12)
            now = self._now()
            conn.execute(
                "INSERT INTO privacy_requests (id, user_id, type, status, received_at, due_at)"
                " VALUES (?, ?, ?, 'received', ?, ?)",
                (request_id, user_id, type, now, now + REQUEST_DUE_SECONDS),
            )
            self._audit(conn, request_id, "received", type=type)
            # Made with a valid bearer token: that verifies the requester.
            conn.execute(
                "UPDATE privacy_requests SET status = 'verified' WHERE id = ?", (request_id,)
            )
            self._audit(conn, request_id, "verified", method="bearer_token")
            return self._get_request(conn, user_id, request_id)

    def _get_request(
        self, conn: sqlite3.Connection, user_id: str, request_id: object
    ) -> PrivacyRequest:
        if not isinstance(request_id, str) or not isinstance(user_id, str):
            raise NotFound("no such request")
        row = conn.execute(
            f"SELECT {self._REQUEST_COLS} FROM privacy_requests WHERE id = ? AND user_id = ?",
            (request_id, user_id),
        ).fetchone()
        if row is None:
            raise NotFound("no such request")
        return self._request(row)

    def get_request(self, user_id: str, request_id: str) -> PrivacyRequest:
        with self._tx(write=False) as conn:
            return self._get_request(conn, user_id, request_id)

    def list_requests(self, user_id: str) -> list[PrivacyRequest]:
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            rows = conn.execute(
                f"SELECT {self._REQUEST_COLS} FROM privacy_requests WHERE user_id = ?"
                " ORDER BY received_at, rowid",
                (user_id,),
            ).fetchall()
            return [self._request(row) for row in rows]

    def _export(self, conn: sqlite3.Connection, user_id: str) -> dict[str, Any]:
        profile = self._get_profile(conn, user_id)
        flagged_at = conn.execute(
            "SELECT flagged_at FROM users WHERE id = ?", (user_id,)
        ).fetchone()[0]
        consents = [
            {"kind": kind, "granted": bool(granted), "source": source, "at": at}
            for kind, granted, source, at in conn.execute(
                "SELECT kind, granted, source, at FROM consents WHERE user_id = ?"
                " ORDER BY at, id",
                (user_id,),
            )
        ]
        reports = [
            {"reason": reason, "at": at}
            for reason, at in conn.execute(
                "SELECT reason, at FROM reports WHERE reporter_user_id = ? ORDER BY at, id",
                (user_id,),
            )
        ]
        requests = [
            {"id": rid, "type": rtype, "status": status, "received_at": received,
             "due_at": due, "completed_at": completed, "reason": reason}
            for rid, rtype, status, received, due, completed, reason in conn.execute(
                "SELECT id, type, status, received_at, due_at, completed_at, reason"
                " FROM privacy_requests WHERE user_id = ? ORDER BY received_at, rowid",
                (user_id,),
            )
        ]
        return {
            "generated_at": self._now(),
            "profile": {**asdict(profile), "inactivity_flagged_at": flagged_at},
            "consents": {
                "chat_history_consent": profile.chat_history_consent,
                "opted_out": profile.opted_out,
                "history": consents,
            },
            "chat_history": self._chat_history(conn, user_id),
            "reports_filed": reports,
            "privacy_requests": requests,
        }

    def process_pending(self) -> int:
        with self._tx() as conn:
            pending = conn.execute(
                "SELECT id, user_id, type FROM privacy_requests WHERE status = 'verified'"
                " ORDER BY received_at, rowid"
            ).fetchall()
            scrub = False
            for request_id, _, rtype in pending:
                now = self._now()
                # Re-read: an earlier deletion in this batch may have unlinked it.
                user_id = conn.execute(
                    "SELECT user_id FROM privacy_requests WHERE id = ?", (request_id,)
                ).fetchone()[0]
                if user_id is None:  # the account was deleted meanwhile
                    conn.execute(
                        "UPDATE privacy_requests SET status = 'rejected', completed_at = ?,"
                        " reason = 'account deleted' WHERE id = ?",
                        (now, request_id),
                    )
                    self._audit(conn, request_id, "rejected", reason="account deleted")
                    continue
                detail: dict[str, Any] = {}
                if rtype == "access":
                    export = self._export(conn, user_id)
                    # The export holds decrypted chat: it is sealed at rest like the chat.
                    nonce, ciphertext = crypto.seal(
                        self._key, json.dumps(export).encode(),
                        self._export_aad(user_id, request_id),
                    )
                    conn.execute(
                        "UPDATE privacy_requests SET export_nonce = ?, export_ciphertext = ?"
                        " WHERE id = ?",
                        (nonce, ciphertext, request_id),
                    )
                    detail = {"chat_messages": len(export["chat_history"]),
                              "reports": len(export["reports_filed"])}
                elif rtype == "deletion":
                    conn.execute(
                        "UPDATE privacy_requests SET status = 'completed', completed_at = ?"
                        " WHERE id = ?",
                        (now, request_id),
                    )
                    self._delete_user(conn, user_id, reason="request", request_id=request_id)
                    self._audit(conn, request_id, "completed")
                    scrub = True
                    continue
                elif rtype == "opt_out":
                    self.record_opt_out(user_id, "request")
                elif rtype == "withdraw_consent":
                    detail = {"chat_messages_deleted": self._set_consent(
                        conn, user_id, False, "request")}
                # correction: the corrections are made through PATCH; this records the ask.
                conn.execute(
                    "UPDATE privacy_requests SET status = 'completed', completed_at = ?"
                    " WHERE id = ?",
                    (now, request_id),
                )
                self._audit(conn, request_id, "completed", **detail)
        if scrub:
            self._scrub_wal()
        return len(pending)

    def reject_request(self, request_id: str, reason: str) -> None:
        """Reject a received/verified request with a reason (an operator action)."""
        if not isinstance(reason, str) or not 1 <= len(reason) <= 500:
            raise Invalid("reason", "1-500 characters")
        with self._tx() as conn:
            row = conn.execute(
                "SELECT status FROM privacy_requests WHERE id = ?", (request_id,)
            ).fetchone()
            if row is None:
                raise NotFound("no such request")
            if row[0] not in ("received", "verified"):
                raise Conflict(f"request is already {row[0]}")
            conn.execute(
                "UPDATE privacy_requests SET status = 'rejected', completed_at = ?, reason = ?"
                " WHERE id = ?",
                (self._now(), reason, request_id),
            )
            self._audit(conn, request_id, "rejected")

    def audit_log(self, request_id: str | None = None) -> list[dict[str, Any]]:
        with self._tx(write=False) as conn:
            if request_id is None:
                rows = conn.execute(
                    "SELECT at, request_id, event, detail FROM audit_log ORDER BY id"
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT at, request_id, event, detail FROM audit_log"
                    " WHERE request_id = ? ORDER BY id",
                    (request_id,),
                ).fetchall()
        return [
            {"at": at, "request_id": rid, "event": event, "detail": json.loads(detail)}
            for at, rid, event, detail in rows
        ]

    # -- retention ---------------------------------------------------------------------

    def run_retention(self) -> dict[str, int]:
        with self._tx() as conn:
            now = self._now()
            chat_purged = conn.execute(
                "DELETE FROM chat_messages WHERE conversation_id IN ("
                " SELECT conversation_id FROM chat_messages GROUP BY conversation_id"
                " HAVING MAX(at) <= ?)",
                (now - CHAT_RETENTION_SECONDS,),
            ).rowcount
            flagged = conn.execute(
                "UPDATE users SET flagged_at = ? WHERE flagged_at IS NULL"
                " AND last_seen_at <= ?",
                (now, now - INACTIVE_SECONDS),
            ).rowcount
            doomed = [
                row[0] for row in conn.execute(
                    "SELECT id FROM users WHERE flagged_at IS NOT NULL AND flagged_at <= ?"
                    " AND last_seen_at <= flagged_at",
                    (now - GRACE_SECONDS,),
                ).fetchall()
            ]
            for user_id in doomed:
                self._delete_user(conn, user_id, reason="inactivity", request_id=None)
            counts = {"chat_purged": int(chat_purged), "flagged": int(flagged),
                      "deleted": len(doomed)}
            # A completed access export holds a decrypted copy of everything (chat
            # included): it is for the user to fetch, then it goes.
            exports_expired = conn.execute(
                "UPDATE privacy_requests SET export_nonce = NULL, export_ciphertext = NULL"
                " WHERE export_ciphertext IS NOT NULL AND completed_at <= ?",
                (now - EXPORT_RETENTION_SECONDS,),
            ).rowcount
            if any(counts.values()) or exports_expired:
                self._audit(conn, None, "retention", exports_expired=exports_expired,
                            **counts)
        if counts["chat_purged"] or counts["deleted"] or exports_expired:
            self._scrub_wal()
        return counts

    def flagged_users(self) -> list[str]:
        """Ids of accounts flagged for inactivity (for sending the notice)."""
        with self._tx(write=False) as conn:
            return [row[0] for row in conn.execute(
                "SELECT id FROM users WHERE flagged_at IS NOT NULL ORDER BY flagged_at")]
