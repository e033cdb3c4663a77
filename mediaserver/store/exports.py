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
from dataclasses import asdict
from typing import Any

from mediaserver.store import crypto
from mediaserver.store.chat import read_chat_history
from mediaserver.store.conversations import conversations_export
from mediaserver.store.contact import contact_export
from mediaserver.store.notices import request_completed_notice
from mediaserver.store.core import StoreCore
from mediaserver.store.errors import NotFound, StoreError
from mediaserver.store.social import blocked_handles, photo_export


def export_aad(user_id: str, request_id: str) -> bytes:
    return b"export\x00" + user_id.encode() + b"\x00" + request_id.encode()


def build_export(store: StoreCore, conn: sqlite3.Connection, user_id: str) -> dict[str, Any]:
    """Everything the store holds about the user, decrypted (an access request's
    answer), read on `conn`."""
    profile = store._get_profile(conn, user_id)
    flagged_at = conn.execute(
        "SELECT flagged_at FROM users WHERE id = ?", (user_id,)
    ).fetchone()[0]
    consents = [
        {"kind": kind, "granted": bool(granted), "source": source, "at": at}
        for kind, granted, source, at in conn.execute(
            "SELECT kind, granted, source, at FROM consents WHERE user_id = ?"
            " ORDER BY at, id",
            (user_id,),
        )
    ]
    reports = [
        {"reason": reason, "at": at}
        for reason, at in conn.execute(
            "SELECT reason, at FROM reports WHERE reporter_user_id = ? ORDER BY at, id",
            (user_id,),
        )
    ]
    requests = [
        {"id": rid, "type": rtype, "status": status, "received_at": received,
         "due_at": due, "completed_at": completed, "reason": reason, "purpose": purpose}
        for rid, rtype, status, received, due, completed, reason, purpose in conn.execute(
            "SELECT id, type, status, received_at, due_at, completed_at, reason, purpose"
            " FROM privacy_requests WHERE user_id = ? ORDER BY received_at, rowid",
            (user_id,),
        )
    ]
    reports += [
        {"reason": reason, "at": at}
        for reason, at in conn.execute(
            "SELECT reason, at FROM account_reports WHERE reporter_user_id = ?"
            " ORDER BY at, id",
            (user_id,),
        )
    ]
    return {
        "generated_at": store._now(),
        "profile": {**asdict(profile), "inactivity_flagged_at": flagged_at},
        "photo": photo_export(conn, store._key, user_id),
        "blocked_handles": blocked_handles(conn, store._key, user_id),
        "sessions": [
            {"created_at": created, "expires_at": expires}
            for created, expires in conn.execute(
                "SELECT created_at, expires_at FROM tokens WHERE user_id = ?"
                " ORDER BY created_at",
                (user_id,),
            )
        ],
        "two_factor": {
            "enabled": profile.two_factor,
            "recovery_codes_left": conn.execute(
                "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL",
                (user_id,)).fetchone()[0],
        },
        "consents": {
            "chat_history_consent": profile.chat_history_consent,
            "opted_out": profile.opted_out,
            "history": consents,
        },
        "chat_history": read_chat_history(conn, store._key, user_id),
        "conversations": conversations_export(conn, store._key, user_id),
        "reports_filed": reports,
        "privacy_requests": requests,
        "contact": contact_export(conn, store._key, user_id),
    }


def complete_exports(store: StoreCore) -> int:
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
            "  OR (o.received_at = p.received_at AND o.rowid < p.rowid))"
            # a deletion waiting for a legal hold does not hold the queue up
            "  AND NOT (o.type = 'deletion' AND EXISTS (SELECT 1 FROM users h"
            "   WHERE h.id = o.user_id AND h.legal_hold_at IS NOT NULL)))"
            " ORDER BY p.received_at, p.rowid"
        ).fetchall()
    if not pending:
        return 0
    done = 0
    reader = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False,
                             timeout=10.0)
    try:
        reader.execute("PRAGMA query_only = ON")
        for request_id, user_id in pending:
            reader.execute("BEGIN")  # one snapshot per export
            try:
                export = build_export(store, reader, user_id)
            except NotFound:
                continue
            finally:
                reader.execute("ROLLBACK")
            nonce, ciphertext = crypto.seal(
                store._key, json.dumps(export).encode(), export_aad(user_id, request_id)
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
                    request_completed_notice(conn, store._key, store._now(), user_id, "access")
            done += updated
    except sqlite3.Error as exc:
        raise StoreError(f"database error: {exc}") from None
    finally:
        reader.close()
    return done
