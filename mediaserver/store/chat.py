"""Chat history (sealed with the data key, kept only with consent) and reports
filed from a conversation."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from mediaserver.store import crypto
from mediaserver.store.core import StoreCore
from mediaserver.store.errors import Invalid
from mediaserver.store.limits import MAX_CHAT_TEXT, MAX_REPORT_REASON


def chat_aad(user_id: str, conversation_id: str) -> bytes:
    return b"chat\x00" + user_id.encode() + b"\x00" + conversation_id.encode()


def read_chat_history(conn: sqlite3.Connection, key: bytes, user_id: str) -> list[dict[str, Any]]:
    """The user's stored messages, decrypted, oldest first."""
    out: list[dict[str, Any]] = []
    for conversation_id, at, nonce, ciphertext in conn.execute(
        "SELECT conversation_id, at, nonce, ciphertext FROM chat_messages"
        " WHERE user_id = ? ORDER BY at, id",
        (user_id,),
    ):
        message = json.loads(
            crypto.open_sealed(
                key, nonce, ciphertext, chat_aad(user_id, conversation_id)
            )
        )
        out.append({
            "conversation_id": conversation_id,
            "at": at,
            "sender": message["sender"],
            "text": message["text"],
        })
    return out


class ChatStore(StoreCore):
    """Chat history and conversation reports (a part of Store)."""

    def store_chat_message(
        self, user_id: str, conversation_id: str, sender: str, text: str
    ) -> bool:
        """Keep one chat message, sealed; returns False (nothing kept) without
        the user's consent, after an opt-out, while processing is restricted or an
        objection to chat history stands."""
        if not isinstance(conversation_id, str) or not 1 <= len(conversation_id) <= 128:
            raise Invalid("conversation_id", "1-128 characters")
        if not isinstance(sender, str) or len(sender) > 128:
            raise Invalid("sender", "at most 128 characters")
        if not isinstance(text, str) or len(text) > MAX_CHAT_TEXT:
            raise Invalid("text", f"at most {MAX_CHAT_TEXT} characters")
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            if not profile.chat_history_consent or profile.opted_out:
                return False
            if profile.restricted or "chat_history" in profile.objections:
                return False  # stored only / objected to: nothing new kept
            plaintext = json.dumps({"sender": sender, "text": text}).encode()
            nonce, ciphertext = crypto.seal(
                self._key, plaintext, chat_aad(user_id, conversation_id)
            )
            conn.execute(
                "INSERT INTO chat_messages (user_id, conversation_id, at, nonce, ciphertext)"
                " VALUES (?, ?, ?, ?, ?)",
                (user_id, conversation_id, self._now(), nonce, ciphertext),
            )
            return True

    def chat_history(self, user_id: str) -> list[dict[str, Any]]:
        """The user's kept messages, decrypted, oldest first."""
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            return read_chat_history(conn, self._key, user_id)

    def record_report(self, reporter_user_id: str, reason: str) -> None:
        """Record a report filed from a conversation (free-text reason)."""
        if not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REPORT_REASON:
            raise Invalid("reason", f"1-{MAX_REPORT_REASON} characters")
        with self._tx() as conn:
            self._get_profile(conn, reporter_user_id)
            conn.execute(
                "INSERT INTO reports (reporter_user_id, reason, at) VALUES (?, ?, ?)",
                (reporter_user_id, reason, self._now()),
            )
