"""Connections and conversations in the store: requests, acceptance, blocks, no
enumeration, per-participant sealed copies, retention, deleted accounts."""

import sqlite3

import pytest

from mediaserver.store import Invalid, NotFound, Store, StoreError
from mediaserver.store.conversations import MISSED_CALL, NotConnected
from tests.support.store import DAY, KEY, Clock, file_bytes, make


def people(store: Store):
    a, _ = make(store, "alice", discoverable=True)
    b, _ = make(store, "bobby", discoverable=True)
    return a, b


def connected(store: Store):
    a, b = people(store)
    request = store.request_connection(a.id, "bobby")
    accepted = store.accept_connection(b.id, request["id"])
    return a, b, accepted["conversation_id"]


def test_a_request_is_pending_both_ways_until_the_addressee_accepts(store: Store) -> None:
    a, b = people(store)
    out = store.request_connection(a.id, "bobby")
    assert out["status"] == "pending" and out["direction"] == "out"
    assert out["conversation_id"] is None and out["name"] is None
    [incoming] = store.connections(b.id)
    assert incoming["handle"] == "alice" and incoming["direction"] == "in"
    with pytest.raises(NotFound):  # the asker cannot accept its own request
        store.accept_connection(a.id, out["id"])
    accepted = store.accept_connection(b.id, out["id"])
    assert accepted["status"] == "accepted" and accepted["conversation_id"]
    [mine] = store.connections(a.id)
    assert mine["status"] == "accepted" and mine["conversation_id"] == accepted["conversation_id"]
    # asking again returns the connection as it is
    assert store.request_connection(a.id, "bobby")["id"] == out["id"]


def test_asking_back_accepts_the_pending_request(store: Store) -> None:
    a, b = people(store)
    store.request_connection(a.id, "bobby")
    assert store.request_connection(b.id, "alice")["status"] == "accepted"


def test_unknown_hidden_and_blocking_handles_answer_alike(store: Store) -> None:
    a, b = people(store)
    make(store, "hidden")  # not discoverable
    store.block(b.id, "alice")
    answers = []
    for handle in ("nobody", "hidden", "bobby"):
        with pytest.raises(NotFound) as caught:
            store.request_connection(a.id, handle)
        answers.append(str(caught.value))
    assert len(set(answers)) == 1
    with pytest.raises(Invalid):
        store.request_connection(a.id, "alice")


def test_a_block_ends_the_connection_and_closes_the_conversation(store: Store) -> None:
    a, b, conversation = connected(store)
    store.set_photo(b.id, b"\xff\xd8 jpeg", 1, 1)
    assert store.conversations(a.id)[0]["peer"]["photo_url"]
    store.send_direct(a.id, conversation, "hi")
    store.block(b.id, "alice")
    assert store.connections(a.id) == [] and store.connections(b.id) == []
    for sender in (a, b):
        with pytest.raises(NotConnected):
            store.send_direct(sender.id, conversation, "still there?")
    [summary] = store.conversations(a.id)
    assert summary["connected"] is False and summary["peer"]["handle"] == "bobby"
    assert summary["peer"]["photo_url"] is None  # no window on the blocker's profile


def test_a_conversation_both_sides_left_goes_at_the_next_retention_pass(store: Store) -> None:
    a, b, conversation = connected(store)
    store.delete_user(a.id)
    store.delete_user(b.id)
    store.run_retention()
    with store._tx(write=False) as conn:
        assert conn.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0


def test_only_the_participants_who_keep_history_keep_a_copy(store: Store, path: str) -> None:
    a, b, conversation = connected(store)
    store.update_conversation(a.id, conversation, keep_history=True)
    store.send_direct(a.id, conversation, "a secret hello")
    store.send_direct(b.id, conversation, "a secret answer")
    mine, cursor = store.conversation_messages(a.id, conversation)
    assert [(m["from"], m["text"]) for m in mine] == [
        ("them", "a secret answer"), ("me", "a secret hello")]
    assert cursor is None
    assert store.conversation_messages(b.id, conversation) == ([], None)
    store.checkpoint()
    assert b"a secret" not in file_bytes(path)


def test_a_copy_is_sealed_for_its_owner_alone(store: Store, path: str) -> None:
    a, b, conversation = connected(store)
    store.update_conversation(a.id, conversation, keep_history=True)
    store.send_direct(b.id, conversation, "for alice only")
    store.close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE conversation_messages SET owner_id = ?", (b.id,))
    raw.commit()
    raw.close()
    reopened = Store(path, KEY)
    try:
        with pytest.raises(StoreError):
            reopened.conversation_messages(b.id, conversation)
    finally:
        reopened.close()


def test_messages_page_newest_first_by_cursor(store: Store) -> None:
    a, b, conversation = connected(store)
    store.update_conversation(b.id, conversation, keep_history=True)
    for n in range(5):
        store.send_direct(a.id, conversation, f"m{n}")
    assert store.conversations(b.id)[0]["unread"] == 5
    page, cursor = store.conversation_messages(b.id, conversation, limit=2)
    assert [m["text"] for m in page] == ["m4", "m3"]
    page, cursor = store.conversation_messages(b.id, conversation, cursor, limit=2)
    assert [m["text"] for m in page] == ["m2", "m1"]
    page, cursor = store.conversation_messages(b.id, conversation, cursor, limit=2)
    assert [m["text"] for m in page] == ["m0"] and cursor is None
    assert store.conversations(b.id)[0]["unread"] == 0  # the first page was read
    with pytest.raises(Invalid):
        store.conversation_messages(b.id, conversation, "x1")


