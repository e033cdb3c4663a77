"""Accounts over real HTTP (uvicorn on loopback, a real SQLite file): passwords,
sessions, throttling, TOTP two-factor, photos, browsing, blocks, age, underage reports;
and share_profile over a real WebSocket."""

from __future__ import annotations

import asyncio
import base64
import datetime
import io
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import argon2
import httpx
import pyotp
import pytest
from PIL import Image

from mediaserver.store import Store, load_or_create_data_key
from mediaserver.store import Unauthorized
from mediaserver.store.core import hash_token
from mediaserver.store.schema import MIGRATIONS
from mediaserver.store.throttle import THROTTLE_FREE_ACCOUNT, THROTTLE_FREE_ADDRESS
from mediaserver.store.shares import SHARE_TTL
from tests.support.signalling_client import Client, running_server, start_and_match
from tests.api.test_api import Server as ApiServer
from tests.api.test_api import assert_error

API = "/api/v1"
ADULT = "1990-05-17"
PASSWORD = "correct horse battery staple"


class Clock:
    """The store's clock, moved by the test (TOTP steps, expiry, throttling)."""

    def __init__(self) -> None:
        self.t = float(int(time.time()) // 30 * 30 + 5)  # 5 s into a TOTP step

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Server(ApiServer):
    """The API alone on uvicorn in a thread, its store (on the test's clock) on a
    file in tmp_path."""

    def __init__(self, tmp: Path, clock: Clock, **store_kwargs: Any) -> None:
        self.clock = clock
        super().__init__(str(tmp / "accounts.db"), str(tmp / "accounts.key"), clock,
                         timeout=30, **store_kwargs)

    def sign_in(self, username: str, password: str = PASSWORD, **extra: Any) -> httpx.Response:
        return self.http.post("/sessions", json={"username": username, "password": password,
                                                 **extra})

    def file_bytes(self) -> bytes:
        """The database file and its WAL, as they sit on disk."""
        data = b""
        for suffix in ("", "-wal"):
            if os.path.exists(self.db + suffix):
                data += Path(self.db + suffix).read_bytes()
        return data


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> Iterator[Server]:
    srv = Server(tmp_path, clock)
    try:
        yield srv
    finally:
        srv.stop()


# ---- passwords and sessions ------------------------------------------------------


def test_password_is_kept_only_as_an_argon2id_hash(server: Server) -> None:
    user = server.create(username="hashed_one", password=PASSWORD)
    assert user["has_password"] is True and "password" not in user
    (stored,) = server.store._conn.execute(
        "SELECT password_hash FROM users WHERE id = ?", (user["id"],)).fetchone()
    # argon2-cffi's recommended parameters (RFC 9106 low-memory)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    server.store.checkpoint()
    assert PASSWORD.encode() not in server.file_bytes()
    assert server.sign_in("hashed_one").status_code == 201
    assert server.create()["has_password"] is False


def test_sign_in_session_expires_and_sign_out(server: Server, clock: Clock) -> None:
    user = server.create(username="session_user", password=PASSWORD)
    r = server.sign_in("SESSION_USER")  # usernames are case-insensitive
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"token", "expires_at", "id", "device"} and body["id"] == user["id"]
    expires = date.fromisoformat(body["expires_at"][:10])
    assert (expires - date.fromtimestamp(clock.t)).days in (29, 30, 31)  # default 30 days
    assert r.headers["cache-control"] == "no-store"
    token = body["token"]
    assert server.http.get(f"/profiles/{user['id']}", headers=auth(token)).status_code == 200
    # stored hashed, like the creation token
    rows = {row[0] for row in server.store._conn.execute("SELECT token_hash FROM tokens")}
    assert hash_token(token) in rows and token not in str(rows)
    # the creation token keeps working next to sessions
    assert server.http.get(f"/profiles/{user['id']}",
                           headers=auth(user["token"])).status_code == 200
    # expiry (--session-ttl), for the creation token of an account with a password too
    clock.advance(30 * 86400 + 1)
    for expired in (token, user["token"]):
        assert_error(server.http.get(f"/profiles/{user['id']}", headers=auth(expired)),
                     401, "unauthorized")
    # sign out: that token, and only that one, stops working
    t1 = server.sign_in("session_user").json()["token"]
    t2 = server.sign_in("session_user").json()["token"]
    assert server.http.delete("/sessions/current", headers=auth(t1)).status_code == 204
    assert_error(server.http.get(f"/profiles/{user['id']}", headers=auth(t1)), 401, "unauthorized")
    assert server.http.get(f"/profiles/{user['id']}", headers=auth(t2)).status_code == 200
    assert_error(server.http.delete("/sessions/current", headers=auth(t1)), 401, "unauthorized")
    assert_error(server.http.delete("/sessions/current"), 401, "unauthorized")
    # retention clears expired sessions out of the file
    clock.advance(31 * 86400)
    server.store.run_retention()
    assert server.store._conn.execute(
        "SELECT COUNT(*) FROM tokens WHERE kind = 'session'").fetchone()[0] == 0


def test_session_ttl_setting(tmp_path: Path, clock: Clock) -> None:
    srv = Server(tmp_path, clock, session_ttl=120)
    try:
        user = srv.create(username="short_ttl", password=PASSWORD)
        token = srv.sign_in("short_ttl").json()["token"]
        clock.advance(119)
        assert srv.http.get(f"/profiles/{user['id']}", headers=auth(token)).status_code == 200
        clock.advance(1)
        assert_error(srv.http.get(f"/profiles/{user['id']}", headers=auth(token)),
                     401, "unauthorized")
    finally:
        srv.stop()


def test_creation_token_of_a_passwordless_account_cannot_sign_out(server: Server) -> None:
    user = server.create()
    err = assert_error(server.http.delete("/sessions/current", headers=auth(user["token"])),
                       409, "conflict")
    assert "password" in err["message"]
    assert server.http.get(f"/profiles/{user['id']}",
                           headers=auth(user["token"])).status_code == 200


def test_set_password_later_and_change_it(server: Server) -> None:
    user = server.create(username="later_pw")
    url = f"/profiles/{user['id']}/password"
    assert_error(server.sign_in("later_pw"), 401, "invalid_credentials")
    assert_error(server.http.put(url, headers=auth(user["token"]), json={"password": "short"}),
                 422, "invalid", "password")
    assert_error(server.http.put(url, headers=auth(user["token"]), json={"pw": PASSWORD}),
                 422, "invalid", "pw")
    assert server.http.put(url, headers=auth(user["token"]),
                           json={"password": PASSWORD}).status_code == 204
    session = server.sign_in("later_pw").json()["token"]
    # a change needs the current password
    assert_error(server.http.put(url, headers=auth(user["token"]), json={"password": "n" * 12}),
                 422, "invalid", "current_password")
    assert_error(server.http.put(url, headers=auth(user["token"]),
                                 json={"password": "n" * 12, "current_password": "wrong-one"}),
                 422, "invalid", "current_password")
    keep = server.sign_in("later_pw").json()["token"]
    r = server.http.put(url, headers=auth(keep),
                        json={"password": "n" * 12, "current_password": PASSWORD})
    assert r.status_code == 204
    # other tokens end, the creation token too; the one that made the change stays
    for token in (session, user["token"]):
        assert_error(server.http.get(f"/profiles/{user['id']}", headers=auth(token)),
                     401, "unauthorized")
    assert server.http.get(f"/profiles/{user['id']}", headers=auth(keep)).status_code == 200
    assert_error(server.sign_in("later_pw"), 401, "invalid_credentials")
    assert server.sign_in("later_pw", "n" * 12).status_code == 201
    # someone else's id is a 404
    other = server.create()
    assert_error(server.http.put(url, headers=auth(other["token"]), json={"password": PASSWORD}),
                 404, "not_found")
    # a password is never changed through PATCH
    assert_error(server.http.patch(f"/profiles/{user['id']}", headers=auth(keep),
                                   json={"password": PASSWORD}), 422, "invalid", "password")


