"""Access requests completed without holding the store's lock.

An export decrypts a user's whole chat history and photo: for a big account that
is seconds of work, and the store serialises every call behind one lock. So the
export is read on a connection of its own (WAL: a reader sees one consistent
snapshot and blocks no writer) and sealed outside the lock; only the short write
that stores it and completes the request takes the lock.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

from mediaserver.store import crypto

if TYPE_CHECKING:
    from mediaserver.store.db import Store


def complete_exports(store: Store) -> int:
    """Complete the verified access requests that are next in their user's queue;
    returns how many. A request whose
    account is deleted meanwhile is left to process_pending (which rejects it)."""
    if store.path == ":memory:":  # another connection would see another database
        return 0
    with store._tx(write=False) as conn:
        # only an access request at its user's turn: requests complete in received order
        pending = conn.execute(
            "SELECT p.id, p.user_id FROM privacy_requests p WHERE p.status = 'verified'"
            " AND p.type = 'access' AND p.user_id IS NOT NULL AND NOT EXISTS ("
            "  SELECT 1 FROM privacy_requests o WHERE o.user_id = p.user_id"
            "  AND o.status = 'verified' AND (o.received_at < p.received_at"
            "  OR (o.received_at = p.received_at AND o.rowid < p.rowid)))"
            " ORDER BY p.received_at, p.rowid"
        ).fetchall()
    if not pending:
        return 0
    from mediaserver.store.db import NotFound

    done = 0
    reader = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False,
                             timeout=10.0)
    try:
        reader.execute("PRAGMA query_only = ON")
        for request_id, user_id in pending:
            reader.execute("BEGIN")  # one snapshot per export
            try:
                export = store._export(reader, user_id)
            except NotFound:
                continue
            finally:
                reader.execute("ROLLBACK")
            nonce, ciphertext = crypto.seal(
                store._key, json.dumps(export).encode(), store._export_aad(user_id, request_id)
            )
            with store._tx() as conn:
                updated = conn.execute(
                    "UPDATE privacy_requests SET export_nonce = ?, export_ciphertext = ?,"
                    " status = 'completed', completed_at = ?"
                    " WHERE id = ? AND user_id = ? AND status = 'verified'",
                    (nonce, ciphertext, store._now(), request_id, user_id),
                ).rowcount
                if updated:
                    store._audit(conn, request_id, "completed",
                                 chat_messages=len(export["chat_history"]),
                                 reports=len(export["reports_filed"]))
            done += updated
    except sqlite3.Error as exc:
        from mediaserver.store.db import StoreError

        raise StoreError(f"database error: {exc}") from None
    finally:
        reader.close()
    return done
