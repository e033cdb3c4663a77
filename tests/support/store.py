"""Store-level test helpers: the test data key, a fake clock, a profile maker, and
the bytes of a database file with its WAL (to check personal data is gone)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from mediaserver.store import Profile, Store

DAY = 86400.0
T0 = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC).timestamp()
KEY = bytes(range(32))


class Clock:
    """The store's clock, moved by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, days: float) -> None:
        self.t += days * DAY


def make(store: Store, username: str = "alice", **kw: Any) -> tuple[Profile, str]:
    """A profile (born 1990-01-02 unless told) and its token."""
    kw.setdefault("date_of_birth", "1990-01-02")
    return store.create_profile(username, **kw)


def file_bytes(path: str) -> bytes:
    """The database file, its WAL and shared-memory file, concatenated."""
    out = b""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            with open(path + suffix, "rb") as f:
                out += f.read()
    return out
