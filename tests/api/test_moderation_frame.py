"""The still frame's REST side over real HTTP (a real SQLite file): a report filed
with a JPEG (as the hub files it) shows the still in its evidence, GET .../frame
returns it (audited, sealed at rest, 404 for anyone but a moderator); a report
without one says why; a bad still is refused at filing. The owner's profile tells
the page whether it is a moderator."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from mediaserver.store import Invalid
from tests.api.test_accounts import auth
from tests.api.test_api import assert_error
from tests.api.test_moderation_api import ADDR_A, ADDR_B, Server, clock, make_moderator, server

FIXTURES = (clock, server)  # imported pytest fixtures, used by name


def jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "JPEG")
    return out.getvalue()


def file_report(server: Server, **evidence: object) -> str:
    return str(
        server.store.file_chat_report(
            "nudity", reported_address=ADDR_B, reported_user_id=None,
            reporter_address=ADDR_A, reporter_user_id=None, **evidence,
        )
    )  # fmt: skip


def test_the_still_is_served_to_moderators_audited_and_sealed(
    server: Server,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    mod = make_moderator(server, capsys)
    normal = server.create(username="normal_one")
    still = jpeg((200, 30, 40))
    report_id = file_report(server, frame=still)
    server.store.checkpoint()
    assert still not in server.file_bytes()  # sealed at rest
    r = server.http.get(f"/moderation/reports/{report_id}", headers=auth(mod["token"]))
    assert r.json()["evidence"] == {
        "frame": {
            "type": "image/jpeg",
            "bytes": len(still),
            "url": f"/api/v1/moderation/reports/{report_id}/frame",
        }
    }
    assert r.json()["has_evidence"] is True
    path = f"/moderation/reports/{report_id}/frame"
    r = server.http.get(path, headers=auth(mod["token"]))
    assert r.status_code == 200 and r.content == still
    assert r.headers["content-type"] == "image/jpeg" and r.headers["cache-control"] == "no-store"
    reads = [e for e in server.store.audit_log() if e["event"] == "moderation_frame_read"]
    assert [e["detail"] for e in reads] == [{"moderator_id": mod["id"], "report_id": report_id}]
    for headers in ({}, auth(normal["token"])):
        assert_error(server.http.get(path, headers=headers), 404, "not_found")
    # a report without a still: 404 for the frame, and the evidence says why
    other = file_report(server, frame_missing="no keyframe within 3 s")
    assert_error(
        server.http.get(f"/moderation/reports/{other}/frame", headers=auth(mod["token"])),
        404,
        "not_found",
    )
    r = server.http.get(f"/moderation/reports/{other}", headers=auth(mod["token"]))
    assert r.json()["evidence"] == {"frame_missing": "no keyframe within 3 s"}


def test_a_still_that_is_not_a_jpeg_is_refused(server: Server) -> None:
    for bad in (b"GIF89a....", b"\xff\xd8\xff" + b"x" * (2 * 1024 * 1024)):
        with pytest.raises(Invalid):
            file_report(server, frame=bad)


def test_the_owner_profile_says_whether_it_is_a_moderator(
    server: Server,
    capsys: pytest.CaptureFixture[str],
) -> None:
    normal = server.create(username="normal_one")
    mod = make_moderator(server, capsys)
    for account, expected in ((normal, False), (mod, True)):
        r = server.http.get(f"/profiles/{account['id']}", headers=auth(account["token"]))
        assert r.status_code == 200 and r.json()["moderator"] is expected


def test_a_ban_tells_the_account_its_end_and_the_decision_to_appeal(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = make_moderator(server, capsys)
    banned = server.create(username="banned_one")
    report_id = str(
        server.store.file_chat_report(
            "harassment", reported_address=ADDR_B, reported_user_id=banned["id"],
            reporter_address=ADDR_A, reporter_user_id=None,
        )
    )  # fmt: skip
    r = server.http.post(
        f"/moderation/reports/{report_id}/decision",
        headers=auth(mod["token"]),
        json={"action": "ban", "duration_s": 86400, "note": "slurs"},
    )
    assert r.status_code == 201, r.text
    decision = r.json()
    (notice,) = server.http.get("/notices", headers=auth(banned["token"])).json()["notices"]
    assert notice["kind"] == "moderation" and notice["subject"] == "Your account is banned"
    assert f"banned until {decision['until'][:10]} {decision['until'][11:16]} UTC" in notice["body"]
    assert "slurs" in notice["body"] and decision["id"] in notice["body"]
    # the appeal the notice describes works
    r = server.http.post(
        "/appeals",
        headers=auth(banned["token"]),
        json={"decision_id": decision["id"], "text": "it was a misunderstanding"},
    )
    assert r.status_code == 201, r.text
