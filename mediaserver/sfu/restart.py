"""ICE restart: the answer to a second offer on a live session.

A browser whose network changed (Wi-Fi to cellular) calls `pc.restartIce()` and
sends a new offer on the same RTCPeerConnection: new ice-ufrag and ice-pwd, the
same DTLS certificate and m-sections (RFC 8445 section 9, RFC 8829 section 5.2.1).
The server answers on the same session with new credentials of its own; the DTLS
association and its SRTP keys stay (RFC 8842 section 4: a new ICE generation does
not mean a new DTLS association), and so do the tracks, SSRCs and routes. Only the
ICE credentials may change: anything else is refused with `RestartRejected`, so a
re-offer can never reshape a session the partner is already subscribed to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mediaserver.sfu.errors import RestartRejected
from mediaserver.sfu.ice import IceLiteServer, generate_credentials
from mediaserver.sfu.sdp import Answer, AnswerMedia, build_answer, parse_offer
from mediaserver.sfu.session import Session

_ORIGIN = re.compile(r"^o=- (\d+) (\d+) ", re.MULTILINE)


@dataclass(frozen=True)
class Reanswer:
    """What an ICE restart offer leads to."""

    answer: Answer
    """The new answer: the same m-sections, SSRCs and fingerprint, new credentials."""
    ice_ufrag: str
    """The server's new ufrag for the session."""
    ice_pwd: str
    """The server's new ICE password for the session."""


def _shape(media: AnswerMedia) -> tuple[object, ...]:
    """What a restart must leave as it was in one m-section of the answer."""
    return (
        media.kind,
        media.rejected,
        media.direction,
        tuple(
            (c.payload_type, c.name.lower(), c.clock_rate, c.channels, c.fmtp) for c in media.codecs
        ),
        media.header_extensions,
        media.remote_ssrcs,
    )


def reanswer(
    offer_sdp: str,
    previous: Answer,
    *,
    fingerprint: str,
    ip: str | Sequence[str],
    port: int,
    cname: str,
    tcp_port: int | None = None,
) -> Reanswer:
    """Answer an ICE restart offer on a session last answered with `previous`.

    Args:
        offer_sdp: the peer's new offer.
        previous: the session's current answer (from create_session or the last
            restart).
        fingerprint: our certificate's SHA-256 fingerprint (unchanged).
        ip, port: our candidates (unchanged), tcp_port: the ICE-TCP port or None.
        cname: the RTCP CNAME of our streams (unchanged).

    Raises:
        RestartRejected: the offer is not SDP we take, keeps the old ICE
            credentials, or changes anything but them (the message says what).
    """
    try:
        offer = parse_offer(offer_sdp)
    except ValueError as exc:
        raise RestartRejected(f"bad offer: {exc}") from exc
    origin = _ORIGIN.search(previous.sdp)
    assert origin is not None, "our answers always have an o= line"
    ufrag, pwd = generate_credentials()
    send_ssrcs = {m.mid: m.send_ssrc for m in previous.media if m.send_ssrc is not None}
    try:
        answer = build_answer(
            offer,
            ice_ufrag=ufrag,
            ice_pwd=pwd,
            fingerprint=fingerprint,
            ip=ip,
            port=port,
            send_ssrcs=send_ssrcs,
            cname=cname,
            session_id=int(origin[1]),
            session_version=int(origin[2]) + 1,
            tcp_port=tcp_port,
        )
    except ValueError as exc:  # a new m-section we would send on has no SSRC, say
        raise RestartRejected(f"an ICE restart may not change the media: {exc}") from exc
    if (
        answer.remote_ice_ufrag == previous.remote_ice_ufrag
        or answer.remote_ice_pwd == previous.remote_ice_pwd
    ):
        raise RestartRejected(
            "a second offer on a session must restart ICE: new a=ice-ufrag and a=ice-pwd "
            "(RFC 8445 section 9); nothing else may change"
        )
    if set(answer.remote_fingerprints) != set(previous.remote_fingerprints):
        raise RestartRejected(
            "an ICE restart keeps the DTLS certificate: the offer's a=fingerprint changed "
            "(a new certificate needs a new RTCPeerConnection and a new session)"
        )
    before = [m.mid for m in previous.media]
    after = [m.mid for m in answer.media]
    if before != after:
        raise RestartRejected(
            f"an ICE restart may not change the m-sections: mids {before} became {after}"
        )
    if answer.bundle != previous.bundle:
        raise RestartRejected("an ICE restart may not change the BUNDLE group")
    for old, new in zip(previous.media, answer.media):
        if _shape(old) != _shape(new):
            raise RestartRejected(
                f"an ICE restart may not change the media: m-section mid {new.mid!r} "
                f"({new.kind}) differs in direction, codecs, extensions or SSRCs"
            )
    return Reanswer(answer, ufrag, pwd)


def restart(
    session: Session,
    ice: IceLiteServer,
    offer_sdp: str,
    *,
    fingerprint: str,
    ip: str | Sequence[str],
    port: int,
    now: float,
    last_rx: float | None,
    tcp_port: int | None = None,
) -> str:
    """Restart ICE on `session`: answer `offer_sdp` (reanswer) and give `ice` the
    new credentials; the DTLS endpoint, SRTP keys, tracks and routes are kept.
    Media moves once a new address is nominated (and, if the old one was proven,
    answered our check). Returns the answer's SDP.

    The session's media timeout runs from the first restart offer of a silence
    (`last_rx`: when its last media came): more restarts without media in between
    do not put it off again, so a peer that never comes back is still ended.

    Raises:
        RestartRejected: the offer changes more than the ICE credentials.
    """
    assert session.negotiated is not None
    new = reanswer(
        offer_sdp,
        session.negotiated,
        fingerprint=fingerprint,
        ip=ip,
        port=port,
        cname=session.cname,
        tcp_port=tcp_port,
    )
    answer = new.answer
    try:
        ice.restart_session(
            session.id, new.ice_ufrag, new.ice_pwd, answer.remote_ice_ufrag, answer.remote_ice_pwd
        )
    except ValueError as exc:  # a ufrag clash (48 random bits make it rare)
        raise RestartRejected(f"ICE restart failed: {exc}") from exc
    session.local_ufrag, session.local_pwd = new.ice_ufrag, new.ice_pwd
    session.negotiated, session.answer = answer, answer.sdp
    if session.restarted_at is None or (last_rx is not None and last_rx > session.restarted_at):
        session.restarted_at = now
    session.restart_pending = True
    return answer.sdp
