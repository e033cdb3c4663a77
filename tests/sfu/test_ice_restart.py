"""ICE restart on a live session (mediaserver/sfu/restart.py, Sfu.restart_ice), with
no socket: peers wired through Router.feed on virtual time
(tests/support/socketless_sfu.py). A peer that moved answers a second offer with new
ICE credentials; the session, its DTLS association and SRTP keys stay, and media
moves only once the new address answers the server's check."""

from __future__ import annotations

import re

import pytest

from mediaserver.sfu import rtcp
from mediaserver.sfu.server import RestartRejected, SessionClosed, SessionState, SfuError
from tests.support.socketless_sfu import SocketlessPeer, call_with

MOVED = ("127.0.0.1", 49999)


def _field(sdp: str, pattern: str) -> list[str]:
    return re.findall(pattern, sdp, re.MULTILINE)


def _moved_call() -> tuple:
    """A connected pair, A's media forwarded to B and back."""
    call, (a, b) = call_with(2)
    call.sfu.connect(a.id, b.id)
    call.sfu.connect(b.id, a.id)
    a.send_rtp(1)
    b.receive()
    a.take()
    return call, a, b


def test_a_restart_offer_is_answered_on_the_same_session_with_new_credentials() -> None:
    call, a, _ = _moved_call()
    first = a.session.answer
    old_ufrag, old_pwd = a.server_ufrag, a.server_pwd

    answer = a.restart_ice()

    assert call.sfu.sessions[a.id] is a.session and a.session.state is SessionState.CONNECTED
    assert (a.server_ufrag, a.server_pwd) != (old_ufrag, old_pwd)
    # the same certificate, m-sections, SSRCs and CNAME; a higher o= version
    for pattern in (r"^a=fingerprint:.*$", r"^m=.*$", r"^a=ssrc:.*$", r"^a=mid:.*$"):
        assert _field(answer, pattern) == _field(first, pattern), pattern
    [(session_id, version)] = _field(answer, r"^o=- (\d+) (\d+) ")
    assert [(session_id, str(int(version) - 1))] == _field(first, r"^o=- (\d+) (\d+) ")
    assert a.session.answer == answer
    assert call.sfu.counters()["ice_restarts"] == 1


def test_after_a_restart_media_moves_to_the_new_address_once_it_answers_a_check() -> None:
    call, a, b = _moved_call()
    call.advance(1.0)  # past the keyframe limit of the pair's first requests
    a.receive(), b.receive()
    a.restart_ice()
    a.addr = MOVED  # the peer's new network

    a.send_stun()  # new credentials, nominated, from a new address: checked first
    assert a.session.address != MOVED
    assert a.answer_checks() == 1  # the server's check, answered
    assert a.session.address == MOVED
    assert call.sfu.router.last_rx(a.session.peer) is not None

    # the same SRTP keys both ways: no new DTLS handshake
    a.send_rtp(2)
    [(_, packet)], b_feedback = b.receive()
    assert packet.payload[2:] == bytes(100)
    b.send_rtp(7)
    media, feedback = a.receive()
    assert len(media) == 1
    # and each side is asked for a keyframe, since what went to the old address was lost
    assert any(isinstance(item, rtcp.Pli) for _, item in feedback)
    assert any(isinstance(item, rtcp.Pli) for _, item in b_feedback)
    counters = call.sfu.counters()
    assert counters["ice_restarts_completed"] == 1
    assert counters["sessions_connected"] == 2  # no second handshake


def test_old_credentials_are_refused_after_a_restart() -> None:
    call, a, _ = _moved_call()
    old_ufrag, old_pwd = a.server_ufrag, a.server_pwd
    a.restart_ice()
    a.server_ufrag, a.server_pwd, a.ufrag = old_ufrag, old_pwd, "gwse"
    before = call.sfu.counters()["drops"].get("stun_unknown_user", 0)
    a.send_stun()
    assert call.sfu.counters()["drops"]["stun_unknown_user"] == before + 1
    assert [d for _, d in a.take() if d[0] < 2] == []


def test_a_restart_on_the_same_address_moves_nothing_and_needs_no_check() -> None:
    _, a, _ = _moved_call()
    a.restart_ice()
    a.send_stun()
    [(_, reply)] = a.take()
    assert reply[0:2] == b"\x01\x01"  # a success response at once
    assert a.session.address == ("127.0.0.1", 40001)


