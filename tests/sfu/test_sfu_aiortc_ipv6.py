"""Two aiortc peers through the SFU over IPv6 only: the server announces just its
IPv6 address (fd77::1 on the namespace's veth pair), on its dual-stack socket."""

import pytest

from mediaserver.netns import SERVER_IP, SERVER_IP6
from mediaserver.sfu.server import Sfu, SfuConfig
from tests.support.peers import AiortcPeer, connect_pair, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.both_loops]


def selected_pair(peer: AiortcPeer) -> tuple[tuple[str, int], tuple[str, int]]:
    """(local, remote) address of the pair aiortc's ICE nominated (BUNDLE: one)."""
    transport = peer.pc.getTransceivers()[0].receiver.transport.transport
    pair = transport._connection._nominated[1]
    return pair.local_addr, pair.remote_addr


async def test_an_aiortc_pair_over_ipv6_only_gets_video_and_audio_both_ways():
    sfu = Sfu(SfuConfig(announced_ip=SERVER_IP6))
    await sfu.start()
    a, b = AiortcPeer(320, 240), AiortcPeer(640, 480)
    try:
        sa, sb = await connect_pair(sfu, a, b)
        candidates = [x for x in sa.answer.splitlines() if x.startswith("a=candidate")]
        assert candidates and all(
            x == f"a=candidate:1 1 udp 2130706431 fd77::1 {sfu.udp_port} typ host"
            for x in candidates
        )
        assert "c=IN IP6 fd77::1" in sa.answer
        ok = await wait_for(
            lambda: (
                min(a.frames("video"), b.frames("video")) >= 30
                and min(a.frames("audio"), b.frames("audio")) >= 50
            ),
            timeout=30,
        )
        assert ok, (a.frames("video"), b.frames("video"), sfu.counters())
        assert b.received["video"].sizes == {(320, 240)}
        assert a.received["video"].sizes == {(640, 480)}
        for peer, session in ((a, sa), (b, sb)):
            local, remote = selected_pair(peer)
            assert remote == (SERVER_IP6, sfu.udp_port)
            assert ":" in local[0] and local[0].startswith("fd77:")
            # the server's side: the session's media address is that IPv6 one
            assert session.address == local
        counters = sfu.counters()
        decoded = sum(p.frames(k) for p in (a, b) for k in ("audio", "video"))
        assert counters["forwarded_packets"] >= decoded
        assert counters["drops"]["srtp_auth"] == 0
        assert counters["drops"]["unknown_address"] == 0
    finally:
        await a.close()
        await b.close()
        await sfu.close()


async def test_with_a_candidate_per_family_the_checked_pairs_of_both_families_settle_on_one():
    # aiortc checks every pair it can form: STUN from both families reaches one session,
    # and media flows on the pair it nominates (whichever family that is)
    sfu = Sfu(SfuConfig(announced_ip=f"{SERVER_IP},{SERVER_IP6}"))
    await sfu.start()
    a, b = AiortcPeer(audio=False), AiortcPeer(audio=False)
    try:
        sa, sb = await connect_pair(sfu, a, b)
        assert f"a=candidate:1 1 udp 2130706431 {SERVER_IP} " in sa.answer
        assert f"a=candidate:2 1 udp 2130706175 {SERVER_IP6} " in sa.answer
        ok = await wait_for(lambda: min(a.frames("video"), b.frames("video")) >= 20, timeout=30)
        assert ok, (a.frames("video"), b.frames("video"), sfu.counters())
        for peer, session in ((a, sa), (b, sb)):
            local, remote = selected_pair(peer)
            assert remote in ((SERVER_IP, sfu.udp_port), (SERVER_IP6, sfu.udp_port))
            assert session.address == local
            assert (":" in local[0]) == (":" in remote[0])
        assert sfu.counters()["drops"]["srtp_auth"] == 0
    finally:
        await a.close()
        await b.close()
        await sfu.close()
