"""Two aiortc peers through the SFU: real ICE, DTLS, SRTP, VP8/Opus, both ways."""

import pytest

from mediaserver.netns import SERVER_IP
from mediaserver.sfu.server import SessionConnected, Sfu, SfuConfig
from tests.support.peers import AiortcPeer, connect_pair, wait_for

# the server runs on uvloop in production; these run on it and on the stdlib loop
pytestmark = [pytest.mark.netns, pytest.mark.both_loops]


@pytest.fixture
async def sfu():
    server = Sfu(SfuConfig(announced_ip=SERVER_IP))
    await server.start()
    yield server
    await server.close()


async def test_two_aiortc_peers_exchange_video_and_audio(sfu):
    events = []
    sfu.subscribe(events.append)
    a, b = AiortcPeer(320, 240), AiortcPeer(640, 480)
    try:
        sa, sb = await connect_pair(sfu, a, b)
        ok = await wait_for(
            lambda: min(a.frames("video"), b.frames("video")) >= 30
            and min(a.frames("audio"), b.frames("audio")) >= 50,
            timeout=30,
        )
        assert ok, (a.frames("video"), b.frames("video"), a.frames("audio"), b.frames("audio"), sfu.counters())
        # each side decodes the other's resolution: forwarded, not transcoded
        assert b.received["video"].sizes == {(320, 240)}
        assert a.received["video"].sizes == {(640, 480)}
        assert {e.session_id for e in events if isinstance(e, SessionConnected)} == {sa.id, sb.id}
        counters = sfu.counters()
        # every decoded frame came through the router (a frame is >= 1 packet)
        decoded = sum(p.frames(k) for p in (a, b) for k in ("audio", "video"))
        assert counters["forwarded_packets"] >= decoded
        assert counters["drops"]["srtp_auth"] == 0
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("leg", ["outbound", "inbound"])
async def test_video_survives_5_percent_loss_with_nacks(sfu, leg):
    """5% loss on one leg. Lost on the way out to the subscriber: its NACKs are
    answered from the packet cache. Lost on the way in from the publisher: the
    cache misses, and the NACK is relayed to the publisher, who resends."""
    sfu._router.set_loss(**{leg: 0.05}, seed=7)
    a, b = AiortcPeer(640, 480, audio=False), AiortcPeer(320, 240, audio=False)
    try:
        await connect_pair(sfu, a, b)
        assert await wait_for(lambda: b.frames("video") >= 60, timeout=40), sfu.counters()
        counters = sfu.counters()
        assert counters["drops"]["test_loss"] > 0
        assert counters["nack_received"] > 0
        if leg == "outbound":
            assert counters["retransmitted"] > 0
        else:
            assert counters["nack_relayed"] > 0
    finally:
        await a.close()
        await b.close()


async def test_h264_is_forwarded(sfu):
    a = AiortcPeer(320, 240, audio=False, video_codec="H264")
    b = AiortcPeer(320, 240, audio=False, video_codec="H264")
    try:
        sa, sb = await connect_pair(sfu, a, b)
        assert [c.name for c in sa.tracks["video"].codecs] == ["H264"]
        assert await wait_for(lambda: min(a.frames("video"), b.frames("video")) >= 20, timeout=30)
        assert b.received["video"].sizes == {(320, 240)}
    finally:
        await a.close()
        await b.close()


async def test_dead_media_closes_the_session_within_the_timeout():
    from mediaserver.sfu.server import SessionClosed

    server = Sfu(SfuConfig(announced_ip=SERVER_IP, media_timeout=1.0))
    await server.start()
    events = []
    server.subscribe(events.append)
    a, b = AiortcPeer(audio=False), AiortcPeer(audio=False)
    try:
        sa, sb = await connect_pair(server, a, b)
        assert await wait_for(lambda: b.frames("video") >= 5, timeout=20)
        server._router.set_loss(inbound=1.0)  # both peers go silent, as a dead network would
        assert await wait_for(lambda: len(server.sessions) == 0, timeout=3)
        closed = {e.session_id: e.reason for e in events if isinstance(e, SessionClosed)}
        assert closed == {sa.id: "media timeout", sb.id: "media timeout"}
    finally:
        await a.close()
        await b.close()
        await server.close()


class FlatGrey:
    """A real (if plain) effect: paints the picture mid-grey, keeps size and time."""

    def apply(self, frame):
        import numpy as np

        for plane in frame.planes:
            view = np.frombuffer(plane, np.uint8)
            view[:] = 128
        return frame


async def test_effect_pipeline_processes_the_publishers_video_and_turns_off(sfu):
    import numpy as np

    a, b = AiortcPeer(320, 240, audio=False), AiortcPeer(320, 240, audio=False)
    seen = []
    try:
        sa, sb = await connect_pair(sfu, a, b)
        assert await wait_for(lambda: b.frames("video") >= 10, timeout=20)

        def luma_spread():
            frame = b.received["video"].last
            y = frame.to_ndarray(format="gray")
            return float(np.std(y))

        assert luma_spread() > 20  # the moving test pattern
        sfu.set_effect(sa.id, FlatGrey())
        stream = sfu.effects[sa.id]
        assert await wait_for(lambda: luma_spread() < 3, timeout=15), str((
            luma_spread(), stream.frames_in, stream.frames_out, stream.frames_dropped, stream.errors,
            b.frames("video"), dict(sfu.stats)))
        stream = sfu.effects[sa.id]
        assert stream.frames_out > 0
        frames_before = b.frames("video")
        assert await wait_for(lambda: b.frames("video") > frames_before + 20, timeout=15)
        assert luma_spread() < 3  # still processed
        seen.append(sfu.counters()["drops"])
        sfu.set_effect(sa.id, None)
        assert await wait_for(lambda: luma_spread() > 20, timeout=15)  # back to plain forwarding
        assert sa.id not in sfu.effects
    finally:
        await a.close()
        await b.close()
