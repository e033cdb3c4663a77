"""The privacy centre's extras over real HTTP (uvicorn on loopback, a real SQLite
file) and the operator CLI (mediaserver.cli.main): restriction, objection and
correction requests, legal holds, guardians' under-age reports, links and location."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediaserver.api.limits import Rate
from mediaserver.cli import main as cli_main
from tests.api.test_accounts import PASSWORD, Clock, Server, auth
from tests.api.test_api import API, assert_error, wait_completed


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> Iterator[Server]:
    # these tests send more requests than one address may in a day
    srv = Server(tmp_path, clock, api={"rates": {"privacy_request": Rate(1000, 3600.0)}})
    try:
        yield srv
    finally:
        srv.stop()


def ask(server: Server, user: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = server.http.post("/privacy-requests", headers=auth(user["token"]), json=body)
    assert r.status_code == 202, r.text
    return wait_completed(server, user, r.json()["id"])


def listed(server: Server, viewer: dict[str, Any], **params: str) -> list[str]:
    r = server.http.get("/profiles", headers=auth(viewer["token"]), params=params)
    assert r.status_code == 200, r.text
    return [card["handle"] for card in r.json()["profiles"]]


def accounts(server: Server, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli_main(["accounts", *args, "--db", server.db,
                     "--data-key-file", server.db.replace(".db", ".key")])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_restriction_and_objection_requests_and_lifting_them(server: Server) -> None:
    viewer = server.create(username="viewer_one", interests=["chess"])
    user = server.create(username="restricts", discoverable=True, interests=["chess"])
    assert listed(server, viewer) == ["restricts"]
    done = ask(server, user, type="restriction")
    assert done["status"] == "completed" and done["purpose"] is None
    me = server.http.get(f"/profiles/{user['id']}", headers=auth(user["token"])).json()
    assert me["restricted"] is True
    assert listed(server, viewer) == []
    # someone else's profile and an unknown one answer alike
    for path in (f"/profiles/{user['id']}/restriction", "/profiles/nobody/restriction"):
        assert_error(server.http.delete(path, headers=auth(viewer["token"])), 404, "not_found")
    r = server.http.delete(f"/profiles/{user['id']}/restriction", headers=auth(user["token"]))
    assert r.status_code == 204
    assert_error(server.http.delete(f"/profiles/{user['id']}/restriction",
                                    headers=auth(user["token"])), 404, "not_found")
    assert listed(server, viewer) == ["restricts"]
    # objection: a purpose is required, and only an objection has one
    for body in ({"type": "objection"}, {"type": "objection", "purpose": "ads"},
                 {"type": "objection", "purpose": 1}, {"type": "access", "purpose": "chat_history"}):
        assert_error(server.http.post("/privacy-requests", headers=auth(user["token"]), json=body),
                     422, "invalid", "purpose")
    done = ask(server, user, type="objection", purpose="matching_by_interests")
    assert (done["status"], done["purpose"]) == ("completed", "matching_by_interests")
    assert listed(server, viewer, interest="chess") == []
    me = server.http.get(f"/profiles/{user['id']}", headers=auth(user["token"])).json()
    assert me["objections"] == ["matching_by_interests"]
    requests = server.http.get("/privacy-requests", headers=auth(user["token"])).json()
    assert [(x["type"], x["status"], x["purpose"]) for x in requests["requests"]] == [
        ("restriction", "completed", None), ("objection", "completed", "matching_by_interests")]
    assert all(x["due_at"] and x["on_hold"] is False for x in requests["requests"])
    path = f"/profiles/{user['id']}/objections/matching_by_interests"
    assert server.http.delete(path, headers=auth(user["token"])).status_code == 204
    assert_error(server.http.delete(path, headers=auth(user["token"])), 404, "not_found")
    assert listed(server, viewer, interest="chess") == ["restricts"]


def test_correction_request_carries_fields_validated_like_patch(
    server: Server, clock: Clock
) -> None:
    user = server.create(username="corrects", password=PASSWORD, bio="old bio")
    h = auth(user["token"])
    for fields, field in (({"bio": "b" * 501}, "bio"), ({"nope": 1}, "nope"),
                          ({"password": "x" * 10}, "password"),
                          ({"links": "https://a.example"}, "links"),
                          ({"links": ["ftp://a.example"]}, "links"),
                          ({"location": "x" * 101}, "location")):
        assert_error(server.http.post("/privacy-requests", headers=h,
                                      json={"type": "correction", "fields": fields}),
                     422, "invalid", field)
    for body in ({"type": "correction", "fields": {}}, {"type": "correction", "fields": [1]},
                 {"type": "deletion", "fields": {"bio": "x"}}):
        assert_error(server.http.post("/privacy-requests", headers=h, json=body),
                     422, "invalid", "fields")
    done = ask(server, user, type="correction",
               fields={"bio": "new bio", "location": "Lisbon", "links": ["https://a.example"]})
    assert done["status"] == "completed"
    me = server.http.get(f"/profiles/{user['id']}", headers=h).json()
    assert (me["bio"], me["location"], me["links"]) == ("new bio", "Lisbon",
                                                          ["https://a.example"])
    # the username, as with PATCH, needs the password once the session is not fresh
    clock.advance(3600)
    body = {"type": "correction", "fields": {"username": "corrected_name"}}
    assert_error(server.http.post("/privacy-requests", headers=h, json=body),
                 422, "invalid", "current_password")
    assert ask(server, user, **body, current_password=PASSWORD)["status"] == "completed"
    assert server.http.get(f"/profiles/{user['id']}", headers=h).json()["username"] == (
        "corrected_name")


def test_legal_hold_from_the_cli_holds_rest_deletions_until_released(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    user = server.create(username="held_user", bio="held-bio-text")
    h = auth(user["token"])
    assert accounts(server, capsys, "hold", "nobody", "--reason", "x")[0] == 1
    code, out = accounts(server, capsys, "hold", user["id"], "--reason", "case 2026-17")
    assert code == 0 and json.loads(out) == {"held": True, "user_id": user["id"]}
    r = server.http.delete(f"/profiles/{user['id']}", headers=h)
    assert r.status_code == 202
    request_path = r.headers["location"]
    assert request_path.startswith(API + "/privacy-requests/")
    request_id = request_path.rsplit("/", 1)[1]
    r = server.http.post("/privacy-requests", headers=h, json={"type": "deletion"})
    assert r.status_code == 202
    server.store.process_pending()
    for rid in (request_id, r.json()["id"]):
        req = server.http.get(f"/privacy-requests/{rid}", headers=h).json()
        assert (req["status"], req["on_hold"]) == ("verified", True)
    assert server.http.get(f"/profiles/{user['id']}", headers=h).json()["bio"] == "held-bio-text"
    code, out = accounts(server, capsys, "unhold", user["id"])
    assert code == 0 and json.loads(out)["deletions_completed"] == 2
    assert_error(server.http.get(f"/profiles/{user['id']}", headers=h), 401, "unauthorized")
    assert accounts(server, capsys, "unhold", user["id"])[0] == 1
    events = [(e["event"], e["detail"]) for e in server.store.audit_log()
              if e["event"].startswith("legal_hold")]
    assert events == [
        ("legal_hold_placed", {"by": "operator", "user_id": user["id"],
                               "reason": "case 2026-17"}),
        ("legal_hold_released", {"by": "operator", "user_id": user["id"],
                                 "deletions_waiting": 2}),
    ]


def test_guardian_report_without_an_account(
    tmp_path: Path, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    server = Server(tmp_path, clock, api={"rates": {"guardian_report": Rate(5, 3600.0)}})
    try:
        minor = server.create(username="seems_young")
        body = {"handle": "seems_young", "contact_email": "guardian@example.org",
                "details": "guardian-details-text"}
        answers = []
        for handle in ("seems_young", "no_such_handle"):
            r = server.http.post("/reports/underage", json={**body, "handle": handle})
            answers.append((r.status_code, r.json(), sorted(r.headers.keys())))
        assert answers[0] == answers[1] and answers[0][:2] == (202, {"status": "received"})
        for bad, field in (({**body, "contact_email": "nope"}, "contact_email"),
                           ({**body, "details": ""}, "details"),
                           ({**body, "extra": 1}, "extra")):
            assert_error(server.http.post("/reports/underage", json=bad), 422, "invalid", field)
        # rate-limited per address: the 5 above (422s count too) used it up
        assert_error(server.http.post("/reports/underage", json=body), 429,
                     "too_many_attempts", None)
        # filed just after the answer went out
        deadline = time.monotonic() + 10
        while not server.store.underage_reports():
            assert time.monotonic() < deadline, "the report was never filed"
            time.sleep(0.02)
        server.store.checkpoint()
        data = server.file_bytes()
        assert b"guardian@example.org" not in data and b"guardian-details-text" not in data
        code, out = accounts(server, capsys, "underage-reports")
        assert code == 0
        (report,) = [json.loads(line) for line in out.splitlines()]
        assert (report["source"], report["reported_user_id"], report["contact_email"],
                report["details"]) == ("guardian", minor["id"], "guardian@example.org",
                                       "guardian-details-text")
        assert accounts(server, capsys, "confirm-underage", report["report_id"])[0] == 0
        assert_error(server.http.get(f"/profiles/{minor['id']}", headers=auth(minor["token"])),
                     401, "unauthorized")
    finally:
        server.stop()


def test_links_and_location_on_the_card_only_when_shown(server: Server) -> None:
    viewer = server.create(username="viewer_two")
    user = server.create(username="has_links", discoverable=True,
                         links=["https://example.org/me"], location="Porto, Portugal")
    assert (user["links"], user["location"], user["show_links"], user["show_location"]) == (
        ["https://example.org/me"], "Porto, Portugal", False, False)
    h = auth(user["token"])

    def card() -> dict[str, Any]:
        (only,) = server.http.get("/profiles", headers=auth(viewer["token"])).json()["profiles"]
        return dict(only)

    assert "links" not in card() and "location" not in card()
    for fields, field in (({"links": [f"https://{n}.example" for n in range(6)]}, "links"),
                          ({"links": ["https://a.example/" + "x" * 2048]}, "links"),
                          ({"links": ["javascript:alert(1)"]}, "links"),
                          ({"location": 5}, "location"), ({"show_links": "yes"}, "show_links")):
        assert_error(server.http.patch(f"/profiles/{user['id']}", headers=h, json=fields),
                     422, "invalid", field)
    r = server.http.patch(f"/profiles/{user['id']}", headers=h,
                          json={"show_links": True, "show_location": True})
    assert r.status_code == 200, r.text
    assert (card()["links"], card()["location"]) == (["https://example.org/me"],
                                                       "Porto, Portugal")
    server.http.patch(f"/profiles/{user['id']}", headers=h, json={"show_location": False})
    assert "location" not in card()
    export = ask(server, user, type="access")["export"]["profile"]
    assert (export["links"], export["location"]) == (["https://example.org/me"],
                                                     "Porto, Portugal")


def test_an_opt_out_is_reversible_and_sec_gpc_opts_out_again(server: Server) -> None:
    user = server.create(username="optsback")
    other = server.create(username="someone2")
    path = f"/profiles/{user['id']}/opt-out"
    # nothing to undo yet; someone else's profile answers alike
    assert_error(server.http.delete(path, headers=auth(user["token"])), 404, "not_found")
    assert ask(server, user, type="opt_out")["status"] == "completed"
    me = server.http.get(f"/profiles/{user['id']}", headers=auth(user["token"])).json()
    assert me["opted_out"] is True
    assert_error(server.http.delete(path, headers=auth(other["token"])), 404, "not_found")
    assert server.http.delete(path, headers=auth(user["token"])).status_code == 204
    me = server.http.get(f"/profiles/{user['id']}", headers=auth(user["token"])).json()
    assert me["opted_out"] is False
    # the browser's standing signal wins again on its next request
    headers = {**auth(user["token"]), "Sec-GPC": "1"}
    server.http.get(f"/profiles/{user['id']}", headers=headers)
    me = server.http.get(f"/profiles/{user['id']}", headers=auth(user["token"])).json()
    assert me["opted_out"] is True
