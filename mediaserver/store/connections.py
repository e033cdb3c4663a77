"""Connections between accounts: a request by handle, accepted or declined by the
other side, removable by either; a block ends one and refuses new ones. Only
accepted connections message or call each other (store/conversations.py).

No enumeration: asking for an unknown handle, one across the age line, one that is
not discoverable, or one who blocked you fails the same way (NotFound). A declined
request and a block look alike to the asker: the request is simply gone.
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

from mediaserver.store.connection_rows import are_connected, blocked_either_way, ordered
from mediaserver.store.core import PHOTO_PATH
from mediaserver.store.errors import Invalid, NotFound
from mediaserver.store.notices import add_notice
from mediaserver.store.sealed_fields import open_field
from mediaserver.store.social import SocialStore


def display_name(conn: sqlite3.Connection, key: bytes, user_id: str) -> str | None:
    """THE place an accepted connection's display name comes from (None: the profile
    has none). Only ever called for accepted connections."""
    row = conn.execute("SELECT name_sealed FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    return str(open_field(key, user_id, "name", row[0]))


def public_face(conn: sqlite3.Connection, key: bytes, user_id: str) -> tuple[str, str | None]:
    """(handle, listing photo URL or None) of an account."""
    row = conn.execute(
        "SELECT u.username_sealed, p.public_id FROM users u"
        " LEFT JOIN photos p ON p.user_id = u.id WHERE u.id = ?", (user_id,)).fetchone()
    handle = str(open_field(key, user_id, "username", row[0]))
    return handle, None if row[1] is None else PHOTO_PATH + row[1]


def open_conversation(conn: sqlite3.Connection, a: str, b: str, now: float) -> str:
    """The pair's conversation (made on their first accepted connection) with both
    members; its id."""
    lo, hi = ordered(a, b)
    row = conn.execute(
        "SELECT id FROM conversations WHERE user_lo = ? AND user_hi = ?", (lo, hi)).fetchone()
    if row is not None:
        conversation_id = str(row[0])
    else:
        conversation_id = secrets.token_hex(12)
        conn.execute("INSERT INTO conversations (id, user_lo, user_hi, created_at)"
                     " VALUES (?, ?, ?, ?)", (conversation_id, lo, hi, now))
    for user in (lo, hi):
        conn.execute("INSERT OR IGNORE INTO conversation_members (conversation_id, user_id)"
                     " VALUES (?, ?)", (conversation_id, user))
    return conversation_id


class ConnectionStore(SocialStore):
    """Connection requests and accepted connections (a part of Store)."""

    def request_connection(self, user_id: str, handle: str) -> dict[str, Any]:
        """Ask the owner of `handle` to connect. An existing request or connection
        is returned as it is; their pending request to you is accepted.

        Raises:
            NotFound: no such handle, across the age line, not discoverable, or a
                block either way (all alike).
            Invalid: not a handle, or your own."""
        with self._tx() as conn:
            me = self._get_profile(conn, user_id)
            other = self._user_by_handle(conn, handle, "handle", me)
            if other == user_id:
                raise Invalid("handle", "you cannot connect to yourself")
            listed = conn.execute(
                "SELECT discoverable FROM users WHERE id = ?", (other,)).fetchone()[0]
            existing = conn.execute(
                "SELECT id, requester_id, status FROM connections"
                " WHERE user_lo = ? AND user_hi = ?", ordered(user_id, other)).fetchone()
            if existing is None and (not listed or blocked_either_way(conn, user_id, other)):
                raise NotFound("no such handle")
            now = self._now()
            if existing is None:
                connection_id = secrets.token_hex(12)
                conn.execute(
                    "INSERT INTO connections (id, requester_id, addressee_id, status,"
                    " created_at, user_lo, user_hi) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                    (connection_id, user_id, other, now, *ordered(user_id, other)))
            else:
                connection_id = str(existing[0])
                if existing[2] == "pending" and existing[1] == other:
                    self._accept(conn, connection_id, other, user_id, now)
            made = self._connection(conn, connection_id, user_id)
        if existing is None:
            self.inbox_notice(other, "connection_request", "New connection request",
                              f"{me.username} asks to connect with you.")
        return made

    def connections(self, user_id: str) -> list[dict[str, Any]]:
        """The user's accepted connections and pending requests (in and out),
        newest first."""
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            ids = [row[0] for row in conn.execute(
                "SELECT id FROM connections WHERE requester_id = ? OR addressee_id = ?"
                " ORDER BY COALESCE(accepted_at, created_at) DESC, id", (user_id, user_id))]
            return [self._connection(conn, cid, user_id) for cid in ids]

    def accept_connection(self, user_id: str, connection_id: str) -> dict[str, Any]:
        """Accept a request made to the user (NotFound: none such)."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            row = self._connection_row(conn, connection_id, user_id)
            if row[2] != user_id or row[3] != "pending":
                raise NotFound("no such request")
            self._accept(conn, connection_id, row[1], user_id, self._now())
            return self._connection(conn, connection_id, user_id)

    def decline_connection(self, user_id: str, connection_id: str) -> None:
        """Decline a request made to the user: it is gone (the asker can tell
        nothing more than that)."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            row = self._connection_row(conn, connection_id, user_id)
            if row[2] != user_id or row[3] != "pending":
                raise NotFound("no such request")
            conn.execute("DELETE FROM connections WHERE id = ?", (connection_id,))

    def remove_connection(self, user_id: str, connection_id: str) -> None:
        """Either side removes a connection or withdraws/declines a request."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            self._connection_row(conn, connection_id, user_id)
            conn.execute("DELETE FROM connections WHERE id = ?", (connection_id,))

    def inbox_notice(self, user_id: str, kind: str, subject: str, body: str) -> None:
        """THE place connection requests and missed calls reach the notices inbox (and
        the verified address by mail); the request also shows in GET /connections, a
        missed call in the conversation (record_missed_call)."""
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone():
                add_notice(conn, self._key, self._now(), user_id, kind, subject, body)

    # -- helpers ------------------------------------------------------------------------

    def _accept(
        self, conn: sqlite3.Connection, connection_id: str, requester: str, addressee: str,
        now: float,
    ) -> None:
        conn.execute("UPDATE connections SET status = 'accepted', accepted_at = ?"
                     " WHERE id = ?", (now, connection_id))
        open_conversation(conn, requester, addressee, now)

    @staticmethod
    def _connection_row(
        conn: sqlite3.Connection, connection_id: object, user_id: str
    ) -> tuple[Any, ...]:
        """(id, requester, addressee, status) of one of the user's connections; someone
        else's is answered like a missing one."""
        row = None
        if isinstance(connection_id, str) and len(connection_id) <= 64:
            row = conn.execute(
                "SELECT id, requester_id, addressee_id, status FROM connections WHERE id = ?"
                " AND (requester_id = ? OR addressee_id = ?)",
                (connection_id, user_id, user_id)).fetchone()
        if row is None:
            raise NotFound("no such connection")
        return tuple(row)

    def _connection(
        self, conn: sqlite3.Connection, connection_id: str, user_id: str
    ) -> dict[str, Any]:
        _, requester, addressee, status = self._connection_row(conn, connection_id, user_id)
        other = addressee if requester == user_id else requester
        handle, photo_url = public_face(conn, self._key, other)
        accepted = status == "accepted"
        conversation = None
        if accepted:
            row = conn.execute("SELECT id FROM conversations WHERE user_lo = ? AND user_hi = ?",
                               ordered(user_id, other)).fetchone()
            conversation = None if row is None else row[0]
        return {
            "id": connection_id,
            "handle": handle,
            "photo_url": photo_url,
            # the name only to accepted connections
            "name": display_name(conn, self._key, other) if accepted else None,
            "status": status,
            "direction": "out" if requester == user_id else "in",
            "conversation_id": conversation,
        }