def test_someone_elses_conversation_is_answered_like_a_missing_one(store: Store) -> None:
    a, b, conversation = connected(store)
    eve, _ = make(store, "eve_1")
    for wrong in (conversation, "no-such"):
        with pytest.raises(NotFound):
            store.conversation_messages(eve.id, wrong)
        with pytest.raises(NotFound):
            store.send_direct(eve.id, wrong, "hi")


def test_retention_purges_unsaved_copies_six_months_after_the_last_message(
    store: Store, clock: Clock
) -> None:
    a, b, conversation = connected(store)
    for user in (a, b):
        store.update_conversation(user.id, conversation, keep_history=True)
    store.update_conversation(b.id, conversation, saved=True)
    store.send_direct(a.id, conversation, "old news")
    clock.advance(180)
    store.run_retention()
    assert len(store.conversation_messages(a.id, conversation)[0]) == 1
    clock.advance(4)
    assert store.run_retention()["chat_purged"] == 1
    assert store.conversation_messages(a.id, conversation)[0] == []
    assert [m["text"] for m in store.conversation_messages(b.id, conversation)[0]] == ["old news"]


def test_turning_keep_history_off_or_deleting_drops_only_my_copy(store: Store) -> None:
    a, b, conversation = connected(store)
    for user in (a, b):
        store.update_conversation(user.id, conversation, keep_history=True)
    store.send_direct(a.id, conversation, "one")
    assert store.delete_conversation_history(a.id, conversation) == 1
    assert store.conversation_messages(a.id, conversation)[0] == []
    store.update_conversation(b.id, conversation, keep_history=False)
    assert store.conversation_messages(b.id, conversation)[0] == []
    store.send_direct(a.id, conversation, "two")  # nobody keeps it now
    assert store.conversation_messages(b.id, conversation)[0] == []


def test_a_deleted_account_leaves_a_deleted_user_the_other_side_cannot_message(
    store: Store, path: str
) -> None:
    a, b, conversation = connected(store)
    for user in (a, b):
        store.update_conversation(user.id, conversation, keep_history=True)
    store.send_direct(a.id, conversation, "goodbye from alice")
    store.delete_user(a.id)
    [summary] = store.conversations(b.id)
    assert summary["peer"] == {"handle": None, "photo_url": None, "name": None, "deleted": True}
    assert summary["connected"] is False
    assert [m["text"] for m in store.conversation_messages(b.id, conversation)[0]] == [
        "goodbye from alice"]
    with pytest.raises(NotConnected):
        store.send_direct(b.id, conversation, "hello?")
    assert store.connections(b.id) == []


def test_a_missed_call_is_a_system_entry_in_the_callees_copy(store: Store) -> None:
    a, b, conversation = connected(store)
    peer, caller = store.call_peer(a.id, conversation)
    assert (peer, caller) == (b.id, "alice")
    store.record_missed_call(b.id, conversation, caller)
    [entry] = store.conversation_messages(b.id, conversation)[0]
    assert entry["from"] == "system" and entry["kind"] == MISSED_CALL
    assert entry["caller"] == "alice"


def test_the_access_export_holds_my_conversations(store: Store, clock: Clock) -> None:
    a, b, conversation = connected(store)
    store.update_conversation(a.id, conversation, keep_history=True)
    store.send_direct(b.id, conversation, "in the export")
    request = store.submit_request(a.id, "access")
    store.process_pending()
    export = store.get_request(a.id, request.id).export
    assert export is not None
    [kept] = export["conversations"]
    assert kept["keep_history"] is True
    assert [m["text"] for m in kept["messages"]] == ["in the export"]


def test_requests_and_missed_calls_reach_the_inbox(store: Store) -> None:
    a, b = people(store)
    request = store.request_connection(a.id, "bobby")
    [notice] = store.list_notices(b.id)[0]
    assert notice.kind == "connection_request" and "alice" in notice.body
    assert store.list_notices(a.id)[0] == []  # the asker is not told anything
    conversation = store.accept_connection(b.id, request["id"])["conversation_id"]
    store.record_missed_call(b.id, conversation, "alice")
    kinds = [n.kind for n in store.list_notices(b.id)[0]]
    assert kinds == ["missed_call", "connection_request"]


def test_the_display_name_shows_only_once_accepted(store: Store) -> None:
    a, b = people(store)
    store.update_profile(a.id, name="Alice Liddell")
    request = store.request_connection(a.id, "bobby")
    [pending] = store.connections(b.id)
    assert pending["name"] is None  # a request does not show the name
    store.accept_connection(b.id, request["id"])
    [accepted] = store.connections(b.id)
    assert accepted["name"] == "Alice Liddell"
    [conversation] = store.conversations(b.id)
    assert conversation["peer"]["name"] == "Alice Liddell"
