"""mediaserver.store: real SQLite files in tmp_path, a fake clock."""

import datetime as dt
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from mediaserver.store import (
    SCHEMA_VERSION,
    Conflict,
    Invalid,
    NotFound,
    PrivacyRequest,
    Profile,
    Store,
    StoreError,
    load_data_key,
    load_or_create_data_key,
)
from mediaserver.store.core import hash_token
from mediaserver.store.schema import migrate
from tests.support import ROOT

DAY = 86400.0
T0 = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC).timestamp()
KEY = bytes(range(32))


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, days: float) -> None:
        self.t += days * DAY


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store.db")


@pytest.fixture
def store(path, clock):
    s = Store(path, KEY, clock=clock)
    yield s
    s.close()


def make(store, username="alice", **kw):
    kw.setdefault("date_of_birth", "1990-01-02")
    return store.create_profile(username, **kw)


def file_bytes(path) -> bytes:
    out = b""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            with open(path + suffix, "rb") as f:
                out += f.read()
    return out


# -- opening, pragmas, migrations -------------------------------------------------------


def test_open_sets_wal_full_fk_and_schema_version(store, path):
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.migrations_applied == SCHEMA_VERSION
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_migrations_rerun_idempotently(path, clock):
    s = Store(path, KEY, clock=clock)
    p, _ = make(s)
    s.close()
    for _ in range(2):
        s = Store(path, KEY, clock=clock)
        assert s.migrations_applied == 0
        assert s.get_profile(p.id).username == "alice"
        s.close()
    conn = sqlite3.connect(path)
    assert migrate(conn) == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_refuses_a_newer_schema(path, clock):
    Store(path, KEY, clock=clock).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path, KEY, clock=clock)


def test_refuses_a_bad_key_and_a_non_database(path, tmp_path):
    with pytest.raises(StoreError):
        Store(path, b"short")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError):
        Store(str(junk), KEY)


def test_unwritable_location_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot create database"):
        Store(str(tmp_path / "no" / "such" / "dir.db"), KEY)


def test_sqlite_errors_surface_as_store_error(store):
    p, _ = make(store)
    store._conn.execute("CREATE TRIGGER boom BEFORE INSERT ON reports"
                        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    with pytest.raises(StoreError, match="disk on fire"):
        store.record_report(p.id, "spam")
    assert not store._conn.in_transaction
    store.record_opt_out(p.id, "gpc")  # the store still works


def test_closed_store_refuses(path, clock):
    s = Store(path, KEY, clock=clock)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError):
        make(s)


# -- data key ---------------------------------------------------------------------------


def test_data_key_created_0600_and_reloaded(tmp_path):
    p = str(tmp_path / "data.key")
    old = os.umask(0)
    try:
        key = load_or_create_data_key(p)
    finally:
        os.umask(old)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert load_or_create_data_key(p) == key
    assert load_data_key(p) == key


@pytest.mark.parametrize("content, mode, message", [
    (b"x" * 31, 0o600, "exactly 32 bytes"),
    (b"x" * 33, 0o600, "exactly 32 bytes"),
    (b"", 0o600, "exactly 32 bytes"),
    (b"x" * 32, 0o644, "chmod 600"),
    (b"x" * 32, 0o640, "chmod 600"),
    (b"x" * 32, 0o602, "chmod 600"),
])
def test_bad_data_key_file_refused(tmp_path, content, mode, message):
    p = tmp_path / "data.key"
    p.write_bytes(content)
    os.chmod(p, mode)
    with pytest.raises(StoreError, match=message):
        load_or_create_data_key(str(p))
    assert p.read_bytes() == content  # never overwritten