def test_sign_in_bad_requests(server: Server) -> None:
    assert_error(server.http.post("/sessions", json={"username": "x"}), 422, "invalid", "password")
    assert_error(server.http.post("/sessions", json={"password": "x"}), 422, "invalid", "username")
    assert_error(server.http.post("/sessions", json={"username": "x", "password": "y", "z": 1}),
                 422, "invalid", "z")
    assert_error(server.http.post("/sessions", json={"username": 1, "password": "y"}),
                 422, "invalid", "username")
    assert_error(server.http.post("/sessions", content=b"{", headers={
        "Content-Type": "application/json"}), 400, "bad_json")
    assert_error(server.http.post("/sessions", content=b"u=x"), 415, "unsupported_media_type")
    assert_error(server.http.post("/sessions", json={"username": "x", "password": "y" * 300}),
                 422, "invalid", "password")
    assert_error(server.http.post("/sessions", json={"username": "x", "password": "y" * 20_000}),
                 413, "too_large")
    assert server.store._conn.execute("SELECT COUNT(*) FROM tokens").fetchone()[0] == 0
    user = server.create()
    assert_error(server.http.put(f"/profiles/{user['id']}/password", json={"password": PASSWORD}),
                 401, "unauthorized")


def test_unknown_user_and_wrong_password_get_the_same_answer(server: Server) -> None:
    server.create(username="known_user", password=PASSWORD)
    server.create(username="no_password")
    answers = []
    for username, password in (("known_user", "wrong password!"), ("nobody_here", PASSWORD),
                               ("no_password", PASSWORD)):
        r = server.sign_in(username, password)
        err = assert_error(r, 401, "invalid_credentials", None)
        answers.append((r.status_code, err["message"], sorted(
            (k, v) for k, v in r.headers.items() if k not in ("date", "content-length"))))
    assert answers[0] == answers[1] == answers[2]


def test_every_failed_sign_in_runs_exactly_one_argon2_verification(tmp_path: Path) -> None:
    """Same work on every path; and the medians of the two answers' times agree."""
    clock = Clock()
    store = Store(str(tmp_path / "t.db"), load_or_create_data_key(str(tmp_path / "t.key")), clock)
    try:
        store.create_profile("timed_user", ADULT, password=PASSWORD)
        def attempt(username: str) -> float:
            clock.advance(86400)  # past the throttle: measure the answer, not the lock
            before = store.password_verifications
            start = time.perf_counter()
            with pytest.raises(Unauthorized) as exc:
                store.sign_in(username, "not the password", address="10.0.0.1")
            elapsed = time.perf_counter() - start
            assert exc.value.code == "invalid_credentials"
            assert store.password_verifications == before + 1
            return elapsed

        attempt("timed_user")
        attempt("nobody_timed")  # warm-up (the dummy hash is made once, lazily)
        known, unknown = [], []
        for _ in range(15):
            known.append(attempt("timed_user"))
            unknown.append(attempt("nobody_timed"))
        ratio = statistics.median(unknown) / statistics.median(known)
        assert 0.5 < ratio < 2.0, (ratio, known, unknown)
    finally:
        store.close()


def test_lockout_per_account_grows_and_answers_429(server: Server, clock: Clock) -> None:
    server.create(username="target_user", password=PASSWORD)
    for _ in range(THROTTLE_FREE_ACCOUNT):
        assert_error(server.sign_in("target_user", "guess-guess"), 401, "invalid_credentials")
    before = server.store.password_verifications
    r = server.sign_in("target_user")  # even the right password waits
    err = assert_error(r, 429, "too_many_attempts", None)
    assert r.headers["retry-after"] == "1" and "1 s" in err["message"]
    assert server.store.password_verifications == before  # no Argon2 work while locked
    # an unknown username locks the same way (no telling which names exist)
    for _ in range(THROTTLE_FREE_ACCOUNT):
        assert_error(server.sign_in("ghost_user", "guess-guess"), 401, "invalid_credentials")
    r2 = server.sign_in("ghost_user", "guess-guess")
    assert_error(r2, 429, "too_many_attempts")
    assert r2.headers["retry-after"] == "1"
    # the delay doubles with each further failure
    clock.advance(1)
    assert_error(server.sign_in("target_user", "guess-guess"), 401, "invalid_credentials")
    assert server.sign_in("target_user").headers["retry-after"] == "2"
    clock.advance(2)
    assert_error(server.sign_in("target_user", "guess-guess"), 401, "invalid_credentials")
    assert server.sign_in("target_user").headers["retry-after"] == "4"
    clock.advance(4)
    assert server.sign_in("target_user").status_code == 201  # success resets the count
    assert_error(server.sign_in("target_user", "guess-guess"), 401, "invalid_credentials")
    assert server.sign_in("target_user").status_code == 201
    # failures are forgotten a day after the last one
    for _ in range(THROTTLE_FREE_ACCOUNT):
        server.sign_in("ghost_user2", "guess-guess")
    assert server.sign_in("ghost_user2", "x" * 8).status_code == 429
    clock.advance(86400)
    assert_error(server.sign_in("ghost_user2", "x" * 8), 401, "invalid_credentials")
    # the table holds keyed digests, not the names people typed
    server.store.checkpoint()
    assert b"ghost_user2" not in server.file_bytes()