def test_a_restart_gets_the_whole_media_timeout_from_its_offer() -> None:
    # A's media stops at t0; without a restart its session would close at t0 + 4 s
    call, a, _ = _moved_call()
    call.advance(3.5)
    a.restart_ice()
    a.addr = MOVED
    call.advance(3.0)  # t0 + 6.5: alive, as the restart offer came at t0 + 3.5
    assert a.id in call.sfu.sessions
    a.send_stun()
    a.answer_checks()
    for seq in range(2, 5):
        a.send_rtp(seq)
        call.advance(3.0)
    assert a.session.state is SessionState.CONNECTED
    assert SessionClosed(a.id, "media timeout") not in call.events


def test_a_peer_that_never_comes_back_after_its_restart_still_ends() -> None:
    call, a, _ = _moved_call()
    call.advance(1.0)
    a.restart_ice()  # t0 + 1; nothing more from it
    call.advance(3.9)
    assert a.id in call.sfu.sessions
    call.advance(0.3)
    assert a.id not in call.sfu.sessions
    assert SessionClosed(a.id, "media timeout") in call.events


def test_more_restarts_in_the_same_silence_do_not_put_the_end_off() -> None:
    call, a, _ = _moved_call()
    call.advance(1.0)
    a.restart_ice()  # t0 + 1: the media timeout now runs from here
    call.advance(2.0)
    a.restart_ice("rst2", "restartpassword2restart")  # t0 + 3, still nothing received
    call.advance(1.9)
    assert a.id in call.sfu.sessions
    call.advance(0.3)  # t0 + 5.2: 4 s after the first restart, not the second
    assert a.id not in call.sfu.sessions
    assert call.sfu.counters()["ice_restarts"] == 2


def test_a_restart_after_media_came_back_gets_a_new_timeout() -> None:
    call, a, _ = _moved_call()
    call.advance(1.0)
    a.restart_ice()
    a.send_stun()
    call.advance(0.1)
    a.send_rtp(2)  # the restart worked: media again at t0 + 1.1
    call.advance(1.9)
    a.restart_ice("rst2", "restartpassword2restart")  # t0 + 3: a new silence
    call.advance(3.9)
    assert a.id in call.sfu.sessions  # t0 + 6.9: 4 s from the second restart
    call.advance(0.3)
    assert a.id not in call.sfu.sessions


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda peer, offer: offer, "must restart ICE: new a=ice-ufrag and a=ice-pwd"),
        (
            lambda peer, offer: re.sub(
                r"a=fingerprint:sha-256 \S+",
                "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
                peer.restart_offer("rst1", "restartpasswordrestartp"),
            ),
            "keeps the DTLS certificate",
        ),
        (
            lambda peer, offer: peer.restart_offer("rst1", "restartpasswordrestartp").replace(
                "a=sendrecv", "a=recvonly"
            ),
            "may not change the media: m-section mid '0' (audio)",
        ),
        (
            lambda peer, offer: peer.restart_offer("rst1", "restartpasswordrestartp").replace(
                "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "m=video 9 UDP/TLS/RTP/SAVPF 97"
            ),
            "may not change the media",
        ),
        (lambda peer, offer: "v=0\r\n", "bad offer: offer has no m= section"),
    ],
    ids=["same-credentials", "new-fingerprint", "new-direction", "codecs", "garbage"],
)
def test_a_second_offer_that_changes_more_than_ice_is_refused(change, message) -> None:
    call, a, b = _moved_call()
    before = a.session.answer
    with pytest.raises(RestartRejected, match=re.escape(message)):
        call.sfu.restart_ice(a.id, change(a, a.offer))
    # nothing changed: the old credentials still work, media still flows
    assert a.session.answer == before
    a.send_stun()
    assert [d for _, d in a.take() if d[:2] == b"\x01\x01"]
    a.send_rtp(2)
    assert len(b.receive()[0]) == 1
    assert call.sfu.counters().get("ice_restarts", 0) == 0
    assert call.sfu.counters()["ice_restarts_rejected"] == 1


def test_a_restart_of_an_unknown_session_is_an_error() -> None:
    call, (a,) = call_with(1)
    with pytest.raises(SfuError, match="no session 'nope'"):
        call.sfu.restart_ice("nope", a.restart_offer("rst1", "restartpasswordrestartp"))


def test_a_restart_before_the_first_connection_completes_it_with_the_new_credentials() -> None:
    call, _ = call_with(0)
    peer = SocketlessPeer(call, ("127.0.0.1", 40100))
    peer.restart_ice()
    peer.connect()
    assert peer.session.state is SessionState.CONNECTED