def test_missing_key_file_for_load(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        load_data_key(str(tmp_path / "nope"))


# -- profiles ---------------------------------------------------------------------------


def test_create_get_profile(store, clock):
    p, token = make(store, bio="hi there", interests=["Chess", "chess", " Go "],
                    language="en", chat_history_consent=True)
    assert isinstance(p, Profile)
    assert p.username == "alice" and p.date_of_birth == "1990-01-02"
    assert p.bio == "hi there" and p.interests == ["chess", "go"] and p.language == "en"
    assert p.created_at == p.updated_at == p.last_seen_at == clock.t
    assert p.chat_history_consent and not p.opted_out
    assert store.get_profile(p.id) == p
    assert len(token) >= 43 and len(p.id) == 16


def test_under_18_refused_by_store_clock(store, clock):
    # T0 is 2026-06-15: born 2008-06-15 turns 18 today; 2008-06-16 does not.
    with pytest.raises(Invalid) as e:
        make(store, "kid", date_of_birth="2008-06-16")
    assert e.value.field == "date_of_birth" and e.value.message == "must be 18 or older"
    assert make(store, "adult", date_of_birth="2008-06-15")[0].username == "adult"
    with pytest.raises(Invalid, match="18 or older"):
        make(store, "future", date_of_birth="2030-01-01")
    with pytest.raises(Invalid):
        store.update_profile(store.authenticate(make(store, "b")[1]).id,
                             date_of_birth="2010-01-01")


def test_leap_day_birthday(store, clock):
    # Born 2008-02-29: in 2026 (no Feb 29) they turn 18 on March 1.
    clock.t = dt.datetime(2026, 2, 28, 23, 59, tzinfo=dt.UTC).timestamp()
    with pytest.raises(Invalid, match="18 or older"):
        make(store, "leap", date_of_birth="2008-02-29")
    clock.t = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
    assert make(store, "leap", date_of_birth="2008-02-29")[0]


@pytest.mark.parametrize("dob", ["1990-13-01", "1990-02-30", "19900101", "1990-1-1",
                                 "", "abcd-ef-gh", None, 19900101, "1990-01-01T00:00"])
def test_malformed_date_of_birth(store, dob):
    with pytest.raises(Invalid) as e:
        make(store, date_of_birth=dob)
    assert (e.value.field, e.value.message) == ("date_of_birth", "expected YYYY-MM-DD")


@pytest.mark.parametrize("kw, field", [
    ({"username": "ab"}, "username"),
    ({"username": "a" * 33}, "username"),
    ({"username": "bad name"}, "username"),
    ({"username": "émile"}, "username"),
    ({"username": 123}, "username"),
    ({"bio": "x" * 501}, "bio"),
    ({"bio": 5}, "bio"),
    ({"interests": ["a"] * 11}, "interests"),
    ({"interests": [""]}, "interests"),
    ({"interests": ["x" * 33]}, "interests"),
    ({"interests": "chess"}, "interests"),
    ({"interests": [1]}, "interests"),
    ({"language": "e"}, "language"),
    ({"language": "x" * 17}, "language"),
    ({"language": 7}, "language"),
    ({"chat_history_consent": "yes"}, "chat_history_consent"),
])
def test_invalid_fields(store, kw, field):
    kw = {"username": "alice", **kw}
    username = kw.pop("username")
    with pytest.raises(Invalid) as e:
        make(store, username, **kw)
    assert e.value.field == field


def test_limits_accepted(store):
    p, _ = make(store, "a.b-c_" + "d" * 26, bio="x" * 500,
                interests=[f"i{n}" for n in range(10)], language="pt-BR")
    assert len(p.username) == 32 and len(p.interests) == 10


def test_duplicate_username_conflict(store):
    make(store, "alice")
    with pytest.raises(Conflict):
        make(store, "alice")
    with pytest.raises(Conflict):
        make(store, "ALICE")
    p, _ = make(store, "bob")
    with pytest.raises(Conflict):
        store.update_profile(p.id, username="Alice")


def test_update_profile(store, clock):
    p, _ = make(store)
    clock.advance(1)
    q = store.update_profile(p.id, username="alice2", bio="new", interests=["Go"],
                             language=None, date_of_birth="1980-05-05",
                             chat_history_consent=True)
    assert (q.username, q.bio, q.interests, q.language, q.date_of_birth) == (
        "alice2", "new", ["go"], None, "1980-05-05")
    assert q.chat_history_consent and q.updated_at == clock.t and q.created_at == p.created_at
    assert store.update_profile(p.id) == q  # nothing to change
    with pytest.raises(Invalid) as e:
        store.update_profile(p.id, password="x")
    assert e.value.field == "password"
    with pytest.raises(Invalid) as e:
        store.update_profile(p.id, id="other")
    assert e.value.field == "id"
    with pytest.raises(Invalid):
        store.update_profile(p.id, bio="x" * 501)
    with pytest.raises(NotFound):
        store.update_profile("nope", bio="x")
    assert store.get_profile(p.id) == q  # failed updates changed nothing


def test_unknown_ids_not_found(store):
    for call in (lambda: store.get_profile("nope"), lambda: store.get_profile(None),
                 lambda: store.delete_user("nope"), lambda: store.chat_history("nope"),
                 lambda: store.record_opt_out("nope", "gpc"),
                 lambda: store.set_chat_history_consent("nope", True),
                 lambda: store.store_chat_message("nope", "c", "me", "hi"),
                 lambda: store.record_report("nope", "spam"),
                 lambda: store.submit_request("nope", "access"),
                 lambda: store.list_requests("nope")):
        with pytest.raises(NotFound):
            call()


# -- tokens -----------------------------------------------------------------------------


def test_token_auth_and_hashed_at_rest(store, path, clock):
    p, token = make(store)
    clock.advance(3)
    q = store.authenticate(token)
    assert q.id == p.id and q.last_seen_at == clock.t
    for bad in ("", "x", token + "x", token[:-1]):
        with pytest.raises(NotFound):
            store.authenticate(bad)
    with pytest.raises(NotFound):
        store.authenticate(None)
    store.checkpoint()
    data = file_bytes(path)
    assert token.encode() not in data
    assert hash_token(token).encode() in data  # only the sha256 hex is stored
    rows = store._conn.execute("SELECT token_hash FROM tokens").fetchall()
    assert rows == [(hash_token(token),)]


def test_last_seen_coalesced_to_a_minute(store, clock):
    p, token = make(store)
    clock.t += 30
    assert store.authenticate(token).last_seen_at == p.last_seen_at  # no write
    clock.t += 30
    assert store.authenticate(token).last_seen_at == clock.t


def test_tokens_distinct_and_unpredictable(store):
    tokens = {make(store, f"user{i}")[1] for i in range(20)}
    assert len(tokens) == 20


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


def test_opt_out_stops_chat_and_is_recorded_once(store):
    p, _ = make(store, chat_history_consent=True)
    assert store.store_chat_message(p.id, "c", "me", "before")
    store.record_opt_out(p.id, "gpc")
    store.record_opt_out(p.id, "gpc")
    store.record_opt_out(p.id, "request")
    assert store.get_profile(p.id).opted_out
    assert store.store_chat_message(p.id, "c", "me", "after") is False
    assert [m["text"] for m in store.chat_history(p.id)] == ["before"]
    n = store._conn.execute("SELECT COUNT(*) FROM consents WHERE kind='opt_out'").fetchone()
    assert n == (1,)
    with pytest.raises(Invalid) as e:
        store.record_opt_out(p.id, "email")
    assert e.value.field == "source"


def test_withdrawing_consent_deletes_chat(store):
    p, _ = make(store, chat_history_consent=True)
    store.store_chat_message(p.id, "c", "me", "x")
    store.set_chat_history_consent(p.id, False)
    assert not store.get_profile(p.id).chat_history_consent
    assert store.chat_history(p.id) == []
    assert store.store_chat_message(p.id, "c", "me", "y") is False
    with pytest.raises(Invalid):
        store.set_chat_history_consent(p.id, "no")


def test_record_report(store):
    p, _ = make(store)
    store.record_report(p.id, "spam")
    with pytest.raises(Invalid) as e:
        store.record_report(p.id, "")
    assert e.value.field == "reason"
    with pytest.raises(Invalid):
        store.record_report(p.id, "x" * 1001)


# -- privacy requests -------------------------------------------------------------------


def test_submit_get_list_requests(store, clock):
    p, _ = make(store)
    other, _ = make(store, "bob")
    r = store.submit_request(p.id, "correction")
    assert isinstance(r, PrivacyRequest)
    assert (r.type, r.status, r.received_at, r.due_at) == (
        "correction", "verified", clock.t, clock.t + 45 * DAY)
    assert r.completed_at is None and r.reason is None and r.export is None
    assert store.get_request(p.id, r.id) == r
    with pytest.raises(NotFound):
        store.get_request(other.id, r.id)  # not this user's: as if absent
    with pytest.raises(NotFound):
        store.get_request(p.id, "nope")
    clock.advance(1)
    r2 = store.submit_request(p.id, "opt_out")
    assert [x.id for x in store.list_requests(p.id)] == [r.id, r2.id]
    assert store.list_requests(other.id) == []
    with pytest.raises(Invalid) as e:
        store.submit_request(p.id, "erase_everything")
    assert e.value.field == "type"
    events = [a["event"] for a in store.audit_log(r.id)]
    assert events == ["received", "verified"]


def test_process_pending_each_type(store, clock):
    p, _ = make(store, chat_history_consent=True)
    store.store_chat_message(p.id, "c", "me", "hello")
    ids = {t: store.submit_request(p.id, t).id
           for t in ("correction", "opt_out", "access", "withdraw_consent")}
    clock.advance(1)
    assert store.process_pending() == 4
    assert store.process_pending() == 0
    for t, rid in ids.items():
        r = store.get_request(p.id, rid)
        assert r.status == "completed" and r.completed_at == clock.t, t
        assert [a["event"] for a in store.audit_log(rid)] == ["received", "verified",
                                                              "completed"]
    prof = store.get_profile(p.id)
    assert prof.opted_out and not prof.chat_history_consent
    assert store.chat_history(p.id) == []
    export = store.get_request(p.id, ids["access"]).export
    # The access request ran after opt_out (received order), before withdraw_consent.
    assert export["profile"]["username"] == "alice"
    assert export["chat_history"][0]["text"] == "hello"
    assert export["consents"]["opted_out"] is True


def test_access_export_contents_and_sealed_at_rest(store, path, clock):
    p, _ = make(store, bio="my-unique-bio", interests=["chess"], chat_history_consent=True)
    store.store_chat_message(p.id, "conv", "me", "chat-text-123")
    store.record_report(p.id, "report-reason-xyz")
    store.record_opt_out(p.id, "gpc")
    rid = store.submit_request(p.id, "access").id
    store.process_pending()
    export = store.get_request(p.id, rid).export
    assert export["profile"]["bio"] == "my-unique-bio"
    assert export["profile"]["interests"] == ["chess"]
    assert export["consents"]["chat_history_consent"] is True
    assert {c["kind"] for c in export["consents"]["history"]} == {"chat_history", "opt_out"}
    assert [m["text"] for m in export["chat_history"]] == ["chat-text-123"]
    assert [r["reason"] for r in export["reports_filed"]] == ["report-reason-xyz"]
    assert [r["id"] for r in export["privacy_requests"]] == [rid]
    json.dumps(export)  # serialisable as is
    store.checkpoint()
    assert b"chat-text-123" not in file_bytes(path)  # export is encrypted at rest too
    # a listing carries no export: decrypting every one would be work for nothing
    assert [x.export is None for x in store.list_requests(p.id)] == [True]


def test_access_export_expires_after_30_days(store, clock):
    p, _ = make(store)
    rid = store.submit_request(p.id, "access").id
    store.process_pending()
    clock.advance(29)
    store.authenticate(store.create_profile("keeper", "1990-01-01")[1])
    store.run_retention()
    assert store.get_request(p.id, rid).export is not None
    clock.advance(1)
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 0}
    r = store.get_request(p.id, rid)
    assert r.export is None and r.status == "completed"
    assert store.audit_log()[-1]["detail"]["exports_expired"] == 1


