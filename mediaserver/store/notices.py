"""The notices inbox and the mail outbox: `notify` writes a notice (its text sealed
with the data key) and queues its mail in the caller's transaction, so a request
never waits on SMTP; the sender (mediaserver/mail) claims due outbox rows
atomically, so worker processes sharing the file send each row once. The tables:
store/notice_schema.py."""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from mediaserver.store import crypto
from mediaserver.store.core import StoreCore
from mediaserver.store.errors import Invalid, NotFound
from mediaserver.store.sealed_fields import open_field

NOTICE_KINDS = (
    "verify_email", "new_sign_in", "privacy_request_received", "privacy_request_completed",
    "inactivity", "policy", "password_reset", "password_changed", "email_changed",
    "connection_request", "missed_call", "moderation",
)
MAX_NOTICE_PAGE = 100
MAIL_MAX_ATTEMPTS = 8  # then the mail is given up (logged, counted)
MAIL_BACKOFF = 30.0  # seconds before the first retry; doubles up to MAIL_BACKOFF_CAP
MAIL_BACKOFF_CAP = 3600.0
MAIL_LEASE = 300.0  # a claimed row is another sender's again after this (a crash)


@dataclass(frozen=True)
class Notice:
    id: str
    kind: str
    subject: str
    body: str
    at: float
    read_at: float | None


@dataclass(frozen=True)
class Mail:
    """A queued mail, opened (the sender's view)."""

    id: str
    to: str
    subject: str
    body: str
    attempts: int


def _seal(key: bytes, table: str, row_id: str, value: Any) -> bytes:
    nonce, ciphertext = crypto.seal(
        key, json.dumps(value).encode("utf-8"), table.encode() + b"\x00" + row_id.encode())
    return nonce + ciphertext


def open_row(key: bytes, table: str, row_id: str, sealed: bytes) -> Any:
    blob = bytes(sealed)
    return json.loads(crypto.open_sealed(
        key, blob[:crypto.NONCE_BYTES], blob[crypto.NONCE_BYTES:],
        table.encode() + b"\x00" + row_id.encode()))


def queue_mail(
    conn: sqlite3.Connection, key: bytes, now: float, to: str, subject: str, body: str,
    user_id: str | None = None, kind: str | None = None,
) -> str:
    """Queue one mail in the caller's transaction; the sender delivers it."""
    mail_id = secrets.token_urlsafe(12)
    conn.execute(
        "INSERT INTO mail_outbox (id, user_id, created_at, due_at, kind, sealed)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (mail_id, user_id, now, now, kind,
         _seal(key, "mail_outbox", mail_id, {"to": to, "subject": subject, "body": body})),
    )
    return mail_id


