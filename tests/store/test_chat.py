"""Chat history (with consent, sealed) and conversation reports at the store
level: real SQLite files, a fake clock."""

import pytest

from mediaserver.store import (
    Invalid,
    Store,
    StoreError,
)
from tests.support.store import KEY, file_bytes, make


# -- consents, opt-out, chat ------------------------------------------------------------


def test_chat_only_with_consent_and_encrypted(store, path):
    p, _ = make(store)
    secret = "the-plaintext-must-not-be-on-disk-7f3a"
    assert store.store_chat_message(p.id, "conv1", "me", secret) is False
    assert store.chat_history(p.id) == []
    store.set_chat_history_consent(p.id, True)
    assert store.get_profile(p.id).chat_history_consent
    assert store.store_chat_message(p.id, "conv1", "me", secret) is True
    assert store.store_chat_message(p.id, "conv1", "stranger", "héllo ✓") is True
    hist = store.chat_history(p.id)
    assert [(m["conversation_id"], m["sender"], m["text"]) for m in hist] == [
        ("conv1", "me", secret), ("conv1", "stranger", "héllo ✓")]
    store.checkpoint()
    data = file_bytes(path)
    assert secret.encode() not in data and "héllo".encode() not in data
    nonces = [r[0] for r in store._conn.execute("SELECT nonce FROM chat_messages")]
    assert len(set(nonces)) == 2 and all(len(n) == 12 for n in nonces)


def test_chat_bound_to_user_and_conversation(store, path):
    p, _ = make(store, chat_history_consent=True)
    store.store_chat_message(p.id, "conv1", "me", "hi")
    # Moving a ciphertext to another conversation breaks the associated data.
    store._conn.execute("UPDATE chat_messages SET conversation_id = 'conv2'")
    with pytest.raises(StoreError, match="decrypt"):
        store.chat_history(p.id)


def test_chat_wrong_key_fails(path, clock):
    s = Store(path, KEY, clock=clock)
    p, _ = make(s, chat_history_consent=True)
    s.store_chat_message(p.id, "c", "me", "hi")
    s.close()
    s = Store(path, bytes(32), clock=clock)
    with pytest.raises(StoreError, match="decrypt"):
        s.chat_history(p.id)
    s.close()


def test_chat_message_validation(store):
    p, _ = make(store, chat_history_consent=True)
    with pytest.raises(Invalid) as e:
        store.store_chat_message(p.id, "", "me", "hi")
    assert e.value.field == "conversation_id"
    with pytest.raises(Invalid) as e:
        store.store_chat_message(p.id, "c", "me", "x" * 10_001)
    assert e.value.field == "text"
    with pytest.raises(Invalid) as e:
        store.store_chat_message(p.id, "c", 5, "x")
    assert e.value.field == "sender"


def test_record_report(store):
    p, _ = make(store)
    store.record_report(p.id, "spam")
    with pytest.raises(Invalid) as e:
        store.record_report(p.id, "")
    assert e.value.field == "reason"
    with pytest.raises(Invalid):
        store.record_report(p.id, "x" * 1001)