def test_reject_request(store):
    p, _ = make(store)
    rid = store.submit_request(p.id, "correction").id
    store.reject_request(rid, "could not verify")
    r = store.get_request(p.id, rid)
    assert r.status == "rejected" and r.reason == "could not verify"
    with pytest.raises(Conflict):
        store.reject_request(rid, "again")
    with pytest.raises(NotFound):
        store.reject_request("nope", "x")
    assert store.process_pending() == 0


def test_delete_user_direct(store):
    p, token = make(store, chat_history_consent=True)
    store.store_chat_message(p.id, "c", "me", "hi")
    store.record_report(p.id, "spam")
    rid = store.submit_request(p.id, "access").id
    store.process_pending()
    store.delete_user(p.id)
    with pytest.raises(NotFound):
        store.get_profile(p.id)
    with pytest.raises(NotFound):
        store.authenticate(token)
    with pytest.raises(NotFound):
        store.delete_user(p.id)
    for table in ("users", "tokens", "chat_messages", "consents", "reports"):
        assert store._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)
    row = store._conn.execute(
        "SELECT user_id, type, status, export_ciphertext FROM privacy_requests WHERE id=?",
        (rid,)).fetchone()
    assert row == (None, "access", "completed", None)
    make(store, "alice")  # the username is free again


