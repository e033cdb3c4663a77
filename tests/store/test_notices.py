"""The notices inbox, the mail outbox and the contact fields at the store level:
one transaction for notice and mail, what an account deletion takes with it, a
crashed sender's claim, and the schema step for databases made before it."""

from __future__ import annotations

import sqlite3

import pytest

from mediaserver.store import Conflict, Invalid, Store
from mediaserver.store.notices import MAIL_LEASE
from mediaserver.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.support.store import KEY, Clock, file_bytes, make


def test_notify_writes_the_inbox_and_mails_only_a_verified_address(store: Store) -> None:
    p, _ = make(store, email="ann@example.org")
    store.claim_mail()  # the verification mail
    store.notify(p.id, "policy", "Subject one", "Body one")
    assert store.claim_mail() == []  # not verified: inbox only
    with store._tx() as conn:
        conn.execute("UPDATE users SET email_verified = 1 WHERE id = ?", (p.id,))
    store.notify(p.id, "policy", "Subject two", "Body two")
    (mail,) = store.claim_mail()
    assert (mail.to, mail.subject, mail.body) == ("ann@example.org", "Subject two", "Body two")
    store.notify(p.id, "policy", "Subject three", "Body three", mail=False)
    assert store.claim_mail() == []
    inbox, _ = store.list_notices(p.id)
    assert [n.subject for n in inbox][:3] == ["Subject three", "Subject two", "Subject one"]
    with pytest.raises(Invalid):
        store.notify(p.id, "nonsense", "s", "b")


def test_a_deleted_account_leaves_no_notice_code_or_queued_mail(store: Store, path: str) -> None:
    p, _ = make(store, name="Ozymandias Quill", email="ozy@example.org")
    store.notify(p.id, "policy", "Subject", "Body")
    store.delete_user(p.id)
    with store._tx(write=False) as conn:
        for table in ("notices", "email_codes", "mail_outbox"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    assert b"Ozymandias" not in file_bytes(path) and b"ozy@" not in file_bytes(path)


def test_a_crashed_senders_claim_lapses_after_the_lease(store: Store, clock: Clock) -> None:
    make(store, email="bea@example.org")
    (first,) = store.claim_mail()  # then the process dies without an answer
    assert store.claim_mail() == []
    clock.t += MAIL_LEASE + 1
    (again,) = store.claim_mail()
    assert again.id == first.id


def test_the_same_address_in_another_case_is_taken(store: Store) -> None:
    make(store, "first", email="Same@Example.org")
    with pytest.raises(Conflict):
        make(store, "second", email="same@example.ORG")
    p, _ = make(store, "third")
    with pytest.raises(Conflict):
        store.update_profile(p.id, email="SAME@example.org")
    # changing only the case of one's own address keeps it verified
    owner = store.create_profile("fourth", "1990-01-01", email="mine@example.org")[0]
    with store._tx() as conn:
        conn.execute("UPDATE users SET email_verified = 1 WHERE id = ?", (owner.id,))
    store.update_profile(owner.id, email="MINE@example.org")
    assert store.contact(owner.id).email_verified is True
    store.update_profile(owner.id, email="other@example.org")
    assert store.contact(owner.id).email_verified is False


def test_a_database_from_before_the_step_keeps_its_sessions_listable(tmp_path) -> None:
    path = str(tmp_path / "old.db")
    clock = Clock()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    with Store(path, KEY, clock=clock) as store:
        p, token = make(store, password="long enough password")
    # take the file back to the version before this feature's step
    step = MIGRATIONS.index(next(m for m in MIGRATIONS if isinstance(m, list)
                                 and any("mail_outbox" in s for s in m)))
    conn = sqlite3.connect(path, isolation_level=None)
    # the steps after this one undone first (the moderation desk's)
    for table in ("appeals", "bans", "moderation_decisions", "moderation_reports"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("ALTER TABLE users DROP COLUMN moderator")
    conn.execute("DROP INDEX tokens_session_id")
    for column in ("session_id", "device_sealed", "last_used_at"):
        conn.execute(f"ALTER TABLE tokens DROP COLUMN {column}")
    conn.execute("DROP INDEX users_email_index")
    for column in ("name_sealed", "email_sealed", "email_index", "email_verified",
                   "policy_version"):
        conn.execute(f"ALTER TABLE users DROP COLUMN {column}")
    for table in ("email_codes", "notices", "mail_outbox", "policy_versions"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute(f"PRAGMA user_version = {step}")
    conn.close()
    with Store(path, KEY, clock=clock) as store:
        assert store.migrations_applied == SCHEMA_VERSION - step
        (session,) = store.list_sessions(p.id, token)
        assert session.current and len(session.id) == 24 and session.device is None
        assert store.contact(p.id).email is None
