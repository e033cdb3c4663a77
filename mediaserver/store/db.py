"""SQLite storage: profiles, tokens, consents, encrypted chat history, reports,
privacy requests with an append-only audit log, and retention; accounts (Argon2id
passwords, expiring sessions, sign-in throttling, TOTP two-factor, photos, blocks,
browsing, profile sharing, underage reports).

One connection per Store, opened with check_same_thread=False and guarded by a lock:
any one thread at a time may call it. WAL, synchronous=FULL (a commit that returned
survives a kill or power loss), foreign keys on, secure_delete on (deleted personal
data is overwritten in the file, not just unlinked from the b-tree).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
import math
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

import argon2
import pyotp

from mediaserver.store import crypto, shares
from mediaserver.store.exports import complete_exports
from mediaserver.store.throttle import device_id, new_device_token

DAY = 86400.0
REQUEST_DUE_SECONDS = 45 * DAY
CHAT_RETENTION_SECONDS = 183 * DAY  # 6 months after the conversation's last message
INACTIVE_SECONDS = 365 * DAY  # 12 months without being seen: flagged for notice
GRACE_SECONDS = 30 * DAY  # flagged this long and still not seen: deleted
EXPORT_RETENTION_SECONDS = 30 * DAY  # a completed access export is kept this long
LAST_SEEN_RESOLUTION = 60.0  # authenticate() rewrites last_seen_at at most this often
SCRUB_ATTEMPTS = 8  # WAL scrub: checkpoint tries while a reader holds an old snapshot
SCRUB_BACKOFF = 0.05  # seconds before the second try; doubles up to SCRUB_BACKOFF_CAP
SCRUB_BACKOFF_CAP = 2.0

REQUEST_TYPES = ("access", "correction", "deletion", "opt_out", "withdraw_consent")
OPT_OUT_SOURCES = ("request", "gpc")
MIN_AGE = 18  # default floor (--min-age); anonymous random video chat is 18+
MIN_AGE_FLOOR = 13  # the social side's floor: --min-age can never go below it
SESSION_TTL = 30 * DAY  # default --session-ttl
REAUTH_WINDOW = 300.0  # a session this young counts as a fresh sign-in (require_recent_auth)
PASSWORD_MIN = 8
PASSWORD_MAX = 256  # Argon2 takes any length; this bounds the work per request
# Sign-in throttling: this many failures are free, then each further one doubles the
# wait (1 s, 2 s, 4 s, ... up to THROTTLE_CAP); failures are forgotten a day after the
# last one. Per address the allowance is larger (many people share a NAT).
THROTTLE_FREE_ACCOUNT = 5
THROTTLE_FREE_ADDRESS = 20
THROTTLE_BASE = 1.0
THROTTLE_CAP = 900.0
THROTTLE_FORGET = DAY
TOTP_STEP = 30  # RFC 6238 default, what authenticator apps use
TOTP_ISSUER = "mediaserver"
RECOVERY_CODES = 10
PHOTO_PATH = "/api/v1/photos/"  # + a photo's public id: the URL in cards and listings
BROWSE_PAGE = 20
ACCOUNT_REPORT_REASONS = ("spam", "nudity", "harassment", "underage", "other")

USERNAME_MIN = 3
USERNAME_MAX = 32
_USERNAME = re.compile(rf"[A-Za-z0-9_.-]{{{USERNAME_MIN},{USERNAME_MAX}}}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_BIO = 500
MAX_INTERESTS = 10
MAX_INTEREST_LEN = 32
LANGUAGE_MAX = 16  # a language tag: 2-16 characters
MAX_REPORT_REASON = 1000
MAX_CHAT_TEXT = 10_000


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class NotFound(StoreError):
    """Unknown id, or not this user's (REST maps to 404)."""


class Conflict(StoreError):
    """E.g. username taken (REST: 409)."""


class Unauthorized(StoreError):
    """Wrong credentials (REST: 401). `code` is the API error code: the same one,
    invalid_credentials, for an unknown user and a wrong password."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Throttled(StoreError):
    """Too many failed sign-ins for this account or address (REST: 429)."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many failed sign-ins; try again in {self.retry_after} s")


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
    discoverable: bool = False
    has_password: bool = False
    two_factor: bool = False
    photo_id: str | None = None
    """Public id of the current photo (its URL is PHOTO_PATH + photo_id), or None."""


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
    if not 2 <= len(value) <= LANGUAGE_MAX or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise Invalid("language", "2-16 characters (a language tag such as en or pt-BR)")
    return value


def _validate_password(value: object, field: str = "password") -> str:
    if not isinstance(value, str):
        raise Invalid(field, "must be a string")
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise Invalid(field, f"{PASSWORD_MIN}-{PASSWORD_MAX} characters")
    if "\x00" in value:
        raise Invalid(field, "must not contain NUL characters")
    return value


def age_on(dob: str, today: _dt.date) -> int:
    born = _dt.date.fromisoformat(dob)
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def age_band(age: int) -> str:
    """A coarse band for listings, never the date of birth."""
    for low, high in ((13, 17), (18, 24), (25, 34), (35, 44), (45, 54), (55, 64)):
        if low <= age <= high:
            return f"{low}-{high}"
    return "65+" if age >= 65 else "under 13"


def _normal_recovery_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


def _validate_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(field, "must be true or false")
    return value