def test_audit_log_append_only(store):
    p, _ = make(store)
    rid = store.submit_request(p.id, "access").id
    conn = store._conn
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET event = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE request_id = ?", (rid,))
    assert len(store.audit_log(rid)) == 2
    assert [a["event"] for a in store.audit_log()] == ["received", "verified"]


def test_export_then_delete_leaves_no_personal_data(path, clock):
    store = Store(path, KEY, clock=clock)
    username, bio = "zq_unique_user", "a bio that is only mine 81f2"
    p, token = make(store, username, bio=bio, interests=["xylophonics"],
                    chat_history_consent=True)
    store.store_chat_message(p.id, "conv-9", "me", "a chat line")
    store.record_report(p.id, "reported-for-qqq")
    store.update_profile(p.id, bio=bio + " edited")
    access = store.submit_request(p.id, "access").id
    clock.advance(1)
    store.process_pending()
    export = store.get_request(p.id, access).export
    assert export["profile"]["username"] == username
    deletion = store.submit_request(p.id, "deletion").id
    late = store.submit_request(p.id, "access").id  # after the deletion: rejected
    clock.advance(1)
    assert store.process_pending() == 2
    with pytest.raises(NotFound):
        store.get_profile(p.id)
    rows = store._conn.execute(
        "SELECT id, user_id, type, status FROM privacy_requests ORDER BY received_at, rowid"
    ).fetchall()
    assert rows == [(access, None, "access", "completed"),
                    (deletion, None, "deletion", "completed"),
                    (late, None, "access", "rejected")]
    log = store.audit_log()
    assert "account_deleted" in [a["event"] for a in log]
    store.checkpoint()
    store.close()
    data = file_bytes(path)
    assert os.path.getsize(path + "-wal") == 0 if os.path.exists(path + "-wal") else True
    needles = [username, bio, "a bio that is only mine", "xylophonics", "reported-for-qqq",
               p.id, token, hash_token(token)]
    for needle in needles:
        assert needle.encode() not in data, needle
        assert needle.upper().encode() not in data or needle.upper() == needle
    # the audit log carries no personal data either
    assert not any(p.id in json.dumps(a) or username in json.dumps(a) for a in log)


