"""Conversations between connected accounts: one per pair, each participant with its
own sealed copy of the history, kept only while that participant has keep_history on,
purged by the retention job 6 months after the conversation's last message unless that
participant saved it, and deletable by its owner at any time.

A copy is AES-256-GCM under the data key with AAD naming the conversation, the copy's
owner and the message (a copy moved to another owner or message does not open). When
an account is deleted its copies and membership go; the conversation stays for the
other side, showing a deleted user it can no longer message.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from typing import Any

from mediaserver.store import crypto
from mediaserver.store.connection_rows import are_connected
from mediaserver.store.connections import ConnectionStore, display_name, public_face
from mediaserver.store.errors import Invalid, NotFound, StoreError
from mediaserver.store.limits import MAX_CHAT_TEXT, validate_bool

PAGE_DEFAULT = 50
PAGE_MAX = 100
MISSED_CALL = "missed_call"
"""The kind of the system entry a ring that nobody answered leaves in the callee's copy."""


class NotConnected(StoreError):
    """The conversation's peer is no accepted connection (removed, blocked or deleted)."""


def copy_aad(conversation_id: str, owner_id: str, message_id: str) -> bytes:
    return ("conversation\x00" + conversation_id + "\x00" + owner_id + "\x00"
            + message_id).encode()


def _peer_of(row: tuple[Any, ...], user_id: str) -> str | None:
    lo, hi = row
    peer = hi if lo == user_id else lo
    return None if peer is None else str(peer)


