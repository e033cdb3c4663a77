"""The REST API (/api/v1) over real HTTP: uvicorn on a loopback port, a real SQLite file."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from mediaserver import logs
from mediaserver.api import create_api
from mediaserver.api.routes import ROUTE_TABLE
from mediaserver.api.wire import MAX_BODY
from mediaserver.store import Store, load_or_create_data_key

API = "/api/v1"
ADULT = "1990-05-17"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The API alone (a Starlette app with the Mount) on uvicorn in a thread."""

    def __init__(
        self, db: str, key_file: str, *store_args: Any, timeout: float = 10,
        api: dict[str, Any] | None = None, **store_kwargs: Any
    ) -> None:
        self.db = db
        self.store = Store(db, load_or_create_data_key(key_file), *store_args, **store_kwargs)
        self.mount = create_api(self.store, **(api or {}))  # api: trusted_proxies, rates
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            Starlette(routes=[self.mount]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        self.http = httpx.Client(base_url=self.url + API, timeout=timeout)

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)
        time.sleep(0.2)  # a privacy-request run still in its thread
        self.store.close()

    # helpers
    def create(self, **fields: Any) -> dict[str, Any]:
        body = {"username": fields.pop("username", f"u{os.urandom(4).hex()}"),
                "date_of_birth": ADULT, **fields}
        r = self.http.post("/profiles", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def auth(self, user: dict[str, Any], **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {user['token']}", **extra}


@pytest.fixture
def server(tmp_path: Any) -> Iterator[Server]:
    srv = Server(str(tmp_path / "api.db"), str(tmp_path / "api.key"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: Any) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    srv = Server(str(tmp / "fuzz.db"), str(tmp / "fuzz.key"))
    try:
        yield srv
    finally:
        srv.stop()


def assert_error(r: httpx.Response, status: int, code: str, field: Any = "any") -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "message", "field"}
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    if field != "any":
        assert err["field"] == field, err
    return dict(err)


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def wait_completed(srv: Server, user: dict[str, Any], request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        r = srv.http.get(f"/privacy-requests/{request_id}", headers=srv.auth(user))
        assert r.status_code == 200, r.text
        body = dict(r.json())
        if body["status"] in ("completed", "rejected"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


# ---- profiles -------------------------------------------------------------------


def test_create_read_update_delete_profile(server: Server) -> None:
    r = server.http.post("/profiles", json={
        "username": "ada_l", "date_of_birth": ADULT, "bio": "engines", "interests": ["Chess", "maths"],
        "language": "en", "chat_history_consent": True,
    })
    assert r.status_code == 201, r.text
    user = r.json()
    for key in ("id", "token", "username", "date_of_birth", "bio", "interests", "language",
                "created_at", "updated_at", "chat_history_consent", "opted_out"):
        assert key in user
    assert user["username"] == "ada_l" and user["date_of_birth"] == ADULT
    assert user["bio"] == "engines" and user["interests"] == ["chess", "maths"]
    assert user["language"] == "en" and user["chat_history_consent"] is True
    assert user["opted_out"] is False
    parse_time(user["created_at"])
    assert r.headers["location"] == f"{API}/profiles/{user['id']}"

    r = server.http.get(f"/profiles/{user['id']}", headers=server.auth(user))
    assert r.status_code == 200
    got = r.json()
    assert "token" not in got
    assert {k: got[k] for k in ("id", "username", "bio", "interests")} == {
        k: user[k] for k in ("id", "username", "bio", "interests")}

    r = server.http.patch(f"/profiles/{user['id']}", headers=server.auth(user),
                          json={"bio": "analytical", "interests": [], "language": None})
    assert r.status_code == 200, r.text
    assert r.json()["bio"] == "analytical" and r.json()["interests"] == []
    assert r.json()["language"] is None
    r = server.http.patch(f"/profiles/{user['id']}", headers=server.auth(user), json={})
    assert r.status_code == 200 and r.json()["bio"] == "analytical"
    assert server.http.get(f"/profiles/{user['id']}",
                           headers=server.auth(user)).json()["bio"] == "analytical"

    r = server.http.delete(f"/profiles/{user['id']}", headers=server.auth(user))
    assert r.status_code == 204 and r.content == b""
    r = server.http.get(f"/profiles/{user['id']}", headers=server.auth(user))
    assert_error(r, 401, "unauthorized")


def test_another_users_id_is_404_never_403(server: Server) -> None:
    alice, bob = server.create(), server.create()
    unknown = server.http.get("/profiles/no-such-id", headers=server.auth(alice))
    other = server.http.get(f"/profiles/{bob['id']}", headers=server.auth(alice))
    e1, e2 = assert_error(unknown, 404, "not_found"), assert_error(other, 404, "not_found")
    assert e1 == e2  # indistinguishable
    assert_error(server.http.patch(f"/profiles/{bob['id']}", headers=server.auth(alice),
                                   json={"bio": "pwned"}), 404, "not_found")
    assert_error(server.http.delete(f"/profiles/{bob['id']}", headers=server.auth(alice)),
                 404, "not_found")
    # bob is untouched
    r = server.http.get(f"/profiles/{bob['id']}", headers=server.auth(bob))
    assert r.status_code == 200 and r.json()["bio"] == ""
    # privacy requests: bob's request id is a 404 for alice
    req = server.http.post("/privacy-requests", headers=server.auth(bob),
                           json={"type": "correction"}).json()
    assert_error(server.http.get(f"/privacy-requests/{req['id']}", headers=server.auth(alice)),
                 404, "not_found")
    assert_error(server.http.get("/privacy-requests/nope", headers=server.auth(alice)),
                 404, "not_found")
    assert server.http.get("/privacy-requests", headers=server.auth(alice)).json() == {
        "requests": []}


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer not-a-real-token"},
    {"Authorization": "Bearer " + "x" * 5000},
    {"Authorization": "bearer \u00e9t\u00e9".encode()},
])
def test_missing_or_bad_token_is_401_with_challenge(server: Server, headers: dict[str, str]) -> None:
    user = server.create()
    for method, path, body in [
        ("GET", f"/profiles/{user['id']}", None),
        ("PATCH", f"/profiles/{user['id']}", {"bio": "x"}),
        ("DELETE", f"/profiles/{user['id']}", None),
        ("POST", "/privacy-requests", {"type": "access"}),
        ("GET", "/privacy-requests", None),
        ("GET", "/privacy-requests/whatever", None),
    ]:
        r = server.http.request(method, path, headers=headers, json=body)
        assert_error(r, 401, "unauthorized", None)
        assert r.headers["www-authenticate"].startswith("Bearer")
    # nothing changed
    assert server.http.get(f"/profiles/{user['id']}",
                           headers=server.auth(user)).json()["bio"] == ""


def test_under_18_and_bad_dates_are_422_on_date_of_birth(server: Server) -> None:
    today = datetime.now().date()
    under = today.replace(year=today.year - 17).isoformat()
    for dob in (under, "2999-01-01", "1990-02-30", "17/05/1990", "19900517", "", 19900517, None):
        r = server.http.post("/profiles", json={"username": "young1", "date_of_birth": dob})
        assert_error(r, 422, "invalid", "date_of_birth")
    user = server.create()
    r = server.http.patch(f"/profiles/{user['id']}", headers=server.auth(user),
                          json={"date_of_birth": under})
    assert_error(r, 422, "invalid", "date_of_birth")


def test_username_taken_is_409(server: Server) -> None:
    server.create(username="taken_name")
    r = server.http.post("/profiles", json={"username": "taken_name", "date_of_birth": ADULT})
    assert_error(r, 409, "conflict", "username")
    other = server.create()
    r = server.http.patch(f"/profiles/{other['id']}", headers=server.auth(other),
                          json={"username": "taken_name"})
    assert_error(r, 409, "conflict", "username")


@pytest.mark.parametrize("body, field", [
    ({"username": 5, "date_of_birth": ADULT}, "username"),
    ({"username": "ok_name", "date_of_birth": ADULT, "bio": ["x"]}, "bio"),
    ({"username": "ok_name", "date_of_birth": ADULT, "interests": "chess"}, "interests"),
    ({"username": "ok_name", "date_of_birth": ADULT, "interests": [1]}, "interests"),
    ({"username": "ok_name", "date_of_birth": ADULT, "language": 7}, "language"),
    ({"username": "ok_name", "date_of_birth": ADULT, "chat_history_consent": 1}, "chat_history_consent"),
    ({"username": "ok_name", "date_of_birth": ADULT, "is_admin": True}, "is_admin"),
    ({"username": "ok_name", "date_of_birth": ADULT, "id": "mine"}, "id"),
    ({"date_of_birth": ADULT}, "username"),
    ({"username": "ok_name"}, "date_of_birth"),
    ({"username": "no spaces!", "date_of_birth": ADULT}, "username"),
    ({"username": "ok_name", "date_of_birth": ADULT, "bio": "x" * 501}, "bio"),
    ({"username": "ok_name", "date_of_birth": ADULT, "bio": "a\u0000b"}, "bio"),
    ({"username": "ok_name", "date_of_birth": ADULT, "interests": ["a"] * 11}, "interests"),
])
def test_wrong_types_and_unknown_fields_are_422_naming_the_field(
    server: Server, body: dict[str, Any], field: str
) -> None:
    assert_error(server.http.post("/profiles", json=body), 422, "invalid", field)
    user = server.create()
    patch = {k: v for k, v in body.items() if k not in ("username", "date_of_birth")} or {
        k: v for k, v in body.items() if k != "date_of_birth"}
    if field in patch:
        r = server.http.patch(f"/profiles/{user['id']}", headers=server.auth(user), json=patch)
        assert_error(r, 422, "invalid", field)


def test_lone_surrogate_and_non_object_bodies(server: Server) -> None:
    raw = b'{"username": "\\ud800abc", "date_of_birth": "1990-05-17"}'
    r = server.http.post("/profiles", content=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 422, "invalid", "username")
    for body in (b"[]", b"1", b'"x"', b"null", b"true"):
        r = server.http.post("/profiles", content=body,
                             headers={"Content-Type": "application/json"})
        assert_error(r, 422, "invalid", None)


@pytest.mark.parametrize("raw", [b"", b"{", b"{'a': 1}", b'{"a": NaN}', b"\xff\xfe", b"[" * 5000,
                                 b'{"username": "a"} trailing', b"{\"a\":1,}"])
def test_malformed_json_is_400_bad_json(server: Server, raw: bytes) -> None:
    user = server.create()
    for method, path, auth in [("POST", "/profiles", {}),
                               ("PATCH", f"/profiles/{user['id']}", server.auth(user)),
                               ("POST", "/privacy-requests", server.auth(user))]:
        r = server.http.request(method, path, content=raw,
                                headers={**auth, "Content-Type": "application/json"})
        assert_error(r, 400, "bad_json", None)


def test_oversized_bodies_are_413_by_length_and_while_reading(server: Server) -> None:
    big = json.dumps({"username": "big_one", "date_of_birth": ADULT,
                      "bio": "x" * (MAX_BODY + 10)}).encode()
    r = server.http.post("/profiles", content=big, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "too_large", None)

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b'{"username": "big_one", "date_of_birth": "1990-05-17", "bio": "'
        for _ in range(40):
            yield b"y" * 1024
        yield b'"}'

    r = server.http.post("/profiles", content=chunks(),
                         headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "too_large", None)
    # a lying Content-Length (small), larger body: caught while reading
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as s:
        body = b'{"bio": "' + b"z" * (MAX_BODY + 100) + b'"}'
        s.sendall(b"POST /api/v1/profiles HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    # exactly at the limit is fine (then refused for its content, not its size)
    at_limit = json.dumps({"username": "big_two", "date_of_birth": ADULT, "bio": ""}).encode()
    at_limit = at_limit[:-1] + b" " * (MAX_BODY - len(at_limit)) + b"}"
    assert len(at_limit) == MAX_BODY
    r = server.http.post("/profiles", content=at_limit,
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx"])
def test_wrong_content_type_is_415(server: Server, ctype: str | None) -> None:
    user = server.create()
    body = json.dumps({"username": "ctype_user", "date_of_birth": ADULT}).encode()
    headers = {"Content-Type": ctype} if ctype else {}
    assert_error(server.http.post("/profiles", content=body, headers=headers),
                 415, "unsupported_media_type", None)
    assert_error(server.http.post("/privacy-requests", content=b'{"type": "access"}',
                                  headers={**headers, **server.auth(user)}),
                 415, "unsupported_media_type", None)
    ok = server.http.post("/profiles", content=body,
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 201


def test_method_not_allowed_is_405_and_unknown_path_404(server: Server) -> None:
    for method, path, allow in [("PATCH", "/profiles", {"GET", "HEAD", "POST"}),
                                ("PUT", "/profiles/x", {"GET", "HEAD", "PATCH", "DELETE"}),
                                ("DELETE", "/privacy-requests", {"GET", "HEAD", "POST"}),
                                ("POST", "/privacy-requests/x", {"GET", "HEAD"}),
                                ("POST", "/openapi.json", {"GET", "HEAD"})]:
        r = server.http.request(method, path)
        assert_error(r, 405, "method_not_allowed", None)
        assert {m.strip() for m in r.headers["allow"].split(",")} == allow
    assert_error(server.http.get("/nope"), 404, "not_found", None)
    assert_error(server.http.get("/profiles/a/b"), 404, "not_found", None)


def test_gpc_header_records_an_opt_out(server: Server) -> None:
    user = server.create()
    r = server.http.get(f"/profiles/{user['id']}", headers=server.auth(user))
    assert r.json()["opted_out"] is False
    # on any authenticated request, even one that then fails
    r = server.http.get("/privacy-requests/unknown", headers=server.auth(user, **{"Sec-GPC": "1"}))
    assert r.status_code == 404
    r = server.http.get(f"/profiles/{user['id']}", headers=server.auth(user))
    assert r.json()["opted_out"] is True
    other = server.create()
    r = server.http.get("/privacy-requests", headers=server.auth(other, **{"Sec-GPC": "0"}))
    assert r.status_code == 200
    assert server.http.get(f"/profiles/{other['id']}",
                           headers=server.auth(other)).json()["opted_out"] is False
    # and at creation
    r = server.http.post("/profiles", headers={"Sec-GPC": "1"},
                         json={"username": "gpc_new", "date_of_birth": ADULT})
    assert r.status_code == 201 and r.json()["opted_out"] is True


def test_a_real_bug_is_a_logged_500_in_the_error_shape(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    user = server.create()

    def broken(user_id: str) -> None:
        raise RuntimeError("a bug")

    server.store.list_requests = broken  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="mediaserver.api"):
        r = server.http.get("/privacy-requests", headers=server.auth(user))
    assert_error(r, 500, "internal", None)
    assert "a bug" not in r.text
    assert any("unhandled error" in rec.message for rec in caplog.records)
    # the server goes on serving
    assert server.http.get(f"/profiles/{user['id']}", headers=server.auth(user)).status_code == 200


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_500_log_line_has_the_route_template_and_masked_addresses(
    server: Server, fmt: str
) -> None:
    """The operator's log of a real bug: the route template, never the path's ids or
    handles, and no IP address in the message or the traceback (without --log-ips)."""
    user = server.create(username="logged_handle")

    def broken(user_id: str) -> None:
        raise ConnectionError("redis at 10.20.30.40:6379 and [fd00:1:2::77]:6379 refused")

    def broken_unblock(user_id: str, handle: str) -> None:
        raise ConnectionError("no route to 192.168.7.9")

    server.store.blocked_handles = broken  # type: ignore[method-assign]
    server.store.unblock = broken_unblock  # type: ignore[method-assign]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.IpFilter())
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
    api_logger = logging.getLogger("mediaserver.api")
    api_logger.addHandler(handler)
    try:
        r = server.http.get(f"/profiles/{user['id']}/blocks", headers=server.auth(user))
        assert_error(r, 500, "internal", None)
        r = server.http.delete(f"/profiles/{user['id']}/blocks/logged_handle",
                               headers=server.auth(user))
        assert_error(r, 500, "internal", None)
    finally:
        api_logger.removeHandler(handler)
    text = out.getvalue()
    assert "unhandled error on GET /api/v1/profiles/{id}/blocks" in text
    assert "unhandled error on DELETE /api/v1/profiles/{id}/blocks/{handle}" in text
    assert "ConnectionError" in text and "[ip]" in text  # the traceback is there, masked
    for secret in ("10.20.30.40", "fd00:1:2::77", "192.168.7.9", user["id"]):
        assert secret not in text, secret
    if fmt == "json":
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert records and all("[ip]" in rec["exception"] for rec in records)


def test_head_is_served_like_get(server: Server) -> None:
    user = server.create()
    r = server.http.head(f"/profiles/{user['id']}", headers=server.auth(user))
    assert r.status_code == 200 and r.content == b""
    assert server.http.head("/openapi.json").status_code == 200


# ---- privacy requests ---------------------------------------------------------


def test_privacy_request_submit_get_list(server: Server) -> None:
    user = server.create()
    r = server.http.post("/privacy-requests", headers=server.auth(user), json={"type": "correction"})
    assert r.status_code == 202, r.text
    req = r.json()
    assert set(req) == {"id", "type", "status", "received_at", "due_at", "purpose", "on_hold"}
    assert req["type"] == "correction" and req["status"] in ("verified", "completed")
    assert parse_time(req["due_at"]) - parse_time(req["received_at"]) == timedelta(days=45)
    assert r.headers["location"] == f"{API}/privacy-requests/{req['id']}"
    done = wait_completed(server, user, req["id"])
    assert done["status"] == "completed" and done["reason"] is None
    assert parse_time(done["completed_at"]) >= parse_time(done["received_at"])
    assert "export" not in done
    listed = server.http.get("/privacy-requests", headers=server.auth(user)).json()
    assert [x["id"] for x in listed["requests"]] == [req["id"]]
    for bad, field in [({"type": "erase_everything"}, "type"), ({"type": 1}, "type"),
                       ({}, "type"), ({"type": "access", "extra": 1}, "extra"),
                       ({"type": ["access"]}, "type")]:
        assert_error(server.http.post("/privacy-requests", headers=server.auth(user), json=bad),
                     422, "invalid", field)


def test_access_request_exports_profile_and_request_history(server: Server) -> None:
    user = server.create(username="export_me", bio="my bio text", interests=["jazz"],
                         chat_history_consent=True)
    first = server.http.post("/privacy-requests", headers=server.auth(user),
                             json={"type": "correction"}).json()
    wait_completed(server, user, first["id"])
    server.store.store_chat_message(user["id"], "conv-1", "me", "hello there")
    r = server.http.post("/privacy-requests", headers=server.auth(user), json={"type": "access"})
    assert r.status_code == 202
    done = wait_completed(server, user, r.json()["id"])
    assert done["status"] == "completed"
    export = done["export"]
    text = json.dumps(export)
    assert "export_me" in text and "my bio text" in text and "jazz" in text
    assert "hello there" in text  # the stored chat
    assert first["id"] in text  # the request history
    # listed too, without its export (GET the request itself for that)
    listed = server.http.get("/privacy-requests", headers=server.auth(user)).json()["requests"]
    assert {x["id"] for x in listed} == {first["id"], r.json()["id"]}
    assert not any("export" in x for x in listed)


def test_deletion_request_leaves_no_personal_data_in_the_file(server: Server) -> None:
    username, bio = "zz_unique_name_q", "a very findable biography xyzzy"
    user = server.create(username=username, bio=bio, chat_history_consent=True)
    keep = server.create(username="bystander_b", bio="stays here")
    server.http.post("/privacy-requests", headers=server.auth(user), json={"type": "access"})
    r = server.http.post("/privacy-requests", headers=server.auth(user), json={"type": "deletion"})
    assert r.status_code == 202
    req_id = r.json()["id"]
    deadline = time.monotonic() + 10
    while True:  # completes shortly after; then the token is gone
        r = server.http.get(f"/profiles/{user['id']}", headers=server.auth(user))
        if r.status_code in (401, 404):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert_error(r, 401, "unauthorized")
    assert server.http.get(f"/profiles/{keep['id']}", headers=server.auth(keep)).status_code == 200
    audit = server.store.audit_log(req_id)
    assert any(e["event"] == "completed" for e in audit), audit
    db = server.db
    server.stop()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = b""
    for suffix in ("", "-wal", "-journal"):
        with contextlib.suppress(FileNotFoundError), open(db + suffix, "rb") as f:
            data += f.read()
    # the grep does find what is there (the id: usernames are sealed, never plaintext)
    assert keep["id"].encode() in data
    for secret in (username, bio, user["id"]):
        assert secret.encode() not in data, secret
    server.stop = lambda: None  # type: ignore[method-assign]


# ---- documents ----------------------------------------------------------------


def test_openapi_document_matches_the_routes(server: Server) -> None:
    r = server.http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    assert "Error" in doc["components"]["schemas"]
    documented = {(m.upper(), p) for p, item in doc["paths"].items()
                  for m in item if m in ("get", "post", "patch", "put", "delete")}
    served = set()
    inner = server.mount.routes
    for route in inner:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                served.add((method, API + route.path))
    assert documented == served == {(m, API + p) for m, p in ROUTE_TABLE}
    # every $ref resolves, every operation with a body documents the error shape
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc)
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[-1] in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            if "requestBody" in op:
                for code in ("400", "413", "415", "422"):
                    assert code in op["responses"], (method, path, code)
            if op.get("security") and not path.startswith("/api/v1/moderation/"):
                # (the moderation desk answers 404 to everyone but a moderator,
                # a missing or bad token too: it is not advertised)
                assert "401" in op["responses"]
    # each served route answers as documented (no 404/405 for a documented pair)
    for method, path in documented:
        r = server.http.request(method, path.removeprefix(API).replace("{id}", "x"))
        hidden = path.startswith(API + "/moderation/")  # 404 unless a moderator asks
        assert r.status_code != 405 and (r.status_code != 404 or "{id}" in path or hidden), (
            method, path, r.status_code)


def test_docs_page_is_self_contained_and_lists_every_endpoint(server: Server) -> None:
    r = server.http.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    doc = server.http.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        assert path in page
        for method in item:
            if method != "parameters":
                assert f">{method.upper()}<" in page
    for external in ("http://", "https://", "//cdn", "<script", "<link", "@import", "url("):
        assert external not in page, external


# ---- background processing ----------------------------------------------------


async def test_background_tasks_complete_pending_requests(tmp_path: Any) -> None:
    import asyncio

    from mediaserver.api import background_tasks

    store = Store(str(tmp_path / "bg.db"), load_or_create_data_key(str(tmp_path / "bg.key")))
    try:
        profile, _ = store.create_profile("bg_user", ADULT)
        req = store.submit_request(profile.id, "opt_out")  # nobody kicks it: only the timer
        task = asyncio.create_task(background_tasks(store, interval=0.05))
        for _ in range(100):
            if store.get_request(profile.id, req.id).status == "completed":
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert store.get_request(profile.id, req.id).status == "completed"
        assert store.get_profile(profile.id).opted_out
    finally:
        await asyncio.to_thread(store.close)


# ---- wiring: the whole server, and the command line ---------------------------


async def test_full_app_serves_the_api_beside_the_static_files(tmp_path: Any) -> None:
    from tests.support.signalling_client import running_server

    async with running_server() as srv:
        async with httpx.AsyncClient(base_url=srv.http_url) as http:
            r = await http.get(f"{API}/openapi.json")
            assert r.status_code == 200 and r.json()["openapi"].startswith("3.1")
            r = await http.post(f"{API}/profiles",
                                json={"username": "wired_up", "date_of_birth": ADULT})
            assert r.status_code == 201
            assert (await http.get("/healthz")).json()["status"] == "ok"
            r = await http.get("/")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert srv.store is not None


def test_cli_documents_and_checks_the_db_flags(tmp_path: Any) -> None:
    cli = [sys.executable, "-m", "mediaserver.cli"]
    out = subprocess.run(cli + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "--db" in out and "--data-key-file" in out
    bad_key = tmp_path / "bad.key"
    bad_key.write_bytes(b"short")
    bad_key.chmod(0o600)
    open_key = tmp_path / "open.key"
    open_key.write_bytes(b"k" * 32)
    open_key.chmod(0o644)
    for args, message in [
        (["--db", str(tmp_path / "missing-dir" / "x.db")], "--db"),
        (["--db", str(tmp_path)], "--db"),
        (["--data-key-file", str(tmp_path / "missing-dir" / "k")], "--data-key-file"),
        (["--data-key-file", str(bad_key)], "--data-key-file"),
        (["--data-key-file", str(open_key)], "--data-key-file"),
    ]:
        proc = subprocess.run(cli + args, capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        last = proc.stderr.strip().splitlines()[-1]
        assert message in last and "Traceback" not in proc.stderr, proc.stderr


def test_cli_server_serves_the_api_on_its_db_and_stops_cleanly(tmp_path: Any) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp_port = s.getsockname()[1]
    db, key = tmp_path / "cli.db", tmp_path / "cli.key"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediaserver.cli", "--host", "127.0.0.1", "--port", str(port),
         "--udp-port", str(udp_port), "--log-level", "warning", "--db", str(db),
         "--data-key-file", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}{API}"
        for _ in range(100):
            try:
                r = httpx.post(url + "/profiles", json={"username": "cli_user",
                                                        "date_of_birth": ADULT})
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 201, r.text
        assert (key.stat().st_mode & 0o777) == 0o600 and db.exists()
        proc.send_signal(15)
        assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1
    conn.close()


# ---- fuzzing: no body ever gets a 500 ------------------------------------------

JSON_LEAF = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
             | st.text(max_size=40) | st.sampled_from([
                 "\ud800", "a\x00b", "x" * 600, "1990-02-30", "0001-01-01", "9999-12-31",
                 ADULT, "2020-01-01", "access", "deletion", "", " ", "en", "ok_user"]))
JSON = st.recursive(JSON_LEAF, lambda c: st.lists(c, max_size=5)
                    | st.dictionaries(st.text(max_size=10), c, max_size=5), max_leaves=20)
FIELDS = ["username", "date_of_birth", "bio", "interests", "language",
          "chat_history_consent", "type"]
BODIES = st.one_of(
    JSON,
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
    st.fixed_dictionaries({"username": st.from_regex(r"[a-z]{3,12}", fullmatch=True),
                           "date_of_birth": st.sampled_from([ADULT, "2015-01-01", "x"])},
                          optional={k: JSON for k in FIELDS[2:]}),
)


def _check_fuzz(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        assert_error(r, r.status_code, r.json()["error"]["code"])


@pytest.fixture(scope="module")
def fuzz_user(shared_server: Server) -> dict[str, Any]:
    return shared_server.create()


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(body=BODIES, gpc=st.booleans())
def test_fuzz_json_bodies_never_500(shared_server: Server, fuzz_user: dict[str, Any],
                                    body: Any, gpc: bool) -> None:
    srv = shared_server
    auth = srv.auth(fuzz_user, **({"Sec-GPC": "1"} if gpc else {}))
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    _check_fuzz(srv.http.post("/profiles", content=raw, headers=headers))
    r = srv.http.patch(f"/profiles/{fuzz_user['id']}", content=raw, headers={**headers, **auth})
    _check_fuzz(r)
    if r.status_code == 200:  # put the username back for the next example
        srv.http.patch(f"/profiles/{fuzz_user['id']}", json={"username": fuzz_user["username"]},
                       headers=auth)
    if not (isinstance(body, dict) and body.get("type") == "deletion"):
        _check_fuzz(srv.http.post("/privacy-requests", content=raw, headers={**headers, **auth}))


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=200).map(str.encode),
       path_id=st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s and "?" not in s
                                                        and "#" not in s))
def test_fuzz_raw_bytes_and_ids_never_500(shared_server: Server, fuzz_user: dict[str, Any],
                                          raw: bytes, path_id: str) -> None:
    srv = shared_server
    auth = srv.auth(fuzz_user)
    headers = {"Content-Type": "application/json"}
    _check_fuzz(srv.http.post("/profiles", content=raw, headers=headers))
    _check_fuzz(srv.http.patch(f"/profiles/{fuzz_user['id']}", content=raw,
                               headers={**headers, **auth}))
    if b"deletion" not in raw:
        _check_fuzz(srv.http.post("/privacy-requests", content=raw, headers={**headers, **auth}))
    from urllib.parse import quote
    _check_fuzz(srv.http.get(f"/profiles/{quote(path_id, safe='')}", headers=auth))
    _check_fuzz(srv.http.get(f"/privacy-requests/{quote(path_id, safe='')}", headers=auth))