def test_audit_detail_has_no_personal_data(store):
    p, _ = make(store, "person_x", bio="bio-y", chat_history_consent=True)
    store.store_chat_message(p.id, "c", "me", "msg")
    for t in ("access", "opt_out", "withdraw_consent", "correction", "deletion"):
        store.submit_request(p.id, t)
    store.process_pending()
    text = json.dumps(store.audit_log())
    for needle in (p.id, "person_x", "bio-y", "msg"):
        assert needle not in text


# -- retention --------------------------------------------------------------------------


def test_chat_purged_six_months_after_last_message(store, clock):
    a, _ = make(store, "aaa", chat_history_consent=True)
    b, _ = make(store, "bbb", chat_history_consent=True)
    store.store_chat_message(a.id, "old", "me", "1")
    store.store_chat_message(b.id, "old", "me", "1b")
    clock.advance(100)
    store.store_chat_message(a.id, "old", "me", "2")  # the conversation's last message
    store.store_chat_message(a.id, "other", "me", "3")
    clock.advance(182)  # 182 days after the last: kept, even the 282-day-old first one
    assert store.run_retention()["chat_purged"] == 0
    assert len(store.chat_history(a.id)) == 3
    clock.advance(1)  # 183 days after the last message
    store.authenticate(store.create_profile("keepalive", "1990-01-01")[1])
    counts = store.run_retention()
    assert counts["chat_purged"] == 4
    assert store.chat_history(a.id) == [] and store.chat_history(b.id) == []
    assert store.run_retention()["chat_purged"] == 0


