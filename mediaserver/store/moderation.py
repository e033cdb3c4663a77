"""The moderation desk (a part of Store): the moderator role, the queue of reports
kept for review, each report's evidence (every read written to the audit log),
decisions (dismiss, warn, ban), bans by account and by keyed address hash, appeals.

The rows and their schema step: store/moderation_rows.py. What is sealed with the data
key: a report's evidence (the chat lines its reporter chose to send), a decision's
note, an appeal's text; a guardian's contact and details stay sealed where they were.
The address hashes are the matchmaker's reputation keys (an HMAC of the address, the
/64 for IPv6), never an address.
"""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mediaserver.store import controls
from mediaserver.store.controls import open_value, seal_value
from mediaserver.store.core import StoreCore
from mediaserver.store.errors import Conflict, Invalid, NotFound
from mediaserver.store.limits import MAX_CHAT_TEXT, REPORT_REASONS, USERNAME
from mediaserver.store.moderation_rows import EVIDENCE_SECONDS
from mediaserver.store.notices import add_notice
from mediaserver.store.sealed_fields import username_index

ACTIONS = ("dismiss", "warn", "ban")
STATUSES = ("open", "decided")
MAX_NOTE = 2000
MAX_APPEAL = 2000
MAX_BAN_SECONDS = 10 * 365 * 86400
MAX_CHAT_LINES = 20
"""Evidence: the pair's last chat lines, at most this many."""
MAX_FRAME_BYTES = 2 * 1024 * 1024
"""Evidence: a still of the reported video (JPEG), at most this large."""
MAX_FRAME_NOTE = 200
MAX_QUEUE = 200
"""Reports one queue listing returns at most (oldest first: the rest wait)."""
DISMISSALS_STOP_COUNTING = 3
"""A reporter (address hash) with this many dismissed reports no longer counts
toward the matchmaker's automatic refusal."""


