"""The Sfu's slow path with no socket: peers wired through Router.feed and the
Sfu's sans-I/O entry points on virtual time (tests/support/socketless_sfu.py).

NACK answers and relays, PLI/FIR limits, REMB, the 1 s reports, consent and
handshake timeouts: each as a peer sees it, in decrypted SRTCP.
"""

from __future__ import annotations

from mediaserver.sfu import rtcp
from mediaserver.sfu.server import SessionClosed, SessionState
from tests.support.socketless_sfu import VIDEO_SSRC, SocketlessPeer, call_with


def _out_video_ssrc(peer) -> int:
    ssrc = peer.session.tracks["video"].out_ssrc
    assert ssrc is not None
    return ssrc


def _of(kind, feedback):
    return [(at, item) for at, item in feedback if isinstance(item, kind)]


def test_a_nack_for_a_cached_packet_is_answered_by_the_server_not_the_publisher():
    call, (pub, sub) = call_with(2)
    call.sfu.connect(pub.id, sub.id)
    pub.send_rtp(100)
    [(_, forwarded)] = sub.receive()[0]
    pub.receive()
    before = call.sfu.counters()["retransmitted"]

    sub.send_rtcp(rtcp.build_nack(sub.rtcp_ssrc, _out_video_ssrc(sub), [forwarded.sequence_number]))

    assert call.sfu.counters()["retransmitted"] == before + 1
    assert call.sfu.counters()["nack_received"] == 1
    assert _of(rtcp.Nack, pub.receive()[1]) == []  # nothing asked of the publisher


def test_a_nack_for_a_packet_that_never_arrived_is_relayed_to_the_publisher():
    call, (pub, sub) = call_with(2)
    call.sfu.connect(pub.id, sub.id)
    pub.send_rtp(100)
    pub.send_rtp(102)  # 101 was lost on the way in
    first, second = (packet for _, packet in sub.receive()[0])
    assert (second.sequence_number - first.sequence_number) & 0xFFFF == 2
    pub.receive()
    before = call.sfu.counters()["retransmitted"]

    missing = (first.sequence_number + 1) & 0xFFFF
    sub.send_rtcp(rtcp.build_nack(sub.rtcp_ssrc, _out_video_ssrc(sub), [missing]))

    [(_, nack)] = _of(rtcp.Nack, pub.receive()[1])
    assert nack.media_ssrc == VIDEO_SSRC and nack.lost == [101]
    assert nack.sender_ssrc == pub.session.rtcp_ssrc
    assert call.sfu.counters()["retransmitted"] == before
    assert call.sfu.counters()["nack_relayed"] == 1


def test_pli_and_fir_reach_the_publisher_at_most_once_per_half_second():
    call, (pub, sub) = call_with(2)
    call.sfu.connect(pub.id, sub.id)  # asks the publisher for a keyframe itself
    pub.send_rtp(100)
    call.advance(1.0)
    pub.send_rtp(101)
    pub.receive()
    start = call.now

    sub.send_rtcp(rtcp.build_pli(sub.rtcp_ssrc, _out_video_ssrc(sub)))
    call.advance(0.1)
    sub.send_rtcp(rtcp.build_pli(sub.rtcp_ssrc, _out_video_ssrc(sub)))
    call.advance(0.1)
    sub.send_rtcp(rtcp.build_fir(sub.rtcp_ssrc, _out_video_ssrc(sub), 1))
    call.advance(0.25)
    early = _of(rtcp.Pli, pub.receive()[1])
    assert [at for at, _ in early] == [start]  # the first at once, the others held back
    assert early[0][1].media_ssrc == VIDEO_SSRC

    # the held-back request goes out once the half second is over, once
    pub.send_rtp(102)
    call.advance(1.0)
    late = _of(rtcp.Pli, pub.receive()[1])
    assert len(late) == 1
    assert start + 0.5 <= late[0][0] <= start + 0.5 + 0.1 + 1e-9
    assert call.sfu.counters()["pli_received"] == 3
    assert call.sfu.counters()["pli_sent"] == 3  # with connect's own


