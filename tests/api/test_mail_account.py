"""Name and e-mail, verification, password reset, sessions, notices and policy over
real HTTP (uvicorn on loopback, a real SQLite file), the mail read at a real SMTP
server (aiosmtpd on loopback)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaserver.api import account
from mediaserver.api.limits import UNLIMITED
from mediaserver.mail import MailSender, SmtpTransport
from mediaserver.store.contact import RESET_FAILURES
from tests.api.test_accounts import PASSWORD, Clock, Server
from tests.api.test_api import FUZZ, JSON, _check_fuzz, assert_error
from tests.support.smtp_server import SmtpServer, body_of, smtp_server  # noqa: F401

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class MailServer(Server):
    """The API, and the outbox delivered to the test's SMTP server on demand."""

    def __init__(self, tmp: Path, smtp: SmtpServer, **kw: Any) -> None:
        super().__init__(tmp, Clock(), **kw)
        self.smtp = smtp
        self.sender = MailSender(self.store, SmtpTransport(smtp.url, "noreply@example.org"))

    def deliver(self) -> list[Any]:
        """Send what is queued; every mail received so far."""
        self.sender.deliver_due()
        return self.smtp.messages

    def settle(self) -> None:
        """Wait for the reset requests answered before their work was done."""
        deadline = time.monotonic() + 10
        while account._pending:
            assert time.monotonic() < deadline, "reset requests still pending"
            time.sleep(0.01)

    def code_for(self, address: str) -> str:
        """The code in the latest mail to `address`."""
        self.settle()
        mails = [m for m in self.deliver() if m["To"] == address]
        assert mails, f"no mail to {address}"
        found = re.search(r"code is (\d{6})", body_of(mails[-1]))
        assert found, body_of(mails[-1])
        return found[1]


@pytest.fixture
def srv(tmp_path: Path, smtp_server: SmtpServer) -> Iterator[MailServer]:
    # the per-address limit on mailed codes is lifted: one test address sends them all
    server = MailServer(tmp_path, smtp_server, api={"rates": {"mail_code": UNLIMITED[
        "create_account"]}})
    try:
        yield server
    finally:
        server.stop()


def signed_up(srv: MailServer, email: str, verify: bool = True, **extra: Any) -> dict[str, Any]:
    user = srv.create(email=email, password=PASSWORD, **extra)
    if verify:
        r = srv.http.post(f"/profiles/{user['id']}/email/verify",
                          json={"code": srv.code_for(email)}, headers=srv.auth(user))
        assert r.status_code == 200, r.text
    return user


def test_name_and_email_are_the_owners_sealed_and_unique(srv: MailServer) -> None:
    user = srv.create(name="Zanzibar Quuxley", email="Zanzibar@Example.org")
    assert (user["name"], user["email"], user["email_verified"]) == (
        "Zanzibar Quuxley", "Zanzibar@Example.org", False)
    got = srv.http.get(f"/profiles/{user['id']}", headers=srv.auth(user)).json()
    assert got["name"] == "Zanzibar Quuxley" and got["email"] == "Zanzibar@Example.org"
    # unique whatever the case; the field is named
    r = srv.http.post("/profiles", json={"username": "other1", "date_of_birth": "1990-05-17",
                                         "email": "zanzibar@EXAMPLE.org"})
    assert_error(r, 409, "conflict", "email")
    for bad in ({"email": "not-an-address"}, {"email": "a@b"}, {"name": ""},
                {"name": "x" * 81}, {"email": "a\r\nBcc: x@example.org"}):
        r = srv.http.post("/profiles", json={"username": "other2",
                                             "date_of_birth": "1990-05-17", **bad})
        assert_error(r, 422, "invalid", next(iter(bad)))
    # existing clients: neither is needed
    plain = srv.create()
    assert plain["name"] is None and plain["email"] is None
    srv.store.checkpoint()
    raw = srv.file_bytes()
    for value in (b"Zanzibar", b"Quuxley", b"zanzibar@example.org", b"Example.org"):
        assert value not in raw