def user_email(conn: sqlite3.Connection, key: bytes, user_id: str) -> tuple[str | None, bool]:
    """The account's address (None: none given) and whether it is verified."""
    row = conn.execute(
        "SELECT email_sealed, email_verified FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None or row[0] is None:
        return None, False
    return open_field(key, user_id, "email", row[0]), bool(row[1])


def add_notice(
    conn: sqlite3.Connection, key: bytes, now: float, user_id: str, kind: str, subject: str,
    body: str, mail: bool = True, mail_body: str | None = None, to: str | None = None,
) -> str:
    """The inbox row, and (mail=True) the same text queued to the account's verified
    address, in the caller's transaction. `mail_body` replaces the body in the mail
    only (a code goes to the address, never to the inbox: the inbox is the token
    holder's, the code proves the address); `to` sends to that address, verified or
    not (the verification mail itself)."""
    if kind not in NOTICE_KINDS:
        raise Invalid("kind", "unknown notice kind")
    notice_id = secrets.token_urlsafe(12)
    conn.execute(
        "INSERT INTO notices (id, user_id, kind, at, sealed) VALUES (?, ?, ?, ?, ?)",
        (notice_id, user_id, kind, now,
         _seal(key, "notices", notice_id, {"subject": subject, "body": body})),
    )
    if mail:
        address, verified = user_email(conn, key, user_id)
        if to is None and verified:
            to = address
        if to is not None:
            queue_mail(conn, key, now, to, subject, mail_body or body, user_id, kind)
    return notice_id


def request_completed_notice(conn: sqlite3.Connection, key: bytes, now: float,
                             user_id: str, rtype: str) -> None:
    """The owner's notice that a request was completed (a deletion has no owner left)."""
    more = " Download your data from the privacy centre." if rtype == "access" else ""
    add_notice(conn, key, now, user_id, "privacy_request_completed",
               "Privacy request completed", f"Your {rtype} request was completed.{more}")


class NoticeStore(StoreCore):
    """The inbox and the outbox (a part of Store)."""

    def notify(
        self, user_id: str, kind: str, subject: str, body: str, mail: bool = True
    ) -> str:
        """Write an inbox notice and queue its mail (to the verified address, if any)
        in one transaction; returns the notice id."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            return add_notice(conn, self._key, self._now(), user_id, kind, subject, body, mail)

    def list_notices(
        self, user_id: str, limit: int = 20, before: str | None = None
    ) -> tuple[list[Notice], str | None]:
        """The inbox, newest first: (page, cursor of the next page or None). The
        cursor is the last notice's id; an unknown one is NotFound."""
        limit = max(1, min(MAX_NOTICE_PAGE, limit))
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            where, args = "user_id = ?", [user_id]
            if before is not None:
                anchor = conn.execute(
                    "SELECT at, rowid FROM notices WHERE id = ? AND user_id = ?",
                    (before, user_id)).fetchone()
                if anchor is None:
                    raise NotFound("no such cursor")
                where += " AND (at < ? OR (at = ? AND rowid < ?))"
                args += [anchor[0], anchor[0], anchor[1]]
            rows = conn.execute(
                f"SELECT id, kind, at, read_at, sealed FROM notices WHERE {where}"
                " ORDER BY at DESC, rowid DESC LIMIT ?", (*args, limit + 1)).fetchall()
        out = []
        for notice_id, kind, at, read_at, sealed in rows[:limit]:
            text = open_row(self._key, "notices", notice_id, sealed)
            out.append(Notice(notice_id, kind, text["subject"], text["body"], at, read_at))
        return out, (out[-1].id if len(rows) > limit else None)

    def mark_notice_read(self, user_id: str, notice_id: str) -> None:
        """Mark one of the user's notices read (NotFound for anyone else's)."""
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE notices SET read_at = COALESCE(read_at, ?) WHERE id = ? AND user_id = ?",
                (self._now(), notice_id, user_id)).rowcount
            if not changed:
                raise NotFound("no such notice")

    # -- the outbox (mediaserver/mail/sender.py) -----------------------------------------

    def claim_mail(self, limit: int = 10) -> list[Mail]:
        """Due mail, claimed for MAIL_LEASE seconds in one write transaction: another
        process claiming at the same time gets other rows."""
        due = ("mail_outbox WHERE due_at <= ? AND (claimed_until IS NULL OR"
               " claimed_until <= ?)")
        with self._tx(write=False) as conn:  # the usual case, nothing due: no write lock
            now = self._now()
            if conn.execute(f"SELECT 1 FROM {due} LIMIT 1", (now, now)).fetchone() is None:
                return []
        with self._tx() as conn:
            now = self._now()
            rows = conn.execute(
                "UPDATE mail_outbox SET claimed_until = ? WHERE id IN (SELECT id FROM"
                f" {due} ORDER BY due_at LIMIT ?)"
                " RETURNING id, attempts, sealed",
                (now + MAIL_LEASE, now, now, limit)).fetchall()
        out = []
        for mail_id, attempts, sealed in rows:
            m = open_row(self._key, "mail_outbox", mail_id, sealed)
            out.append(Mail(mail_id, m["to"], m["subject"], m["body"], int(attempts)))
        return out

    def mail_sent(self, mail_id: str) -> None:
        """Delivered: the row goes. An inactivity notice's delivery restarts the
        account's 30 days before deletion (they count from when the mail went out)."""
        with self._tx() as conn:
            row = conn.execute("DELETE FROM mail_outbox WHERE id = ? RETURNING user_id, kind",
                               (mail_id,)).fetchone()
            if row is not None and row[1] == "inactivity" and row[0] is not None:
                conn.execute("UPDATE users SET flagged_at = ? WHERE id = ?"
                             " AND flagged_at IS NOT NULL", (self._now(), row[0]))

    def mail_failed(self, mail_id: str) -> bool:
        """Count a failed attempt: retried after an exponential backoff, or deleted
        after MAIL_MAX_ATTEMPTS. Returns True when it was given up."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT attempts FROM mail_outbox WHERE id = ?", (mail_id,)).fetchone()
            if row is None:
                return False
            attempts = int(row[0]) + 1
            if attempts >= MAIL_MAX_ATTEMPTS:
                conn.execute("DELETE FROM mail_outbox WHERE id = ?", (mail_id,))
                return True
            delay = min(MAIL_BACKOFF_CAP, MAIL_BACKOFF * 2.0 ** (attempts - 1))
            conn.execute(
                "UPDATE mail_outbox SET attempts = ?, due_at = ?, claimed_until = NULL"
                " WHERE id = ?", (attempts, self._now() + delay, mail_id))
            return False

    def mail_queued(self) -> int:
        """Mail waiting in the outbox (due or backing off)."""
        with self._tx(write=False) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM mail_outbox").fetchone()[0])