def test_inactivity_flag_then_delete(store, clock):
    p, token = make(store)
    q, _ = make(store, "other")
    clock.advance(364)
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 0}
    clock.advance(1)
    assert store.run_retention() == {"chat_purged": 0, "flagged": 2, "deleted": 0}
    assert set(store.flagged_users()) == {p.id, q.id}
    clock.advance(10)
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 0}  # once
    clock.advance(19.99)
    assert store.run_retention()["deleted"] == 0
    clock.advance(0.01)  # 30 days after the flag
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 2}
    with pytest.raises(NotFound):
        store.get_profile(p.id)
    with pytest.raises(NotFound):
        store.authenticate(token)
    deletions = [a for a in store.audit_log() if a["event"] == "account_deleted"]
    assert len(deletions) == 2 and all(a["detail"]["reason"] == "inactivity"
                                       for a in deletions)
    assert p.id not in json.dumps(store.audit_log())


def test_coming_back_clears_the_flag(store, clock):
    p, token = make(store)
    clock.advance(365)
    assert store.run_retention()["flagged"] == 1
    clock.advance(20)
    store.authenticate(token)
    assert store.flagged_users() == []
    clock.advance(15)
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 0}
    assert store.get_profile(p.id).last_seen_at == clock.t - 15 * DAY
    # and a year later the cycle starts over
    clock.advance(365)
    assert store.run_retention()["flagged"] == 1


