"""The moderation desk over real HTTP (uvicorn on loopback, a real SQLite file) and
the operator CLI (`mediaserver moderation grant|revoke`): the queue, one report with
its evidence (audited), decisions, and 404 for everyone but a moderator."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediaserver.api.limits import Rate
from mediaserver.cli import main as cli_main
from mediaserver.store.limits import DAY
from tests.api.test_accounts import Clock, Server, auth
from tests.api.test_api import assert_error

ADDR_B = "b" * 64  # keyed address hashes, as the hub makes them (HMAC-SHA256 hex)
ADDR_A = "a" * 64


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> Iterator[Server]:
    srv = Server(
        tmp_path,
        clock,
        api={"rates": {"report": Rate(1000, 3600.0), "guardian_report": Rate(1000, 3600.0)}},
    )
    try:
        yield srv
    finally:
        srv.stop()


def moderation(server: Server, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli_main(
        [
            "moderation",
            *args,
            "--db",
            server.db,
            "--data-key-file",
            server.db.replace(".db", ".key"),
        ]
    )
    out = capsys.readouterr()
    return code, out.out + out.err


def make_moderator(server: Server, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    mod = server.create(username="the_moderator")
    code, out = moderation(server, capsys, "grant", "the_moderator")
    assert code == 0, out
    assert json.loads(out) == {"moderator": True, "user_id": mod["id"]}
    return mod


def chat_report(
    server: Server,
    reason: str,
    reported: dict[str, Any] | None = None,
    reporter_address: str = ADDR_A,
    chat: Any = None,
) -> str:
    return str(
        server.store.file_chat_report(
            reason,
            reported_address=ADDR_B,
            reported_user_id=None if reported is None else reported["id"],
            reporter_address=reporter_address,
            reporter_user_id=None,
            chat=chat,
        )
    )


def test_grant_revoke_and_404_for_everyone_else(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    normal = server.create(username="normal_one")
    mod = make_moderator(server, capsys)
    report_id = chat_report(server, "spam")
    paths = ("/moderation/reports", f"/moderation/reports/{report_id}")
    for headers in ({}, auth("not-a-token"), auth(normal["token"])):
        for path in paths:
            assert_error(server.http.get(path, headers=headers), 404, "not_found")
        assert_error(
            server.http.post(
                f"/moderation/reports/{report_id}/decision",
                headers=headers,
                json={"action": "dismiss"},
            ),
            404,
            "not_found",
        )
    assert server.http.get(paths[0], headers=auth(mod["token"])).status_code == 200
    code, out = moderation(server, capsys, "revoke", "THE_MODERATOR")  # any case
    assert code == 0 and json.loads(out)["moderator"] is False
    assert_error(server.http.get(paths[0], headers=auth(mod["token"])), 404, "not_found")
    code, out = moderation(server, capsys, "grant", "nobody_here")
    assert code == 1 and "no account 'nobody_here'" in out
    events = [e["event"] for e in server.store.audit_log()]
    assert events.count("moderator_granted") == 1 and events.count("moderator_revoked") == 1


def test_queue_puts_underage_first_then_oldest_and_filters(
    server: Server, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = make_moderator(server, capsys)
    reporter = server.create(username="reporter_one")
    reported = server.create(username="reported_one")
    first = chat_report(server, "harassment")
    clock.advance(0.01)
    r = server.http.post(
        "/reports",
        headers=auth(reporter["token"]),
        json={"handle": "reported_one", "reason": "spam"},
    )
    assert r.status_code == 201, r.text
    rest_id = r.json()["id"]
    clock.advance(0.01)
    r = server.http.post(
        "/reports/underage",
        json={
            "handle": "reported_one",
            "contact_email": "parent@example.org",
            "details": "my child, 12",
        },
    )
    assert r.status_code == 202
    # filed after the answer (api/controls.py): wait for it before the clock moves
    deadline = time.monotonic() + 10
    while len(server.store.moderation_queue()) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    clock.advance(0.01)
    late_underage = chat_report(server, "underage", reported)
    queue = server.http.get("/moderation/reports", headers=auth(mod["token"])).json()["reports"]
    ids = [q["id"] for q in queue]
    assert len(ids) == 4
    # underage first (the guardian's, older, then the chat's), then oldest first
    assert ids[1] == late_underage and ids[2:] == [first, rest_id]
    guardian = queue[0]
    assert guardian["source"] == "guardian" and guardian["reason"] == "underage"
    assert guardian["reported_handle"] == "reported_one"
    assert "evidence" not in guardian and "contact_email" not in json.dumps(queue)
    rest = queue[3]
    assert (rest["source"], rest["reported_user_id"], rest["reporter_user_id"]) == (
        "account",
        reported["id"],
        reporter["id"],
    )
    assert queue[2]["reported_address"] == ADDR_B
    only = server.http.get(
        "/moderation/reports", params={"reason": "spam"}, headers=auth(mod["token"])
    ).json()["reports"]
    assert [q["id"] for q in only] == [rest_id]
    for params, field in (({"status": "closed"}, "status"), ({"reason": "rude"}, "reason")):
        assert_error(
            server.http.get("/moderation/reports", params=params, headers=auth(mod["token"])),
            422,
            "invalid",
            field,
        )
    # the guardian's evidence: sealed where it was, shown to the moderator
    detail = server.http.get(
        f"/moderation/reports/{guardian['id']}", headers=auth(mod["token"])
    ).json()
    assert detail["evidence"] == {"contact_email": "parent@example.org", "details": "my child, 12"}


def test_read_is_audited_and_evidence_sealed(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = make_moderator(server, capsys)
    lines = [
        {"from": "reported", "text": "a very rude line 7f3e"},
        {"from": "reporter", "text": "please stop"},
    ]
    report_id = chat_report(server, "harassment", chat=lines)
    server.store.checkpoint()
    assert b"a very rude line 7f3e" not in server.file_bytes()
    r = server.http.get(f"/moderation/reports/{report_id}", headers=auth(mod["token"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["evidence"] == {"chat": lines} and body["decisions"] == []
    assert body["has_evidence"] is True and body["status"] == "open"
    reads = [e for e in server.store.audit_log() if e["event"] == "moderation_report_read"]
    assert len(reads) == 1
    assert reads[0]["detail"] == {"moderator_id": mod["id"], "report_id": report_id}
    assert_error(
        server.http.get("/moderation/reports/nope", headers=auth(mod["token"])), 404, "not_found"
    )


def test_decisions_dismiss_warn_ban(
    server: Server, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = make_moderator(server, capsys)
    reported = server.create(username="rude_one")
    dismissed, warned, banned = (chat_report(server, "spam", reported) for _ in range(3))

    def decide(report_id: str, **body: Any) -> Any:
        return server.http.post(
            f"/moderation/reports/{report_id}/decision", headers=auth(mod["token"]), json=body
        )

    for body, field in (
        ({"action": "mute"}, "action"),
        ({}, "action"),
        ({"action": "ban", "duration_s": 0}, "duration_s"),
        ({"action": "ban", "duration_s": "1d"}, "duration_s"),
        ({"action": "warn", "duration_s": 60}, "duration_s"),
        ({"action": "warn", "note": 5}, "note"),
        ({"action": "warn", "extra": 1}, "extra"),
    ):
        assert_error(decide(warned, **body), 422, "invalid", field)
    r = decide(dismissed, action="dismiss", note="not spam")
    assert r.status_code == 201, r.text
    assert r.json()["action"] == "dismiss" and r.json()["until"] is None
    assert_error(decide(dismissed, action="warn"), 409, "conflict")
    # the reporter's dismissed reports are counted (report abuse weighs them)
    assert server.store.reporter_dismissals(ADDR_A) == 1
    assert server.store.reporter_dismissals(ADDR_B) == 0
    assert decide(warned, action="warn", note="keep it civil").status_code == 201
    notices = server.http.get("/notices", headers=auth(reported["token"])).json()["notices"]
    assert [n["kind"] for n in notices] == ["moderation"]
    assert "keep it civil" in notices[0]["body"]
    r = decide(banned, action="ban", duration_s=DAY)
    assert r.status_code == 201
    assert r.json()["until"] is not None
    bans = server.store._conn.execute(
        "SELECT kind, subject, until - at FROM bans ORDER BY kind"
    ).fetchall()
    assert bans == [("account", reported["id"], DAY), ("address", ADDR_B, DAY)]
    detail = server.http.get(f"/moderation/reports/{banned}", headers=auth(mod["token"])).json()
    assert detail["status"] == "decided"
    assert [d["action"] for d in detail["decisions"]] == ["ban"]
    assert detail["decisions"][0]["moderator_id"] == mod["id"]
    queue = server.http.get("/moderation/reports", headers=auth(mod["token"])).json()
    assert queue["reports"] == []
    decided = server.http.get(
        "/moderation/reports", params={"status": "decided"}, headers=auth(mod["token"])
    ).json()["reports"]
    assert sorted(q["id"] for q in decided) == sorted([dismissed, warned, banned])
    actions = [
        e["detail"]["action"]
        for e in server.store.audit_log()
        if e["event"] == "moderation_decision"
    ]
    assert actions == ["dismiss", "warn", "ban"]


def test_every_moderation_route_is_in_the_openapi_document(server: Server) -> None:
    doc = server.http.get("/openapi.json").json()
    assert set(doc["paths"]["/api/v1/moderation/reports"]) == {"get"}
    assert set(doc["paths"]["/api/v1/moderation/reports/{id}"]) == {"get", "parameters"}
    decision = doc["paths"]["/api/v1/moderation/reports/{id}/decision"]["post"]
    assert decision["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ModerationDecisionCreate"
    }
    assert "404" in decision["responses"]


def test_appeal_once_per_decision_back_into_the_queue(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = make_moderator(server, capsys)
    banned = server.create(username="banned_one")
    other = server.create(username="other_one")
    report_id = chat_report(server, "harassment", banned)
    r = server.http.post(
        f"/moderation/reports/{report_id}/decision",
        headers=auth(mod["token"]),
        json={"action": "ban", "duration_s": None, "note": "slurs"},
    )
    assert r.status_code == 201 and r.json()["until"] is None  # for good
    decision_id = r.json()["id"]
    assert server.store.ban_until(banned["id"], "c" * 64) == float("inf")
    for body, field in (
        ({"text": "x"}, "decision_id"),
        ({"decision_id": decision_id, "report_id": report_id, "text": "x"}, "decision_id"),
        ({"decision_id": decision_id}, "text"),
        ({"decision_id": decision_id, "text": " "}, "text"),
        ({"decision_id": decision_id, "text": "x", "more": 1}, "more"),
    ):
        assert_error(
            server.http.post("/appeals", headers=auth(banned["token"]), json=body),
            422,
            "invalid",
            field,
        )
    assert_error(
        server.http.post("/appeals", json={"decision_id": decision_id, "text": "x"}),
        401,
        "unauthorized",
    )
    # only the banned account may appeal its ban
    assert_error(
        server.http.post(
            "/appeals", headers=auth(other["token"]), json={"decision_id": decision_id, "text": "x"}
        ),
        404,
        "not_found",
    )
    r = server.http.post(
        "/appeals",
        headers=auth(banned["token"]),
        json={"report_id": report_id, "text": "it was my brother"},
    )
    assert r.status_code == 201, r.text
    appeal = r.json()
    assert appeal["decision_id"] == decision_id
    assert_error(
        server.http.post(
            "/appeals",
            headers=auth(banned["token"]),
            json={"decision_id": decision_id, "text": "again"},
        ),
        409,
        "conflict",
    )
    queue = server.http.get("/moderation/reports", headers=auth(mod["token"])).json()["reports"]
    assert [(q["id"], q["source"], q["appeal_of"]) for q in queue] == [
        (appeal["report_id"], "appeal", decision_id)
    ]
    detail = server.http.get(
        f"/moderation/reports/{appeal['report_id']}", headers=auth(mod["token"])
    ).json()
    assert detail["evidence"] == {"appeal": "it was my brother"}
    # dismissing the appeal keeps the ban
    r = server.http.post(
        f"/moderation/reports/{appeal['report_id']}/decision",
        headers=auth(mod["token"]),
        json={"action": "dismiss"},
    )
    assert r.status_code == 201
    assert server.store.ban_until(banned["id"], "c" * 64) == float("inf")
    # the account deleted: its ban goes with it, the address's stays
    with server.store._tx() as conn:
        server.store._delete_user(conn, banned["id"], reason="test", request_id=None)
    assert server.store.ban_until(banned["id"], "c" * 64) is None
    assert server.store.ban_until(None, ADDR_B) == float("inf")


def test_confirming_an_underage_report_deletes_the_account_and_bans_the_address(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = make_moderator(server, capsys)
    child = server.create(username="looks_twelve")
    report_id = chat_report(server, "underage", child)
    r = server.http.post(
        f"/moderation/reports/{report_id}/decision",
        headers=auth(mod["token"]),
        json={"action": "ban"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["account_deleted"] is True
    # the account is gone at once (its token with it); the visit's address is banned
    assert_error(
        server.http.get(f"/profiles/{child['id']}", headers=auth(child["token"])),
        401,
        "unauthorized",
    )
    assert server.store.ban_until(None, ADDR_B) == float("inf")
    assert server.store._conn.execute("SELECT kind FROM bans").fetchall() == [("address",)]
    deleted = [e for e in server.store.audit_log() if e["event"] == "account_deleted"]
    assert deleted[-1]["detail"]["reason"] == "underage_confirmed"


def test_evidence_is_gone_from_the_file_after_thirty_days_of_retention(
    server: Server, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = make_moderator(server, capsys)
    report_id = chat_report(
        server, "harassment", chat=[{"from": "reported", "text": "evidence line 91c2"}]
    )
    (sealed,) = server.store._conn.execute(
        "SELECT evidence_sealed FROM moderation_reports WHERE id = ?", (report_id,)
    ).fetchone()
    server.store.checkpoint()
    assert bytes(sealed) in server.file_bytes()

    def retention(as_of: str) -> dict[str, Any]:
        code = cli_main(
            [
                "retention",
                "--run-once",
                "--as-of",
                as_of,
                "--db",
                server.db,
                "--data-key-file",
                server.db.replace(".db", ".key"),
            ]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        return dict(json.loads(out.splitlines()[-1]))

    def days_on(days: int) -> str:
        return (
            (dt.datetime.fromtimestamp(clock.t, dt.UTC) + dt.timedelta(days=days))
            .date()
            .isoformat()
        )

    # --as-of runs at the end of that day: 29 days on the evidence stays, 31 it goes
    assert retention(days_on(29))["evidence_purged"] == 0
    assert retention(days_on(31))["evidence_purged"] == 1
    server.store.checkpoint()
    assert bytes(sealed) not in server.file_bytes()
    # the report stays for the record, without its evidence
    detail = server.http.get(f"/moderation/reports/{report_id}", headers=auth(mod["token"]))
    assert detail.json()["evidence"] == {} and detail.json()["has_evidence"] is False