def test_the_public_card_shows_neither_name_nor_email(srv: MailServer) -> None:
    shown = srv.create(name="Hidden Name", email="hidden@example.org", discoverable=True,
                       interests=["chess"])
    viewer = srv.create()
    cards = srv.http.get("/profiles", headers=srv.auth(viewer)).json()["profiles"]
    (card,) = [c for c in cards if c["handle"] == shown["username"]]
    assert "Hidden" not in json.dumps(card) and "hidden@" not in json.dumps(card)


def test_the_access_export_holds_name_email_and_notices(srv: MailServer) -> None:
    user = srv.create(name="Export Me", email="export@example.org")
    r = srv.http.post("/privacy-requests", json={"type": "access"}, headers=srv.auth(user))
    assert r.status_code in (201, 202), r.text
    srv.store.process_pending()
    export = srv.http.get(f"/privacy-requests/{r.json()['id']}",
                          headers=srv.auth(user)).json()["export"]
    assert export["contact"]["name"] == "Export Me"
    assert export["contact"]["email"] == "export@example.org"
    kinds = [n["kind"] for n in export["contact"]["notices"]]
    assert kinds[:2] == ["verify_email", "privacy_request_received"]


def test_verification_code_by_mail_limited_tries_and_a_new_address_resets_it(
        srv: MailServer) -> None:
    user = srv.create(email="ver@example.org", password=PASSWORD)
    code = srv.code_for("ver@example.org")
    # the inbox says a code was sent, never the code (the inbox is the token's)
    notices = srv.http.get("/notices", headers=srv.auth(user)).json()["notices"]
    assert notices[0]["kind"] == "verify_email" and code not in json.dumps(notices)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    url = f"/profiles/{user['id']}/email/verify"
    assert_error(srv.http.post(url, json={"code": wrong}, headers=srv.auth(user)),
                 422, "invalid", "code")
    assert srv.http.post(url, json={"code": code}, headers=srv.auth(user)).json() == {
        "email_verified": True}
    assert srv.http.get(f"/profiles/{user['id']}", headers=srv.auth(user)).json()[
        "email_verified"] is True
    # a new address: unverified until its own code; the change needs a fresh sign-in
    srv.clock.advance(600)
    r = srv.http.patch(f"/profiles/{user['id']}", json={"email": "new@example.org"},
                       headers=srv.auth(user))
    assert_error(r, 422, "invalid", "current_password")
    r = srv.http.patch(f"/profiles/{user['id']}",
                       json={"email": "new@example.org", "current_password": PASSWORD},
                       headers=srv.auth(user))
    assert r.status_code == 200 and r.json()["email_verified"] is False
    new_code = srv.code_for("new@example.org")
    # the old, verified address is told
    assert [m["Subject"] for m in srv.smtp.messages if m["To"] == "ver@example.org"][-1] == (
        "Your e-mail address was changed")
    for _ in range(5):  # the tries run out: the right code is void after them
        srv.http.post(url, json={"code": "000000" if new_code != "000000" else "111111"},
                      headers=srv.auth(user))
    assert_error(srv.http.post(url, json={"code": new_code}, headers=srv.auth(user)),
                 422, "invalid", "code")
    # a new code, asked for, works (and the mail says so, the inbox does not hold it)
    resend = f"/profiles/{user['id']}/email/code"
    assert srv.http.post(resend, headers=srv.auth(user)).status_code == 202
    fresh = srv.code_for("new@example.org")
    assert srv.http.post(url, json={"code": fresh}, headers=srv.auth(user)).status_code == 200
    assert_error(srv.http.post(resend, headers=srv.auth(user)), 409, "conflict")
    # and an expired one does not work either
    srv.http.patch(f"/profiles/{user['id']}",
                   json={"email": "third@example.org", "current_password": PASSWORD},
                   headers=srv.auth(user))
    third = srv.code_for("third@example.org")
    srv.clock.advance(86400 + 1)
    assert_error(srv.http.post(url, json={"code": third}, headers=srv.auth(user)),
                 422, "invalid", "code")


