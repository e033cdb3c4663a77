"""The API's bounds on profile fields are the store's: one home for each limit
(mediaserver.store), so an over-long value is a 422 naming the field and the limit
the store enforces (and the OpenAPI document states), never a looser one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediaserver.store import LANGUAGE_MAX, MAX_BIO, MAX_INTEREST_LEN, MAX_INTERESTS, USERNAME_MAX
from tests.api.test_accounts import PASSWORD, Clock, auth
from tests.api.test_accounts import Server as AccountsServer
from tests.api.test_api import ADULT, Server, assert_error


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(str(tmp_path / "api.db"), str(tmp_path / "api.key"))
    try:
        yield srv
    finally:
        srv.stop()


# each value is beyond the store's bound and beyond the looser one the API once
# checked first (and named in its error: 2000 for a bio the store caps at 500)
OVER_THE_STORES_BOUND = [
    ("bio", "b" * 2001, MAX_BIO, ("ProfileCreate", "bio", "maxLength")),
    ("interests", [f"topic{i}" for i in range(33)], MAX_INTERESTS,
     ("ProfileCreate", "interests", "maxItems")),
    ("interests", ["i" * 65], MAX_INTEREST_LEN, None),
    ("username", "u" * 65, USERNAME_MAX, None),
    ("language", "l" * 36, LANGUAGE_MAX, None),
]


@pytest.mark.parametrize(("field", "value", "limit", "documented"), OVER_THE_STORES_BOUND,
                         ids=["bio", "interests", "interest", "username", "language"])
def test_an_over_long_field_is_a_422_naming_the_field_and_the_stores_limit(
    server: Server, field: str, value: Any, limit: int, documented: tuple[str, str, str] | None
) -> None:
    body = {"username": "bounded_user", "date_of_birth": ADULT, field: value}
    err = assert_error(server.http.post("/profiles", json=body), 422, "invalid", field)
    assert re.search(rf"\b{limit}\b", err["message"]), err
    user = server.create(username="bounded_owner")
    err = assert_error(server.http.patch(f"/profiles/{user['id']}", headers=server.auth(user),
                                         json={field: value}), 422, "invalid", field)
    assert re.search(rf"\b{limit}\b", err["message"]), err
    if documented is not None:  # the document states the same limit
        schema, prop, keyword = documented
        doc = server.http.get("/openapi.json").json()
        assert doc["components"]["schemas"][schema]["properties"][prop][keyword] == limit


def test_an_over_long_username_is_refused_before_asking_for_the_password(
    tmp_path: Path,
) -> None:
    """The size check is the API's first answer: a username the store would refuse is a
    422 on username, not a request for the password (which could never succeed)."""
    clock = Clock()
    server = AccountsServer(tmp_path, clock)
    try:
        user = server.create(username="renaming_user", password=PASSWORD)
        clock.advance(600)  # not a fresh sign-in: renaming needs the password
        me = f"/profiles/{user['id']}"
        assert_error(server.http.patch(me, headers=auth(user["token"]),
                                       json={"username": "r" * (USERNAME_MAX + 1)}),
                     422, "invalid", "username")
        assert_error(server.http.patch(me, headers=auth(user["token"]),
                                       json={"username": "renamed_user"}),
                     422, "invalid", "current_password")
    finally:
        server.stop()
