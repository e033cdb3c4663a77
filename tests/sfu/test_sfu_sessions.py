"""Session lifecycle through the Sfu API, without WebRTC peers."""

import asyncio
from pathlib import Path

import pytest

from mediaserver.sfu.server import SessionClosed, Sfu, SfuConfig, SfuError
from tests.support import DATA



@pytest.fixture
async def sfu():
    server = Sfu(SfuConfig(host="127.0.0.1", announced_ip="127.0.0.1", consent_timeout=0.5))
    await server.start()
    yield server
    await server.close()


async def test_answer_carries_the_server_candidate_and_lite(sfu):
    session = sfu.create_session((DATA / "offer_chromium.sdp").read_text())
    assert "a=ice-lite" in session.answer
    assert f"127.0.0.1 {sfu.udp_port} typ host" in session.answer
    assert "a=setup:passive" in session.answer
    assert set(session.tracks) == {"audio", "video"}
    assert all(t.out_stream is not None for t in session.tracks.values())


@pytest.mark.parametrize("offer, message", [
    ("", "bad offer"),
    ("v=0\r\n", "bad offer"),
    ("garbage" * 100, "bad offer"),
])
async def test_bad_offers_raise_sfu_error(sfu, offer, message):
    with pytest.raises(SfuError, match=message):
        sfu.create_session(offer)
    assert sfu.sessions == {}


async def test_unknown_session_ids(sfu):
    session = sfu.create_session((DATA / "offer_aiortc.sdp").read_text())
    with pytest.raises(SfuError, match="no session"):
        sfu.connect(session.id, "nope")
    sfu.disconnect(session.id, "nope")  # a no-op: the other side may be gone already
    sfu.close_session("nope")


async def test_sessions_never_connected_are_reaped_by_consent(sfu):
    events = []
    sfu.subscribe(events.append)
    sessions = [sfu.create_session((DATA / "offer_aiortc.sdp").read_text()) for _ in range(20)]
    for _ in range(30):
        if len(events) == 20:
            break
        await asyncio.sleep(0.1)
    assert {e.session_id for e in events} == {s.id for s in sessions}
    assert all(isinstance(e, SessionClosed) and e.reason == "consent expired" for e in events)
    assert sfu.sessions == {}
    # their router slots were freed
    assert sfu._router.add_peer() == 0


async def test_close_session_frees_routes(sfu):
    offer = (DATA / "offer_aiortc.sdp").read_text()
    a, b = sfu.create_session(offer), sfu.create_session(offer)
    sfu.connect(a.id, b.id)
    sfu.connect(b.id, a.id)
    assert a.subscribers == {b.id} and b.publishers == {a.id}
    sfu.close_session(a.id)
    assert b.publishers == set() and b.subscribers == set()


async def test_garbage_on_the_media_port_is_counted_not_fatal(sfu):
    import os
    import socket

    session = sfu.create_session((DATA / "offer_aiortc.sdp").read_text())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        rng = __import__("random").Random(5)
        for i in range(300):
            first = rng.choice([0, 1, 3, 20, 22, 63, 64, 128, 150, 200, 255])
            payload = bytes([first]) + os.urandom(rng.randrange(0, 300))
            sock.sendto(payload, ("127.0.0.1", sfu.udp_port))
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
    finally:
        sock.close()
    counters = sfu.counters()
    assert counters["rx_datagrams"] == 300
    assert counters["forwarded_packets"] == 0
    assert sum(counters["drops"].values()) > 0
    assert session.state.value == "new"  # nothing bound: no valid STUN was sent
    assert session.address is None