def _ban_notice(reason: str, until: float | None, note: str, decision_id: str) -> str:
    end = (
        "for good"
        if until is None
        else "until " + datetime.fromtimestamp(until, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    )
    return (
        f"A report about you ({reason}) was reviewed and your account is banned {end}."
        + (f" The moderator's note: {note}" if note else "")
        + " You may appeal once: POST /api/v1/appeals with"
        f' {{"decision_id": "{decision_id}", "text": "why the ban should be lifted"}}.'
    )


@dataclass(frozen=True)
class Ban:
    """Where a ban on one subject stands after a decision (what the nodes share)."""

    kind: str
    """'account' or 'address'."""
    subject: str
    """The account id, or the keyed address hash."""
    until: float | None
    """When the longest ban on the subject ends (None: for good)."""
    active: bool = True
    """False: no ban holds on the subject any more (an appeal lifted it)."""


def check_chat_lines(lines: object) -> list[dict[str, str]]:
    """Chat lines as evidence: [{"from": "reporter"|"reported", "text"}], at most
    MAX_CHAT_LINES (the last ones kept)."""
    if not isinstance(lines, list):
        raise Invalid("chat", "a list of chat lines")
    out = []
    for line in lines[-MAX_CHAT_LINES:]:
        if (
            not isinstance(line, dict)
            or line.get("from") not in ("reporter", "reported")
            or not isinstance(line.get("text"), str)
            or len(line["text"]) > MAX_CHAT_TEXT
        ):
            raise Invalid("chat", "each line: {from: reporter|reported, text}")
        out.append({"from": line["from"], "text": line["text"]})
    return out


class ModerationStore(StoreCore):
    """The moderation desk (see the module docstring)."""

    # -- the role ------------------------------------------------------------------

    def set_moderator(self, username: str, granted: bool) -> str:
        """An operator grants or revokes the moderator role; returns the account id
        (NotFound: no such username). Written to the audit log."""
        if not isinstance(username, str) or not USERNAME.fullmatch(username):
            raise NotFound("no such user")
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id FROM users WHERE username_index = ?",
                (username_index(self._key, username),),
            ).fetchone()
            if row is None:
                raise NotFound("no such user")
            conn.execute("UPDATE users SET moderator = ? WHERE id = ?", (int(granted), row[0]))
            self._audit(
                conn,
                None,
                "moderator_granted" if granted else "moderator_revoked",
                by="operator",
                user_id=row[0],
            )
            return str(row[0])

    def is_moderator(self, user_id: str) -> bool:
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT moderator FROM users WHERE id = ?", (user_id,)).fetchone()
            return row is not None and bool(row[0])

    # -- filing --------------------------------------------------------------------

    def file_chat_report(
        self,
        reason: str,
        *,
        reported_address: str,
        reported_user_id: str | None,
        reporter_address: str,
        reporter_user_id: str | None,
        chat: list[dict[str, str]] | None = None,
        frame: bytes | None = None,
        frame_missing: str | None = None,
    ) -> str:
        """A random-chat report, kept for review: the reported visit's address hash
        and account (if signed in), the reporter's, and the evidence the reporter
        chose to send: chat lines, a still of the reported video (a JPEG) or why
        none could be taken (sealed, kept EVIDENCE_SECONDS). Returns the report id."""
        if reason not in REPORT_REASONS:
            raise Invalid("reason", "must be one of " + ", ".join(REPORT_REASONS))
        lines = None if chat is None else check_chat_lines(chat)
        if frame is not None and (
            not isinstance(frame, bytes)
            or not frame.startswith(b"\xff\xd8\xff")
            or len(frame) > MAX_FRAME_BYTES
        ):
            raise Invalid("frame", f"a JPEG of at most {MAX_FRAME_BYTES} bytes")
        evidence: dict[str, Any] = {"chat": lines} if lines else {}
        if frame is not None:
            evidence["frame"] = {"type": "image/jpeg", "bytes": len(frame)}
        elif frame_missing:
            evidence["frame_missing"] = str(frame_missing)[:MAX_FRAME_NOTE]
        report_id = secrets.token_hex(12)
        now = self._now()
        sealed = (
            None
            if not evidence
            else seal_value(
                self._key,
                "moderation_reports",
                "evidence",
                report_id,
                json.dumps(evidence).encode(),
            )
        )
        sealed_frame = (
            None
            if frame is None
            else seal_value(self._key, "moderation_reports", "frame", report_id, frame)
        )
        with self._tx() as conn:
            # an account deleted meanwhile: the report stays, on the address alone
            accounts = [
                uid
                if uid is not None
                and conn.execute("SELECT 1 FROM users WHERE id = ?", (uid,)).fetchone()
                else None
                for uid in (reported_user_id, reporter_user_id)
            ]
            conn.execute(
                "INSERT INTO moderation_reports (id, source, reason, status, at,"
                " reported_address, reported_user_id, reporter_address, reporter_user_id,"
                " evidence_sealed, evidence_until, frame_sealed) VALUES (?, 'chat', ?, 'open',"
                " ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    report_id,
                    reason,
                    now,
                    reported_address,
                    accounts[0],
                    reporter_address,
                    accounts[1],
                    sealed,
                    None if sealed is None else now + EVIDENCE_SECONDS,
                    sealed_frame,
                ),
            )
        return report_id

    # -- the queue -----------------------------------------------------------------

    _REPORT_COLS = (
        "r.id, r.source, r.reason, r.status, r.at, r.reported_address,"
        " r.reported_user_id, r.reporter_user_id, r.evidence_sealed IS NOT NULL,"
        " r.appeal_of"
    )

    def _report_summary(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> dict[str, Any]:
        handle = None
        if row[6] is not None:
            sealed = conn.execute(
                "SELECT username_sealed FROM users WHERE id = ?", (row[6],)
            ).fetchone()
            handle = None if sealed is None else self._open(row[6], "username", sealed[0])
        return {
            "id": row[0],
            "source": row[1],
            "reason": row[2],
            "status": row[3],
            "at": row[4],
            "reported_address": row[5],
            "reported_user_id": row[6],
            "reported_handle": handle,
            "reporter_user_id": row[7],
            "has_evidence": bool(row[8]) or row[1] in ("guardian", "appeal"),
            "appeal_of": row[9],
        }

    def moderation_queue(
        self, status: str = "open", reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Reports by status (and reason), underage ones first, then oldest first;
        MAX_QUEUE at most. No evidence here (reading it is audited)."""
        if status not in STATUSES:
            raise Invalid("status", "must be one of " + ", ".join(STATUSES))
        if reason is not None and reason not in REPORT_REASONS:
            raise Invalid("reason", "must be one of " + ", ".join(REPORT_REASONS))
        with self._tx(write=False) as conn:
            rows = conn.execute(
                f"SELECT {self._REPORT_COLS} FROM moderation_reports r WHERE r.status = ?"
                " AND (? IS NULL OR r.reason = ?)"
                " ORDER BY r.reason = 'underage' DESC, r.at, r.id LIMIT ?",
                (status, reason, reason, MAX_QUEUE),
            ).fetchall()
            return [self._report_summary(conn, row) for row in rows]

    def moderation_report(self, moderator_id: str, report_id: str) -> dict[str, Any]:
        """One report with its evidence and decisions; the read goes to the audit
        log (who, when, which report). NotFound: no such report."""
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {self._REPORT_COLS}, r.evidence_sealed FROM"
                " moderation_reports r WHERE r.id = ?",
                (str(report_id),),
            ).fetchone()
            if row is None:
                raise NotFound("no such report")
            report = self._report_summary(conn, row[:-1])
            report["evidence"] = self._report_evidence(conn, report, row[-1])
            report["decisions"] = [
                {
                    "id": did,
                    "moderator_id": mid,
                    "action": action,
                    "until": until,
                    "at": at,
                    "note": None
                    if note is None
                    else open_value(self._key, "moderation_decisions", "note", did, note).decode(),
                }
                for did, mid, action, until, note, at in conn.execute(
                    "SELECT id, moderator_id, action, until, note_sealed, at FROM"
                    " moderation_decisions WHERE report_id = ? ORDER BY at, rowid",
                    (report["id"],),
                )
            ]
            self._audit(
                conn,
                None,
                "moderation_report_read",
                moderator_id=moderator_id,
                report_id=report["id"],
            )
            return report

    def moderation_frame(self, moderator_id: str, report_id: str) -> bytes:
        """The still (JPEG) of a report's evidence; the read goes to the audit log
        as the report's does. NotFound: no such report, or no still (never taken,
        or deleted by retention)."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id, frame_sealed FROM moderation_reports WHERE id = ?", (str(report_id),)
            ).fetchone()
            if row is None or row[1] is None:
                raise NotFound("no still for this report")
            jpeg = open_value(self._key, "moderation_reports", "frame", row[0], row[1])
            self._audit(
                conn, None, "moderation_frame_read", moderator_id=moderator_id, report_id=row[0]
            )
            return jpeg

    def _report_evidence(
        self, conn: sqlite3.Connection, report: dict[str, Any], sealed: bytes | None
    ) -> dict[str, Any]:
        evidence: dict[str, Any] = {}
        if sealed is not None:
            evidence.update(
                json.loads(
                    open_value(self._key, "moderation_reports", "evidence", report["id"], sealed)
                )
            )
        if report["source"] == "guardian":
            for guardian in controls.guardian_reports(conn, self._key):
                if guardian["report_id"] == report["id"]:
                    evidence["contact_email"] = guardian["contact_email"]
                    evidence["details"] = guardian["details"]
        if report["source"] == "appeal":
            appeal = conn.execute(
                "SELECT id, text_sealed FROM appeals WHERE decision_id = ?", (report["appeal_of"],)
            ).fetchone()
            if appeal is not None:
                evidence["appeal"] = open_value(
                    self._key, "appeals", "text", appeal[0], appeal[1]
                ).decode()
        return evidence

    # -- decisions -----------------------------------------------------------------

    def decide(
        self, moderator_id: str, report_id: str, action: str, duration_s: float | None, note: str
    ) -> dict[str, Any]:
        """A moderator decides an open report: dismiss; warn (the reported account
        gets a notice); ban by account and by address hash for duration_s seconds
        (None: for good). An `underage` report confirmed by a ban deletes the account
        at once (as `mediaserver accounts confirm-underage`) and bans the visit's
        address hash. On an appeal: dismiss keeps the appealed ban; warn or ban
        first lifts it. Returns the decision. NotFound, Invalid, Conflict (decided
        already; a legal hold keeps the account)."""
        if action not in ACTIONS:
            raise Invalid("action", "must be one of " + ", ".join(ACTIONS))
        until_offset = self._check_duration(action, duration_s)
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise Invalid("note", f"at most {MAX_NOTE} characters")
        decision_id = secrets.token_hex(12)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT status, reason, source, reported_user_id, reported_address, appeal_of"
                " FROM moderation_reports WHERE id = ?",
                (str(report_id),),
            ).fetchone()
            if row is None:
                raise NotFound("no such report")
            status, reason, source, user_id, address, appeal_of = row
            if status != "open":
                raise Conflict("this report is decided already")
            now = self._now()
            until = None if until_offset is None else now + until_offset
            sealed_note = (
                None
                if not note
                else seal_value(
                    self._key, "moderation_decisions", "note", decision_id, note.encode()
                )
            )
            conn.execute(
                "INSERT INTO moderation_decisions (id, report_id, moderator_id, action,"
                " until, note_sealed, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (decision_id, report_id, moderator_id, action, until, sealed_note, now),
            )
            conn.execute(
                "UPDATE moderation_reports SET status = 'decided' WHERE id = ?", (report_id,)
            )
            touched: set[tuple[str, str]] = set()
            if source == "appeal" and action != "dismiss":
                # the appeal succeeded: the appealed ban ends now (a ban replaces it)
                touched.update(
                    conn.execute(
                        "SELECT kind, subject FROM bans WHERE decision_id = ?", (appeal_of,)
                    )
                )
                conn.execute(
                    "UPDATE bans SET until = ? WHERE decision_id = ?"
                    " AND (until IS NULL OR until > ?)",
                    (now, appeal_of, now),
                )
            deleted = False
            if action == "warn" and user_id is not None:
                add_notice(
                    conn,
                    self._key,
                    now,
                    user_id,
                    "moderation",
                    "A warning from the moderators",
                    f"A report about you ({reason}) was reviewed and you are warned."
                    + (f" The moderator's note: {note}" if note else ""),
                )
            elif action == "ban":
                if reason == "underage" and user_id is not None and source != "appeal":
                    if controls.held(conn, user_id):
                        raise Conflict("the account is under a legal hold: deletion waits")
                    self._delete_user(conn, user_id, reason="underage_confirmed", request_id=None)
                    deleted, user_id = True, None
                for kind, subject in (("account", user_id), ("address", address)):
                    if subject is not None:
                        touched.add((kind, subject))
                        conn.execute(
                            "INSERT INTO bans (decision_id, kind, subject, until, at)"
                            " VALUES (?, ?, ?, ?, ?)",
                            (decision_id, kind, subject, until, now),
                        )
                if user_id is not None:
                    # the account learns the end and the decision's id, which an appeal names
                    add_notice(
                        conn,
                        self._key,
                        now,
                        user_id,
                        "moderation",
                        "Your account is banned",
                        _ban_notice(reason, until, note, decision_id),
                    )
            self._audit(
                conn,
                None,
                "moderation_decision",
                moderator_id=moderator_id,
                report_id=report_id,
                decision_id=decision_id,
                action=action,
                until=until,
                account_deleted=deleted,
            )
            bans = [self._ban_state(conn, kind, subject, now) for kind, subject in sorted(touched)]
        if deleted:
            self._scrub_wal()
        return {
            "id": decision_id,
            "report_id": report_id,
            "action": action,
            "until": until,
            "at": now,
            "account_deleted": deleted,
            "bans": bans,
        }

    def reporter_dismissals(self, reporter_address: str) -> int:
        """How many random-chat reports from this address hash moderators dismissed
        (DISMISSALS_STOP_COUNTING or more: its reports no longer refuse anyone)."""
        with self._tx(write=False) as conn:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM moderation_reports r JOIN moderation_decisions d"
                    " ON d.report_id = r.id WHERE r.reporter_address = ?"
                    " AND d.action = 'dismiss'",
                    (reporter_address,),
                ).fetchone()[0]
            )

    def moderation_stats(self) -> dict[str, Any]:
        """For /metrics: open reports, the oldest open one's age (seconds, 0 with
        none), decisions by action, bans in force by kind."""
        with self._tx(write=False) as conn:
            now = self._now()
            count, oldest = conn.execute(
                "SELECT COUNT(*), MIN(at) FROM moderation_reports WHERE status = 'open'"
            ).fetchone()
            decisions = dict.fromkeys(ACTIONS, 0)
            decisions.update(
                conn.execute("SELECT action, COUNT(*) FROM moderation_decisions GROUP BY action")
            )
            bans = {"account": 0, "address": 0}
            bans.update(
                conn.execute(
                    "SELECT kind, COUNT(DISTINCT subject) FROM bans"
                    " WHERE until IS NULL OR until > ? GROUP BY kind",
                    (now,),
                )
            )
        return {
            "open_reports": int(count),
            "oldest_open_age": 0.0 if oldest is None else max(0.0, now - float(oldest)),
            "decisions": decisions,
            "bans": bans,
        }

    # -- bans ----------------------------------------------------------------------

    @staticmethod
    def _ban_state(conn: sqlite3.Connection, kind: str, subject: str, now: float) -> Ban:
        row = conn.execute(
            "SELECT COUNT(*), MAX(until IS NULL), MAX(until) FROM bans WHERE kind = ?"
            " AND subject = ? AND (until IS NULL OR until > ?)",
            (kind, subject, now),
        ).fetchone()
        if not row[0]:
            return Ban(kind, subject, None, active=False)
        return Ban(kind, subject, None if row[1] else float(row[2]))

    def ban_until(self, user_id: str | None, address: str) -> float | None:
        """When the ban on this account or keyed address hash ends: math.inf for
        good, None when none holds."""
        with self._tx(write=False) as conn:
            now = self._now()
            states = [
                self._ban_state(conn, kind, subject, now)
                for kind, subject in (("account", user_id), ("address", address))
                if subject is not None
            ]
        active = [s for s in states if s.active]
        if not active:
            return None
        return max(math.inf if s.until is None else s.until for s in active)

    # -- appeals -------------------------------------------------------------------

    def appeal(
        self,
        user_id: str,
        text: str,
        *,
        decision_id: str | None = None,
        report_id: str | None = None,
    ) -> dict[str, Any]:
        """The banned account appeals a ban decision (named by its id, or by the
        report's), once per decision: the appeal joins the queue as a report of
        source `appeal`. NotFound: no ban decision on this account; Conflict:
        appealed already."""
        if not isinstance(text, str) or not 1 <= len(text.strip()) <= MAX_APPEAL:
            raise Invalid("text", f"1-{MAX_APPEAL} characters")
        with self._tx() as conn:
            sql = (
                "SELECT d.id, r.reason FROM moderation_decisions d"
                " JOIN moderation_reports r ON r.id = d.report_id"
                " JOIN bans b ON b.decision_id = d.id AND b.kind = 'account'"
                " AND b.subject = ? WHERE d.action = 'ban' AND "
            )
            if decision_id is not None:
                row = conn.execute(sql + "d.id = ?", (user_id, str(decision_id))).fetchone()
            else:
                row = conn.execute(
                    sql + "d.report_id = ? ORDER BY d.at DESC LIMIT 1", (user_id, str(report_id))
                ).fetchone()
            if row is None:
                raise NotFound("no ban decision on your account")
            decision, reason = row
            if conn.execute("SELECT 1 FROM appeals WHERE decision_id = ?", (decision,)).fetchone():
                raise Conflict("this decision was appealed already")
            now = self._now()
            appeal_id, report = secrets.token_hex(12), secrets.token_hex(12)
            sealed = seal_value(self._key, "appeals", "text", appeal_id, text.strip().encode())
            conn.execute(
                "INSERT INTO appeals (id, decision_id, user_id, text_sealed, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (appeal_id, decision, user_id, sealed, now),
            )
            conn.execute(
                "INSERT INTO moderation_reports (id, source, reason, status, at,"
                " reported_user_id, appeal_of) VALUES (?, 'appeal', ?, 'open', ?, ?, ?)",
                (report, reason, now, user_id, decision),
            )
            self._audit(conn, None, "moderation_appeal", decision_id=decision, report_id=report)
        return {"id": appeal_id, "decision_id": decision, "report_id": report, "at": now}

    @staticmethod
    def _check_duration(action: str, duration_s: object) -> float | None:
        if action != "ban":
            if duration_s is not None:
                raise Invalid("duration_s", "only a ban has a duration")
            return None
        if duration_s is None:
            return None
        if (
            isinstance(duration_s, bool)
            or not isinstance(duration_s, (int, float))
            or not 1 <= duration_s <= MAX_BAN_SECONDS
        ):
            raise Invalid("duration_s", f"seconds, 1..{MAX_BAN_SECONDS}, or null for good")
        return float(duration_s)
