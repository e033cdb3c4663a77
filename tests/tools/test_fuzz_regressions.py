"""Every input the fuzzers (fuzz/) found a bug with, kept as a test.

tests/fuzz/crashes/<target>-<name> are the inputs as found; each is replayed through its
target (so a fix that breaks the target's checks shows here too), and each bug has
a test of the behaviour it should have, in terms of the server's own API.
"""

from __future__ import annotations

import importlib
import os
import re

import msgpack
import pytest

from mediaserver.sfu.server import Sfu, SfuConfig, SfuError
from mediaserver.signalling import protocol
from tests.fuzz.run import CRASHES, ROOT

DATA = os.path.join(ROOT, "tests", "data")


def _crash_files() -> list[str]:
    return sorted(os.listdir(CRASHES)) if os.path.isdir(CRASHES) else []


@pytest.mark.parametrize("name", _crash_files())
def test_crash_input_replays_clean(name):
    target = name.split("-", 1)[0]
    module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
    module.load()
    with open(os.path.join(CRASHES, name), "rb") as f:
        module.test_one_input(f.read())


def _offer(name: str = "offer_aiortc.sdp") -> str:
    with open(os.path.join(DATA, name)) as f:
        return f.read()


@pytest.fixture
async def sfu():
    server = Sfu(SfuConfig(host="127.0.0.1", announced_ip="127.0.0.1", max_peers=2))
    await server.start()
    yield server
    await server.close()


async def test_sdp_fingerprint_of_wrong_length_is_refused(sfu):
    """tests/fuzz/crashes/sdp-fingerprint-wrong-length: parse_offer took a sha-256
    fingerprint of 31 bytes; create_session then raised DtlsError (not SfuError,
    which the hub catches) from DtlsEndpoint(), after router.add_peer(): the peer
    slot leaked, so max_peers such offers made the server full."""
    offer = re.sub(
        r"(a=fingerprint:sha-256 (?:[0-9A-F]{2}:){30}[0-9A-F]{2}):[0-9A-F]{2}", r"\1", _offer()
    )
    assert offer != _offer()
    for _ in range(3):  # more than max_peers
        with pytest.raises(SfuError):
            sfu.create_session(offer)
    sfu.create_session(_offer())  # the server is not full


async def test_sdp_answer_with_lone_surrogate(sfu):
    """tests/fuzz/crashes/sdp-surrogate-in-rejected-m-line: an m-line the answer rejects
    is echoed into the answer (sdp.py, the rejected section's m= line), lone
    surrogates included (a JSON offer may carry "\\udcd2"): the answer then cannot
    be encoded in the signalling frame. The offer must be refused, or the answer
    must encode."""
    offer = _offer().replace("m=video 9 UDP/TLS/RTP/SAVPF", "m=video 9 UDP/TLS/\udcd2TP/SAVPF")
    try:
        session = sfu.create_session(offer)
    except SfuError:
        return
    session.answer.encode("utf-8")
    msgpack.packb(protocol.message("answer", sdp=session.answer))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize(
    "message",
    [
        '{"v":1,"type":"chat","text":"\\ud800"}',
        '{"v":1,"type":"hello","age_confirmed":true,"language":"e\\udfffn"}',
        '{"v":1,"type":"hello","age_confirmed":true,"interests":["\\ud83d"]}',
    ],
    ids=["chat", "language", "interests"],
)
def test_signalling_refuses_lone_surrogates(message, binary):
    """tests/fuzz/crashes/signalling-chat-lone-surrogate: validate() accepts strings with
    lone surrogates (JSON "\\ud800" escapes). A chat is relayed to the partner,
    whose frame then cannot be encoded: with JSON the partner's writer dies on
    send_text, with msgpack packb raises inside the sender's hub.receive. Such a
    message must be refused (bad_field), or everything in it must re-encode."""
    try:
        clean = protocol.validate(protocol.decode(message))
    except protocol.ProtocolError as exc:
        assert exc.code == "bad_field"
        return
    out = protocol.encode(protocol.message("echo", **clean), binary)
    if isinstance(out, str):
        out.encode("utf-8")
