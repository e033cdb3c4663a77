"""REST resource limits and a sign-in lockout that cannot be used against an account's
owner: real uvicorn servers on loopback, real SQLite files, real Argon2."""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import argon2
import httpx
import pyotp
import pytest
from PIL import Image

from mediaserver.api.limits import RATES, Rate, RateLimiter
from mediaserver.client_address import parse_trusted_proxies
from mediaserver.store.throttle import THROTTLE_FREE_ACCOUNT, THROTTLE_FREE_ADDRESS
from tests.api.test_accounts import PASSWORD, Clock, Server, auth
from tests.api.test_api import API, assert_error

OTHER_ADDRESS = "127.0.0.2"  # loopback is a /8: a second client address on this host


def client_at(server: Server, address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (a loopback address)."""
    return httpx.Client(base_url=server.url + API, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


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


def tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


# ---- item 8: per-address limits --------------------------------------------------


def test_rate_limiter_refills_and_keeps_bounded_memory() -> None:
    now = [0.0]
    limiter = RateLimiter(Rate(burst=3, per=30.0), max_keys=100, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(10.0)  # one request per 10 s from here
    assert limiter.take("b") == 0.0  # keys are independent
    now[0] += 10.0
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    for i in range(1000):  # a flood of fresh addresses
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100


def test_creation_privacy_requests_photos_and_reports_are_limited_per_address(
    server: Server,
) -> None:
    def create(http: httpx.Client) -> httpx.Response:
        return http.post("/profiles", json={"username": f"u{threading.get_native_id()}"
                                            f"{len(created)}x", "date_of_birth": "1990-05-17"})

    created: list[dict[str, Any]] = []
    for _ in range(RATES["create_account"].burst):
        r = create(server.http)
        assert r.status_code == 201, r.text
        created.append(r.json())
    r = create(server.http)
    err = assert_error(r, 429, "too_many_attempts", None)
    assert int(r.headers["retry-after"]) >= 1 and "try again" in err["message"]
    user, target = created[0], created[1]

    def privacy(http: httpx.Client) -> httpx.Response:
        return http.post("/privacy-requests", headers=auth(user["token"]),
                         json={"type": "correction"})

    def photo(http: httpx.Client) -> httpx.Response:
        return http.put(f"/profiles/{user['id']}/photo", content=tiny_png(),
                        headers={**auth(user["token"]), "Content-Type": "image/png"})

    def report(http: httpx.Client) -> httpx.Response:
        return http.post("/reports", headers=auth(user["token"]),
                         json={"handle": target["username"], "reason": "spam"})

    for name, send, ok in [("privacy_request", privacy, 202), ("photo_upload", photo, 201),
                           ("report", report, 201)]:
        for _ in range(RATES[name].burst):
            assert send(server.http).status_code == ok, name
        r = send(server.http)
        assert_error(r, 429, "too_many_attempts", None)
        assert int(r.headers["retry-after"]) >= 1, name
    # another client address has its own allowance, for the same account too
    other = client_at(server, OTHER_ADDRESS)
    try:
        assert create(other).status_code == 201
        assert privacy(other).status_code == 202
        assert photo(other).status_code == 201
        assert report(other).status_code == 201
    finally:
        other.close()


def test_a_flood_of_account_creations_does_not_hold_back_a_sign_in(
    tmp_path: Path, clock: Clock
) -> None:
    # real Argon2id, a little cheaper than the default so the flood is seconds
    hasher = argon2.PasswordHasher(time_cost=2, memory_cost=32768, parallelism=1)
    flood = 12
    srv = Server(tmp_path, clock, hasher=hasher,
                 api={"rates": {"create_account": Rate(burst=100, per=3600.0)}})
    try:
        srv.create(username="early_bird", password=PASSWORD)
        finished: list[int] = []
        lock = threading.Lock()

        def create(i: int) -> None:
            with httpx.Client(base_url=srv.url + API, timeout=120) as c:
                r = c.post("/profiles", json={"username": f"flood{i:02d}", "password": PASSWORD,
                                              "date_of_birth": "1990-05-17"})
                assert r.status_code == 201, r.text
            with lock:
                finished.append(i)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(flood)]
        for t in threads:
            t.start()
        # every creation has been sent and is waiting for Argon2 once the first is done
        while not finished:
            threads[0].join(0.01)
        r = srv.sign_in("early_bird")
        with lock:
            done_when_signed_in = len(finished)
        assert r.status_code == 201, r.text
        for t in threads:
            t.join(120)
        assert len(finished) == flood
        # sharing one pool, the sign-in would have queued behind the whole flood
        assert done_when_signed_in <= flood // 2, done_when_signed_in
    finally:
        srv.stop()


# ---- item 9: the lockout is no weapon ---------------------------------------------


def lock_out(server: Server, username: str) -> None:
    """An attacker elsewhere spends the account's free failures."""
    attacker = client_at(server, OTHER_ADDRESS)
    try:
        for _ in range(THROTTLE_FREE_ACCOUNT):
            r = attacker.post("/sessions", json={"username": username, "password": "guess-guess"})
            assert_error(r, 401, "invalid_credentials")
        r = attacker.post("/sessions", json={"username": username, "password": PASSWORD})
        assert_error(r, 429, "too_many_attempts")  # an unknown client waits, even if right
    finally:
        attacker.close()


def test_a_known_device_signs_in_while_strangers_are_locked_out(server: Server) -> None:
    server.create(username="owner_acct", password=PASSWORD)
    other = server.create(username="other_acct", password=PASSWORD)
    first = server.sign_in("owner_acct")
    assert first.status_code == 201
    device = first.json()["device"]
    other_device = server.sign_in("other_acct").json()["device"]
    assert isinstance(device, str) and device != other_device
    lock_out(server, "owner_acct")
    before = server.store.password_verifications
    # unknown clients: refused before any Argon2 work, as before
    assert_error(server.sign_in("owner_acct"), 429, "too_many_attempts")
    assert_error(server.sign_in("owner_acct", device=other_device), 429, "too_many_attempts")
    forged = device[:-1] + ("1" if device.endswith("0") else "0")
    assert_error(server.sign_in("owner_acct", device=forged), 429, "too_many_attempts")
    assert server.store.password_verifications == before
    # the owner's device: a typo is a plain 401, the right password gets in
    assert_error(server.sign_in("owner_acct", "typo-typo", device=device), 401,
                 "invalid_credentials")
    r = server.sign_in("owner_acct", device=device)
    assert r.status_code == 201, r.text
    assert r.json()["device"]
    # a stolen device token is no free pass: it has a limit of its own
    for _ in range(THROTTLE_FREE_ACCOUNT):
        assert_error(server.sign_in("owner_acct", "guess-guess", device=device), 401,
                     "invalid_credentials")
    assert_error(server.sign_in("owner_acct", device=device), 429, "too_many_attempts")
    assert other["id"] != r.json()["id"]


def test_a_correct_password_and_totp_code_pass_the_account_lock(
    server: Server, clock: Clock
) -> None:
    user = server.create(username="totp_owner", password=PASSWORD)
    r = server.http.post(f"/profiles/{user['id']}/totp", headers=auth(user["token"]))
    totp = pyotp.TOTP(r.json()["secret"])
    r = server.http.post(f"/profiles/{user['id']}/totp/confirm", headers=auth(user["token"]),
                         json={"code": totp.at(clock.t)})
    assert r.status_code == 200, r.text
    clock.advance(30)
    lock_out(server, "totp_owner")
    before = server.store.password_verifications
    wrong = "000000" if totp.at(clock.t) != "000000" else "111111"
    assert_error(server.sign_in("totp_owner", otp=wrong), 429, "too_many_attempts")
    assert server.store.password_verifications == before  # still no Argon2 for a bad code
    assert_error(server.sign_in("totp_owner", "guess-guess", otp=totp.at(clock.t)), 401,
                 "invalid_credentials")
    clock.advance(30)  # that code was not used up (wrong password), but take a fresh one
    r = server.sign_in("totp_owner", otp=totp.at(clock.t))
    assert r.status_code == 201, r.text


def test_ipv6_clients_in_one_64_share_the_address_bucket_behind_a_trusted_proxy(
    tmp_path: Path, clock: Clock
) -> None:
    # the proxy is 127.0.0.2, not 127.0.0.1: uvicorn itself rewrites the client of a
    # 127.0.0.1 peer from X-Forwarded-For, which would hide what the API does
    proxy_address, stranger = "127.0.0.2", "127.0.0.3"
    srv = Server(tmp_path, clock,
                 api={"trusted_proxies": parse_trusted_proxies(proxy_address + "/32")})
    proxy = client_at(srv, proxy_address)
    try:
        srv.create(username="v6_victim", password=PASSWORD)
        net = ipaddress.IPv6Network("2001:db8:1:2::/64")

        def sign_in(ip: str, username: str, password: str) -> httpx.Response:
            return proxy.post("/sessions", json={"username": username, "password": password},
                              headers={"X-Forwarded-For": f"198.51.100.9, {ip}"})

        for i in range(THROTTLE_FREE_ADDRESS):  # a fresh address of the /64 every time
            r = sign_in(str(net[i + 1]), f"spray{i:03d}", "guess-guess")
            assert_error(r, 401, "invalid_credentials")
        assert_error(sign_in(str(net[999_999]), "v6_victim", PASSWORD), 429,
                     "too_many_attempts")
        # the next /64 is another client
        assert sign_in("2001:db8:1:3::1", "v6_victim", PASSWORD).status_code == 201
        # the header from a peer that is not a trusted proxy is ignored
        with client_at(srv, stranger) as direct:
            for i in range(THROTTLE_FREE_ADDRESS):
                r = direct.post("/sessions", json={"username": f"spray{i:03d}",
                                                   "password": "guess-guess"},
                                headers={"X-Forwarded-For": str(net[100 + i])})
                assert_error(r, 401, "invalid_credentials")
            r = direct.post("/sessions", json={"username": "v6_victim", "password": PASSWORD},
                            headers={"X-Forwarded-For": "2001:db8:99::1"})
            assert_error(r, 429, "too_many_attempts")  # all of it counted on the stranger
    finally:
        proxy.close()
        srv.stop()


def test_openapi_documents_the_limits_and_the_device(server: Server) -> None:
    doc = server.http.get("/openapi.json").json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    for path, method in [("/profiles", "post"), ("/privacy-requests", "post"),
                         ("/profiles/{id}/photo", "put"), ("/reports", "post")]:
        assert "429" in paths[API + path][method]["responses"], path
    assert "device" in schemas["SignIn"]["properties"]
    assert "device" in schemas["Session"]["required"]
    assert "export" in paths[API + "/privacy-requests"]["get"]["description"]


def test_concurrent_max_size_photo_uploads_stay_within_a_bound() -> None:
    # benchmarks.photos: a fresh API process, n uploads of a 40 MP PNG at once; the
    # peak RSS growth must stay near one decoded frame per decode slot (120 MB RGB)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.photos", "--n", "4", "--kinds", "png", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert result["kind"] == "png" and result["n"] == 4
    frame_mib = 8000 * 5000 * 3 / 2**20
    assert result["peak_rss_growth_mib"] < 2.5 * frame_mib * result["decode_slots"], result
