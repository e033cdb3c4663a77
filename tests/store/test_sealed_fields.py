"""Personal profile fields sealed at rest (store/sealed_fields.py): the raw bytes of
the database file and its WAL hold none of them, the username is found through its
blind index, the schema step converts a version-3 database, and a sealed value only
opens in its own row and column. Real SQLite files in tmp_path."""

import sqlite3

import argon2
import pytest

from mediaserver.store import Conflict, Store, StoreError
from mediaserver.store.schema import MIGRATIONS
from mediaserver.store.sealed_fields import username_index
from tests.support.store import KEY, T0, Clock, file_bytes, make

FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
FIELDS = {
    "username": "Zanzibar_Quokka",
    "date_of_birth": "1987-03-14",
    "bio": "Marmalade telescopes at dawn",
    "interests": ["bassoonery", "origamiology"],
    "language": "pt-BR",
}


def encodings(value: str) -> list[bytes]:
    """The value as UTF-8 and UTF-16 (both byte orders), as typed and case-folded."""
    out = []
    for variant in {value, value.lower(), value.upper(), value.casefold()}:
        for codec in ("utf-8", "utf-16-le", "utf-16-be"):
            out.append(variant.encode(codec))
    return out


def assert_absent(path: str, values: dict[str, object]) -> None:
    data = file_bytes(path)
    for field, value in values.items():
        for text in value if isinstance(value, list) else [value]:
            for needle in encodings(str(text)):
                assert needle not in data, (field, needle)
    # the date of birth without its dashes, too
    dob = str(values["date_of_birth"])
    assert dob.replace("-", "").encode() not in data


def test_created_and_patched_fields_are_not_in_the_file_or_wal(path, clock):
    store = Store(path, KEY, clock=clock)
    try:
        p, _ = store.create_profile(**FIELDS, discoverable=True)
        assert store.get_profile(p.id).bio == FIELDS["bio"]
        assert_absent(path, FIELDS)  # the WAL still holds the commit: checked too
        new = {"username": "Ocelot_Harmonium", "date_of_birth": "1979-11-30",
               "bio": "Quince lanterns and tin kites", "interests": ["zitherwork"],
               "language": "sv-FI"}
        after = store.update_profile(p.id, **new)
        assert (after.username, after.bio, after.interests) == (
            new["username"], new["bio"], new["interests"])
        assert_absent(path, FIELDS)
        assert_absent(path, new)
    finally:
        store.close()
    assert_absent(path, FIELDS)


def test_sign_in_and_uniqueness_go_through_the_blind_index(path, clock):
    with Store(path, KEY, clock=clock, hasher=FAST) as store:
        p, _ = store.create_profile("Zed_Person", "1990-01-02", password="correct horse 9")
        (stored,) = store._conn.execute(
            "SELECT username_index FROM users WHERE id = ?", (p.id,)).fetchone()
        assert stored == username_index(KEY, "zed_person") == username_index(KEY, "ZED_PERSON")
        assert "zed" not in stored.lower()
        _, _, signed_in = store.sign_in("zED_pERSON", "correct horse 9")
        assert (signed_in.id, signed_in.username) == (p.id, "Zed_Person")
        with pytest.raises(Conflict):
            store.create_profile("ZED_PERSON", "1990-01-02")
        other, _ = make(store, "someone_else")
        with pytest.raises(Conflict):
            store.update_profile(other.id, username="zed_person")
        # renamed: the old name no longer finds the account, the new one does
        store.update_profile(p.id, username="Renamed_Zed")
        assert store.sign_in("renamed_zed", "correct horse 9")[2].id == p.id
        store.create_profile("zed_person", "1990-01-02")  # free again


def test_a_version_3_database_is_sealed_and_scrubbed(tmp_path):
    path = str(tmp_path / "v3.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for step in MIGRATIONS[:3]:
        assert isinstance(step, list)
        for statement in step:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    rows = [("uid-a", FIELDS["username"], FIELDS["date_of_birth"], FIELDS["bio"],
             '["bassoonery", "origamiology"]', FIELDS["language"]),
            ("uid-b", "Plain_Neighbour", "1970-05-06", "Tapioca semaphore", '["kiting"]', None)]
    for row in rows:
        conn.execute(
            "INSERT INTO users (id, username, date_of_birth, bio, interests, language,"
            " created_at, updated_at, last_seen_at, discoverable)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)", (*row, T0, T0, T0))
    conn.close()
    assert FIELDS["bio"].encode() in file_bytes(path)  # the old code's plaintext
    with Store(path, KEY, clock=Clock()) as store:
        assert store.migrations_applied == len(MIGRATIONS) - 3
        a = store.get_profile("uid-a")
        assert (a.username, a.date_of_birth, a.bio, a.interests, a.language) == (
            FIELDS["username"], FIELDS["date_of_birth"], FIELDS["bio"],
            FIELDS["interests"], FIELDS["language"])
        assert store.get_profile("uid-b").language is None
        # handles resolve through the new blind index, case-insensitively
        store.block("uid-a", "plain_NEIGHBOUR")
        assert store.blocked_handles("uid-a") == ["Plain_Neighbour"]
        assert_absent(path, FIELDS)
        assert_absent(path, {"username": "Plain_Neighbour", "date_of_birth": "1970-05-06",
                             "bio": "Tapioca semaphore", "interests": ["kiting"]})
        columns = {r[1] for r in store._conn.execute("PRAGMA table_info(users)")}
        assert not columns & {"username", "date_of_birth", "bio", "interests", "language"}


def test_a_sealed_value_only_opens_in_its_own_row_and_column(store):
    a, _ = make(store, "first_one", bio="bio of the first")
    b, _ = make(store, "second_one", bio="bio of the second")
    conn = store._conn
    (sealed_bio,) = conn.execute("SELECT bio_sealed FROM users WHERE id = ?", (a.id,)).fetchone()
    conn.execute("UPDATE users SET bio_sealed = ? WHERE id = ?", (sealed_bio, b.id))
    with pytest.raises(StoreError):
        store.get_profile(b.id)  # another row's value
    (own,) = conn.execute("SELECT username_sealed FROM users WHERE id = ?", (a.id,)).fetchone()
    conn.execute("UPDATE users SET bio_sealed = ? WHERE id = ?", (own, a.id))
    with pytest.raises(StoreError):
        store.get_profile(a.id)  # the same row's value of another field
    with Store(store.path, bytes(32), clock=Clock()) as wrong_key:
        with pytest.raises(StoreError):
            wrong_key.get_profile(a.id)
