"""SDP offers (RFC 8866, 8829 JSEP): what Sfu.create_session does with a peer's offer.

Input: the offer's bytes, decoded as UTF-8 with surrogateescape (so lone surrogates
reach the parser too, as JSON "\\udcxx" escapes in a signalling frame can).
Seeds: tests/data's aiortc and Chromium offers, and variants.

Like create_session: parse_offer and build_answer may refuse the offer with
ValueError (SdpError); once they accept it, building the DTLS endpoint from the
answer's fingerprints, registering the ICE credentials and setting the router's
clock rates and out streams must not fail.

Bug: any other exception, or an answer that does not parse back as SDP lines.
"""

from __future__ import annotations

from typing import Any

from tests.fuzz.common import main

sdp: Any = None
dtls: Any = None
ice: Any = None
router_module: Any = None
certificate: Any = None
fingerprint = ""


def load() -> None:
    global sdp, dtls, ice, router_module, certificate, fingerprint
    from mediaserver import _router
    from mediaserver.sfu import dtls as dtls_module
    from mediaserver.sfu import ice as ice_module
    from mediaserver.sfu import sdp as sdp_module

    sdp, dtls, ice, router_module = sdp_module, dtls_module, ice_module, _router
    certificate = dtls.DtlsCertificate.generate()
    fingerprint = certificate.fingerprint()[1]


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        offer = sdp.parse_offer(text)
    except ValueError:
        return
    send_ssrcs = {
        m.mid: 1000 + i for i, m in enumerate(offer.media) if m.kind in ("audio", "video")
    }
    try:
        answer = sdp.build_answer(
            offer,
            ice_ufrag="fuzzUfrg",
            ice_pwd="fuzzPasswordFuzzPassword",
            fingerprint=fingerprint,
            ip="10.77.0.1",
            port=40000,
            send_ssrcs=send_ssrcs,
            cname="fuzzcname",
        )
    except ValueError:
        return
    for line in answer.sdp.split("\r\n")[:-1]:
        if len(line) < 2 or line[1] != "=":
            raise AssertionError(f"answer line {line!r} is not <type>=<value>")
    # It goes out in a signalling frame, so it must encode (parse_offer refuses
    # text with lone surrogates: tests/tools/test_fuzz_regressions.py)
    answer.sdp.encode("utf-8")
    router = router_module.Router(
        -1, max_peers=1, max_streams=len(answer.media) + 1, cache_packets=64
    )
    peer = router.add_peer()
    for media in answer.media:
        if media.kind not in ("audio", "video") or media.rejected:
            continue
        for codec in media.codecs:
            router.set_clock_rate(peer, codec.payload_type, codec.clock_rate)
        if media.send_ssrc is not None and media.codecs:
            router.add_out_stream(peer, media.send_ssrc, media.codecs[0].clock_rate)
    try:
        # a fingerprint of the wrong length for its hash is refused here, as
        # Sfu.create_session does before it takes any router state
        dtls.DtlsEndpoint(certificate, "server", list(answer.remote_fingerprints))
    except ValueError:
        if _fingerprint_lengths_ok(answer.remote_fingerprints):
            raise
        return
    server = ice.IceLiteServer()
    server.add_session(
        "s", "fuzzUfrg", "fuzzPasswordFuzzPassword", answer.remote_ice_ufrag, now=0.0
    )


def _fingerprint_lengths_ok(fingerprints: tuple[tuple[str, str], ...]) -> bool:
    sizes = {"sha-1": 20, "sha-256": 32, "sha-384": 48, "sha-512": 64}
    return all(
        len(value.split(":")) == sizes[name] for name, value in fingerprints if name in sizes
    )


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver"])