class Store:
    """Args:
    min_age: youngest age (years) accepted for a date of birth (--min-age).
    session_ttl: seconds a sign-in session token lasts (--session-ttl).
    hasher: the Argon2id password hasher (default: argon2-cffi's recommended
        parameters, RFC 9106's low-memory choice: t=3, 64 MiB, p=4).
    busy_timeout: seconds a statement waits for another connection's lock.
    """

    def __init__(
        self,
        path: str,
        data_key: bytes,
        clock: Callable[[], float] = time.time,
        *,
        min_age: int = MIN_AGE,
        session_ttl: float = SESSION_TTL,
        hasher: argon2.PasswordHasher | None = None,
        busy_timeout: float = 10.0,
    ) -> None:
        if not isinstance(data_key, bytes) or len(data_key) != crypto.KEY_BYTES:
            raise StoreError(f"data key must be {crypto.KEY_BYTES} bytes")
        if not MIN_AGE_FLOOR <= min_age <= 130:
            raise StoreError(f"min_age must be {MIN_AGE_FLOOR}..130")
        if not session_ttl > 0:
            raise StoreError("session_ttl must be positive")
        if not busy_timeout >= 0:
            raise StoreError("busy_timeout must be >= 0")
        self._key = data_key
        self._clock = clock
        self.min_age = min_age
        self.session_ttl = float(session_ttl)
        self.hasher = hasher or argon2.PasswordHasher()
        self._dummy: str | None = None
        self.password_verifications = 0
        """Argon2 verifications run by sign_in (a test checks every path runs one)."""
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
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path!r}: {exc}") from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
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
        if age < self.min_age:
            raise Invalid("date_of_birth", f"must be {self.min_age} or older")
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
            discoverable=bool(row[11]),
            has_password=bool(row[12]),
            two_factor=bool(row[13]),
            photo_id=row[14],
        )

    _PROFILE_COLS = (
        "id, username, date_of_birth, bio, interests, language, created_at, updated_at,"
        " last_seen_at, opted_out, chat_history_consent, discoverable,"
        " password_hash IS NOT NULL, totp_enabled,"
        " (SELECT public_id FROM photos WHERE photos.user_id = users.id)"
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
        discoverable: bool = False,
        password: str | None = None,
    ) -> tuple[Profile, str]:
        username = _validate_username(username)
        dob = self._validate_dob(date_of_birth)
        bio = _validate_bio(bio)
        interest_list = _validate_interests(
            list(interests) if isinstance(interests, (set, frozenset)) else interests
        )
        language = _validate_language(language)
        consent = _validate_bool("chat_history_consent", chat_history_consent)
        listed = _validate_bool("discoverable", discoverable)
        # hashed before the transaction: the store's lock is not held for Argon2's work
        password_hash = None if password is None else self.hasher.hash(
            _validate_password(password))
        user_id = secrets.token_urlsafe(12)
        token = secrets.token_urlsafe(32)
        with self._tx() as conn:
            now = self._now()
            try:
                conn.execute(
                    "INSERT INTO users (id, username, date_of_birth, bio, interests, language,"
                    " created_at, updated_at, last_seen_at, chat_history_consent,"
                    " discoverable, password_hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (user_id, username, dob, bio, json.dumps(interest_list), language,
                     now, now, now, int(consent), int(listed), password_hash),
                )
            except sqlite3.IntegrityError:
                raise Conflict("username is taken") from None
            # With a password the account has another way in: the token is a session
            # like a sign-in's (it expires, a password change ends it). Without one it
            # is the only key, and does not expire.
            conn.execute(
                "INSERT INTO tokens (token_hash, user_id, created_at, kind, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (hash_token(token), user_id, now,
                 "profile" if password_hash is None else "session",
                 None if password_hash is None else now + self.session_ttl),
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
                "SELECT t.user_id, u.last_seen_at, u.flagged_at, t.expires_at FROM tokens t"
                " JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
                (hash_token(token),),
            ).fetchone()
            if row is None:
                raise NotFound("unknown token")
            user_id, last_seen, flagged_at, expires_at = row
            now = self._now()
            if expires_at is not None and expires_at <= now:
                raise NotFound("expired token")  # retention deletes the row
            # Seen again: clears an inactivity flag. last_seen_at is only rewritten once
            # it is LAST_SEEN_RESOLUTION old, so a burst of requests is not a burst of
            # fsynced writes (retention works in days).
            if flagged_at is not None or now - last_seen >= LAST_SEEN_RESOLUTION:
                conn.execute(
                    "UPDATE users SET last_seen_at = ?, flagged_at = NULL WHERE id = ?",
                    (now, user_id),
                )
            return self._get_profile(conn, user_id)

    def age(self, profile: Profile) -> int:
        """The profile's age in whole years today (by the store's clock): e.g. for the
        18+ gate of random video chat when --min-age lets younger accounts in."""
        return age_on(profile.date_of_birth, self._today())

    def get_profile(self, user_id: str) -> Profile:
        with self._tx(write=False) as conn:
            return self._get_profile(conn, user_id)

    _UPDATABLE = (
        "username", "bio", "interests", "language", "date_of_birth", "chat_history_consent",
        "discoverable",
    )

    _PERSONAL = ("username", "bio", "interests", "language", "date_of_birth")
    """Fields whose old value is personal data: overwriting one scrubs the WAL."""

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
        if "discoverable" in fields:
            values["discoverable"] = int(_validate_bool("discoverable", fields["discoverable"]))
        consent: bool | None = None
        if "chat_history_consent" in fields:
            consent = _validate_bool("chat_history_consent", fields["chat_history_consent"])
        with self._tx() as conn:
            before = self._get_profile(conn, user_id)
            if before.discoverable and values.get("discoverable") == 0:
                # leaving the listing: photo URLs handed out (listed or shared) stop working
                conn.execute("UPDATE photos SET public_id = ? WHERE user_id = ?",
                             (secrets.token_urlsafe(16), user_id))
                shares.revoke_all(conn, user_id)
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
            chat_deleted = 0
            if consent is not None:
                chat_deleted = self._set_consent(conn, user_id, consent, "profile")
            after = self._get_profile(conn, user_id)
        if chat_deleted or any(name in values for name in self._PERSONAL):
            self._scrub_wal()  # the old values' (or deleted chat's) page images
        return after

    def delete_user(self, user_id: str) -> None:
        with self._tx() as conn:
            self._delete_user(conn, user_id, reason="profile_delete", request_id=None)
        self._scrub_wal()

    def _delete_user(
        self, conn: sqlite3.Connection, user_id: str, reason: str, request_id: str | None
    ) -> None:
        profile = self._get_profile(conn, user_id)
        conn.execute("DELETE FROM login_throttle WHERE key = ?",
                     (self._throttle_key("user", profile.username),))
        counts = {
            "photos": conn.execute("DELETE FROM photos WHERE user_id = ?", (user_id,)).rowcount,
            "blocks": conn.execute(
                "DELETE FROM blocks WHERE blocker_id = ? OR blocked_id = ?",
                (user_id, user_id)).rowcount,
            "recovery_codes": conn.execute(
                "DELETE FROM recovery_codes WHERE user_id = ?", (user_id,)).rowcount,
            "account_reports": conn.execute(
                "DELETE FROM account_reports WHERE reported_user_id = ?", (user_id,)).rowcount,
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

    def _scrub_wal(self) -> bool:
        """After a deletion or a correction, old page images holding the old data may
        still sit in the WAL: checkpoint and truncate it. A reader still on an older
        snapshot makes the checkpoint report busy (after the busy timeout): retried,
        SCRUB_ATTEMPTS times at most, the lock let go in between. Returns whether the
        WAL was truncated."""
        for attempt in range(SCRUB_ATTEMPTS):
            if attempt:
                time.sleep(min(SCRUB_BACKOFF_CAP, SCRUB_BACKOFF * 2 ** (attempt - 1)))
            with self._lock:
                if self._closed:
                    return False
                try:
                    busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                except sqlite3.Error:
                    continue
            if not busy:
                return True
        return False

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
            deleted = self._set_consent(conn, user_id, granted, "profile")
        if deleted:
            self._scrub_wal()

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
        """The user's requests, without exports (each is big and sealed: decrypting
        every one for a listing would be a cheap way to make the server work)."""
        listing_cols = self._REQUEST_COLS.replace("export_nonce, export_ciphertext", "NULL, NULL")
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            rows = conn.execute(
                f"SELECT {listing_cols} FROM privacy_requests WHERE user_id = ?"
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
        reports += [
            {"reason": reason, "at": at}
            for reason, at in conn.execute(
                "SELECT reason, at FROM account_reports WHERE reporter_user_id = ?"
                " ORDER BY at, id",
                (user_id,),
            )
        ]
        return {
            "generated_at": self._now(),
            "profile": {**asdict(profile), "inactivity_flagged_at": flagged_at},
            "photo": self._photo_export(conn, user_id),
            "blocked_handles": self._blocked_handles(conn, user_id),
            "sessions": [
                {"created_at": created, "expires_at": expires}
                for created, expires in conn.execute(
                    "SELECT created_at, expires_at FROM tokens WHERE user_id = ?"
                    " ORDER BY created_at",
                    (user_id,),
                )
            ],
            "two_factor": {
                "enabled": profile.two_factor,
                "recovery_codes_left": conn.execute(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL",
                    (user_id,)).fetchone()[0],
            },
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
        """Complete the verified requests, each user's in the order received. Returns
        how many were completed or rejected."""
        total = 0
        while True:  # an access request first at its user's turn is built outside the lock
            done = complete_exports(self) + self._process_in_order()
            total += done
            if not done:
                return total

    def _process_in_order(self) -> int:
        """The verified requests in order, under the lock; a user's run stops at an
        access request (complete_exports does it, outside the lock)."""
        waiting: set[str] = set()
        skipped = 0
        with self._tx() as conn:
            pending = conn.execute(
                "SELECT id, user_id, type FROM privacy_requests WHERE status = 'verified'"
                " ORDER BY received_at, rowid"
            ).fetchall()
            scrub = False
            for request_id, _, rtype in pending:
                # Re-read: an earlier deletion in this batch may have unlinked it.
                user_id = conn.execute(
                    "SELECT user_id FROM privacy_requests WHERE id = ?", (request_id,)
                ).fetchone()[0]
                if user_id is not None and (
                    user_id in waiting or (rtype == "access" and self.path != ":memory:")
                ):
                    waiting.add(user_id)
                    skipped += 1
                    continue
                now = self._now()
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
                    scrub = scrub or bool(detail["chat_messages_deleted"])
                # correction: the corrections are made through PATCH; this records the ask.
                conn.execute(
                    "UPDATE privacy_requests SET status = 'completed', completed_at = ?"
                    " WHERE id = ?",
                    (now, request_id),
                )
                self._audit(conn, request_id, "completed", **detail)
        if scrub:
            self._scrub_wal()
        return len(pending) - skipped

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
            # expired sessions and forgotten sign-in failures are dead weight
            conn.execute("DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= ?",
                         (now,))
            shares.purge_expired(conn, now)
            conn.execute("DELETE FROM login_throttle WHERE last_failure_at <= ?",
                         (now - THROTTLE_FORGET - THROTTLE_CAP,))
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

    # -- passwords and sessions --------------------------------------------------------

    def _throttle_key(self, kind: str, value: str) -> str:
        # keyed so the table holds neither usernames people typed nor addresses
        return hmac.new(
            self._key, f"throttle\x00{kind}\x00{value.lower()}".encode(), hashlib.sha256
        ).hexdigest()

    def _throttle_wait(self, conn: sqlite3.Connection, key: str, free: int, now: float) -> float:
        """Seconds until `key` may try again (0: now)."""
        row = conn.execute(
            "SELECT failures, last_failure_at FROM login_throttle WHERE key = ?", (key,)
        ).fetchone()
        if row is None or now - row[1] >= THROTTLE_FORGET:
            return 0.0
        failures, last = int(row[0]), float(row[1])
        if failures < free:
            return 0.0
        delay = min(THROTTLE_CAP, THROTTLE_BASE * 2.0 ** (failures - free))
        return max(0.0, last + delay - now)

    def _throttle_add(self, conn: sqlite3.Connection, key: str, delta: int, now: float) -> None:
        row = conn.execute(
            "SELECT failures, last_failure_at FROM login_throttle WHERE key = ?", (key,)
        ).fetchone()
        failures = 0 if row is None or now - row[1] >= THROTTLE_FORGET else int(row[0])
        failures = max(0, failures + delta)
        if failures == 0:
            conn.execute("DELETE FROM login_throttle WHERE key = ?", (key,))
        elif delta > 0:
            conn.execute(
                "INSERT INTO login_throttle (key, failures, last_failure_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET failures = excluded.failures,"
                " last_failure_at = excluded.last_failure_at",
                (key, failures, now),
            )
        else:  # giving back a reservation: the count drops, the clock does not restart
            conn.execute("UPDATE login_throttle SET failures = ? WHERE key = ?", (failures, key))

    def _reserve_attempt(
        self, conn: sqlite3.Connection, keys: list[tuple[str, int]], unchecked: tuple[str, ...] = ()
    ) -> None:
        """Refuse while any key is locked; else count this attempt as a failure up
        front, so parallel guesses cannot all slip in before the first one fails.
        Success gives the reservation back. `unchecked` keys are counted, not checked."""
        now = self._now()
        wait = max(self._throttle_wait(conn, key, free, now) for key, free in keys)
        if wait > 0:
            raise Throttled(wait)
        for key in [k for k, _ in keys] + list(unchecked):
            self._throttle_add(conn, key, +1, now)

    def _dummy_hash(self) -> str:
        # An unknown user is checked against this: the same Argon2 work as a wrong
        # password, so the answer takes as long.
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def _verify_password(self, stored: str | None, password: str) -> bool:
        self.password_verifications += 1
        try:
            return bool(self.hasher.verify(stored or self._dummy_hash(), password)) and (
                stored is not None
            )
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def sign_in(
        self, username: str, password: str, otp: str | None = None, address: str = "",
        device: str | None = None,
    ) -> tuple[str, float, Profile]:
        """A new session token for username + password (+ a TOTP or recovery code when
        two-factor is on). Returns (token, expires_at, profile).

        The account's limit binds unknown clients only (mediaserver.store.throttle):
        a `device` token from an earlier sign-in of this account, or a valid TOTP
        code, gets past it; the address limit binds everyone.

        Raises:
            Throttled: too many recent failures for this account or address.
            Unauthorized: invalid_credentials (unknown user and wrong password alike),
                otp_required, invalid_otp.
        """
        if not isinstance(username, str) or not isinstance(password, str):
            raise Unauthorized("invalid_credentials", "wrong username or password")
        account = self._throttle_key("user", username)
        keys = [(self._throttle_key("addr", address), THROTTLE_FREE_ADDRESS)]
        unchecked: tuple[str, ...] = ()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id, password_hash, totp_enabled FROM users WHERE username = ?",
                (username,),
            ).fetchone()
            known = device_id(self._key, row[0], device) if row is not None else None
            if known is not None:  # a known device: its own bucket, not the account's
                keys.append((self._throttle_key("device", known), THROTTLE_FREE_ACCOUNT))
            elif row is not None and row[2] and self._totp_matches(conn, row[0], otp):
                unchecked = (account,)  # a valid code passes the lock, still counted
            else:
                keys.append((account, THROTTLE_FREE_ACCOUNT))
            self._reserve_attempt(conn, keys, unchecked)
        stored: str | None = row[1] if row is not None else None
        # exactly one Argon2 verification on every path, outside the store's lock
        if not self._verify_password(stored, password) or row is None:
            raise Unauthorized("invalid_credentials", "wrong username or password")
        user_id: str = row[0]
        new_hash = self.hasher.hash(password) if self.hasher.check_needs_rehash(stored or "") else None
        token = secrets.token_urlsafe(32)
        failure: Unauthorized | None = None
        with self._tx() as conn:
            now = self._now()
            totp = conn.execute(
                "SELECT totp_enabled FROM users WHERE id = ?", (user_id,)
            ).fetchone()
            if totp is None:  # deleted meanwhile
                failure = Unauthorized("invalid_credentials", "wrong username or password")
            elif totp[0] and otp is None:
                # the password was right: not a failure, but no session without the code
                for key in [k for k, _ in keys] + list(unchecked):
                    self._throttle_add(conn, key, -1, now)
                failure = Unauthorized("otp_required", "two-factor is on: send otp")
            elif totp[0] and not self._second_factor(conn, user_id, otp or ""):
                failure = Unauthorized("invalid_otp", "wrong, expired or already used code")
            else:
                # the owner is in: the account's and this device's counts start over
                for key in [account] + [k for k, _ in keys[1:]]:
                    conn.execute("DELETE FROM login_throttle WHERE key = ?", (key,))
                self._throttle_add(conn, keys[0][0], -1, now)  # the address's reservation
                if new_hash is not None and stored is not None:
                    # parameters changed since this hash was made: upgrade it now that
                    # the password is at hand (only if it was not changed meanwhile)
                    conn.execute(
                        "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
                        (new_hash, user_id, stored),
                    )
                expires_at = now + self.session_ttl
                conn.execute(
                    "INSERT INTO tokens (token_hash, user_id, created_at, kind, expires_at)"
                    " VALUES (?, ?, ?, 'session', ?)",
                    (hash_token(token), user_id, now, expires_at),
                )
                conn.execute(
                    "UPDATE users SET last_seen_at = ?, flagged_at = NULL WHERE id = ?",
                    (now, user_id),
                )
                profile = self._get_profile(conn, user_id)
        if failure is not None:
            raise failure
        return token, expires_at, profile

    def sign_out(self, token: str) -> None:
        """Delete this token. The creation token of an account without a password is
        its only way in, so that one is kept (Conflict)."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT t.kind, u.password_hash IS NOT NULL FROM tokens t"
                " JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
                (hash_token(token),),
            ).fetchone()
            if row is None:
                raise NotFound("unknown token")
            if row[0] == "profile" and not row[1]:
                raise Conflict("this token is the account's only way in: set a password first")
            conn.execute("DELETE FROM tokens WHERE token_hash = ?", (hash_token(token),))

    def set_password(
        self, user_id: str, password: str, current_password: str | None = None,
        keep_token: str | None = None,
    ) -> None:
        """Set or change the password. Changing one needs the current password. Every
        other token then ends, the creation token too; `keep_token` stays, as a session
        (expiring after the session TTL) if it was the creation token."""
        new = _validate_password(password)
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            stored = conn.execute(
                "SELECT password_hash FROM users WHERE id = ?", (user_id,)
            ).fetchone()[0]
        if stored is not None:
            if current_password is None:
                raise Invalid("current_password", "required to change the password")
            if not isinstance(current_password, str) or not self._verify_password(
                stored, current_password
            ):
                raise Invalid("current_password", "wrong password")
        new_hash = self.hasher.hash(new)
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?"
                " AND password_hash IS ?",
                (new_hash, self._now(), user_id, stored),
            ).rowcount
            if not changed:
                raise Conflict("the password was changed meanwhile; try again")
            kept = hash_token(keep_token) if keep_token else None
            conn.execute("DELETE FROM tokens WHERE user_id = ? AND token_hash IS NOT ?",
                         (user_id, kept))
            conn.execute(
                "UPDATE tokens SET kind = 'session', expires_at = ? WHERE token_hash IS ?"
                " AND user_id = ? AND kind = 'profile'",
                (self._now() + self.session_ttl, kept, user_id),
            )

    def require_recent_auth(
        self, user_id: str, token: str, current_password: object = None
    ) -> None:
        """For a change that could lock the owner out (two-factor, the username, the
        date of birth): the account's password, or a session younger than
        REAUTH_WINDOW. An account without a password passes: its creation token is its
        only key. Wrong passwords count towards the account's sign-in throttle.

        Raises:
            Invalid: current_password missing (and the session not fresh) or wrong.
            Throttled: too many wrong passwords lately.
        """
        with self._tx(write=False) as conn:
            profile = self._get_profile(conn, user_id)
            stored = conn.execute(
                "SELECT password_hash FROM users WHERE id = ?", (user_id,)).fetchone()[0]
            session = conn.execute(
                "SELECT created_at FROM tokens WHERE token_hash = ? AND user_id = ?"
                " AND kind = 'session'", (hash_token(token), user_id)).fetchone()
        if stored is None:
            return
        if current_password is None:
            if session is not None and self._now() - session[0] < REAUTH_WINDOW:
                return
            raise Invalid("current_password", "required: your password (or sign in again: "
                          f"a session younger than {int(REAUTH_WINDOW // 60)} minutes)")
        key = self._throttle_key("user", profile.username)
        with self._tx() as conn:
            self._reserve_attempt(conn, [(key, THROTTLE_FREE_ACCOUNT)])
        ok = isinstance(current_password, str) and self._verify_password(
            stored, current_password)
        if not ok:
            raise Invalid("current_password", "wrong password")
        with self._tx() as conn:
            self._throttle_add(conn, key, -1, self._now())

    # -- two-factor (TOTP, RFC 6238) ------------------------------------------------------

    @staticmethod
    def _totp_aad(user_id: str) -> bytes:
        return b"totp\x00" + user_id.encode()

    def _recovery_hash(self, user_id: str, code: str) -> str:
        # 80 random bits per code: a fast hash is enough (like the tokens)
        return hashlib.sha256(
            f"recovery\x00{user_id}\x00{_normal_recovery_code(code)}".encode()).hexdigest()

    def _match_totp(self, secret: str, code: str, last_step: int) -> int | None:
        """The time step `code` is valid for (now, or one step either side for clock
        drift), if it is later than the last code used (no replay)."""
        if len(code) != 6 or not (code.isascii() and code.isdigit()):
            return None
        totp = pyotp.TOTP(secret, interval=TOTP_STEP)
        now_step = int(self._now()) // TOTP_STEP
        for step in (now_step - 1, now_step, now_step + 1):
            if step > last_step and hmac.compare_digest(totp.generate_otp(step), code):
                return step
        return None

    def _totp_matches(self, conn: sqlite3.Connection, user_id: str, code: object) -> bool:
        """Whether `code` is a valid TOTP code now (not used up: sign-in does that)."""
        row = conn.execute(
            "SELECT totp_nonce, totp_ciphertext, totp_last_step FROM users WHERE id = ?",
            (user_id,),
        ).fetchone()
        if row is None or row[0] is None or not isinstance(code, str):
            return False
        secret = crypto.open_sealed(self._key, row[0], row[1], self._totp_aad(user_id)).decode()
        return self._match_totp(secret, code, int(row[2])) is not None

    def device_token(self, user_id: str) -> str:
        """A known-device token for a client that just signed in to `user_id`."""
        return new_device_token(self._key, user_id)

    def _second_factor(self, conn: sqlite3.Connection, user_id: str, code: str) -> bool:
        """Check (and use up) a TOTP code or a recovery code for an enabled account."""
        row = conn.execute(
            "SELECT totp_nonce, totp_ciphertext, totp_last_step FROM users WHERE id = ?",
            (user_id,),
        ).fetchone()
        if row is None or row[0] is None or not isinstance(code, str) or len(code) > 64:
            return False
        secret = crypto.open_sealed(self._key, row[0], row[1], self._totp_aad(user_id)).decode()
        step = self._match_totp(secret, code, int(row[2]))
        if step is not None:
            conn.execute("UPDATE users SET totp_last_step = ? WHERE id = ?", (step, user_id))
            return True
        used = conn.execute(
            "UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ?"
            " AND used_at IS NULL",
            (self._now(), user_id, self._recovery_hash(user_id, code)),
        ).rowcount
        return bool(used)

    def totp_enrol(self, user_id: str) -> tuple[str, str]:
        """A new (pending) TOTP secret: (secret, otpauth:// URI). Two-factor turns on
        only with totp_confirm."""
        secret = pyotp.random_base32()  # 160 bits, RFC 4226's recommended length
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            if profile.two_factor:
                raise Conflict("two-factor is already on; turn it off first")
            nonce, ciphertext = crypto.seal(self._key, secret.encode(), self._totp_aad(user_id))
            conn.execute(
                "UPDATE users SET totp_nonce = ?, totp_ciphertext = ?, totp_last_step = 0"
                " WHERE id = ?",
                (nonce, ciphertext, user_id),
            )
        uri = pyotp.TOTP(secret, interval=TOTP_STEP).provisioning_uri(
            name=profile.username, issuer_name=TOTP_ISSUER)
        return secret, uri

    def totp_confirm(self, user_id: str, code: str) -> list[str]:
        """Turn two-factor on with the first valid code; returns the ten recovery codes
        (shown once, stored hashed)."""
        codes = []
        for _ in range(RECOVERY_CODES):
            raw = base64.b32encode(secrets.token_bytes(10)).decode()
            codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            row = conn.execute(
                "SELECT totp_nonce, totp_ciphertext, totp_last_step FROM users WHERE id = ?",
                (user_id,),
            ).fetchone()
            if profile.two_factor:
                raise Conflict("two-factor is already on")
            if row[0] is None:
                raise Conflict("enrol first (POST .../totp)")
            secret = crypto.open_sealed(self._key, row[0], row[1], self._totp_aad(user_id))
            step = self._match_totp(secret.decode(), code, int(row[2]))
            if step is None:
                raise Invalid("code", "wrong or expired code")
            conn.execute(
                "UPDATE users SET totp_enabled = 1, totp_last_step = ? WHERE id = ?",
                (step, user_id),
            )
            conn.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
            conn.executemany(
                "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)",
                [(user_id, self._recovery_hash(user_id, c)) for c in codes],
            )
        return codes

    def totp_disable(self, user_id: str, code: str) -> None:
        """Turn two-factor off: needs a valid TOTP or recovery code."""
        ok = False
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            if not profile.two_factor:
                raise Conflict("two-factor is not on")
            key = self._throttle_key("user", profile.username)
            # wrong codes count towards the account's sign-in throttle
            self._reserve_attempt(conn, [(key, THROTTLE_FREE_ACCOUNT)])
            ok = self._second_factor(conn, user_id, code)
            if ok:
                self._throttle_add(conn, key, -1, self._now())
                conn.execute(
                    "UPDATE users SET totp_enabled = 0, totp_nonce = NULL,"
                    " totp_ciphertext = NULL, totp_last_step = 0 WHERE id = ?",
                    (user_id,),
                )
                conn.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
        if not ok:
            raise Invalid("code", "wrong, expired or already used code")

    # -- photos ----------------------------------------------------------------------

    @staticmethod
    def _photo_aad(user_id: str) -> bytes:
        return b"photo\x00" + user_id.encode()

    def set_photo(self, user_id: str, jpeg: bytes, width: int, height: int) -> str:
        """Store an already cleaned photo (mediaserver.store.photos), sealed with the
        data key; returns its new listing id (a new one per upload: the old one and
        every shared card's URL stop working)."""
        public_id = secrets.token_urlsafe(16)
        nonce, ciphertext = crypto.seal(self._key, jpeg, self._photo_aad(user_id))
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            conn.execute(
                "INSERT INTO photos (user_id, public_id, width, height, updated_at, nonce,"
                " ciphertext) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET"
                " public_id = excluded.public_id, width = excluded.width,"
                " height = excluded.height, updated_at = excluded.updated_at,"
                " nonce = excluded.nonce, ciphertext = excluded.ciphertext",
                (user_id, public_id, width, height, self._now(), nonce, ciphertext),
            )
            shares.revoke_all(conn, user_id)
        self._scrub_wal()  # the old photo's pages
        return public_id

    def _open_photo(self, user_id: str, nonce: bytes, ciphertext: bytes) -> bytes:
        return crypto.open_sealed(self._key, nonce, ciphertext, self._photo_aad(user_id))

    def get_photo(self, user_id: str) -> bytes:
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            row = conn.execute(
                "SELECT nonce, ciphertext FROM photos WHERE user_id = ?", (user_id,)
            ).fetchone()
        if row is None:
            raise NotFound("no photo")
        return self._open_photo(user_id, row[0], row[1])

    def public_photo(self, public_id: str) -> bytes:
        """A photo by the id its owner's listing or one shared card carried (see
        store/shares.py for when each stops working)."""
        if not isinstance(public_id, str) or not 1 <= len(public_id) <= 64:
            raise NotFound("no photo")
        with self._tx(write=False) as conn:
            row = shares.photo_by_capability(conn, public_id, self._now())
        if row is None:
            raise NotFound("no photo")
        return self._open_photo(*row)

    def photo_shares(self, user_id: str) -> list[dict[str, Any]]:
        """The user's live card shares: id (its photo URL is PHOTO_PATH + id),
        created_at, expires_at."""
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            return shares.live_shares(conn, user_id, self._now())

    def withdraw_photo_share(self, user_id: str, share_id: str) -> None:
        """That shared card's photo URL stops working now."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            if not shares.withdraw(conn, user_id, share_id):
                raise NotFound("no such share")

    def delete_photo(self, user_id: str) -> None:
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            if not conn.execute("DELETE FROM photos WHERE user_id = ?", (user_id,)).rowcount:
                raise NotFound("no photo")
            shares.revoke_all(conn, user_id)
        self._scrub_wal()

    def _photo_export(self, conn: sqlite3.Connection, user_id: str) -> dict[str, Any] | None:
        row = conn.execute(
            "SELECT width, height, updated_at, nonce, ciphertext FROM photos WHERE user_id = ?",
            (user_id,),
        ).fetchone()
        if row is None:
            return None
        return {
            "content_type": "image/jpeg", "width": row[0], "height": row[1],
            "updated_at": row[2],
            "data_base64": base64.b64encode(self._open_photo(user_id, row[3], row[4])).decode(),
        }

    # -- blocks, browsing, cards, reports -----------------------------------------------

    def _user_by_handle(
        self, conn: sqlite3.Connection, handle: object, field: str, viewer: Profile
    ) -> str:
        """The id behind a handle the viewer may know of: one across the age line is
        answered like an unknown one (adults and minors never learn of each other)."""
        if not isinstance(handle, str) or not _USERNAME.fullmatch(handle):
            raise Invalid(field, "3-32 characters: letters, digits, _ . -")
        side, params = shares.same_side("date_of_birth", viewer.date_of_birth, self._today())
        row = conn.execute(f"SELECT id FROM users WHERE username = ? AND {side}",
                           (handle, *params)).fetchone()
        if row is None:
            raise NotFound("no such handle")
        return str(row[0])

    def block(self, user_id: str, handle: str) -> None:
        """An account-level block: neither sees the other in listings, in either
        direction. Blocking again is a no-op."""
        with self._tx() as conn:
            me = self._get_profile(conn, user_id)
            other = self._user_by_handle(conn, handle, "handle", me)
            if other == user_id:
                raise Invalid("handle", "you cannot block yourself")
            conn.execute(
                "INSERT OR IGNORE INTO blocks (blocker_id, blocked_id, at) VALUES (?, ?, ?)",
                (user_id, other, self._now()),
            )

    def unblock(self, user_id: str, handle: str) -> None:
        with self._tx() as conn:
            me = self._get_profile(conn, user_id)
            other = self._user_by_handle(conn, handle, "handle", me)
            if not conn.execute(
                "DELETE FROM blocks WHERE blocker_id = ? AND blocked_id = ?", (user_id, other)
            ).rowcount:
                raise NotFound("not blocked")

    def _blocked_handles(self, conn: sqlite3.Connection, user_id: str) -> list[str]:
        return [row[0] for row in conn.execute(
            "SELECT u.username FROM blocks b JOIN users u ON u.id = b.blocked_id"
            " WHERE b.blocker_id = ? ORDER BY b.at, u.username", (user_id,))]

    def blocked_handles(self, user_id: str) -> list[str]:
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            return self._blocked_handles(conn, user_id)

    def _card(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """The public card: handle, photo URL, bio, interests. Nothing else."""
        return {
            "handle": row[0],
            "photo_url": None if row[1] is None else PHOTO_PATH + row[1],
            "bio": row[2],
            "interests": list(json.loads(row[3])),
        }

    def browse(
        self, viewer_id: str, interest: str | None = None, language: str | None = None,
        cursor: str | None = None, limit: int = BROWSE_PAGE,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Discoverable profiles for the viewer, most shared interests first (then by
        id, for stable pages), without anyone blocked either way or across the age
        line. Returns (cards, the cursor of the next page or None)."""
        if interest is not None:
            wanted = _validate_interests([interest])
            interest = wanted[0] if wanted else None
        if language is not None:
            language = _validate_language(language)
        after: tuple[int, str] | None = None
        if cursor is not None:
            try:
                shared_text, _, after_id = base64.urlsafe_b64decode(
                    cursor.encode("ascii") + b"=" * (-len(cursor) % 4)).decode().partition(":")
                after = (int(shared_text), after_id)
                if not after_id or after[0] < 0:
                    raise ValueError
            except (ValueError, UnicodeError):
                raise Invalid("cursor", "not a cursor this server gave out") from None
        with self._tx(write=False) as conn:
            viewer = self._get_profile(conn, viewer_id)
            today = self._today()
            params: list[Any] = [json.dumps(viewer.interests), viewer_id, viewer_id, viewer_id]
            # adults and minors (--min-age below 18) never list each other
            side, side_params = shares.same_side(
                "u.date_of_birth", viewer.date_of_birth, today)
            where = f" AND {side}"
            params += side_params
            if interest is not None:
                where += " AND EXISTS (SELECT 1 FROM json_each(u.interests) WHERE value = ?)"
                params.append(interest)
            if language is not None:
                where += " AND u.language = ? COLLATE NOCASE"
                params.append(language)
            page = ""
            if after is not None:
                page = " WHERE shared < ? OR (shared = ? AND id > ?)"
                params += [after[0], after[0], after[1]]
            params.append(limit + 1)
            rows = conn.execute(
                "SELECT * FROM (SELECT u.username, p.public_id, u.bio, u.interests,"
                " u.date_of_birth, u.id,"
                " (SELECT COUNT(*) FROM json_each(u.interests) j"
                "  WHERE j.value IN (SELECT value FROM json_each(?))) AS shared"
                " FROM users u LEFT JOIN photos p ON p.user_id = u.id"
                " WHERE u.discoverable = 1 AND u.id != ?"
                " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE (b.blocker_id = ?"
                "  AND b.blocked_id = u.id) OR (b.blocker_id = u.id AND b.blocked_id = ?))"
                f"{where}){page} ORDER BY shared DESC, id LIMIT ?",
                params,
            ).fetchall()
        cards = [
            {**self._card(row), "age_band": age_band(age_on(row[4], today))}
            for row in rows[:limit]
        ]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = base64.urlsafe_b64encode(
                f"{last[6]}:{last[5]}".encode()).decode().rstrip("=")
        return cards, next_cursor

    def share_profile_card(self, user_id: str) -> dict[str, Any]:
        """The user's public card for the stranger they are talking to, and the record
        of that consent. Its photo URL is a capability of this share alone (see
        store/shares.py), never the listing's."""
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            now = self._now()
            conn.execute(
                "INSERT INTO consents (user_id, kind, granted, source, at)"
                " VALUES (?, 'share_profile', 1, 'signalling', ?)",
                (user_id, now),
            )
            share_id = (None if profile.photo_id is None
                        else shares.new_share(conn, user_id, now))
            return self._card((profile.username, share_id, profile.bio,
                               json.dumps(profile.interests)))

    def report_account(self, reporter_id: str, handle: str, reason: str) -> str:
        """Report an account by its handle (seen in a listing or a shared card);
        returns the report id an operator acts on."""
        if reason not in ACCOUNT_REPORT_REASONS:
            raise Invalid("reason", "must be one of " + ", ".join(ACCOUNT_REPORT_REASONS))
        report_id = secrets.token_urlsafe(12)
        with self._tx() as conn:
            reporter = self._get_profile(conn, reporter_id)
            reported = self._user_by_handle(conn, handle, "handle", reporter)
            if reported == reporter_id:
                raise Invalid("handle", "you cannot report yourself")
            conn.execute(
                "INSERT INTO account_reports (id, reported_user_id, reporter_user_id, reason,"
                " at) VALUES (?, ?, ?, ?, ?)",
                (report_id, reported, reporter_id, reason, self._now()),
            )
        return report_id

    def underage_reports(self) -> list[dict[str, Any]]:
        """Open `underage` reports, oldest first, for an operator to review."""
        with self._tx(write=False) as conn:
            return [
                {"report_id": rid, "reported_user_id": uid, "at": at}
                for rid, uid, at in conn.execute(
                    "SELECT id, reported_user_id, at FROM account_reports"
                    " WHERE reason = 'underage' ORDER BY at, id")
            ]

    def confirm_underage(self, report_id: str) -> None:
        """An operator confirmed an `underage` report: the reported account and all its
        data go at once; the audit log keeps an entry without personal data."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT reported_user_id, reason FROM account_reports WHERE id = ?",
                (report_id,),
            ).fetchone()
            if row is None:
                raise NotFound("no such report")
            if row[1] != "underage":
                raise Invalid("report", f"report is for {row[1]!r}, not underage")
            self._delete_user(conn, row[0], reason="underage_confirmed", request_id=None)
        self._scrub_wal()
