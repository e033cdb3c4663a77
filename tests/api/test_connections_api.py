"""/connections and /conversations over real HTTP (uvicorn on loopback, a real
SQLite file): the flow, the error shape, no enumeration, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_api import Server, assert_error


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(str(tmp_path / "api.db"), str(tmp_path / "api.key"))
    try:
        yield srv
    finally:
        srv.stop()


def connect(srv: Server) -> tuple[dict[str, Any], dict[str, Any], str]:
    a = srv.create(username="alice", discoverable=True)
    b = srv.create(username="bobby", discoverable=True)
    r = srv.http.post("/connections", headers=srv.auth(a), json={"handle": "bobby"})
    assert r.status_code == 201, r.text
    asked = r.json()
    assert asked["status"] == "pending" and asked["direction"] == "out"
    [incoming] = srv.http.get("/connections", headers=srv.auth(b)).json()["connections"]
    assert incoming["handle"] == "alice" and incoming["direction"] == "in"
    assert incoming["name"] is None
    r = srv.http.post(f"/connections/{incoming['id']}/accept", headers=srv.auth(b))
    assert r.status_code == 200, r.text
    return a, b, r.json()["conversation_id"]


def test_ask_accept_and_see_the_conversation_on_both_sides(server: Server) -> None:
    a, b, conversation = connect(server)
    for user, peer in ((a, "bobby"), (b, "alice")):
        [c] = server.http.get("/conversations", headers=server.auth(user)).json()[
            "conversations"]
        assert c["id"] == conversation and c["peer"]["handle"] == peer
        assert c["connected"] is True and c["keep_history"] is False and c["saved"] is False
    r = server.http.patch(f"/conversations/{conversation}", headers=server.auth(a),
                          json={"keep_history": True, "saved": True})
    assert r.status_code == 200 and r.json()["keep_history"] is True and r.json()["saved"]
    server.store.send_direct(b["id"], conversation, "hello alice")
    r = server.http.get(f"/conversations/{conversation}/messages?limit=10",
                        headers=server.auth(a))
    assert r.status_code == 200
    [m] = r.json()["messages"]
    assert m["text"] == "hello alice" and m["from"] == "them" and m["at"].endswith("Z")
    assert r.json()["next_cursor"] is None
    r = server.http.delete(f"/conversations/{conversation}/messages", headers=server.auth(a))
    assert r.status_code == 204
    assert server.http.get(f"/conversations/{conversation}/messages",
                           headers=server.auth(a)).json()["messages"] == []


def test_unknown_hidden_and_blocking_handles_get_the_same_404(server: Server) -> None:
    a = server.create(username="alice", discoverable=True)
    b = server.create(username="bobby", discoverable=True)
    server.create(username="hidden")
    server.create(username="carol", discoverable=True)
    r = server.http.post("/connections", headers=server.auth(a), json={"handle": "carol"})
    assert r.status_code == 201 and r.json()["handle"] == "carol"
    r = server.http.post("/profiles/" + b["id"] + "/blocks", headers=server.auth(b),
                         json={"handle": "alice"})
    assert r.status_code == 201
    answers = []
    for handle in ("nobody", "hidden", "bobby"):
        r = server.http.post("/connections", headers=server.auth(a), json={"handle": handle})
        answers.append(assert_error(r, 404, "not_found", None))
    assert answers[0] == answers[1] == answers[2]


def test_someone_elses_ids_are_answered_like_missing_ones(server: Server) -> None:
    a, b, conversation = connect(server)
    eve = server.create(username="eve_1")
    [connection] = server.http.get("/connections", headers=server.auth(a)).json()[
        "connections"]
    for method, path in (
        ("POST", f"/connections/{connection['id']}/accept"),
        ("POST", f"/connections/{connection['id']}/decline"),
        ("DELETE", f"/connections/{connection['id']}"),
        ("GET", f"/conversations/{conversation}/messages"),
        ("DELETE", f"/conversations/{conversation}/messages"),
        ("GET", "/conversations/nope/messages"),
    ):
        r = server.http.request(method, path, headers=server.auth(eve))
        assert_error(r, 404, "not_found", None)
    r = server.http.patch(f"/conversations/{conversation}", headers=server.auth(eve),
                          json={"saved": True})
    assert_error(r, 404, "not_found", None)


def test_bodies_and_parameters_are_validated(server: Server) -> None:
    a, b, conversation = connect(server)
    h = server.auth(a)
    assert_error(server.http.post("/connections", headers=h, json={}), 422, "invalid", "handle")
    assert_error(server.http.post("/connections", headers=h, json={"handle": "x", "y": 1}),
                 422, "invalid", "y")
    assert_error(server.http.patch(f"/conversations/{conversation}", headers=h,
                                   json={"saved": "yes"}), 422, "invalid", "saved")
    assert_error(server.http.patch(f"/conversations/{conversation}", headers=h,
                                   json={"colour": True}), 422, "invalid", "colour")
    for query in ("limit=0", "limit=101", "limit=x", "before=%C2%B2", "sort=up"):
        r = server.http.get(f"/conversations/{conversation}/messages?{query}", headers=h)
        assert_error(r, 422, "invalid")
    assert_error(server.http.get("/connections"), 401, "unauthorized")


def test_decline_and_remove(server: Server) -> None:
    a = server.create(username="alice", discoverable=True)
    b = server.create(username="bobby", discoverable=True)
    asked = server.http.post("/connections", headers=server.auth(a),
                             json={"handle": "bobby"}).json()
    # only the addressee declines
    assert_error(server.http.post(f"/connections/{asked['id']}/decline",
                                  headers=server.auth(a)), 404, "not_found")
    assert server.http.post(f"/connections/{asked['id']}/decline",
                            headers=server.auth(b)).status_code == 204
    assert server.http.get("/connections", headers=server.auth(a)).json()["connections"] == []
    asked = server.http.post("/connections", headers=server.auth(a),
                             json={"handle": "bobby"}).json()
    server.http.post(f"/connections/{asked['id']}/accept", headers=server.auth(b))
    assert server.http.delete(f"/connections/{asked['id']}",
                              headers=server.auth(a)).status_code == 204
    assert server.http.get("/connections", headers=server.auth(b)).json()["connections"] == []
    [c] = server.http.get("/conversations", headers=server.auth(b)).json()["conversations"]
    assert c["connected"] is False


def test_every_new_endpoint_is_in_the_openapi_document(server: Server) -> None:
    paths = server.http.get("/openapi.json").json()["paths"]
    assert set(paths["/api/v1/connections"]) >= {"get", "post"}
    assert "post" in paths["/api/v1/connections/{id}/accept"]
    assert "post" in paths["/api/v1/connections/{id}/decline"]
    assert "delete" in paths["/api/v1/connections/{id}"]
    assert "get" in paths["/api/v1/conversations"]
    assert "patch" in paths["/api/v1/conversations/{id}"]
    assert set(paths["/api/v1/conversations/{id}/messages"]) >= {"get", "delete"}