def test_lockout_per_client_address(server: Server, clock: Clock) -> None:
    server.create(username="victim_acct", password=PASSWORD)
    for i in range(THROTTLE_FREE_ADDRESS):  # a different account each time
        assert_error(server.sign_in(f"spray{i:03d}", "guess-guess"), 401, "invalid_credentials")
    r = server.sign_in("victim_acct")
    assert_error(r, 429, "too_many_attempts")
    assert int(r.headers["retry-after"]) >= 1
    # another client address is not held back
    other = httpx.Client(base_url=server.url + API, timeout=30,
                         transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    try:
        r = other.post("/sessions", json={"username": "victim_acct", "password": PASSWORD})
        assert r.status_code == 201, r.text
    finally:
        other.close()


def test_parallel_guesses_cannot_slip_past_the_limit(server: Server) -> None:
    server.create(username="parallel_u", password=PASSWORD)
    codes: list[int] = []

    def guess() -> None:
        with httpx.Client(base_url=server.url + API, timeout=60) as c:
            codes.append(c.post("/sessions", json={"username": "parallel_u",
                                                   "password": "guess-guess"}).status_code)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [401] * THROTTLE_FREE_ACCOUNT + [429] * (12 - THROTTLE_FREE_ACCOUNT)


def test_rehash_when_the_parameters_change(tmp_path: Path) -> None:
    key = load_or_create_data_key(str(tmp_path / "r.key"))
    old = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    with Store(str(tmp_path / "r.db"), key, hasher=old) as store:
        store.create_profile("rehash_me", ADULT, password=PASSWORD)
        (before,) = store._conn.execute("SELECT password_hash FROM users").fetchone()
        assert "m=8192,t=1,p=1" in before
    with Store(str(tmp_path / "r.db"), key) as store:  # the recommended parameters now
        with pytest.raises(Unauthorized):
            store.sign_in("rehash_me", "wrong password")
        assert store._conn.execute("SELECT password_hash FROM users").fetchone()[0] == before
        store.sign_in("rehash_me", PASSWORD)
        (after,) = store._conn.execute("SELECT password_hash FROM users").fetchone()
        assert after.startswith("$argon2id$v=19$m=65536,t=3,p=4$") and after != before
        store.sign_in("rehash_me", PASSWORD)  # and the new hash verifies


def test_a_version_1_database_keeps_its_creation_tokens(tmp_path: Path) -> None:
    """The REST issue's schema (version 1) migrates; its tokens keep working, forever."""
    path = str(tmp_path / "v1.db")
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    now = time.time()
    conn.execute("INSERT INTO users (id, username, date_of_birth, created_at, updated_at,"
                 " last_seen_at) VALUES ('uid1', 'old_timer', ?, ?, ?, ?)", (ADULT, now, now, now))
    conn.execute("INSERT INTO tokens (token_hash, user_id, created_at) VALUES (?, 'uid1', ?)",
                 (hash_token("old-token"), now))
    conn.close()
    clock = Clock()
    with Store(path, load_or_create_data_key(str(tmp_path / "v1.key")), clock) as store:
        assert store.migrations_applied == len(MIGRATIONS) - 1
        assert store.authenticate("old-token").username == "old_timer"
        clock.advance(400 * 86400)  # creation tokens do not expire
        assert store.authenticate("old-token").id == "uid1"


def test_the_creation_token_ends_once_the_account_has_a_password(
    server: Server, clock: Clock
) -> None:
    """Issue 20, item 5: the token POST /profiles returned is no permanent key."""
    # created with a password: a session like a sign-in's, ended by a password change
    user = server.create(username="token_owner", password=PASSWORD)
    me = f"/profiles/{user['id']}"
    session = server.sign_in("token_owner").json()["token"]
    assert server.http.put(me + "/password", headers=auth(session), json={
        "password": "n" * 12, "current_password": PASSWORD}).status_code == 204
    assert_error(server.http.get(me, headers=auth(user["token"])), 401, "unauthorized")
    # ... and without a change it expires like a session
    other = server.create(username="token_ageing", password=PASSWORD)
    clock.advance(server.store.session_ttl)
    assert_error(server.http.get(f"/profiles/{other['id']}", headers=auth(other["token"])),
                 401, "unauthorized")
    # a password set later: the creation token that set it stays, as a session (it can
    # sign out now and it expires), and it is on the export's session list
    late = server.create(username="token_later")
    h = auth(late["token"])
    assert server.http.put(f"/profiles/{late['id']}/password", headers=h,
                           json={"password": PASSWORD}).status_code == 204
    assert server.http.get(f"/profiles/{late['id']}", headers=h).status_code == 200
    (expires,) = server.store._conn.execute(
        "SELECT expires_at FROM tokens WHERE token_hash = ?",
        (hash_token(late["token"]),)).fetchone()
    assert expires == clock.t + server.store.session_ttl
    assert server.http.delete("/sessions/current", headers=h).status_code == 204
    assert_error(server.http.get(f"/profiles/{late['id']}", headers=h), 401, "unauthorized")
    # an account without a password keeps its creation token: its only key
    plain = server.create(username="token_only_key")
    clock.advance(400 * 86400)
    assert server.http.get(f"/profiles/{plain['id']}",
                           headers=auth(plain["token"])).status_code == 200


def test_a_version_2_database_ends_creation_tokens_of_password_accounts(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "v2.db")
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0] + MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    clock = Clock()
    for uid, pw in (("uid_pw", "$argon2id$v=19$m=65536,t=3,p=4$x$y"), ("uid_none", None)):
        conn.execute("INSERT INTO users (id, username, date_of_birth, created_at, updated_at,"
                     " last_seen_at, password_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (uid, uid, ADULT, clock.t, clock.t, clock.t, pw))
        conn.execute("INSERT INTO tokens (token_hash, user_id, created_at) VALUES (?, ?, ?)",
                     (hash_token(f"token-{uid}"), uid, clock.t))
    conn.close()
    with Store(path, load_or_create_data_key(str(tmp_path / "v2.key")), clock) as store:
        assert store.migrations_applied == len(MIGRATIONS) - 2
        assert store.authenticate("token-uid_pw").id == "uid_pw"
        clock.advance(30 * 86400)
        with pytest.raises(Exception, match="expired"):
            store.authenticate("token-uid_pw")
        assert store.authenticate("token-uid_none").id == "uid_none"


def test_two_factor_and_identifying_changes_need_the_password_or_a_fresh_sign_in(
    server: Server, clock: Clock
) -> None:
    """Issue 20, item 5: a stolen (not fresh) token cannot enrol two-factor and lock
    the owner out, turn it off, or change the username or date of birth."""
    user = server.create(username="reauth_user", password=PASSWORD)
    me = f"/profiles/{user['id']}"
    h = auth(user["token"])
    clock.advance(600)  # the token is ten minutes old now
    err = assert_error(server.http.post(me + "/totp", headers=h), 422, "invalid",
                       "current_password")
    assert "password" in err["message"] and "sign in" in err["message"]
    assert_error(server.http.post(me + "/totp", headers=h,
                                  json={"current_password": "wrong password"}),
                 422, "invalid", "current_password")
    assert_error(server.http.post(me + "/totp", headers=h, json={"current_password": 5}),
                 422, "invalid", "current_password")
    assert_error(server.http.patch(me, headers=h, json={"username": "reauth_taken"}),
                 422, "invalid", "current_password")
    assert_error(server.http.patch(me, headers=h, json={"date_of_birth": "1991-01-01"}),
                 422, "invalid", "current_password")
    assert server.http.get(me, headers=h).json()["username"] == "reauth_user"
    # what locks nobody out needs nothing more
    assert server.http.patch(me, headers=h, json={"bio": "still fine"}).status_code == 200
    # with the password
    r = server.http.patch(me, headers=h, json={"username": "reauth_renamed",
                                               "current_password": PASSWORD})
    assert r.status_code == 200 and r.json()["username"] == "reauth_renamed"
    r = server.http.post(me + "/totp", headers=h, json={"current_password": PASSWORD})
    assert r.status_code == 201, r.text
    # or a fresh sign-in, without it
    fresh = auth(server.sign_in("reauth_renamed").json()["token"])
    r = server.http.post(me + "/totp", headers=fresh)
    assert r.status_code == 201, r.text
    totp = pyotp.TOTP(r.json()["secret"])
    assert server.http.post(me + "/totp/confirm", headers=fresh,
                            json={"code": totp.at(clock.t)}).status_code == 200
    clock.advance(630)  # the sign-in is stale again, and a new TOTP step
    assert_error(server.http.post(me + "/totp/disable", headers=fresh,
                                  json={"code": totp.at(clock.t)}),
                 422, "invalid", "current_password")
    r = server.http.post(me + "/totp/disable", headers=fresh, json={
        "code": totp.at(clock.t), "current_password": PASSWORD})
    assert r.json() == {"two_factor": False}
    # the API document says so
    schemas = server.http.get("/openapi.json").json()["components"]["schemas"]
    for name in ("ProfileUpdate", "TotpDisable", "Reauth"):
        assert "current_password" in schemas[name]["properties"], name
    # an account without a password: its creation token is all it has, and enough
    plain = server.create(username="reauth_plain")
    clock.advance(600)
    r = server.http.post(f"/profiles/{plain['id']}/totp", headers=auth(plain["token"]))
    assert r.status_code == 201, r.text
    assert server.http.patch(f"/profiles/{plain['id']}", headers=auth(plain["token"]),
                             json={"username": "reauth_plain2"}).status_code == 200


# ---- two-factor -------------------------------------------------------------------


def test_totp_enrol_confirm_sign_in_replay_expiry_recovery_disable(
    server: Server, clock: Clock
) -> None:
    user = server.create(username="two_factor", password=PASSWORD)
    base = f"/profiles/{user['id']}/totp"
    h = auth(user["token"])
    r = server.http.post(base, headers=h)
    assert r.status_code == 201, r.text
    enrol = r.json()
    secret = enrol["secret"]
    uri = urllib.parse.urlparse(enrol["otpauth_uri"])
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    query = urllib.parse.parse_qs(uri.query)
    assert query["secret"] == [secret] and query["issuer"] == ["mediaserver"]
    assert "two_factor" in urllib.parse.unquote(uri.path)
    png = Image.open(io.BytesIO(base64.b64decode(enrol["qr_png_base64"])))
    assert png.format == "PNG" and png.width == png.height >= 100
    # the secret is encrypted at rest
    server.store.checkpoint()
    assert secret.encode() not in server.file_bytes()
    totp = pyotp.TOTP(secret)
    other = server.create()
    assert_error(server.http.post(f"/profiles/{other['id']}/totp/confirm",
                                  headers=auth(other["token"]), json={"code": "123456"}),
                 409, "conflict")  # not enrolled
    assert_error(server.http.post(base, headers=auth(other["token"])), 404, "not_found")
    assert_error(server.http.post(base), 401, "unauthorized")
    # not on until confirmed: a sign-in needs no code yet
    assert server.sign_in("two_factor").status_code == 201
    assert server.http.get(f"/profiles/{user['id']}", headers=h).json()["two_factor"] is False
    wrong = "000000" if totp.at(clock.t) != "000000" else "111111"
    assert_error(server.http.post(base + "/confirm", headers=h, json={"code": wrong}),
                 422, "invalid", "code")
    assert_error(server.http.post(base + "/disable", headers=h, json={"code": wrong}),
                 409, "conflict")
    r = server.http.post(base + "/confirm", headers=h, json={"code": totp.at(clock.t)})
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    assert all(len(c) == 19 and c.count("-") == 3 for c in codes)
    server.store.checkpoint()
    assert not any(c.encode() in server.file_bytes() for c in codes)  # stored hashed
    assert server.http.get(f"/profiles/{user['id']}", headers=h).json()["two_factor"] is True
    assert_error(server.http.post(base, headers=h), 409, "conflict")
    # sign-in now needs the code
    assert_error(server.sign_in("two_factor"), 401, "otp_required")
    # the code used to confirm cannot be replayed
    assert_error(server.sign_in("two_factor", otp=totp.at(clock.t)), 401, "invalid_otp")
    clock.advance(30)
    code = totp.at(clock.t)
    assert server.sign_in("two_factor", otp=code).status_code == 201
    assert_error(server.sign_in("two_factor", otp=code), 401, "invalid_otp")  # replayed
    # one step of drift either way is accepted; an older code has expired
    clock.advance(300)
    assert_error(server.sign_in("two_factor", otp=totp.at(clock.t - 90)), 401, "invalid_otp")
    assert server.sign_in("two_factor", otp=totp.at(clock.t - 30)).status_code == 201
    assert_error(server.sign_in("two_factor", otp="12345"), 401, "invalid_otp")
    # the wrong password with a right code is still the generic answer
    clock.advance(30)
    assert_error(server.sign_in("two_factor", "wrong password", otp=totp.at(clock.t)),
                 401, "invalid_credentials")
    # recovery codes: each works once, with or without dashes, any case
    assert server.sign_in("two_factor", otp=codes[0]).status_code == 201
    assert_error(server.sign_in("two_factor", otp=codes[0]), 401, "invalid_otp")
    assert server.sign_in("two_factor", otp=codes[1].replace("-", "").lower()).status_code == 201
    # turning it off needs a valid code (and the password: this token is not fresh)
    assert_error(server.http.post(base + "/disable", headers=h,
                                  json={"code": wrong, "current_password": PASSWORD}),
                 422, "invalid", "code")
    assert_error(server.http.post(base + "/disable", headers=h, json={}), 422, "invalid", "code")
    assert server.http.post(base + "/disable", headers=h, json={
        "code": codes[2], "current_password": PASSWORD}).json() == {"two_factor": False}
    assert server.sign_in("two_factor").status_code == 201
    (nonce,) = server.store._conn.execute(
        "SELECT totp_nonce FROM users WHERE id = ?", (user["id"],)).fetchone()
    assert nonce is None
    assert server.store._conn.execute("SELECT COUNT(*) FROM recovery_codes").fetchone()[0] == 0


def test_totp_matches_rfc_6238() -> None:
    """pyotp (what the store checks codes with) against RFC 6238's SHA-1 vectors."""
    secret = base64.b32encode(b"12345678901234567890").decode()
    totp = pyotp.TOTP(secret, digits=8)
    for t, expected in ((59, "94287082"), (1111111109, "07081804"), (1234567890, "89005924"),
                        (2000000000, "69279037")):
        assert totp.at(t) == expected


# ---- photos ------------------------------------------------------------------------


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (1600, 1200), (30, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Maker"
    exif[0x0132] = "2026:11:25 10:00:00"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (51.0, 30.0, 26.0), "W", (0.0, 7.0, 39.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, comment=b"home address here")
    return out.getvalue()


def png_bytes(size: tuple[int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, "PNG")
    return out.getvalue()


def test_photo_metadata_stripped_scaled_encrypted_exported_deleted(server: Server) -> None:
    user = server.create(username="photo_owner", chat_history_consent=True)
    h = auth(user["token"])
    url = f"/profiles/{user['id']}/photo"
    upload = jpeg_with_gps()
    original = Image.open(io.BytesIO(upload))
    assert original.getexif().get_ifd(0x8825)  # the test really carries GPS
    assert_error(server.http.get(url, headers=h), 404, "not_found")
    r = server.http.put(url, headers={**h, "Content-Type": "image/jpeg"}, content=upload)
    assert r.status_code == 201, r.text
    assert r.json() == {"photo_url": f"{API}{url}", "width": 512, "height": 384}
    got = server.http.get(url, headers=h)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(got.content))
    assert image.format == "JPEG" and image.size == (512, 384)
    assert not image.getexif() and not image.getexif().get_ifd(0x8825)
    assert "exif" not in image.info and "comment" not in image.info
    assert b"SpyCam" not in got.content and b"home address" not in got.content
    assert b"Exif" not in got.content
    assert image.getpixel((256, 192)) == pytest.approx((30, 120, 200), abs=3)
    # the owner only
    other = server.create()
    assert_error(server.http.get(url, headers=auth(other["token"])), 404, "not_found")
    assert_error(server.http.get(url), 401, "unauthorized")
    assert server.http.get(f"/profiles/{user['id']}", headers=h).json()["photo_url"] == API + url
    # encrypted at rest
    server.store.checkpoint()
    assert got.content[100:164] not in server.file_bytes()
    # PNG and WebP too, scaled to fit 512x512
    for ctype, fmt, size in (("image/png", "PNG", (300, 900)), ("image/webp", "WEBP", (40, 30))):
        out = io.BytesIO()
        Image.new("RGBA", size, (255, 0, 0, 128)).save(out, fmt)
        r = server.http.put(url, headers={**h, "Content-Type": ctype}, content=out.getvalue())
        assert r.status_code == 201, r.text
        w, hgt = r.json()["width"], r.json()["height"]
        assert max(w, hgt) <= 512 and (w, hgt) == ((171, 512) if fmt == "PNG" else size)
    # the access export carries the photo
    r = server.http.post("/privacy-requests", headers=h, json={"type": "access"})
    deadline = time.monotonic() + 10
    while True:
        req = server.http.get(f"/privacy-requests/{r.json()['id']}", headers=h).json()
        if req["status"] == "completed":
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    export = req["export"]
    assert export["two_factor"] == {"enabled": False, "recovery_codes_left": 0}
    assert export["blocked_handles"] == [] and len(export["sessions"]) == 1
    assert "password_hash" not in json.dumps(export)
    photo = export["photo"]
    assert base64.b64decode(photo["data_base64"]) == server.http.get(url, headers=h).content
    assert photo["content_type"] == "image/jpeg"
    # delete it, then the account
    assert server.http.delete(url, headers=h).status_code == 204
    assert_error(server.http.get(url, headers=h), 404, "not_found")
    assert_error(server.http.delete(url, headers=h), 404, "not_found")
    server.http.put(url, headers={**h, "Content-Type": "image/jpeg"}, content=upload)
    assert server.http.delete(f"/profiles/{user['id']}", headers=h).status_code == 204
    assert server.store._conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0] == 0


def test_bad_photos_are_refused_and_nothing_is_stored(server: Server) -> None:
    user = server.create()
    h = auth(user["token"])
    url = f"/profiles/{user['id']}/photo"
    good = jpeg_with_gps()
    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, "GIF")
    bomb = png_bytes((12000, 12000), "1")  # 144 megapixels in a ~20 kB file
    assert len(bomb) < 100_000
    cases: list[tuple[str | None, bytes, int, str]] = [
        ("image/jpeg", good[: len(good) // 2], 422, "bad_image"),  # truncated
        ("image/png", bomb, 422, "image_too_large"),
        ("image/png", png_bytes((7000, 6000), "1"), 422, "image_too_large"),  # above 40 MP
        ("image/gif", gif.getvalue(), 415, "unsupported_media_type"),
        ("image/png", gif.getvalue(), 415, "unsupported_media_type"),  # a GIF inside
        ("image/png", good, 415, "unsupported_media_type"),  # a JPEG declared as PNG
        ("text/plain", b"hello", 415, "unsupported_media_type"),
        (None, good, 415, "unsupported_media_type"),
        ("image/jpeg", b"", 422, "bad_image"),
        ("image/jpeg", b"not an image at all", 422, "bad_image"),
        ("image/jpeg", b"\xff\xd8" + os.urandom(5 * 1024 * 1024), 413, "too_large"),
    ]
    for ctype, body, status, code in cases:
        headers = {**h, "Content-Type": ctype} if ctype else dict(h)
        r = server.http.put(url, headers=headers, content=body)
        assert_error(r, status, code)
        assert_error(server.http.get(url, headers=h), 404, "not_found")
    # and a bad upload leaves the photo already there alone
    assert server.http.put(url, headers={**h, "Content-Type": "image/jpeg"},
                           content=good).status_code == 201
    before = server.http.get(url, headers=h).content
    assert_error(server.http.put(url, headers={**h, "Content-Type": "image/png"}, content=bomb),
                 422, "image_too_large")
    assert server.http.get(url, headers=h).content == before


# ---- browsing, blocks, cards ---------------------------------------------------------


def years_ago(clock: Clock, years: int, days: int = 10) -> str:
    today = date.fromtimestamp(clock.t)
    born = today.replace(year=today.year - years)
    return date.fromordinal(born.toordinal() - days).isoformat()


def test_browsing_lists_only_discoverable_profiles_by_shared_interests(
    server: Server, clock: Clock
) -> None:
    viewer = server.create(username="viewer", interests=["chess", "jazz", "go"])
    both = server.create(username="both_shared", interests=["jazz", "chess", "hiking"],
                         discoverable=True, bio="bio of both", language="en",
                         date_of_birth=years_ago(clock, 27))
    one = server.create(username="one_shared", interests=["chess"], discoverable=True,
                        language="pt-BR", date_of_birth=years_ago(clock, 19))
    server.create(username="none_shared", interests=["surf"], discoverable=True,
                  date_of_birth=years_ago(clock, 70))
    server.create(username="hidden_user", interests=["chess", "jazz", "go"])  # not discoverable
    blocked = server.create(username="i_blocked", interests=["chess", "jazz"], discoverable=True)
    blocker = server.create(username="blocks_me", interests=["chess", "jazz"], discoverable=True)
    h = auth(viewer["token"])
    r = server.http.post(f"/profiles/{viewer['id']}/blocks", headers=h, json={"handle": "i_blocked"})
    assert r.status_code == 201 and r.json() == {"handle": "i_blocked"}
    assert server.http.post(f"/profiles/{blocker['id']}/blocks", headers=auth(blocker["token"]),
                            json={"handle": "viewer"}).status_code == 201
    # a photo shows as a URL anyone can fetch
    server.http.put(f"/profiles/{both['id']}/photo", content=jpeg_with_gps(),
                    headers={**auth(both["token"]), "Content-Type": "image/jpeg"})
    r = server.http.get("/profiles", headers=h)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["next_cursor"] is None
    handles = [card["handle"] for card in page["profiles"]]
    assert handles == ["both_shared", "one_shared", "none_shared"]
    for card in page["profiles"]:
        assert set(card) == {"handle", "photo_url", "bio", "interests", "age_band"}
    first = page["profiles"][0]
    assert first["bio"] == "bio of both" and first["interests"] == ["jazz", "chess", "hiking"]
    assert [c["age_band"] for c in page["profiles"]] == ["25-34", "18-24", "65+"]
    assert "date_of_birth" not in r.text and years_ago(clock, 27) not in r.text
    assert both["id"] not in r.text  # no account ids either
    photo = httpx.get(server.url + first["photo_url"])
    assert photo.status_code == 200 and Image.open(io.BytesIO(photo.content)).format == "JPEG"
    assert page["profiles"][1]["photo_url"] is None
    # filters
    assert [c["handle"] for c in server.http.get(
        "/profiles", headers=h, params={"interest": "JAZZ"}).json()["profiles"]] == ["both_shared"]
    assert [c["handle"] for c in server.http.get(
        "/profiles", headers=h, params={"language": "pt-br"}).json()["profiles"]] == ["one_shared"]
    assert server.http.get("/profiles", headers=h,
                           params={"interest": "chess", "language": "en"}).json()["profiles"][0][
        "handle"] == "both_shared"
    # the blocked one sees neither the blocker's card
    seen_by_blocked = server.http.get("/profiles", headers=auth(blocked["token"])).json()
    assert "viewer" not in [c["handle"] for c in seen_by_blocked["profiles"]]
    # blocks listed, lifted
    assert server.http.get(f"/profiles/{viewer['id']}/blocks", headers=h).json() == {
        "blocked": ["i_blocked"]}
    assert server.http.delete(f"/profiles/{viewer['id']}/blocks/i_blocked",
                              headers=h).status_code == 204
    assert "i_blocked" in [c["handle"] for c in server.http.get(
        "/profiles", headers=h).json()["profiles"]]
    assert_error(server.http.delete(f"/profiles/{viewer['id']}/blocks/i_blocked", headers=h),
                 404, "not_found")
    # hiding again withdraws the listing and the photo URL it carried
    assert server.http.patch(f"/profiles/{both['id']}", headers=auth(both["token"]),
                             json={"discoverable": False}).json()["discoverable"] is False
    assert httpx.get(server.url + first["photo_url"]).status_code == 404
    assert "both_shared" not in server.http.get("/profiles", headers=h).text
    # errors
    assert_error(server.http.get("/profiles"), 401, "unauthorized")
    assert_error(server.http.get("/profiles", headers=h, params={"cursor": "!!"}),
                 422, "invalid", "cursor")
    assert_error(server.http.get("/profiles", headers=h, params={"page": "2"}),
                 422, "invalid", "page")
    assert_error(server.http.get("/profiles", headers=h, params={"language": "x"}),
                 422, "invalid", "language")
    bl = f"/profiles/{viewer['id']}/blocks"
    assert_error(server.http.post(bl, headers=h, json={"handle": "nobody_at_all"}),
                 404, "not_found")
    assert_error(server.http.post(bl, headers=h, json={"handle": "viewer"}), 422, "invalid", "handle")
    assert_error(server.http.post(bl, headers=h, json={}), 422, "invalid", "handle")
    assert_error(server.http.post(f"/profiles/{one['id']}/blocks", headers=h,
                                  json={"handle": "one_shared"}), 404, "not_found")
    assert_error(httpx.get(server.url + API + "/photos/unknown"), 404, "not_found")


def test_browsing_pages_with_a_cursor(server: Server) -> None:
    viewer = server.create(username="pager", interests=["a1", "a2"])
    expected = []
    for i in range(45):
        interests = ["a1", "a2"] if i % 3 == 0 else ["a1"] if i % 3 == 1 else ["zz"]
        # straight into the store: 45 sign-ups from one address would meet its limit
        server.store.create_profile(f"listed{i:02d}", ADULT, interests=interests,
                                    discoverable=True)
        expected.append((-len(set(interests) & {"a1", "a2"}), f"listed{i:02d}"))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"cursor": cursor} if cursor else {}
        body = server.http.get("/profiles", headers=auth(viewer["token"]), params=params).json()
        assert len(body["profiles"]) <= 20
        seen += [c["handle"] for c in body["profiles"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 45
    shared = {h: -s for s, h in expected}
    assert [shared[h] for h in seen] == sorted((shared[h] for h in seen), reverse=True)


def test_each_shared_card_has_its_own_photo_url_until_withdrawn(
    server: Server, clock: Clock
) -> None:
    """Issue 20, item 13: a card's photo URL is a capability of that share alone; it
    ends when its owner withdraws it, after SHARE_TTL, when the owner leaves the
    listing, deletes or replaces the photo; the listing's URL is another one."""
    owner = server.create(username="card_owner", password=PASSWORD, discoverable=True)
    viewer = server.create(username="card_viewer")
    me = f"/profiles/{owner['id']}"
    h = auth(owner["token"])

    def upload() -> None:
        assert server.http.put(me + "/photo", content=jpeg_with_gps(),
                               headers={**h, "Content-Type": "image/jpeg"}).status_code == 201

    def fetch(url: str) -> int:
        return httpx.get(server.url + url).status_code

    def share() -> str:
        url = server.store.share_profile_card(owner["id"])["photo_url"]  # what the hub sends
        assert fetch(url) == 200
        return str(url)

    upload()
    (listing,) = [c["photo_url"] for c in server.http.get(
        "/profiles", headers=auth(viewer["token"])).json()["profiles"]]
    first, second = share(), share()
    assert len({listing, first, second}) == 3
    r = server.http.get(me + "/shares", headers=h)
    assert r.status_code == 200, r.text
    assert sorted(s["photo_url"] for s in r.json()["shares"]) == sorted([first, second])
    assert all(set(s) == {"id", "photo_url", "created_at", "expires_at"}
               for s in r.json()["shares"])
    # withdrawing one share ends that URL only
    share_id = first.rsplit("/", 1)[1]
    assert_error(server.http.delete(f"/profiles/{viewer['id']}/shares/{share_id}",
                                    headers=auth(viewer["token"])), 404, "not_found")
    assert fetch(first) == 200  # someone else cannot withdraw it
    assert server.http.delete(f"{me}/shares/{share_id}", headers=h).status_code == 204
    assert (fetch(first), fetch(second), fetch(listing)) == (404, 200, 200)
    assert_error(server.http.delete(f"{me}/shares/{share_id}", headers=h), 404, "not_found")
    assert [s["photo_url"] for s in server.http.get(me + "/shares", headers=h).json()[
        "shares"]] == [second]
    # a share lasts SHARE_TTL
    clock.advance(SHARE_TTL)
    assert fetch(second) == 404 and fetch(listing) == 200
    assert server.http.get(me + "/shares", headers=h).json() == {"shares": []}
    # leaving the listing ends the listing's URL and every share's
    third = share()
    assert server.http.patch(me, headers=h, json={"discoverable": False}).status_code == 200
    assert (fetch(third), fetch(listing)) == (404, 404)
    # a share made while not listed works, until the photo is replaced or deleted
    fourth = share()
    upload()
    assert fetch(fourth) == 404
    fifth = share()
    assert server.http.delete(me + "/photo", headers=h).status_code == 204
    assert fetch(fifth) == 404
    assert server.store.share_profile_card(owner["id"])["photo_url"] is None
    server.store.run_retention()  # expired and revoked shares leave no rows behind
    assert server.store._conn.execute("SELECT COUNT(*) FROM photo_shares").fetchone()[0] == 0


# ---- age --------------------------------------------------------------------------


def test_under_the_minimum_age_is_refused_and_nothing_kept(server: Server, clock: Clock) -> None:
    r = server.http.post("/profiles", json={
        "username": "too_young_kid", "date_of_birth": years_ago(clock, 17, days=300),
        "bio": "unique-bio-of-a-minor", "password": PASSWORD})
    err = assert_error(r, 422, "invalid", "date_of_birth")
    assert "18" in err["message"]
    server.store.checkpoint()
    data = server.file_bytes()
    assert b"too_young_kid" not in data and b"unique-bio-of-a-minor" not in data
    assert server.store._conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0
    assert server.store._conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == 0
    # the day of the 18th birthday is fine
    assert server.http.post("/profiles", json={
        "username": "just_eighteen",
        "date_of_birth": years_ago(clock, 18, days=0)}).status_code == 201
    # nor can a PATCH make an account younger than the floor
    user = server.create()
    assert_error(server.http.patch(f"/profiles/{user['id']}", headers=auth(user["token"]),
                                   json={"date_of_birth": years_ago(clock, 16)}),
                 422, "invalid", "date_of_birth")


def test_min_age_setting_for_the_social_side(tmp_path: Path, clock: Clock) -> None:
    srv = Server(tmp_path, clock, min_age=13)
    try:
        teen = srv.create(username="teen_user", date_of_birth=years_ago(clock, 15),
                          discoverable=True)
        assert teen["discoverable"] is True
        assert_error(srv.http.post("/profiles", json={
            "username": "child_user", "date_of_birth": years_ago(clock, 12)}),
            422, "invalid", "date_of_birth")
        viewer = srv.create(date_of_birth=years_ago(clock, 16))
        assert srv.http.get("/profiles", headers=auth(viewer["token"])).json()["profiles"][0][
            "age_band"] == "13-17"
        assert srv.store.age(srv.store.get_profile(teen["id"])) == 15
        assert srv.store.age(srv.store.get_profile(viewer["id"])) == 16
    finally:
        srv.stop()


def test_adults_and_minors_never_see_each_other(tmp_path: Path, clock: Clock) -> None:
    """Issue 20, item 12: with --min-age below 18, browsing, blocking and reporting by
    handle never cross the age line (a handle there is answered like an unknown one)."""
    srv = Server(tmp_path, clock, min_age=13)
    try:
        teen = srv.create(username="teen_listed", date_of_birth=years_ago(clock, 15),
                          discoverable=True, interests=["chess"])
        teen_viewer = srv.create(username="teen_viewer", date_of_birth=years_ago(clock, 16),
                                 interests=["chess"])
        adult = srv.create(username="adult_listed", discoverable=True, interests=["chess"])
        adult_viewer = srv.create(username="adult_viewer", interests=["chess"])
        # 18 today is on the adults' side; 18 tomorrow is not yet
        eighteen = srv.create(username="just_adult", discoverable=True,
                              date_of_birth=years_ago(clock, 18, days=0))
        almost = srv.create(username="almost_adult", discoverable=True,
                            date_of_birth=years_ago(clock, 18, days=-1))
        srv.http.put(f"/profiles/{teen['id']}/photo", content=jpeg_with_gps(),
                     headers={**auth(teen["token"]), "Content-Type": "image/jpeg"})

        def listed(user: dict[str, Any]) -> list[str]:
            r = srv.http.get("/profiles", headers=auth(user["token"]))
            assert r.status_code == 200, r.text
            return sorted(c["handle"] for c in r.json()["profiles"])

        assert listed(adult_viewer) == ["adult_listed", "just_adult"]
        assert listed(teen_viewer) == ["almost_adult", "teen_listed"]
        assert listed(teen) == ["almost_adult"]
        assert listed(adult) == ["just_adult"]
        adult_page = srv.http.get("/profiles", headers=auth(adult_viewer["token"])).text
        assert "teen_listed" not in adult_page
        # a handle across the line is unknown: the same 404 as a handle nobody has
        for user, handle in ((adult_viewer, "teen_listed"), (teen_viewer, "adult_listed")):
            h = auth(user["token"])
            for body in ({"handle": handle, "reason": "spam"},
                         {"handle": "nobody_has_this", "reason": "spam"}):
                assert_error(srv.http.post("/reports", headers=h, json=body),
                             404, "not_found")
            assert_error(srv.http.post(f"/profiles/{user['id']}/blocks", headers=h,
                                       json={"handle": handle}), 404, "not_found")
        assert srv.store.underage_reports() == []
        assert srv.http.post("/reports", headers=auth(adult_viewer["token"]), json={
            "handle": "adult_listed", "reason": "spam"}).status_code == 201
        assert srv.http.post(f"/profiles/{teen_viewer['id']}/blocks",
                             headers=auth(teen_viewer["token"]),
                             json={"handle": "teen_listed"}).status_code == 201
    finally:
        srv.stop()


def run_accounts_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mediaserver.cli", "accounts", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_confirmed_underage_report_deletes_the_account_at_once(
    server: Server, tmp_path: Path
) -> None:
    reporter = server.create(username="reporter_1")
    minor = server.create(username="minor_looking", bio="minor-unique-bio", discoverable=True,
                          interests=["minor-interest"], chat_history_consent=True, password=PASSWORD)
    mh = auth(minor["token"])
    server.http.put(f"/profiles/{minor['id']}/photo", content=jpeg_with_gps(),
                    headers={**mh, "Content-Type": "image/jpeg"})
    server.http.post(f"/profiles/{minor['id']}/blocks", headers=mh, json={"handle": "reporter_1"})
    session = server.sign_in("minor_looking").json()["token"]
    rh = auth(reporter["token"])
    assert_error(server.http.post("/reports", headers=rh, json={"handle": "minor_looking",
                                                                "reason": "too young"}),
                 422, "invalid", "reason")
    assert_error(server.http.post("/reports", headers=rh, json={"handle": "nobody_here",
                                                                "reason": "underage"}),
                 404, "not_found")
    assert_error(server.http.post("/reports", headers=rh, json={"handle": "reporter_1",
                                                                "reason": "underage"}),
                 422, "invalid", "handle")
    assert_error(server.http.post("/reports", json={"handle": "minor_looking",
                                                    "reason": "underage"}), 401, "unauthorized")
    spam = server.http.post("/reports", headers=rh, json={"handle": "minor_looking",
                                                          "reason": "spam"}).json()
    r = server.http.post("/reports", headers=rh, json={"handle": "minor_looking",
                                                       "reason": "underage"})
    assert r.status_code == 201, r.text
    report_id = r.json()["id"]
    key = str(tmp_path / "accounts.key")
    listed = run_accounts_cli("underage-reports", "--db", server.db, "--data-key-file", key)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["report_id"] for line in listed.stdout.splitlines()] == [report_id]
    # only an underage report can be confirmed; an unknown one is an error
    wrong = run_accounts_cli("confirm-underage", spam["id"], "--db", server.db,
                             "--data-key-file", key)
    assert wrong.returncode == 1 and "underage" in wrong.stderr
    unknown = run_accounts_cli("confirm-underage", "nope", "--db", server.db,
                               "--data-key-file", key)
    assert unknown.returncode == 1 and "no report" in unknown.stderr
    assert server.http.get(f"/profiles/{minor['id']}", headers=mh).status_code == 200
    done = run_accounts_cli("confirm-underage", report_id, "--db", server.db,
                            "--data-key-file", key)
    assert done.returncode == 0, done.stderr
    # gone at once: every token, the listing, the file
    for token in (minor["token"], session):
        assert_error(server.http.get(f"/profiles/{minor['id']}", headers=auth(token)),
                     401, "unauthorized")
    assert "minor_looking" not in server.http.get("/profiles", headers=rh).text
    assert_error(server.sign_in("minor_looking"), 401, "invalid_credentials")
    server.store.checkpoint()
    data = server.file_bytes()
    for secret in (b"minor_looking", b"minor-unique-bio", b"minor-interest", minor["id"].encode()):
        assert secret not in data, secret
    for table in ("users", "photos", "blocks", "account_reports", "recovery_codes"):
        n = server.store._conn.execute(
            f"SELECT COUNT(*) FROM {table} WHERE "
            + {"users": "id", "photos": "user_id", "blocks": "blocker_id",
               "account_reports": "reported_user_id", "recovery_codes": "user_id"}[table]
            + " = ?", (minor["id"],)).fetchone()[0]
        assert n == 0, table
    # an audit entry remains, without personal data
    entries = [e for e in server.store.audit_log() if e["event"] == "account_deleted"]
    assert len(entries) == 1 and entries[0]["detail"]["reason"] == "underage_confirmed"
    assert entries[0]["detail"]["photos"] == 1
    text = json.dumps(entries)
    assert "minor" not in text and minor["id"] not in text
    # the reporter's account is untouched
    assert server.http.get(f"/profiles/{reporter['id']}", headers=rh).status_code == 200


# ---- share_profile over a real WebSocket -----------------------------------------


@pytest.mark.parametrize("binary", [False, True])
async def test_share_profile_sends_only_the_card_and_only_when_asked(binary: bool) -> None:
    # no waiting for a shared interest: any two visitors match at once
    async with running_server(match_interest_wait=0.0) as server:
        store: Store = server.store
        alice, _ = store.create_profile(
            "alice_share", ADULT, bio="alice-secret-bio", interests=["alice-only", "music"],
            password=PASSWORD)
        # a sign-in session token works in hello like the creation token (one auth path)
        alice_token, _, _ = await asyncio.to_thread(store.sign_in, "alice_share", PASSWORD)
        photo = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(photo, "JPEG")
        public_id = store.set_photo(alice.id, photo.getvalue(), 64, 64)
        _, bob_token = store.create_profile("bob_share", ADULT, interests=["bob-only"])
        secrets_of_alice = ["alice_share", "alice-secret-bio", "alice-only", public_id, alice.id,
                            ADULT]

        a = await Client.open(server.url, binary)
        b = await Client.open(server.url, binary)
        c = await Client.open(server.url, binary)
        anon = await Client.open(server.url, binary)
        try:
            await a.hello(token=alice_token)
            await b.hello(token=bob_token)
            await anon.hello()
            # not matched yet
            await a.send("share_profile")
            await a.error("out_of_order")
            await start_and_match(a, b)
            await a.send("chat", text="hi")
            await b.expect("chat")
            await a.send("typing")
            await b.expect("typing")

            def carried(client: Client) -> list[str]:
                text = "".join(f if isinstance(f, str) else f.decode("latin-1")
                               for f in client.frames)
                return [s for s in secrets_of_alice if s in text]

            assert carried(b) == []  # without share_profile, nothing of Alice's profile
            await a.send("share_profile")
            await a.expect("profile_shared")
            card_msg = await b.expect("profile_card")
            # the card's photo URL is this share's own capability, not the listing's
            (share,) = store.photo_shares(alice.id)
            assert share["id"] != public_id
            assert card_msg["card"] == {
                "handle": "alice_share",
                "photo_url": f"{API}/photos/{share['id']}",
                "bio": "alice-secret-bio",
                "interests": ["alice-only", "music"],
            }
            assert set(card_msg) == {"v", "type", "card"}
            async with httpx.AsyncClient() as http:  # the server runs on this loop
                photo_r = await http.get(server.http_url + card_msg["card"]["photo_url"])
            assert photo_r.status_code == 200 and photo_r.content == photo.getvalue()
            # Alice withdraws that share: its URL stops working at once
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                r = await http.delete(f"{API}/profiles/{alice.id}/shares/{share['id']}",
                                      headers=auth(alice_token))
                assert r.status_code == 204
                photo_r = await http.get(card_msg["card"]["photo_url"])
            assert photo_r.status_code == 404
            # the consent is recorded (and part of the access export)
            kinds = [row[0] for row in store._conn.execute(
                "SELECT kind FROM consents WHERE user_id = ? AND source = 'signalling'",
                (alice.id,))]
            assert kinds == ["share_profile"]
            await a.quiet(0.1)  # Alice is not sent her own card or Bob's
            assert "bob_share" not in "".join(
                f if isinstance(f, str) else f.decode("latin-1") for f in a.frames)
            # a new match starts anonymous again: Alice and Bob are both re-queued
            # (and may not meet again), so c and anon each get one of them
            await c.hello()
            await a.send("next")
            await b.expect("partner_left")
            for newcomer in (c, anon):
                await newcomer.send("start")
                await newcomer.expect("queued")
                await newcomer.expect("matched")
            await a.expect("queued")
            await a.expect("matched")
            await asyncio_sleep(0.2)
            assert carried(c) == [] and carried(anon) == []
            # a visitor who did not sign in cannot share
            await anon.send("share_profile")
            await anon.error("unauthorized")
        finally:
            for client in (a, b, c, anon):
                await client.close()


async def asyncio_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


# ---- settings and the benchmark ------------------------------------------------------


def test_min_age_and_session_ttl_flags(tmp_path: Path) -> None:
    from mediaserver.cli import load_config

    files = ["--db", str(tmp_path / "c.db"), "--data-key-file", str(tmp_path / "c.key")]
    config = load_config(files, environ={})
    assert (config.min_age, config.session_ttl) == (18, 30 * 86400.0)
    config = load_config(files + ["--min-age", "13", "--session-ttl", "3600"], environ={})
    assert (config.min_age, config.session_ttl) == (13, 3600.0)
    config = load_config(files, environ={"MEDIASERVER_MIN_AGE": "21",
                                         "MEDIASERVER_SESSION_TTL": "600"})
    assert (config.min_age, config.session_ttl) == (21, 600.0)
    for args, message in ((["--min-age", "12"], "--min-age must be 13..130"),
                          (["--min-age", "x"], "not a whole number"),
                          (["--session-ttl", "5"], "--session-ttl must be 60.."),
                          (["--session-ttl", "nan"], "not a finite number")):
        proc = subprocess.run([sys.executable, "-m", "mediaserver.cli", *files, *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              check=False)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr.strip().splitlines()[-1]


def test_the_sign_in_benchmark_reports_rate_and_memory() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.accounts", "--duration", "0.3", "--repeats", "1",
         "--users", "3", "--time-cost", "1", "--memory-kib", "16384", "--parallelism", "1",
         "--threads", "2", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["argon2"] == {"type": "argon2id", "time_cost": 1, "memory_kib": 16384,
                                "parallelism": 1}
    assert report["store_sign_ins_per_s"]["median"] > 0
    assert report["argon2_verifies_per_s"]["median"] >= report["store_sign_ins_per_s"]["median"] / 2
    # each verify costs its memory_cost: 16 MiB (plus a little)
    assert 14 <= report["memory_mib_per_sign_in"]["median"] <= 24


async def test_accounts_under_18_cannot_join_random_video_chat() -> None:
    # --min-age 13 lets teenagers have an account for the social side, but hello
    # with their token is refused: random video chat stays 18+
    async with running_server(min_age=13) as server:
        store: Store = server.store
        today = datetime.date.today()
        teen_dob = today.replace(year=today.year - 16).isoformat()
        _, teen_token = store.create_profile("teen_user", teen_dob)
        _, adult_token = store.create_profile("adult_user", ADULT)
        teen = await Client.open(server.url)
        adult = await Client.open(server.url)
        try:
            await teen.send("hello", age_confirmed=True, token=teen_token)
            await teen.error("age_required")
            await teen.send("start")
            await teen.error("out_of_order")  # still before hello
            await adult.hello(token=adult_token)
        finally:
            await teen.close()
            await adult.close()