def test_retention_cli(tmp_path, clock):
    db = str(tmp_path / "r.db")
    keyfile = str(tmp_path / "data.key")
    key = load_or_create_data_key(keyfile)
    s = Store(db, key, clock=Clock(T0 - 400 * DAY))
    make(s)
    s.close()
    for cmd in ([sys.executable, "-m", "mediaserver.store.retention"],
                [sys.executable, "-m", "mediaserver.cli", "retention"]):
        out = subprocess.run(cmd + ["--db", db, "--data-key-file", keyfile, "--run-once"],
                             check=False, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        counts = json.loads(out.stdout)
        assert set(counts) == {"chat_purged", "flagged", "deleted"}
    out = subprocess.run([sys.executable, "-m", "mediaserver.store.retention", "--db",
                          str(tmp_path / "missing.db"), "--data-key-file", keyfile,
                          "--run-once"], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no database" in out.stderr
    os.chmod(keyfile, 0o644)
    out = subprocess.run([sys.executable, "-m", "mediaserver.store.retention", "--db", db,
                          "--data-key-file", keyfile, "--run-once"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "chmod 600" in out.stderr


# -- threads and durability -------------------------------------------------------------


def test_usable_from_several_threads_one_at_a_time(store):
    errors = []

    def worker(n):
        try:
            for i in range(20):
                p, tok = make(store, f"t{n}_{i}")
                assert store.authenticate(tok).id == p.id
        except (StoreError, AssertionError) as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store._conn.execute("SELECT COUNT(*) FROM users").fetchone() == (80,)


def test_sigkill_loses_no_acknowledged_write(path):
    child = textwrap.dedent(f"""
        import sys
        from mediaserver.store import Store
        s = Store({path!r}, bytes(range(32)))
        i = 0
        while True:
            p, _ = s.create_profile(f"user{{i}}", "1990-01-01", bio="b" * 200)
            print(p.id, flush=True)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    acked = []
    try:
        while len(acked) < 150:
            line = proc.stdout.readline()
            assert line, "child died early"
            acked.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is still writing
        # anything it printed before dying was acknowledged too
        acked += [line.strip() for line in proc.stdout if line.strip()]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    s = Store(path, bytes(range(32)))
    try:
        for user_id in acked:
            s.get_profile(user_id)
        assert s._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        s.close()


# -- corrections leave nothing behind (issue 20, item 11) ---------------------------------


def test_a_correction_scrubs_the_old_value_from_the_wal(store, path):
    p, _ = make(store, "zq_corrected_user", bio="old bio only mine 5e1c",
                interests=["oldinterest7q"])
    store.update_profile(p.id, username="zq_new_name", bio="new bio",
                         interests=["newinterest"])
    data = file_bytes(path)
    for old in ("zq_corrected_user", "old bio only mine 5e1c", "oldinterest7q"):
        assert old.encode() not in data, old
    assert os.path.getsize(path + "-wal") == 0
    # a change of nothing personal (discoverable) needs no scrub
    assert store.update_profile(p.id, discoverable=True).bio == "new bio"


def test_a_busy_checkpoint_is_retried_until_the_reader_lets_go(path, clock):
    store = Store(path, KEY, clock=clock, busy_timeout=0.1)
    try:
        p, _ = make(store, "zq_busy_user", bio="bio before 93ab")
        reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM users").fetchone()  # holds this snapshot
        # the reader lets go later than one busy timeout, within the bounded retries
        release = threading.Timer(0.6, reader.execute, ("COMMIT",))
        release.start()
        try:
            store.update_profile(p.id, bio="bio after")
        finally:
            release.join()
            reader.close()
        assert os.path.getsize(path + "-wal") == 0
        assert b"bio before 93ab" not in file_bytes(path)
    finally:
        store.close()


@pytest.mark.parametrize("how", ["patch", "consent", "request"])
def test_withdrawn_chat_history_leaves_the_wal_too(store, path, clock, how):
    p, _ = make(store, "zq_chatty", chat_history_consent=True)
    store.store_chat_message(p.id, "conv-w", "me", "a line to forget")
    (sealed,) = store._conn.execute("SELECT ciphertext FROM chat_messages").fetchone()
    assert sealed in file_bytes(path)
    if how == "patch":
        store.update_profile(p.id, chat_history_consent=False)
    elif how == "consent":
        store.set_chat_history_consent(p.id, False)
    else:
        store.submit_request(p.id, "withdraw_consent")
        clock.advance(1)
        store.process_pending()
    assert store.chat_history(p.id) == []
    assert sealed not in file_bytes(path)
    assert os.path.getsize(path + "-wal") == 0
