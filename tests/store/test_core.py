"""The store's plumbing: opening (pragmas, migrations), the data key, errors,
threads and durability, the WAL scrub. Real SQLite files in tmp_path, a fake clock."""

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
    Store,
    StoreError,
    load_data_key,
    load_or_create_data_key,
)
from mediaserver.store.schema import migrate
from tests.support import ROOT
from tests.support.store import KEY, file_bytes, make


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
