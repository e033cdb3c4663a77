"""Consents and opt-out, privacy requests, the audit log, retention: real SQLite
files, a fake clock."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from mediaserver.store import (
    Conflict,
    Invalid,
    NotFound,
    PrivacyRequest,
    Store,
    load_or_create_data_key,
)
from mediaserver.store.core import hash_token
from tests.support.store import DAY, KEY, T0, Clock, file_bytes, make


# -- consents and opt-out --------------------------------------------------------------

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
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 0,
                                     "evidence_purged": 0}
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
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 0,
                                     "evidence_purged": 0}
    clock.advance(1)
    assert store.run_retention() == {"chat_purged": 0, "flagged": 2, "deleted": 0,
                                     "evidence_purged": 0}
    assert set(store.flagged_users()) == {p.id, q.id}
    clock.advance(10)
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 0,
                                     "evidence_purged": 0}  # once
    clock.advance(19.99)
    assert store.run_retention()["deleted"] == 0
    clock.advance(0.01)  # 30 days after the flag
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 2,
                                     "evidence_purged": 0}
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
    assert store.run_retention() == {"chat_purged": 0, "flagged": 0, "deleted": 0,
                                     "evidence_purged": 0}
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
        assert set(counts) == {"chat_purged", "flagged", "deleted", "evidence_purged", "mail"}
    out = subprocess.run([sys.executable, "-m", "mediaserver.store.retention", "--db",
                          str(tmp_path / "missing.db"), "--data-key-file", keyfile,
                          "--run-once"], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no database" in out.stderr
    os.chmod(keyfile, 0o644)
    out = subprocess.run([sys.executable, "-m", "mediaserver.store.retention", "--db", db,
                          "--data-key-file", keyfile, "--run-once"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "chmod 600" in out.stderr


# -- withdrawn chat leaves nothing behind (issue 20, item 11) ----------------------------


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
