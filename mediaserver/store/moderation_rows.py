"""The schema step of the moderation desk (store/moderation.py) and the SQL on its
rows that other domains use (a REST or a guardian's report joins the queue). No store
imports: store/schema.py and store/social.py import it.

Rows: `moderation_reports`, every report to review (from the random chat, the REST
API or a guardian), with the reported visit's keyed address hash (the matchmaker's
reputation key: an HMAC, never the address) and the account when one was signed in;
its evidence (chat lines and a still of the video, as the reporter chose) sealed with the data key and kept
EVIDENCE_SECONDS. `moderation_decisions`: what a moderator decided (its note sealed).
`bans`: by account or by address hash, until a time or for good. `appeals`: one per
decision, its text sealed. The moderator role is a column of users.
"""

from __future__ import annotations

import sqlite3

from mediaserver.store.limits import DAY

EVIDENCE_SECONDS = 30 * DAY
"""How long a report's evidence is kept (then retention deletes it)."""
REPORT_SOURCES = ("chat", "account", "guardian", "appeal")
"""Where a report came from: the random chat's `report`, POST /reports, a guardian's
POST /reports/underage, or an appeal of a decision (back into the queue)."""

MIGRATION = [
    "ALTER TABLE users ADD COLUMN moderator INTEGER NOT NULL DEFAULT 0",
    # reported_address / reporter_address: the visit's keyed address hash (HMAC)
    """CREATE TABLE moderation_reports (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL CHECK (source IN ('chat', 'account', 'guardian', 'appeal')),
        reason TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'decided')),
        at REAL NOT NULL,
        reported_address TEXT,
        reported_user_id TEXT REFERENCES users(id) ON DELETE SET NULL,
        reporter_address TEXT,
        reporter_user_id TEXT REFERENCES users(id) ON DELETE SET NULL,
        evidence_sealed BLOB,
        evidence_until REAL,
        appeal_of TEXT
    )""",
    "CREATE INDEX moderation_reports_queue ON moderation_reports(status, at)",
    "CREATE INDEX moderation_reports_reporter ON moderation_reports(reporter_address)",
    "CREATE INDEX moderation_reports_evidence ON moderation_reports(evidence_until)",
    """CREATE TABLE moderation_decisions (
        id TEXT PRIMARY KEY,
        report_id TEXT NOT NULL REFERENCES moderation_reports(id),
        moderator_id TEXT REFERENCES users(id) ON DELETE SET NULL,
        action TEXT NOT NULL CHECK (action IN ('dismiss', 'warn', 'ban')),
        until REAL,
        note_sealed BLOB,
        at REAL NOT NULL
    )""",
    "CREATE INDEX moderation_decisions_report ON moderation_decisions(report_id)",
    # subject: an account id (kind 'account') or a keyed address hash ('address');
    # until NULL: for good
    """CREATE TABLE bans (
        id INTEGER PRIMARY KEY,
        decision_id TEXT REFERENCES moderation_decisions(id),
        kind TEXT NOT NULL CHECK (kind IN ('account', 'address')),
        subject TEXT NOT NULL,
        until REAL,
        at REAL NOT NULL
    )""",
    "CREATE INDEX bans_subject ON bans(kind, subject)",
    """CREATE TABLE appeals (
        id TEXT PRIMARY KEY,
        decision_id TEXT NOT NULL UNIQUE REFERENCES moderation_decisions(id),
        user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
        text_sealed BLOB NOT NULL,
        at REAL NOT NULL
    )""",
]
"""The schema step of the moderation desk (appended to MIGRATIONS)."""

STILL_MIGRATION = [
    # a still of the reported visitor's video, when the reporter asked for one:
    # a JPEG sealed with the data key, kept and purged with the rest of the evidence
    "ALTER TABLE moderation_reports ADD COLUMN frame_sealed BLOB",
]
"""The next step: the still frame (appended to MIGRATIONS after MIGRATION)."""


def purge_evidence(conn: sqlite3.Connection, now: float) -> int:
    """Retention: evidence kept EVIDENCE_SECONDS goes (the report stays, without
    it); secure_delete overwrites it in the file. Returns how many reports lost it."""
    return int(
        conn.execute(
            "UPDATE moderation_reports SET evidence_sealed = NULL, frame_sealed = NULL,"
            " evidence_until = NULL WHERE evidence_until IS NOT NULL AND evidence_until <= ?",
            (now,),
        ).rowcount
    )


def queue_report(
    conn: sqlite3.Connection,
    report_id: str,
    source: str,
    reason: str,
    at: float,
    *,
    reported_user_id: str | None = None,
    reporter_user_id: str | None = None,
) -> None:
    """A REST or guardian report joins the moderation queue under its own id (the id
    `mediaserver accounts confirm-underage` takes too); its evidence stays where it
    is (a guardian's contact and details in guardian_reports)."""
    conn.execute(
        "INSERT INTO moderation_reports (id, source, reason, status, at, reported_user_id,"
        " reporter_user_id) VALUES (?, ?, ?, 'open', ?, ?, ?)",
        (report_id, source, reason, at, reported_user_id, reporter_user_id),
    )