def test_another_profiles_verify_is_answered_like_a_missing_one(srv: MailServer) -> None:
    a, b = srv.create(email="a@example.org"), srv.create()
    theirs = srv.http.post(f"/profiles/{a['id']}/email/verify", json={"code": "123456"},
                           headers=srv.auth(b))
    missing = srv.http.post("/profiles/nope/email/verify", json={"code": "123456"},
                            headers=srv.auth(b))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()


def test_password_reset_by_mailed_code_without_enumeration(srv: MailServer) -> None:
    user = signed_up(srv, "reset@example.org")
    unverified = signed_up(srv, "unverified@example.org", verify=False)
    before = len(srv.deliver())
    answers = [srv.http.post("/password-resets", json={"email": e})
               for e in ("nobody@example.org", "unverified@example.org", "RESET@example.org")]
    assert {(r.status_code, r.content) for r in answers} == {(202, b"")}
    srv.settle()
    mails = srv.deliver()[before:]
    assert [m["To"] for m in mails] == ["reset@example.org"]  # only the verified address
    code = srv.code_for("reset@example.org")
    new = "a brand new passphrase"
    # an unknown address and a wrong code get the same answer
    r1 = srv.http.post("/password-resets/confirm", json={
        "email": "nobody@example.org", "code": code, "password": new})
    r2 = srv.http.post("/password-resets/confirm", json={
        "email": "reset@example.org", "code": f"{(int(code) + 1) % 10**6:06d}",
        "password": new})
    assert_error(r1, 422, "invalid", "code")
    assert r1.json() == r2.json()
    r = srv.http.post("/password-resets/confirm", json={
        "email": "reset@example.org", "code": code, "password": new})
    assert r.status_code == 204, r.text
    # every session ended; the new password works, the old does not
    assert srv.http.get(f"/profiles/{user['id']}", headers=srv.auth(user)).status_code == 401
    assert srv.sign_in(user["username"], PASSWORD).status_code == 401
    signed = srv.sign_in(user["username"], new)
    assert signed.status_code == 201
    inbox = srv.http.get("/notices", headers={
        "Authorization": f"Bearer {signed.json()['token']}"}).json()["notices"]
    assert "password_changed" in [n["kind"] for n in inbox]
    # the code is used up
    r = srv.http.post("/password-resets/confirm", json={
        "email": "reset@example.org", "code": code, "password": "yet another one"})
    assert_error(r, 422, "invalid", "code")
    assert unverified  # never mailed a reset code
    # wrong codes are counted per address, known or not: then 429 for both alike
    signed_up(srv, "locked@example.org")
    for address in ("locked@example.org", "ghost@example.org"):
        for _ in range(RESET_FAILURES):
            assert_error(srv.http.post("/password-resets/confirm", json={
                "email": address, "code": "000000", "password": new}), 422, "invalid", "code")
        r = srv.http.post("/password-resets/confirm", json={
            "email": address.upper(), "code": "000000", "password": new})
        assert_error(r, 429, "too_many_attempts")
        assert int(r.headers["Retry-After"]) > 0


