"""Restriction and objections lifted by their owner, legal holds placed and released
by an operator, under-age reports from guardians without an account (what each does:
store/controls.py), and the request steps the other domains call in their
transactions."""

from __future__ import annotations

import secrets
import sqlite3

from mediaserver.store.controls import REQUEST_DUE_SECONDS, held, seal_value
from mediaserver.store.core import StoreCore
from mediaserver.store.errors import Invalid, NotFound
from mediaserver.store.limits import MAX_GUARDIAN_DETAILS, USERNAME, validate_email
from mediaserver.store.moderation_rows import queue_report
from mediaserver.store.sealed_fields import username_index

MAX_HOLD_REASON = 500


def insert_request(
    store: StoreCore, conn: sqlite3.Connection, user_id: str, rtype: str,
    purpose: str | None = None, fields: bytes | None = None,
) -> str:
    """A new request, received and verified (by the bearer token it came with);
    `fields`: a correction's JSON, sealed here. Returns its id."""
    request_id = secrets.token_urlsafe(12)
    now = store._now()
    sealed = None if fields is None else seal_value(
        store._key, "privacy_requests", "fields", request_id, fields)
    conn.execute(
        "INSERT INTO privacy_requests (id, user_id, type, status, received_at, due_at,"
        " purpose, fields_sealed) VALUES (?, ?, ?, 'received', ?, ?, ?, ?)",
        (request_id, user_id, rtype, now, now + REQUEST_DUE_SECONDS, purpose, sealed),
    )
    store._audit(conn, request_id, "received", type=rtype)
    conn.execute("UPDATE privacy_requests SET status = 'verified' WHERE id = ?", (request_id,))
    store._audit(conn, request_id, "verified", method="bearer_token")
    return request_id


def note_held(store: StoreCore, conn: sqlite3.Connection, request_id: str) -> None:
    """Record once in the audit log that a deletion request waits for a legal hold."""
    if conn.execute("SELECT 1 FROM audit_log WHERE request_id = ? AND event = 'held'",
                    (request_id,)).fetchone() is None:
        store._audit(conn, request_id, "held", waiting_for="legal_hold")


def waiting_deletion(store: StoreCore, conn: sqlite3.Connection, user_id: str) -> str:
    """The held account's open deletion request (a new one if it has none)."""
    row = conn.execute(
        "SELECT id FROM privacy_requests WHERE user_id = ? AND type = 'deletion'"
        " AND status IN ('received', 'verified') ORDER BY received_at, rowid LIMIT 1",
        (user_id,)).fetchone()
    request_id = str(row[0]) if row else insert_request(store, conn, user_id, "deletion")
    note_held(store, conn, request_id)
    return request_id


def restrict(store: StoreCore, conn: sqlite3.Connection, user_id: str) -> None:
    """A completed restriction request takes effect (see the module docstring)."""
    conn.execute("UPDATE users SET restricted_at = COALESCE(restricted_at, ?) WHERE id = ?",
                 (store._now(), user_id))


def object_to(store: StoreCore, conn: sqlite3.Connection, user_id: str, purpose: str) -> int:
    """A completed objection takes effect; returns how many chat messages went."""
    conn.execute("INSERT OR IGNORE INTO objections (user_id, purpose, at) VALUES (?, ?, ?)",
                 (user_id, purpose, store._now()))
    if purpose == "chat_history":
        return store._set_consent(conn, user_id, False, "objection")
    return 0


class ControlsStore(StoreCore):
    """Restriction and objections lifted by the owner, legal holds, guardians'
    reports (a part of Store)."""

    def lift_restriction(self, user_id: str) -> None:
        """The owner lifts the restriction (NotFound if none stands)."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            if not conn.execute(
                "UPDATE users SET restricted_at = NULL WHERE id = ?"
                " AND restricted_at IS NOT NULL", (user_id,)).rowcount:
                raise NotFound("no restriction")
            self._audit(conn, None, "restriction_lifted", by="owner")

    def lift_objection(self, user_id: str, purpose: str) -> None:
        """The owner lifts an objection (NotFound if none stands for that purpose);
        chat history is kept again only once consent is given again."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            if not isinstance(purpose, str) or not conn.execute(
                "DELETE FROM objections WHERE user_id = ? AND purpose = ?",
                (user_id, purpose)).rowcount:
                raise NotFound("no such objection")
            self._audit(conn, None, "objection_lifted", by="owner", purpose=purpose)

    def place_legal_hold(self, user_id: str, reason: str) -> None:
        """An operator places a legal hold (placing it again records the new reason)."""
        if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= MAX_HOLD_REASON:
            raise Invalid("reason", f"1-{MAX_HOLD_REASON} characters")
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            conn.execute(
                "UPDATE users SET legal_hold_at = COALESCE(legal_hold_at, ?) WHERE id = ?",
                (self._now(), user_id))
            self._audit(conn, None, "legal_hold_placed", by="operator", user_id=user_id,
                        reason=reason.strip())

    def release_legal_hold(self, user_id: str) -> int:
        """An operator releases the hold; returns how many deletion requests were
        waiting (process_pending completes them)."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            if not conn.execute(
                "UPDATE users SET legal_hold_at = NULL WHERE id = ?"
                " AND legal_hold_at IS NOT NULL", (user_id,)).rowcount:
                raise NotFound("no legal hold")
            waiting = int(conn.execute(
                "SELECT COUNT(*) FROM privacy_requests WHERE user_id = ? AND type = 'deletion'"
                " AND status = 'verified'", (user_id,)).fetchone()[0])
            self._audit(conn, None, "legal_hold_released", by="operator", user_id=user_id,
                        deletions_waiting=waiting)
            return waiting

    def report_underage_by_guardian(self, handle: str, contact_email: str, details: str) -> None:
        """A parent or guardian, without an account, reports a profile as under age.
        Kept (contact and details sealed) only when the handle is an account's; the
        same work either way (the REST layer answers before it runs, so a caller
        learns nothing from the time it takes either)."""
        email = check_guardian_report(handle, contact_email, details)
        report_id = secrets.token_hex(12)  # hex: never read as an option by the CLI
        sealed_email = seal_value(self._key, "guardian_reports", "contact_email", report_id,
                                  email.encode())
        sealed_details = seal_value(self._key, "guardian_reports", "details", report_id,
                                    details.encode())
        with self._tx() as conn:
            row = conn.execute("SELECT id FROM users WHERE username_index = ?",
                               (username_index(self._key, handle),)).fetchone()
            if row is None:
                return
            conn.execute(
                "INSERT INTO guardian_reports (id, reported_user_id, contact_email_sealed,"
                " details_sealed, at) VALUES (?, ?, ?, ?, ?)",
                (report_id, row[0], sealed_email, sealed_details, self._now()))
            queue_report(conn, report_id, "guardian", "underage", self._now(),
                         reported_user_id=row[0])


def check_guardian_report(handle: object, contact_email: object, details: object) -> str:
    """A guardian's report checked as the store takes it (Invalid names the field);
    returns the address."""
    if not isinstance(handle, str) or not USERNAME.fullmatch(handle):
        raise Invalid("handle", "3-32 characters: letters, digits, _ . -")
    email = validate_email(contact_email)
    if not isinstance(details, str) or not 1 <= len(details.strip()) <= MAX_GUARDIAN_DETAILS:
        raise Invalid("details", f"1-{MAX_GUARDIAN_DETAILS} characters")
    return email