def test_a_subscriber_still_connecting_gets_its_keyframe_request_when_it_connects():
    # a TURN-relayed subscriber is often matched before its DTLS is done: a keyframe
    # asked for at connect() would be lost on it, and the limiter would hold its own
    # PLI back half a second; so the request waits for its handshake
    call, (pub,) = call_with(1)
    sub = SocketlessPeer(call, ("127.0.0.1", 40009))
    pub.send_rtp(100)
    pub.receive()
    call.sfu.connect(pub.id, sub.id)
    call.advance(0.2)
    assert _of(rtcp.Pli, pub.receive()[1]) == []
    assert call.sfu.counters().get("pli_sent", 0) == 0

    sub.connect()
    connected_at = call.now
    call.advance(0.01)
    [(at, pli)] = _of(rtcp.Pli, pub.receive()[1])
    assert at == connected_at and pli.media_ssrc == VIDEO_SSRC


def test_remb_to_the_publisher_is_its_subscribers_minimum_within_the_ceiling():
    call, (pub, slow, fast) = call_with(3, max_bitrate=2_500_000)
    for sub in (slow, fast):
        call.sfu.connect(pub.id, sub.id)
    seqs = iter(range(100, 200))
    pub.send_rtp(next(seqs))

    def remb_after(slow_bitrate: int, fast_bitrate: int) -> rtcp.Remb:
        for sub, bitrate in ((slow, slow_bitrate), (fast, fast_bitrate)):
            remb = (bitrate, [_out_video_ssrc(sub)])
            sub.send_rtcp(rtcp.build_receiver_report(sub.rtcp_ssrc, [], remb=remb))
        pub.receive()
        call.advance(1.0)
        pub.send_rtp(next(seqs))
        [(_, remb)] = _of(rtcp.Remb, pub.receive()[1])
        return remb

    remb = remb_after(300_000, 800_000)
    assert remb.bitrate == 300_000 and remb.ssrcs == [VIDEO_SSRC]
    assert remb_after(5_000_000, 9_000_000).bitrate == 2_500_000  # capped


def test_receiver_and_sender_reports_every_second():
    call, (pub, sub) = call_with(2)
    call.sfu.connect(pub.id, sub.id)
    pub.receive()
    sub.receive()
    seq = 100
    for _ in range(35):  # 3.5 s of video at 10 packets a second
        pub.send_rtp(seq)
        seq += 1
        call.advance(0.1)
    rrs = _of(rtcp.ReceiverReport, pub.receive()[1])
    srs = [(at, sr) for at, sr in _of(rtcp.SenderReport, sub.receive()[1])]
    for reports in (rrs, srs):
        times = [at for at, _ in reports]
        assert len(times) == 4, times
        assert all(1.0 - 1e-9 <= b - a <= 1.1 + 1e-9 for a, b in zip(times, times[1:]))
    assert all(rr.ssrc == pub.session.rtcp_ssrc for _, rr in rrs)
    assert {block.ssrc for _, rr in rrs for block in rr.reports} == {VIDEO_SSRC}
    assert all(sr.ssrc == _out_video_ssrc(sub) for _, sr in srs)
    assert srs[-1][1].packet_count > srs[0][1].packet_count > 0


def test_consent_expires_30_s_after_the_last_valid_stun_even_with_media_flowing():
    call, (peer,) = call_with(1)  # consent_timeout defaults to 30 s
    last_stun = call.now
    seq = 100
    while call.now + 0.5 < last_stun + 30.0:
        peer.send_rtp(seq)  # media keeps the session alive past media_timeout
        seq += 1
        call.advance(0.5)
    assert call.now >= last_stun + 29.5
    assert peer.session.state is SessionState.CONNECTED
    peer.send_rtp(seq)
    call.advance(0.6)
    assert peer.session.state is SessionState.CLOSED
    assert call.events[-1] == SessionClosed(peer.id, "consent expired")
    assert call.sfu.sessions == {}


def test_a_session_that_never_connects_is_reaped_at_its_handshake_deadline():
    call, _ = call_with(0, handshake_timeout=30.0)
    peer = SocketlessPeer(call, ("127.0.0.1", 40009))
    created = call.now
    for _ in range(6):
        peer.send_stun(nominate=True)  # consent stays fresh: only the deadline can close it
        call.advance(4.9)
    call.advance(29.9 - (call.now - created))
    assert peer.session.state is SessionState.CHECKING
    call.advance(0.3)
    assert peer.session.state is SessionState.CLOSED
    assert call.events == [SessionClosed(peer.id, "handshake timeout")]
    assert call.sfu.counters()["sessions_closed:handshake timeout"] == 1