def test_sessions_list_and_revoke(srv: MailServer) -> None:
    user = signed_up(srv, "sess@example.org")
    srv.clock.advance(120)
    signed = srv.http.post("/sessions", json={"username": user["username"],
                                              "password": PASSWORD},
                           headers={"User-Agent": FIREFOX})
    assert signed.status_code == 201
    second = {"Authorization": f"Bearer {signed.json()['token']}"}
    listing = srv.http.get(f"/profiles/{user['id']}/sessions", headers=second).json()
    sessions = listing["sessions"]
    assert len(sessions) == 2
    mine = [s for s in sessions if s["current"]]
    assert len(mine) == 1 and mine[0]["device"] == "Firefox on Linux"
    assert mine[0]["last_seen_at"] is not None
    for s in sessions:  # ids, never token hashes or tokens
        assert s["id"] not in (user["token"], signed.json()["token"])
        assert set(s) == {"id", "device", "created_at", "last_seen_at", "expires_at",
                          "current"}
    assert signed.json()["token"][:8] not in json.dumps(listing)
    # the new sign-in is in the inbox and mailed (no address in it)
    inbox = srv.http.get("/notices", headers=second).json()["notices"]
    assert inbox[0]["kind"] == "new_sign_in" and "Firefox on Linux" in inbox[0]["body"]
    assert any(m["Subject"] == "New sign-in" for m in srv.deliver())
    # another account's session id is answered like an unknown one
    other = srv.create()
    first_id = next(s["id"] for s in sessions if not s["current"])
    theirs = srv.http.delete(f"/profiles/{other['id']}/sessions/{first_id}",
                             headers=srv.auth(other))
    unknown = srv.http.delete(f"/profiles/{other['id']}/sessions/nope", headers=srv.auth(other))
    assert theirs.status_code == unknown.status_code == 404 and theirs.json() == unknown.json()
    # revoking the first session ends its token
    assert srv.http.delete(f"/profiles/{user['id']}/sessions/{first_id}",
                           headers=second).status_code == 204
    assert srv.http.get(f"/profiles/{user['id']}", headers=srv.auth(user)).status_code == 401
    assert len(srv.http.get(f"/profiles/{user['id']}/sessions",
                            headers=second).json()["sessions"]) == 1


def test_notices_newest_first_paged_and_marked_read(srv: MailServer) -> None:
    user = srv.create()
    for n in range(5):
        srv.store.notify(user["id"], "policy", f"subject {n}", f"body {n}")
        srv.clock.advance(1)
    page = srv.http.get("/notices?limit=2", headers=srv.auth(user)).json()
    assert [n["subject"] for n in page["notices"]] == ["subject 4", "subject 3"]
    page2 = srv.http.get(f"/notices?limit=2&cursor={page['next']}",
                         headers=srv.auth(user)).json()
    assert [n["subject"] for n in page2["notices"]] == ["subject 2", "subject 1"]
    page3 = srv.http.get(f"/notices?limit=2&cursor={page2['next']}",
                         headers=srv.auth(user)).json()
    assert [n["subject"] for n in page3["notices"]] == ["subject 0"] and page3["next"] is None
    first = page["notices"][0]["id"]
    assert srv.http.post(f"/notices/{first}/read", headers=srv.auth(user)).status_code == 204
    again = srv.http.get("/notices?limit=1", headers=srv.auth(user)).json()["notices"][0]
    assert again["read_at"] is not None
    other = srv.create()
    theirs = srv.http.post(f"/notices/{first}/read", headers=srv.auth(other))
    unknown = srv.http.post("/notices/nope/read", headers=srv.auth(other))
    assert theirs.status_code == unknown.status_code == 404 and theirs.json() == unknown.json()
    assert srv.http.get("/notices", headers=srv.auth(other)).json()["notices"] == []
    assert_error(srv.http.get("/notices?limit=0", headers=srv.auth(user)), 422, "invalid",
                 "limit")
    assert srv.http.get("/notices").status_code == 401


def test_privacy_requests_are_noticed_when_received_and_completed(srv: MailServer) -> None:
    user = signed_up(srv, "priv@example.org")
    r = srv.http.post("/privacy-requests", json={"type": "opt_out"}, headers=srv.auth(user))
    assert r.status_code in (201, 202)
    srv.store.process_pending()
    kinds = [n["kind"] for n in srv.http.get("/notices", headers=srv.auth(user)).json()[
        "notices"]]
    assert kinds[:2] == ["privacy_request_completed", "privacy_request_received"]
    subjects = [m["Subject"] for m in srv.deliver()]
    assert "Privacy request received" in subjects and "Privacy request completed" in subjects


