"""Sealed node messages (mediaserver/node/auth.py), sans-I/O: bytes and times in,
an opened message or the reason it was dropped out. And the --cluster-secret
settings that feed it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import msgpack
import pytest

from mediaserver.cli import load_config
from mediaserver.node.auth import (
    MAGIC,
    PURPOSE_BUS,
    PURPOSE_MATCH,
    PURPOSE_NODE,
    TAG_BYTES,
    WINDOW,
    Rejected,
    Sealer,
)

SECRET = b"correct horse battery staple"
NOW = 1_800_000_000.0
MESSAGE = msgpack.packb({"t": "peer", "to": "nb/x", "by": "na/y", "ev": "chat", "text": "hi"})


def sealed(now: float = NOW, sender: str = "na", recipient: str = "nb") -> bytes:
    return Sealer(SECRET).seal(PURPOSE_BUS, sender, recipient, MESSAGE, now)


def reason(data: bytes, now: float = NOW, sealer: Sealer | None = None, **kw: Any) -> str:
    with pytest.raises(Rejected) as info:
        (sealer or Sealer(SECRET)).open(data, PURPOSE_BUS, now, recipient="nb", **kw)
    return info.value.reason


def test_a_sealed_message_opens_with_its_sender_and_payload():
    opened = Sealer(SECRET).open(sealed(), PURPOSE_BUS, NOW + 1, recipient="nb")
    assert (opened.sender, opened.recipient, opened.sent_at) == ("na", "nb", NOW)
    assert opened.payload == MESSAGE


@pytest.mark.parametrize("index", [0, 3, len(MAGIC), len(MAGIC) + TAG_BYTES - 1,
                                   len(MAGIC) + TAG_BYTES, -1])  # fmt: skip
def test_a_tampered_byte_anywhere_is_dropped(index):
    data = bytearray(sealed())
    data[index] ^= 0x01
    assert reason(bytes(data)) in ("unsigned", "bad_signature")
    if index >= len(MAGIC):
        assert reason(bytes(data)) == "bad_signature"


def test_a_changed_sender_is_dropped():
    """The sender id is under the tag: a message cannot be passed off as another node's."""
    data = sealed()
    body = msgpack.unpackb(data[len(MAGIC) + TAG_BYTES :])
    body[1] = "evil"
    forged = data[: len(MAGIC) + TAG_BYTES] + msgpack.packb(body)
    assert reason(forged) == "bad_signature"


def test_a_wrong_secret_is_dropped():
    other = Sealer(b"another secret, just as long").seal(PURPOSE_BUS, "na", "nb", MESSAGE, NOW)
    assert reason(other) == "bad_signature"


def test_a_missing_signature_is_dropped():
    assert reason(MESSAGE) == "unsigned"  # what a node sent before messages were sealed
    assert reason(b"") == "unsigned"
    assert reason(MAGIC + b"\x00" * TAG_BYTES) == "unsigned"


def test_an_old_message_is_dropped_after_the_window():
    assert reason(sealed(NOW - WINDOW - 1)) == "expired"
    assert reason(sealed(NOW + WINDOW + 1)) == "expired"  # from a clock far ahead
    Sealer(SECRET).open(sealed(NOW - WINDOW + 1), PURPOSE_BUS, NOW, recipient="nb")


def test_a_message_replayed_within_the_window_is_dropped():
    s = Sealer(SECRET)
    data = sealed()
    s.open(data, PURPOSE_BUS, NOW, recipient="nb")
    assert reason(data, NOW + 1, sealer=s) == "replayed"
    # a registry entry is read again and again: once=False
    s.open(data, PURPOSE_BUS, NOW + 1, recipient="nb", once=False)


def test_a_message_for_another_node_or_purpose_is_dropped():
    assert reason(sealed(recipient="nc")) == "misdirected"
    entry = Sealer(SECRET).seal(PURPOSE_NODE, "na", "nb", MESSAGE, NOW)
    assert reason(entry) == "misdirected"


def test_max_age_narrows_the_window():
    with pytest.raises(Rejected, match="expired"):
        Sealer(SECRET).open(sealed(NOW - 11), PURPOSE_BUS, NOW, max_age=10.0)


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Sealer(b"short")


# ---- the settings ----------------------------------------------------------------


def _env(tmp_path, **extra: str) -> dict[str, str]:
    return {"MEDIASERVER_DB": str(tmp_path / "db"),
            "MEDIASERVER_DATA_KEY_FILE": str(tmp_path / "key"), **extra}  # fmt: skip


def test_redis_without_a_cluster_secret_refuses_to_start_with_one_line(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mediaserver.cli", "--redis-url", "redis://127.0.0.1:1/0",
         "--host", "127.0.0.1", "--port", "0", "--udp-port", "0", "--workers", "1"],
        capture_output=True, text=True, cwd=tmp_path, env={**clean, **_env(tmp_path)},
        timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "--redis-url needs --cluster-secret-file" in proc.stderr


def test_the_secret_comes_from_the_environment_or_a_private_file(tmp_path):
    config = load_config(
        ["--redis-url", "redis://x"], _env(tmp_path, MEDIASERVER_CLUSTER_SECRET="s" * 20)
    )
    assert config.cluster_key() == b"s" * 20
    path = tmp_path / "secret"
    path.write_bytes(b"0123456789abcdef0123\n")
    path.chmod(0o600)
    config = load_config(
        ["--redis-url", "redis://x", "--cluster-secret-file", str(path)], _env(tmp_path)
    )
    assert config.cluster_key() == b"0123456789abcdef0123"


@pytest.mark.parametrize("content, mode, message", [
    (b"0123456789abcdef", 0o644, "must not be readable or writable by group or others"),
    (b"short\n", 0o600, "at least 16 bytes"),
    (None, 0o600, "No such file"),
])  # fmt: skip
def test_a_bad_secret_file_is_one_clear_error(tmp_path, content, mode, message):
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
        path.chmod(mode)
    with pytest.raises(ValueError, match=message):
        load_config(["--redis-url", "redis://x", "--cluster-secret-file", str(path)],
                    _env(tmp_path))  # fmt: skip


def test_a_secret_twice_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        load_config(
            ["--cluster-secret", "s" * 20, "--cluster-secret-file", str(tmp_path / "f")],
            _env(tmp_path),
        )


def test_a_broadcast_as_text_opens_and_plain_text_is_unsigned():
    s = Sealer(SECRET)
    text = s.seal_text(PURPOSE_MATCH, "na", '[["na/x", "nb/y", []]]', NOW)
    opened = Sealer(SECRET).open_text(text, PURPOSE_MATCH, NOW)
    assert (opened.sender, opened.recipient, opened.payload) == ("na", "*", b'[["na/x", "nb/y", []]]')
    assert reason_text('na\n[["na/x", "nb/y", []]]') == "unsigned"  # the script's own format
    assert reason_text(text[:-4] + "AAAA") == "bad_signature"


def reason_text(data: str) -> str:
    with pytest.raises(Rejected) as info:
        Sealer(SECRET).open_text(data, PURPOSE_MATCH, NOW)
    return info.value.reason
