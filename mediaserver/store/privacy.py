"""Privacy: opt-out and consent, privacy requests (access, correction, deletion,
opt-out, withdrawing consent) completed in the order received with an append-only
audit log, and retention."""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from mediaserver.store import crypto, shares
from mediaserver.store.core import StoreCore
from mediaserver.store.errors import Conflict, Invalid, NotFound
from mediaserver.store.exports import build_export, complete_exports, export_aad
from mediaserver.store.limits import DAY, OPT_OUT_SOURCES, REQUEST_TYPES, validate_bool
from mediaserver.store.notices import add_notice, request_completed_notice
from mediaserver.store.throttle import THROTTLE_CAP, THROTTLE_FORGET

REQUEST_DUE_SECONDS = 45 * DAY
CHAT_RETENTION_SECONDS = 183 * DAY  # 6 months after the conversation's last message
INACTIVE_SECONDS = 365 * DAY  # 12 months without being seen: flagged for notice
GRACE_SECONDS = 30 * DAY  # flagged this long and still not seen: deleted
EXPORT_RETENTION_SECONDS = 30 * DAY  # a completed access export is kept this long


@dataclass(frozen=True)
class PrivacyRequest:
    """A privacy request; `export` is the access export, once completed."""

    id: str
    type: str
    status: str
    received_at: float
    due_at: float
    completed_at: float | None
    reason: str | None
    export: dict[str, Any] | None


def _date(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, tz=_dt.UTC).date().isoformat()


class PrivacyStore(StoreCore):
    """Consents, privacy requests, the audit log and retention (a part of Store)."""

    def record_opt_out(self, user_id: str, source: str) -> None:
        """Record an opt-out of sale/sharing (`source`: request or gpc), once."""
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
        """Grant or withdraw consent to keeping chat history; withdrawing it
        deletes the stored chat."""
        granted = validate_bool("granted", granted)
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            deleted = self._set_consent(conn, user_id, granted, "profile")
        if deleted:
            self._scrub_wal()

    _REQUEST_COLS = (
        "id, type, status, received_at, due_at, completed_at, reason, user_id,"
        " export_nonce, export_ciphertext"
    )

    def _request(self, row: tuple[Any, ...]) -> PrivacyRequest:
        export: dict[str, Any] | None = None
        if row[8] is not None and row[7] is not None:
            export = json.loads(
                crypto.open_sealed(self._key, row[8], row[9], export_aad(row[7], row[0]))
            )
        return PrivacyRequest(
            id=row[0], type=row[1], status=row[2], received_at=row[3], due_at=row[4],
            completed_at=row[5], reason=row[6], export=export,
        )

    def submit_request(self, user_id: str, type: str) -> PrivacyRequest:
        """A new privacy request of `type` (REQUEST_TYPES), verified by the bearer
        token it came with; due REQUEST_DUE_SECONDS later."""
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
            add_notice(conn, self._key, now, user_id, "privacy_request_received",
                       "Privacy request received",
                       f"We received your {type} request on {_date(now)}; it is due by "
                       f"{_date(now + REQUEST_DUE_SECONDS)}.")
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
        """One of the user's requests, with its export once completed."""
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
                    export = build_export(self, conn, user_id)
                    # The export holds decrypted chat: it is sealed at rest like the chat.
                    nonce, ciphertext = crypto.seal(
                        self._key, json.dumps(export).encode(),
                        export_aad(user_id, request_id),
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
                request_completed_notice(conn, self._key, now, user_id, rtype)
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
        """The audit log (all of it, or one request's), oldest first."""
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

    def run_retention(self) -> dict[str, int]:
        """One retention pass: purge old chat, flag inactive accounts (and notice
        them: inbox and mail), delete those flagged GRACE_SECONDS ago (counted from
        the notice mail's delivery; never while it waits in the outbox), drop expired
        exports, sessions, shares and throttle rows. Returns the counts
        (chat_purged, flagged, deleted)."""
        with self._tx() as conn:
            now = self._now()
            chat_purged = conn.execute(
                "DELETE FROM chat_messages WHERE conversation_id IN ("
                " SELECT conversation_id FROM chat_messages GROUP BY conversation_id"
                " HAVING MAX(at) <= ?)",
                (now - CHAT_RETENTION_SECONDS,),
            ).rowcount
            # flagged and told in one transaction: the deletion, GRACE_SECONDS after the
            # flag, is never sooner than that after the notice was written
            inactive = [row[0] for row in conn.execute(
                "SELECT id FROM users WHERE flagged_at IS NULL AND last_seen_at <= ?",
                (now - INACTIVE_SECONDS,))]
            for user_id in inactive:
                conn.execute("UPDATE users SET flagged_at = ? WHERE id = ?", (now, user_id))
                add_notice(conn, self._key, now, user_id, "inactivity",
                           "Your account will be deleted",
                           "You have not signed in for 12 months. Your account will be "
                           f"deleted on {_date(now + GRACE_SECONDS)} unless you sign in "
                           "before then.")
            flagged = len(inactive)
            doomed = [
                row[0] for row in conn.execute(
                    "SELECT id FROM users WHERE flagged_at IS NOT NULL AND flagged_at <= ?"
                    " AND last_seen_at <= flagged_at AND NOT EXISTS (SELECT 1 FROM"
                    " mail_outbox m WHERE m.user_id = users.id AND m.kind = 'inactivity')",
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