def read_copy(
    conn: sqlite3.Connection, key: bytes, owner_id: str, conversation_id: str,
    before: int | None, limit: int,
) -> list[dict[str, Any]]:
    """The owner's copy, newest first, `limit` entries older than row `before`."""
    rows = conn.execute(
        "SELECT id, message_id, at, nonce, ciphertext FROM conversation_messages"
        " WHERE conversation_id = ? AND owner_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        (conversation_id, owner_id, 2**62 if before is None else before, limit)).fetchall()
    out = []
    for row_id, message_id, at, nonce, ciphertext in rows:
        entry = json.loads(crypto.open_sealed(
            key, nonce, ciphertext, copy_aad(conversation_id, owner_id, message_id)))
        out.append({"id": message_id, "at": at, "cursor": str(row_id), **entry})
    return out


def conversations_export(conn: sqlite3.Connection, key: bytes, user_id: str) -> list[Any]:
    """Every conversation's flags and the user's copy, oldest first (access export)."""
    out = []
    for conversation_id, keep, saved in conn.execute(
            "SELECT conversation_id, keep_history, saved FROM conversation_members"
            " WHERE user_id = ? ORDER BY conversation_id", (user_id,)).fetchall():
        messages = read_copy(conn, key, user_id, conversation_id, None, 2**31)
        for m in messages:
            del m["cursor"]
        out.append({"conversation_id": conversation_id, "keep_history": bool(keep),
                    "saved": bool(saved), "messages": messages[::-1]})
    return out


def purge_expired(conn: sqlite3.Connection, cutoff: float) -> int:
    """Retention: the copies of conversations whose last message is older than
    `cutoff`, except those their owners saved. Returns how many went. Conversations
    whose participants are both gone go too."""
    conn.execute("DELETE FROM conversations WHERE NOT EXISTS (SELECT 1 FROM"
                 " conversation_members m WHERE m.conversation_id = conversations.id)")
    return int(conn.execute(
        "DELETE FROM conversation_messages WHERE id IN (SELECT m.id FROM"
        " conversation_messages m JOIN conversations c ON c.id = m.conversation_id"
        " JOIN conversation_members cm ON cm.conversation_id = m.conversation_id"
        " AND cm.user_id = m.owner_id WHERE cm.saved = 0 AND c.last_message_at <= ?)",
        (cutoff,)).rowcount)


class ConversationStore(ConnectionStore):
    """Conversations, their copies, direct messages and call entries (a part of Store)."""

    def conversations(self, user_id: str) -> list[dict[str, Any]]:
        """The user's conversations, latest message first: the peer (handle, photo and
        name while connected; a deleted user: all None, deleted true), connected,
        last_message_at, unread (in the kept copy), keep_history, saved."""
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            rows = conn.execute(
                "SELECT c.id, c.user_lo, c.user_hi, c.last_message_at, m.keep_history,"
                " m.saved, (SELECT COUNT(*) FROM conversation_messages x WHERE"
                "  x.conversation_id = c.id AND x.owner_id = ? AND x.incoming = 1"
                "  AND x.at > m.read_at)"
                " FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id"
                " WHERE m.user_id = ? ORDER BY COALESCE(c.last_message_at, c.created_at) DESC,"
                " c.id", (user_id, user_id)).fetchall()
            return [self._summary(conn, user_id, row) for row in rows]

    def conversation(self, user_id: str, conversation_id: str) -> dict[str, Any]:
        with self._tx(write=False) as conn:
            return self._summary(conn, user_id, self._member_row(conn, user_id, conversation_id))

    def conversation_messages(
        self, user_id: str, conversation_id: str, before: str | None = None,
        limit: int = PAGE_DEFAULT,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the user's copy, newest first, and the cursor of the next (older)
        page or None. The first page marks the conversation read."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_MAX:
            raise Invalid("limit", f"1-{PAGE_MAX}")
        cursor = None
        if before is not None:
            if (not isinstance(before, str) or not (before.isascii() and before.isdigit())
                    or len(before) > 18):
                raise Invalid("before", "not a cursor this server gave out")
            cursor = int(before)
        with self._tx(write=before is None) as conn:
            self._member_row(conn, user_id, conversation_id)
            page = read_copy(conn, self._key, user_id, conversation_id, cursor, limit + 1)
            if before is None:
                conn.execute("UPDATE conversation_members SET read_at = ? WHERE"
                             " conversation_id = ? AND user_id = ?",
                             (self._now(), conversation_id, user_id))
        next_cursor = page[limit - 1]["cursor"] if len(page) > limit else None
        for entry in page:
            del entry["cursor"]
        return page[:limit], next_cursor

    def update_conversation(
        self, user_id: str, conversation_id: str, keep_history: bool | None = None,
        saved: bool | None = None,
    ) -> dict[str, Any]:
        """Set the user's own flags. Turning keep_history off deletes the user's copy
        (withdrawn consent keeps nothing)."""
        with self._tx() as conn:
            self._member_row(conn, user_id, conversation_id)
            if keep_history is not None:
                keep = validate_bool("keep_history", keep_history)
                conn.execute("UPDATE conversation_members SET keep_history = ? WHERE"
                             " conversation_id = ? AND user_id = ?",
                             (int(keep), conversation_id, user_id))
                conn.execute("INSERT INTO consents (user_id, kind, granted, source, at)"
                             " VALUES (?, 'conversation_history', ?, 'api', ?)",
                             (user_id, int(keep), self._now()))
                if not keep:
                    self._delete_copy(conn, user_id, conversation_id)
            if saved is not None:
                conn.execute("UPDATE conversation_members SET saved = ? WHERE"
                             " conversation_id = ? AND user_id = ?",
                             (int(validate_bool("saved", saved)), conversation_id, user_id))
            summary = self._summary(conn, user_id, self._member_row(conn, user_id,
                                                                    conversation_id))
        if keep_history is False:
            self._scrub_wal()
        return summary

    def delete_conversation_history(self, user_id: str, conversation_id: str) -> int:
        """Delete the user's copy (the other side keeps its own); how many went."""
        with self._tx() as conn:
            self._member_row(conn, user_id, conversation_id)
            deleted = self._delete_copy(conn, user_id, conversation_id)
        self._scrub_wal()
        return deleted

    def send_direct(self, user_id: str, conversation_id: str, text: str) -> dict[str, Any]:
        """A message from the user to its connection: kept in each copy whose owner
        keeps history. Returns {message_id, at, peer} (peer: the recipient's id).

        Raises:
            NotFound: not the user's conversation. NotConnected: the peer is no
            accepted connection (or deleted). Invalid: the text."""
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_CHAT_TEXT:
            raise Invalid("text", f"1-{MAX_CHAT_TEXT} characters")
        with self._tx() as conn:
            peer = self._connected_peer(conn, user_id, conversation_id)
            now, message_id = self._now(), secrets.token_hex(8)
            for owner, incoming in ((user_id, False), (peer, True)):
                self._keep(conn, owner, conversation_id, message_id, now, incoming,
                           {"from": "them" if incoming else "me", "kind": "message",
                            "text": text}, only_if_kept=True)
            conn.execute("UPDATE conversations SET last_message_at = ? WHERE id = ?",
                         (now, conversation_id))
            return {"message_id": message_id, "at": now, "peer": peer}

    def call_peer(self, user_id: str, conversation_id: str) -> tuple[str, str]:
        """(the peer's id, the caller's handle) for a call in this conversation.

        Raises: NotFound, NotConnected (as send_direct)."""
        with self._tx(write=False) as conn:
            me = self._get_profile(conn, user_id)
            return self._connected_peer(conn, user_id, conversation_id), me.username

    def record_missed_call(self, callee_id: str, conversation_id: str, caller_handle: str) -> None:
        """A ring nobody answered: a system entry in the callee's copy (kept whatever
        keep_history says: it is the callee's notice of the call)."""
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM conversation_members WHERE conversation_id = ?"
                            " AND user_id = ?", (conversation_id, callee_id)).fetchone() is None:
                return  # the callee's account went meanwhile
            now = self._now()
            self._keep(conn, callee_id, conversation_id, secrets.token_hex(8), now, True,
                       {"from": "system", "kind": MISSED_CALL, "caller": caller_handle},
                       only_if_kept=False)
            conn.execute("UPDATE conversations SET last_message_at = ? WHERE id = ?",
                         (now, conversation_id))
        self.inbox_notice(callee_id, MISSED_CALL, "Missed call",
                          f"{caller_handle} called you.")

    # -- helpers ------------------------------------------------------------------------

    def _keep(
        self, conn: sqlite3.Connection, owner: str, conversation_id: str, message_id: str,
        at: float, incoming: bool, entry: dict[str, Any], *, only_if_kept: bool,
    ) -> None:
        if only_if_kept and not conn.execute(
                "SELECT keep_history FROM conversation_members WHERE conversation_id = ?"
                " AND user_id = ?", (conversation_id, owner)).fetchone()[0]:
            return
        nonce, ciphertext = crypto.seal(self._key, json.dumps(entry).encode(),
                                        copy_aad(conversation_id, owner, message_id))
        conn.execute(
            "INSERT INTO conversation_messages (conversation_id, owner_id, message_id,"
            " incoming, at, nonce, ciphertext) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, owner, message_id, int(incoming), at, nonce, ciphertext))

    @staticmethod
    def _delete_copy(conn: sqlite3.Connection, user_id: str, conversation_id: str) -> int:
        return int(conn.execute(
            "DELETE FROM conversation_messages WHERE conversation_id = ? AND owner_id = ?",
            (conversation_id, user_id)).rowcount)

    def _member_row(
        self, conn: sqlite3.Connection, user_id: str, conversation_id: object
    ) -> tuple[Any, ...]:
        """The summary row of one of the user's conversations; another's is answered
        like a missing one."""
        self._get_profile(conn, user_id)
        row = None
        if isinstance(conversation_id, str) and len(conversation_id) <= 64:
            row = conn.execute(
                "SELECT c.id, c.user_lo, c.user_hi, c.last_message_at, m.keep_history,"
                " m.saved, (SELECT COUNT(*) FROM conversation_messages x WHERE"
                "  x.conversation_id = c.id AND x.owner_id = m.user_id AND x.incoming = 1"
                "  AND x.at > m.read_at)"
                " FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id"
                " WHERE m.user_id = ? AND c.id = ?", (user_id, conversation_id)).fetchone()
        if row is None:
            raise NotFound("no such conversation")
        return tuple(row)

    def _connected_peer(self, conn: sqlite3.Connection, user_id: str, conversation_id: str) -> str:
        row = self._member_row(conn, user_id, conversation_id)
        peer = _peer_of(row[1:3], user_id)
        if peer is None or not are_connected(conn, user_id, peer):
            raise NotConnected("not connected")
        return peer

    def _summary(
        self, conn: sqlite3.Connection, user_id: str, row: tuple[Any, ...]
    ) -> dict[str, Any]:
        conversation_id, lo, hi, last_at, keep, saved, unread = row
        peer = _peer_of((lo, hi), user_id)
        connected = peer is not None and are_connected(conn, user_id, peer)
        if peer is None:
            face: dict[str, Any] = {"handle": None, "photo_url": None, "name": None,
                                    "deleted": True}
        else:
            handle, photo_url = public_face(conn, self._key, peer)
            # photo and name only while connected: after a removal or a block the
            # other side keeps no window on the profile beyond the handle it knew
            face = {"handle": handle, "photo_url": photo_url if connected else None,
                    "deleted": False,
                    "name": display_name(conn, self._key, peer) if connected else None}
        return {"id": conversation_id, "peer": face, "connected": connected,
                "last_message_at": last_at, "unread": unread, "keep_history": bool(keep),
                "saved": bool(saved)}
