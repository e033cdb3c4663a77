"""Who may see whose photo: per-share photo capabilities and the age line. SQL helpers
the Store's domains (profiles, privacy, social) call inside their own transactions.

A photo reaches other people only by URL (PHOTO_PATH + an unguessable id), of two kinds:

- the listing id (photos.public_id), handed out in browsing while the owner is
  discoverable; served only while they are, and replaced on re-upload;
- one id per shared profile card (photo_shares), each its own capability: it ends
  SHARE_TTL after the share, when the owner withdraws it (DELETE
  /profiles/{id}/shares/{share_id}), and when the owner deletes or replaces the photo
  or stops being discoverable.

The age line: when --min-age lets accounts under 18 in, adults and minors never see
each other (listings, handles, cards): same_side() is the test (in Python: dates of
birth are sealed, SQL cannot see them).
"""

from __future__ import annotations

import datetime as _dt
import secrets
import sqlite3
from typing import Any

SHARE_TTL = 86400.0
"""Seconds a shared card's photo URL works (unless withdrawn or revoked sooner)."""
ADULT_AGE = 18

MIGRATION: list[str] = [
    """CREATE TABLE photo_shares (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX photo_shares_user ON photo_shares(user_id)",
    "CREATE INDEX photo_shares_expiry ON photo_shares(expires_at)",
]


def new_share(conn: sqlite3.Connection, user_id: str, now: float) -> str:
    """A fresh capability id for one shared card's photo URL."""
    share_id = secrets.token_urlsafe(16)
    conn.execute(
        "INSERT INTO photo_shares (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (share_id, user_id, now, now + SHARE_TTL),
    )
    return share_id


def revoke_all(conn: sqlite3.Connection, user_id: str) -> int:
    """Every card share of this user stops working (photo deleted or replaced, or the
    owner left the listing)."""
    return int(conn.execute("DELETE FROM photo_shares WHERE user_id = ?", (user_id,)).rowcount)


def withdraw(conn: sqlite3.Connection, user_id: str, share_id: object) -> bool:
    """The owner withdraws one share; False if it is not theirs (or gone)."""
    if not isinstance(share_id, str):
        return False
    return bool(conn.execute(
        "DELETE FROM photo_shares WHERE id = ? AND user_id = ?", (share_id, user_id)
    ).rowcount)


def live_shares(conn: sqlite3.Connection, user_id: str, now: float) -> list[dict[str, Any]]:
    return [
        {"id": sid, "created_at": created, "expires_at": expires}
        for sid, created, expires in conn.execute(
            "SELECT id, created_at, expires_at FROM photo_shares"
            " WHERE user_id = ? AND expires_at > ? ORDER BY created_at, id",
            (user_id, now),
        )
    ]


def photo_by_capability(
    conn: sqlite3.Connection, capability: str, now: float
) -> tuple[str, bytes, bytes] | None:
    """(owner id, nonce, ciphertext) of the photo a URL id grants, or None: a listing
    id while its owner is discoverable, or a live card share."""
    row = conn.execute(
        "SELECT p.user_id, p.nonce, p.ciphertext FROM photos p JOIN users u"
        " ON u.id = p.user_id WHERE p.public_id = ? AND u.discoverable = 1"
        " UNION ALL"
        " SELECT p.user_id, p.nonce, p.ciphertext FROM photo_shares s JOIN photos p"
        " ON p.user_id = s.user_id WHERE s.id = ? AND s.expires_at > ?",
        (capability, capability, now),
    ).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]), bytes(row[2]))


def purge_expired(conn: sqlite3.Connection, now: float) -> int:
    return int(conn.execute(
        "DELETE FROM photo_shares WHERE expires_at <= ?", (now,)).rowcount)


def adult_cutoff(today: _dt.date) -> str:
    """The latest date of birth (ISO) of someone who is ADULT_AGE today; ISO dates
    compare as strings, so `dob <= cutoff` means adult."""
    try:
        born = today.replace(year=today.year - ADULT_AGE)
    except ValueError:  # 29 February: born on the 28th is 18 today, the 1st is not
        born = today.replace(year=today.year - ADULT_AGE, day=28)
    return born.isoformat()


def same_side(dob: str, viewer_dob: str, today: _dt.date) -> bool:
    """Whether the date of birth `dob` is on the same side of the age line as the
    viewer's."""
    cutoff = adult_cutoff(today)
    return (dob <= cutoff) == (viewer_dob <= cutoff)
