"""Session placement: from a peer's offer to its answer, DTLS endpoint and tracks,
and the out streams (so the NACK-cache memory) a session commits."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mediaserver._router import Router
from mediaserver.sfu.dtls import DtlsCertificate, DtlsEndpoint
from mediaserver.sfu.errors import SfuError
from mediaserver.sfu.ice import generate_credentials
from mediaserver.sfu.sdp import Answer, build_answer, parse_offer
from mediaserver.sfu.session import Track


@dataclass
class Negotiated:
    """What an offer leads to before any router or ICE state exists."""

    answer: Answer
    dtls: DtlsEndpoint
    """The server-side DTLS endpoint, pinned to the offer's fingerprints."""
    ice_ufrag: str
    ice_pwd: str
    cname: str
    """The RTCP CNAME of our streams in the answer (an ICE restart keeps it)."""


def random_ssrc() -> int:
    return secrets.randbits(32) or 1


def negotiate(
    offer_sdp: str,
    certificate: DtlsCertificate,
    ips: Sequence[str],
    port: int,
    tcp_port: int | None = None,
) -> Negotiated:
    """Answer `offer_sdp` with our host candidates (one per address in `ips`, at
    `port`, and a passive TCP one per address at `tcp_port` if not None) and
    certificate.

    Raises:
        SfuError: the offer is unusable (the message says why).
    """
    try:
        offer = parse_offer(offer_sdp)
    except ValueError as exc:
        raise SfuError(f"bad offer: {exc}") from exc
    ufrag, pwd = generate_credentials()
    send_ssrcs = {m.mid: random_ssrc() for m in offer.media if m.kind in ("audio", "video")}
    _, value = certificate.fingerprint()
    cname = secrets.token_hex(8)
    try:
        answer = build_answer(
            offer,
            ice_ufrag=ufrag,
            ice_pwd=pwd,
            fingerprint=value,
            ip=ips,
            port=port,
            send_ssrcs=send_ssrcs,
            cname=cname,
            tcp_port=tcp_port,
        )
    except ValueError as exc:
        raise SfuError(f"bad offer: {exc}") from exc
    try:
        # before any router state: a fingerprint of the wrong length fails here
        # the cookie exchange: no flight to an address that has not shown it receives
        dtls = DtlsEndpoint(
            certificate, "server", list(answer.remote_fingerprints), cookie_exchange=True
        )
    except ValueError as exc:
        raise SfuError(f"bad offer: {exc}") from exc
    return Negotiated(answer, dtls, ufrag, pwd, cname)


def out_stream_count(answer: Answer) -> int:
    """The out streams add_tracks makes for `answer`: one per kind we send."""
    return len({
        m.kind for m in answer.media
        if m.kind in ("audio", "video") and not m.rejected and m.codecs
        and m.direction in ("sendrecv", "sendonly") and m.send_ssrc is not None
    })


def add_tracks(answer: Answer, router: Router, peer: int) -> dict[str, Track]:
    """The session's tracks by kind, with their clock rates and out streams set up
    in the router for router peer `peer`."""
    tracks: dict[str, Track] = {}
    for media in answer.media:
        if media.kind not in ("audio", "video") or media.kind in tracks or media.rejected:
            continue  # one track per kind: a 1:1 call needs no more
        codecs = list(media.codecs)
        track = Track(
            kind=media.kind,
            mid=media.mid,
            codecs=codecs,
            receives=media.direction in ("sendrecv", "recvonly"),
            sends=media.direction in ("sendrecv", "sendonly"),
            offered_ssrcs=list(media.remote_ssrcs),
        )
        for codec in codecs:
            router.set_clock_rate(peer, codec.payload_type, codec.clock_rate)
        if track.sends and codecs and media.send_ssrc is not None:
            track.out_ssrc = media.send_ssrc
            track.out_stream = router.add_out_stream(peer, media.send_ssrc, codecs[0].clock_rate)
        tracks[media.kind] = track
    return tracks
