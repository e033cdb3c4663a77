"""TURN credentials for coturn's use-auth-secret: the known vector, the expiry, the
random username; and the --turn-* settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest

from mediaserver.cli import load_config
from mediaserver.signalling.turn_credentials import (
    TurnCredentials,
    check_turn_url,
    turn_password,
)

SECRET = b"north-wind-coturn-secret"
NOW = 1_764_900_000.75  # a controlled clock: 2025-12-05, a fraction of a second in


def test_the_password_is_base64_hmac_sha1_of_the_username():
    # the vector computed here, apart from the module: coturn's own recipe
    username = "1764903600:opaque"
    expected = base64.b64encode(hmac.new(SECRET, username.encode(), hashlib.sha1).digest())
    assert turn_password(SECRET, username) == expected.decode()
    # and a fixed value, computed with `openssl dgst -sha1 -hmac secret -binary | base64`
    assert turn_password(b"secret", "1700000000:x") == "ct+k6VF81Hlm0lyw3W2FUnVnPh8="
    assert len(base64.b64decode(turn_password(SECRET, username))) == 20


def test_issue_gives_urls_a_username_expiring_at_now_plus_ttl_and_its_password():
    turn = TurnCredentials(("turns:turn.example.org:443?transport=tcp", "turn:10.0.0.1"),
                           SECRET, ttl=600)  # fmt: skip
    [server] = turn.issue(NOW)
    assert set(server) == {"urls", "username", "credential"}
    assert server["urls"] == ["turns:turn.example.org:443?transport=tcp", "turn:10.0.0.1"]
    expiry, opaque = server["username"].split(":", 1)
    assert int(expiry) == int(NOW) + 600
    assert len(opaque) >= 16 and ":" not in opaque
    mac = hmac.new(SECRET, server["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(server["credential"]) == mac


def test_two_issues_never_share_a_username():
    turn = TurnCredentials(("turn:h",), SECRET)
    names = {turn.issue(NOW)[0]["username"] for _ in range(50)}
    assert len(names) == 50


@pytest.mark.parametrize("url", [
    "turn:turn.example.org",
    "turn:10.77.0.1:3478?transport=udp",
    "turns:turn.example.org:443?transport=tcp",
    "turn:[fd77::1]:3478",
])  # fmt: skip
def test_turn_urls_accepted(url):
    assert check_turn_url(url) == url


@pytest.mark.parametrize("url", [
    "stun:stun.example.org",
    "http://turn.example.org",
    "turn://turn.example.org",
    "turn:",
    "turn:host:99999",
    "turn:host:3478?transport=sctp",
    "turn:host?transport=tcp&x=1",
    "turn:user@host",
    "turns:host name",
])  # fmt: skip
def test_other_urls_are_a_clear_error(url):
    with pytest.raises(ValueError, match="is not a TURN URL: turn:HOST"):
        check_turn_url(url)


# ---- the settings ----------------------------------------------------------------


def _env(tmp_path, **extra: str) -> dict[str, str]:
    return {"MEDIASERVER_DB": str(tmp_path / "db"),
            "MEDIASERVER_DATA_KEY_FILE": str(tmp_path / "key"), **extra}  # fmt: skip


def test_repeatable_urls_secret_and_ttl(tmp_path):
    config = load_config(
        ["--turn-url", "turn:10.77.0.1:3478?transport=tcp", "--turn-url",
         "turns:10.77.0.1:5349", "--turn-secret", "s3cret", "--turn-ttl", "120"],
        _env(tmp_path),
    )  # fmt: skip
    turn = config.turn_credentials()
    assert turn == TurnCredentials(
        ("turn:10.77.0.1:3478?transport=tcp", "turns:10.77.0.1:5349"), b"s3cret", 120
    )


def test_no_turn_by_default_and_the_ttl_defaults_to_an_hour(tmp_path):
    config = load_config([], _env(tmp_path))
    assert config.turn_credentials() is None
    assert config.turn_ttl == 3600


def test_the_secret_comes_from_the_environment_or_a_private_file(tmp_path):
    env = _env(tmp_path, MEDIASERVER_TURN_URL="turn:h", MEDIASERVER_TURN_SECRET="from-env")
    turn = load_config([], env).turn_credentials()
    assert turn is not None and turn.secret == b"from-env" and turn.urls == ("turn:h",)
    path = tmp_path / "turn-secret"
    path.write_bytes(b"from-file\n")
    path.chmod(0o600)
    turn = load_config(["--turn-url", "turn:h", "--turn-secret-file", str(path)],
                       _env(tmp_path)).turn_credentials()  # fmt: skip
    assert turn is not None and turn.secret == b"from-file"


@pytest.mark.parametrize("args, message", [
    (["--turn-url", "turn:h"], "--turn-url needs --turn-secret-file"),
    (["--turn-url", "stun:h", "--turn-secret", "s"], "'stun:h' is not a TURN URL"),
    (["--turn-url", "turn:h", "--turn-secret", "s", "--turn-ttl", "10"],
     "--turn-ttl must be 60..604800 seconds"),
    (["--turn-url", "turn:h", "--turn-secret", "s", "--turn-secret-file", "/nonexistent"],
     "--turn-secret or --turn-secret-file, not both"),
    (["--turn-url", "turn:h", "--turn-secret-file", "/nonexistent/turn"],
     "--turn-secret-file '/nonexistent/turn': No such file"),
])  # fmt: skip
def test_bad_turn_settings_are_one_clear_error(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        load_config(args, _env(tmp_path))


def test_a_secret_file_open_to_others_is_refused(tmp_path):
    path = tmp_path / "turn-secret"
    path.write_bytes(b"s3cret")
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="--turn-secret-file .* must not be readable"):
        load_config(["--turn-url", "turn:h", "--turn-secret-file", str(path)], _env(tmp_path))
