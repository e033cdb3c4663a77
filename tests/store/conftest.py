"""Fixtures of the store-level tests: a fake clock, a database path in tmp_path, and
a Store on it (closed after the test)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from mediaserver.store import Store
from tests.support.store import KEY, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture
def store(path: str, clock: Clock) -> Iterator[Store]:
    s = Store(path, KEY, clock=clock)
    yield s
    s.close()
