"""The store's plumbing, shared by every domain: the one connection and its lock,
the transaction helper, the clock, the audit log, and what several domains touch
(a profile row, a consent change, deleting an account, scrubbing the WAL).

One connection per Store, opened with check_same_thread=False and guarded by a lock:
any one thread at a time may call it. WAL, synchronous=FULL (a commit that returned
survives a kill or power loss), foreign keys on, secure_delete on (deleted personal
data is overwritten in the file, not just unlinked from the b-tree).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import argon2

from mediaserver.store import crypto
from mediaserver.store.sealed_fields import open_field
from mediaserver.store.errors import NotFound, StoreError
from mediaserver.store.limits import MIN_AGE, MIN_AGE_FLOOR, SESSION_TTL
from mediaserver.store.schema import migrate

SCRUB_ATTEMPTS = 8  # WAL scrub: checkpoint tries while a reader holds an old snapshot
SCRUB_BACKOFF = 0.05  # seconds before the second try; doubles up to SCRUB_BACKOFF_CAP
SCRUB_BACKOFF_CAP = 2.0
PHOTO_PATH = "/api/v1/photos/"  # + a photo's public id: the URL in cards and listings


@dataclass(frozen=True)
class Profile:
    """A profile as the API shows it to its owner (never the password or TOTP secret)."""

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
    links: tuple[str, ...] = ()
    location: str | None = None
    show_links: bool = False
    """Whether the public card shows `links` (default off)."""
    show_location: bool = False
    """Whether the public card shows `location` (default off)."""
    restricted: bool = False
    """A restriction request stands: the data is only stored (store/controls.py)."""
    objections: tuple[str, ...] = ()
    """Purposes the owner objected to (store/controls.py), sorted."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class StoreCore:
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
            self.migrations_applied = migrate(self._conn, data_key)
            if self.migrations_applied:
                # a step may have rewritten personal data: no old page image stays
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"cannot open database {path!r}: {exc}") from None
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    # -- plumbing -----------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close; closing again is a no-op."""
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

    def _open(self, user_id: str, field: str, sealed: bytes) -> Any:
        """A personal field of a users row, decrypted (store/sealed_fields.py)."""
        return open_field(self._key, user_id, field, sealed)

    def _profile(self, row: sqlite3.Row | tuple[Any, ...]) -> Profile:
        user_id = row[0]
        return Profile(
            id=user_id,
            username=self._open(user_id, "username", row[1]),
            date_of_birth=self._open(user_id, "date_of_birth", row[2]),
            bio=self._open(user_id, "bio", row[3]),
            interests=list(self._open(user_id, "interests", row[4])),
            language=self._open(user_id, "language", row[5]),
            created_at=row[6],
            updated_at=row[7],
            last_seen_at=row[8],
            opted_out=bool(row[9]),
            chat_history_consent=bool(row[10]),
            discoverable=bool(row[11]),
            has_password=bool(row[12]),
            two_factor=bool(row[13]),
            photo_id=row[14],
            links=tuple(() if row[15] is None else self._open(user_id, "links", row[15])),
            location=None if row[16] is None else self._open(user_id, "location", row[16]),
            show_links=bool(row[17]),
            show_location=bool(row[18]),
            restricted=bool(row[19]),
            objections=tuple(sorted(row[20].split(","))) if row[20] else (),
        )

    _PROFILE_COLS = (
        "id, username_sealed, date_of_birth_sealed, bio_sealed, interests_sealed,"
        " language_sealed, created_at, updated_at,"
        " last_seen_at, opted_out, chat_history_consent, discoverable,"
        " password_hash IS NOT NULL, totp_enabled,"
        " (SELECT public_id FROM photos WHERE photos.user_id = users.id),"
        # links and location: NULL in rows older than their columns (no value yet)
        " links_sealed, location_sealed, show_links, show_location,"
        " restricted_at IS NOT NULL,"
        " (SELECT group_concat(purpose) FROM objections o WHERE o.user_id = users.id)"
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

    def _throttle_key(self, kind: str, value: str) -> str:
        # keyed so the table holds neither usernames people typed nor addresses
        return hmac.new(
            self._key, f"throttle\x00{kind}\x00{value.lower()}".encode(), hashlib.sha256
        ).hexdigest()

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
            "guardian_reports": conn.execute(
                "DELETE FROM guardian_reports WHERE reported_user_id = ?", (user_id,)).rowcount,
            "objections": conn.execute(
                "DELETE FROM objections WHERE user_id = ?", (user_id,)).rowcount,
            # a ban of the account goes with it (its visit's address ban stays; the
            # moderation reports keep no link: their account columns become NULL)
            "account_bans": conn.execute(
                "DELETE FROM bans WHERE kind = 'account' AND subject = ?", (user_id,)).rowcount,
            # Requests stay (type, status, timestamps) but lose the link and any export.
            "requests_kept": conn.execute(
                "UPDATE privacy_requests SET user_id = NULL, export_nonce = NULL,"
                " export_ciphertext = NULL, fields_sealed = NULL WHERE user_id = ?",
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
