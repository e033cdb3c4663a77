"""Privacy: opt-out and consent, privacy requests (access, correction, deletion,
opt-out, withdrawing consent, restriction, objection: store/controls.py says what the
last two stop) completed in the order received with an append-only
audit log, and retention."""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from mediaserver.store import controls, controls_store, conversations, crypto, shares
from mediaserver.store.controls import REQUEST_DUE_SECONDS
from mediaserver.store.core import StoreCore
from mediaserver.store.errors import Conflict, Invalid, NotFound
from mediaserver.store.exports import build_export, complete_exports, export_aad
from mediaserver.store.limits import DAY, OPT_OUT_SOURCES, REQUEST_TYPES, validate_bool
from mediaserver.store.moderation_rows import purge_evidence
from mediaserver.store.profiles import check_updates, write_updates
from mediaserver.store.notices import add_notice, request_completed_notice
from mediaserver.store.throttle import THROTTLE_CAP, THROTTLE_FORGET

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
    purpose: str | None = None
    """An objection's purpose (limits.OBJECTION_PURPOSES)."""
    on_hold: bool = False
    """An open deletion request waiting for a legal hold to be released."""


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

    def lift_opt_out(self, user_id: str) -> None:
        """Undo an opt-out of sale/sharing (the owner's choice; recorded like the
        opt-out). A browser that sends Sec-GPC: 1 opts out again on its next request:
        the signal is the person's standing choice.

        Raises:
            NotFound: no opt-out stands."""
        with self._tx() as conn:
            if not self._get_profile(conn, user_id).opted_out:
                raise NotFound("no opt-out stands")
            now = self._now()
            conn.execute(
                "UPDATE users SET opted_out = 0, updated_at = ? WHERE id = ?", (now, user_id))
            conn.execute(
                "INSERT INTO consents (user_id, kind, granted, source, at)"
                " VALUES (?, 'opt_out', 0, 'profile', ?)", (user_id, now))

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
        " export_nonce, export_ciphertext, purpose,"
        " type = 'deletion' AND status IN ('received', 'verified') AND EXISTS ("
        "  SELECT 1 FROM users h WHERE h.id = user_id AND h.legal_hold_at IS NOT NULL)"
    )

    def _request(self, row: tuple[Any, ...]) -> PrivacyRequest:
        export: dict[str, Any] | None = None
        if row[8] is not None and row[7] is not None:
            export = json.loads(
                crypto.open_sealed(self._key, row[8], row[9], export_aad(row[7], row[0]))
            )
        return PrivacyRequest(
            id=row[0], type=row[1], status=row[2], received_at=row[3], due_at=row[4],
            completed_at=row[5], reason=row[6], export=export, purpose=row[10],
            on_hold=bool(row[11]),
        )

    def submit_request(
        self, user_id: str, type: str, *, fields: dict[str, Any] | None = None,
        purpose: str | None = None,
    ) -> PrivacyRequest:
        """A new privacy request of `type` (REQUEST_TYPES), verified by the bearer
        token it came with; due REQUEST_DUE_SECONDS later. A correction may carry
        `fields` (as PATCH takes them, checked now, applied when processed; without
        them it records the ask); an objection names its `purpose`."""
        if type not in REQUEST_TYPES:
            raise Invalid("type", "must be one of " + ", ".join(REQUEST_TYPES))
        if fields is not None and type != "correction":
            raise Invalid("fields", "only a correction carries fields")
        if purpose is not None and type != "objection":
            raise Invalid("purpose", "only an objection names a purpose")
        sealed_fields: bytes | None = None
        if fields is not None:
            if not isinstance(fields, dict) or not fields:
                raise Invalid("fields", "an object of at least one profile field")
            check_updates(self, fields)
            sealed_fields = json.dumps(fields).encode()
        if type == "objection":
            purpose = controls.validate_purpose(purpose)
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            request_id = controls_store.insert_request(
                self, conn, user_id, type, purpose, sealed_fields)
            add_notice(conn, self._key, self._now(), user_id, "privacy_request_received",
                       "Privacy request received",
                       f"We received your {type} request on {_date(self._now())}; it is due "
                       f"by {_date(self._now() + REQUEST_DUE_SECONDS)}.")
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
                    if controls.held(conn, user_id):
                        # waits, open, for the hold's release; the user's later
                        # requests do not wait behind it
                        controls_store.note_held(self, conn, request_id)
                        skipped += 1
                        continue
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
                elif rtype == "restriction":
                    controls_store.restrict(self, conn, user_id)
                elif rtype == "objection":
                    purpose = conn.execute("SELECT purpose FROM privacy_requests WHERE id = ?",
                                           (request_id,)).fetchone()[0]
                    detail = {"purpose": purpose, "chat_messages_deleted": controls_store.object_to(
                        self, conn, user_id, purpose)}
                    scrub = scrub or bool(detail["chat_messages_deleted"])
                elif rtype == "correction":
                    rejected = self._apply_correction(conn, user_id, request_id)
                    if rejected is not None:
                        self._reject(conn, request_id, rejected)
                        continue
                    scrub = True
                # a correction without fields records the ask (PATCH made the change)
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

    def _apply_correction(
        self, conn: sqlite3.Connection, user_id: str, request_id: str
    ) -> str | None:
        """Apply the fields a correction request carries; then they are dropped from
        the request (the audit log names the fields, never the values). Returns why
        it is rejected (a field the store now refuses, a username taken since), or
        None once applied."""
        row = conn.execute("SELECT fields_sealed FROM privacy_requests WHERE id = ?",
                           (request_id,)).fetchone()
        if row[0] is None:
            return None
        fields = json.loads(controls.open_value(
            self._key, "privacy_requests", "fields", request_id, row[0]))
        conn.execute("UPDATE privacy_requests SET fields_sealed = NULL WHERE id = ?",
                     (request_id,))
        try:
            values, consent = check_updates(self, fields)
            write_updates(self, conn, user_id, values, consent)
        except (Invalid, Conflict) as exc:
            return str(exc)[:500]
        self._audit(conn, request_id, "corrected", fields=sorted(fields))
        return None

    def _reject(self, conn: sqlite3.Connection, request_id: str, reason: str) -> None:
        conn.execute(
            "UPDATE privacy_requests SET status = 'rejected', completed_at = ?, reason = ?,"
            " fields_sealed = NULL WHERE id = ?",
            (self._now(), reason, request_id),
        )
        self._audit(conn, request_id, "rejected")

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
            self._reject(conn, request_id, reason)

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
                " HAVING MAX(at) <= ?)"
                # a legal hold keeps the data as it is, chat too
                " AND user_id NOT IN (SELECT id FROM users WHERE legal_hold_at IS NOT NULL)",
                (now - CHAT_RETENTION_SECONDS,),
            ).rowcount + conversations.purge_expired(conn, now - CHAT_RETENTION_SECONDS)
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
                    " mail_outbox m WHERE m.user_id = users.id AND m.kind = 'inactivity')"
                    " AND legal_hold_at IS NULL",  # a legal hold: deleted once released
                    (now - GRACE_SECONDS,),
                ).fetchall()
            ]
            for user_id in doomed:
                self._delete_user(conn, user_id, reason="inactivity", request_id=None)
            counts = {"chat_purged": int(chat_purged), "flagged": int(flagged),
                      "deleted": len(doomed),
                      # moderation evidence (reports' chat lines) past EVIDENCE_SECONDS
                      "evidence_purged": purge_evidence(conn, now)}
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
        if counts["chat_purged"] or counts["deleted"] or counts["evidence_purged"] or \
                exports_expired:
            self._scrub_wal()
        return counts

    def flagged_users(self) -> list[str]:
        """Ids of accounts flagged for inactivity (for sending the notice)."""
        with self._tx(write=False) as conn:
            return [row[0] for row in conn.execute(
                "SELECT id FROM users WHERE flagged_at IS NOT NULL ORDER BY flagged_at")]
