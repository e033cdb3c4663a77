"""Profiles and their tokens at the store level: real SQLite files, a fake clock."""

import datetime as dt
import os

import pytest

from mediaserver.store import (
    Conflict,
    Invalid,
    NotFound,
    Profile,
)
from mediaserver.store.core import hash_token
from tests.support.store import file_bytes, make


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
