"""The schema step of connections and conversations (store/connections.py,
store/conversations.py) and the SQL on connection rows that other domains use (a block
ends a connection). No store imports: store/schema.py and store/social.py import it."""

from __future__ import annotations

import sqlite3

MIGRATION = [
    # requester and addressee go with their account; a pair holds one row at most
    """CREATE TABLE connections (
        id TEXT PRIMARY KEY,
        requester_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        addressee_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'accepted')),
        created_at REAL NOT NULL,
        accepted_at REAL,
        user_lo TEXT NOT NULL,
        user_hi TEXT NOT NULL,
        UNIQUE (user_lo, user_hi)
    )""",
    "CREATE INDEX connections_requester ON connections(requester_id)",
    "CREATE INDEX connections_addressee ON connections(addressee_id)",
    # one conversation per pair of accounts; a deleted participant's column becomes
    # NULL so the other side keeps its copy and sees a deleted user
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        user_lo TEXT REFERENCES users(id) ON DELETE SET NULL,
        user_hi TEXT REFERENCES users(id) ON DELETE SET NULL,
        created_at REAL NOT NULL,
        last_message_at REAL
    )""",
    "CREATE UNIQUE INDEX conversations_pair ON conversations(user_lo, user_hi)",
    "CREATE INDEX conversations_hi ON conversations(user_hi)",
    """CREATE TABLE conversation_members (
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        keep_history INTEGER NOT NULL DEFAULT 0,
        saved INTEGER NOT NULL DEFAULT 0,
        read_at REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (conversation_id, user_id)
    )""",
    "CREATE INDEX conversation_members_user ON conversation_members(user_id)",
    # each participant's own copy of a message, sealed for that copy alone
    """CREATE TABLE conversation_messages (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        message_id TEXT NOT NULL,
        incoming INTEGER NOT NULL,
        at REAL NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL
    )""",
    "CREATE INDEX conversation_messages_copy ON conversation_messages(conversation_id,"
    " owner_id, id)",
    "CREATE INDEX conversation_messages_owner ON conversation_messages(owner_id)",
]
"""The schema step of connections and conversations (appended to MIGRATIONS)."""


def ordered(a: str, b: str) -> tuple[str, str]:
    """The pair of account ids in a fixed order (the pair's key)."""
    return (a, b) if a < b else (b, a)


def blocked_either_way(conn: sqlite3.Connection, a: str, b: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM blocks WHERE (blocker_id = ? AND blocked_id = ?)"
        " OR (blocker_id = ? AND blocked_id = ?)", (a, b, b, a)).fetchone() is not None


def end_between(conn: sqlite3.Connection, a: str, b: str) -> None:
    """A block: the pair's connection (pending or accepted) ends; their conversation
    stays with each side's copy, closed to new messages."""
    conn.execute("DELETE FROM connections WHERE user_lo = ? AND user_hi = ?", ordered(a, b))


def are_connected(conn: sqlite3.Connection, a: str, b: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM connections WHERE user_lo = ? AND user_hi = ? AND status = 'accepted'",
        ordered(a, b)).fetchone() is not None