def test_policy_versions_sign_up_records_acceptance(srv: MailServer) -> None:
    assert srv.http.get("/policy").json() == {"version": None, "effective_date": None,
                                              "url": None}
    early = srv.create()
    assert early["policy_accepted"] is None
    srv.store.publish_policy("1", "2026-01-01", "https://example.org/policy/1")
    assert srv.http.get("/policy").json() == {
        "version": "1", "effective_date": "2026-01-01", "url": "https://example.org/policy/1"}
    user = srv.create()
    assert (user["policy_accepted"], user["policy_current"]) == ("1", "1")
    r = srv.http.post("/profiles", json={"username": "badpol", "date_of_birth": "1990-05-17",
                                         "policy_version": "9"})
    assert_error(r, 422, "invalid", "policy_version")
    srv.store.publish_policy("2", "2026-09-01", "")
    got = srv.http.get(f"/profiles/{user['id']}", headers=srv.auth(user)).json()
    assert (got["policy_accepted"], got["policy_current"]) == ("1", "2")
    inbox = srv.http.get("/notices", headers=srv.auth(user)).json()["notices"]
    assert inbox[0]["kind"] == "policy" and "2026-09-01" in inbox[0]["body"]
    assert_error(srv.http.post(f"/profiles/{user['id']}/policy", json={"version": "1"},
                               headers=srv.auth(user)), 422, "invalid", "version")
    r = srv.http.post(f"/profiles/{user['id']}/policy", json={"version": "2"},
                      headers=srv.auth(user))
    assert r.status_code == 200 and r.json()["version"] == "2"
    got = srv.http.get(f"/profiles/{user['id']}", headers=srv.auth(user)).json()
    assert got["policy_accepted"] == got["policy_current"] == "2"


def test_every_new_endpoint_is_documented(srv: MailServer) -> None:
    paths = srv.http.get("/openapi.json").json()["paths"]
    for method, path in [
        ("post", "/profiles/{id}/email/verify"), ("post", "/profiles/{id}/email/code"),
        ("post", "/password-resets"),
        ("post", "/password-resets/confirm"), ("get", "/profiles/{id}/sessions"),
        ("delete", "/profiles/{id}/sessions/{session_id}"), ("get", "/policy"),
        ("post", "/profiles/{id}/policy"), ("get", "/notices"),
        ("post", "/notices/{notice_id}/read"),
    ]:
        assert method in paths[f"/api/v1{path}"], path


MAIL_FIELDS = ["name", "email", "code", "password", "version", "policy_version",
               "username", "date_of_birth", "current_password"]
MAIL_BODIES = st.one_of(JSON, st.dictionaries(st.sampled_from(MAIL_FIELDS), JSON, max_size=5))
ROUTES = ["/profiles", "/profiles/{id}/email/verify", "/password-resets",
          "/password-resets/confirm", "/profiles/{id}/policy"]


@pytest.fixture(scope="module")
def fuzz_srv(tmp_path_factory: Any) -> Iterator[tuple[MailServer, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("mailfuzz")
    smtp = SmtpServer()
    smtp.start()
    server = MailServer(tmp, smtp, api={"rates": UNLIMITED})
    try:
        yield server, server.create(email="fuzz@example.org")
    finally:
        server.stop()
        smtp.stop()


@FUZZ
@given(body=MAIL_BODIES, route=st.sampled_from(ROUTES))
def test_fuzz_mail_bodies_never_500(fuzz_srv: tuple[MailServer, dict[str, Any]],
                                    body: Any, route: str) -> None:
    srv, user = fuzz_srv
    r = srv.http.post(route.replace("{id}", user["id"]), content=json.dumps(body).encode(),
                      headers={"Content-Type": "application/json", **srv.auth(user)})
    _check_fuzz(r)
    r = srv.http.patch(f"/profiles/{user['id']}", content=json.dumps(body).encode(),
                       headers={"Content-Type": "application/json", **srv.auth(user)})
    _check_fuzz(r)
