"""Tests for mediaserver.sfu.sdp: real offers in, answers that real peers accept.

tests/data/offer_*.sdp are offers made by aiortc and by Chromium (createOffer only:
no packet is sent). Regenerate them, inside the namespace, with

    python -m mediaserver.netns -- .venv/bin/python tests/sfu/test_sdp.py --regenerate
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.sdp import SessionDescription, parameters_to_sdp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediaserver import netns
from mediaserver.sfu.sdp import (
    MAX_MEDIA_SECTIONS,
    MAX_OFFER_LENGTH,
    Answer,
    Codec,
    Offer,
    SdpError,
    build_answer,
    parse_offer,
)
from tests.support import DATA

AIORTC = "offer_aiortc.sdp"
CHROMIUM = "offer_chromium.sdp"
CHROMIUM_DC = "offer_chromium_datachannel.sdp"  # + a recvonly video and a data channel

UFRAG = "srvUfrag"
PWD = "serverpasswordserverpw+/"
FINGERPRINT = ":".join(f"{i * 7 % 256:02X}" for i in range(32))
IP = "203.0.113.5"
PORT = 40000
CNAME = "mediaserver"


def read(name: str) -> str:
    return (DATA / name).read_bytes().decode()  # keep the CRLFs


def answer(offer: Offer | str, **kwargs: Any) -> Answer:
    if isinstance(offer, str):
        offer = parse_offer(offer)
    arguments: dict[str, Any] = {
        "ice_ufrag": UFRAG,
        "ice_pwd": PWD,
        "fingerprint": FINGERPRINT,
        "ip": IP,
        "port": PORT,
        "send_ssrcs": {m.mid: 1000 + i for i, m in enumerate(offer.media)},
        "cname": CNAME,
    }
    arguments.update(kwargs)
    return build_answer(offer, **arguments)


def section(sdp: str, mid: str) -> str:
    """The text of the m-section with a=mid:<mid>."""
    for part in re.split(r"(?=^m=)", sdp, flags=re.MULTILINE):
        if f"\r\na=mid:{mid}\r\n" in part:
            return part
    raise AssertionError(f"no mid {mid}")


def edit_section(sdp: str, mid: str, old: str, new: str) -> str:
    part = section(sdp, mid)
    assert old in part, old
    return sdp.replace(part, part.replace(old, new))


def drop_lines(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


# Parsing real offers


def test_parse_aiortc_offer() -> None:
    offer = parse_offer(read(AIORTC))
    assert offer.ice_ufrag == "z3kY"
    assert offer.ice_pwd == "GCNMQboYNvPH7pPT2i4Ye2"
    assert [a for a, _ in offer.fingerprints] == ["sha-256", "sha-384", "sha-512"]
    assert offer.bundle == ("0", "1")
    audio, video = offer.media
    assert (audio.mid, audio.kind, audio.direction) == ("0", "audio", "sendrecv")
    assert audio.codecs[0] == Codec(96, "opus", 48000, 2)
    assert [c.payload_type for c in audio.codecs] == [96, 9, 0, 8]
    assert audio.ssrcs == (3651559333,)
    assert audio.cname == "b899acac-e39e-4abd-af2a-2bbfbff4e631"
    assert audio.rtcp_mux and not audio.rtcp_rsize
    assert (video.mid, video.kind) == ("1", "video")
    assert [(c.payload_type, c.name) for c in video.codecs] == [
        (97, "VP8"),
        (98, "rtx"),
        (99, "H264"),
        (100, "rtx"),
        (101, "H264"),
        (102, "rtx"),
    ]
    assert video.codecs[0].rtcp_fb == ("nack", "nack pli", "goog-remb")
    assert video.codecs[4].fmtp == (
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
    )
    assert video.codecs[4].parameters["profile-level-id"] == "42e01f"
    assert video.ssrc_groups[0].semantics == "FID"
    assert video.ssrc_groups[0].ssrcs == (3382611079, 577601885)


def test_parse_chromium_offer() -> None:
    offer = parse_offer(read(CHROMIUM))
    assert offer.ice_ufrag == "gwse"
    assert offer.fingerprints[0][0] == "sha-256"
    audio, video = offer.media
    assert audio.codecs[0] == Codec(
        111, "opus", 48000, 2, "minptime=10;useinbandfec=1", ("transport-cc",)
    )
    assert audio.rtcp_rsize and video.rtcp_rsize
    assert audio.setup == "actpass"
    assert {e.uri: e.id for e in audio.header_extensions}[
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    ] == 1
    h264 = {c.payload_type: c for c in video.codecs if c.name == "H264"}
    assert h264[108].parameters == {
        "level-asymmetry-allowed": "1",
        "packetization-mode": "1",
        "profile-level-id": "42e01f",
    }
    assert video.ssrcs == (1887242170, 3990215698)


@pytest.mark.parametrize("name", [AIORTC, CHROMIUM, CHROMIUM_DC])
def test_parse_matches_aiortc_parser(name: str) -> None:
    # aiortc's own parser is the oracle for everything both of them read.
    text = read(name)
    ours = parse_offer(text)
    theirs = SessionDescription.parse(text)
    assert len(ours.media) == len(theirs.media)
    for mine, ref in zip(ours.media, theirs.media):
        assert ref.ice is not None and ref.dtls is not None
        assert mine.kind == ref.kind
        assert mine.mid == ref.rtp.muxId
        assert mine.port == ref.port
        assert mine.direction == (ref.direction or "sendrecv")  # RFC 3264 section 5.1
        assert mine.rtcp_mux == ref.rtcp_mux
        assert mine.ice_ufrag == ref.ice.usernameFragment
        assert mine.ice_pwd == ref.ice.password
        assert [(a, v) for a, v in mine.fingerprints] == [
            (f.algorithm, f.value) for f in ref.dtls.fingerprints
        ]
        assert mine.msid == ref.msid
        assert [(e.id, e.uri) for e in mine.header_extensions] == [
            (e.id, e.uri) for e in ref.rtp.headerExtensions
        ]
        assert list(mine.ssrcs) == [s.ssrc for s in ref.ssrc]
        assert [(g.semantics, list(g.ssrcs)) for g in mine.ssrc_groups] == [
            (g.semantic, g.items) for g in ref.ssrc_group
        ]
        if mine.kind == "application":
            continue
        expected = {
            c.payloadType: (
                c.mimeType.split("/", 1)[1],
                c.clockRate,
                c.channels,
                parameters_to_sdp(c.parameters),
                tuple(f.type + (f" {f.parameter}" if f.parameter else "") for f in c.rtcpFeedback),
            )
            for c in ref.rtp.codecs
        }
        assert {
            c.payload_type: (c.name, c.clock_rate, c.channels, c.fmtp, c.rtcp_fb)
            for c in mine.codecs
        } == expected


# Answers


def negotiated(result: Answer) -> dict[str, list[int]]:
    return {m.mid: [c.payload_type for c in m.codecs] for m in result.media if not m.rejected}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (AIORTC, {"0": [96], "1": [97, 101]}),  # 101 is 42e01f, preferred over 42001f
        (CHROMIUM, {"0": [111], "1": [96, 108]}),
        (CHROMIUM_DC, {"0": [111], "1": [96, 108], "2": [96, 108]}),
    ],
)
def test_answer_keeps_offered_payload_types(name: str, expected: dict[str, list[int]]) -> None:
    offer = parse_offer(read(name))
    result = answer(offer)
    assert negotiated(result) == expected
    offered = {m.mid: {c.payload_type: c for c in m.codecs} for m in offer.media}
    for media in result.media:
        for codec in media.codecs:
            original = offered[media.mid][codec.payload_type]
            assert (codec.name, codec.clock_rate, codec.fmtp) == (
                original.name,
                original.clock_rate,
                original.fmtp,
            )
            assert set(codec.rtcp_fb) <= {"nack", "nack pli", "ccm fir", "goog-remb"}
            assert set(codec.rtcp_fb) <= set(original.rtcp_fb)


@pytest.mark.parametrize("name", [AIORTC, CHROMIUM, CHROMIUM_DC])
def test_answer_text(name: str) -> None:
    offer = parse_offer(read(name))
    result = answer(offer)
    sdp = result.sdp
    assert sdp.endswith("\r\n") and "\n" not in sdp.replace("\r\n", "")
    lowered = sdp.lower()
    for banned in ("rtx/", "red/", "ulpfec", "transport-cc", "transport-wide-cc", "flexfec"):
        assert banned not in lowered, banned
    assert "\r\na=ice-lite\r\n" in sdp
    assert "\r\na=msid-semantic: WMS\r\n" in sdp
    assert f"\r\na=group:BUNDLE {' '.join(result.bundle)}\r\n" in sdp
    for media in result.media:
        text = section(sdp, media.mid)
        if media.rejected:
            assert re.match(rf"m={media.kind} 0 ", text)
            assert "a=candidate" not in text
            continue
        assert text.startswith(f"m={media.kind} {PORT} UDP/TLS/RTP/SAVPF ")
        for line in (
            f"c=IN IP4 {IP}",
            f"a=candidate:1 1 udp 2130706431 {IP} {PORT} typ host",
            "a=end-of-candidates",
            f"a=ice-ufrag:{UFRAG}",
            f"a=ice-pwd:{PWD}",
            f"a=fingerprint:sha-256 {FINGERPRINT}",
            "a=setup:passive",
            "a=rtcp-mux",
            f"a={media.direction}",
            f"a=ssrc:{media.send_ssrc} cname:{CNAME}",
            f"a=msid:{CNAME} {media.kind}-{media.mid}",
        ):
            assert f"\r\n{line}\r\n" in text, line
        assert ("\r\na=rtcp-rsize\r\n" in text) == media.rtcp_rsize
        uris = {e.uri for e in media.header_extensions}
        assert uris <= {
            "urn:ietf:params:rtp-hdrext:sdes:mid",
            "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        }
        assert "urn:ietf:params:rtp-hdrext:sdes:mid" in uris
        for ext in media.header_extensions:
            assert f"\r\na=extmap:{ext.id} {ext.uri}\r\n" in text


@pytest.mark.parametrize("name", [AIORTC, CHROMIUM, CHROMIUM_DC])
def test_answer_passes_aiortc_parser(name: str) -> None:
    offer = parse_offer(read(name))
    result = answer(offer)
    parsed = SessionDescription.parse(result.sdp)
    assert [g.items for g in parsed.group if g.semantic == "BUNDLE"] == [list(result.bundle)]
    assert len(parsed.media) == len(offer.media)
    for media, ours in zip(parsed.media, result.media):
        assert media.rtp.muxId == ours.mid
        if ours.rejected:
            assert media.port == 0
            continue
        assert media.ice is not None and media.ice.iceLite
        assert (media.ice.usernameFragment, media.ice.password) == (UFRAG, PWD)
        assert media.dtls is not None and media.dtls.role == "server"
        assert [(f.algorithm, f.value) for f in media.dtls.fingerprints] == [
            ("sha-256", FINGERPRINT)
        ]
        assert [(c.ip, c.port, c.type) for c in media.ice_candidates] == [(IP, PORT, "host")]
        assert [c.payloadType for c in media.rtp.codecs] == [c.payload_type for c in ours.codecs]
        assert media.direction == ours.direction
        assert media.rtcp_mux


def test_rejected_application_and_recvonly_video() -> None:
    offer = parse_offer(read(CHROMIUM_DC))
    result = answer(offer)
    assert result.bundle == ("0", "1", "2")
    data = result.find("3")
    assert data.rejected and data.kind == "application"
    assert section(result.sdp, "3").startswith("m=application 0 UDP/DTLS/SCTP webrtc-datachannel")
    recvonly = result.find("2")
    assert recvonly.direction == "sendonly"
    assert recvonly.send_ssrc == 1002
    assert recvonly.remote_ssrcs == ()
    with pytest.raises(KeyError):
        result.find("9")


def test_remote_ssrcs_leave_out_rtx() -> None:
    result = answer(read(CHROMIUM))
    assert result.find("0").remote_ssrcs == (4081862208,)
    assert result.find("1").remote_ssrcs == (1887242170,)  # 3990215698 is its RTX
    assert result.remote_ice_ufrag == "gwse"
    assert result.remote_ice_pwd == "0/Ae9XPhetpJSkBuUXbcmY1j"
    assert result.remote_fingerprints[0][0] == "sha-256"


@pytest.mark.parametrize(
    ("offered", "answered", "sends"),
    [
        ("sendrecv", "sendrecv", True),
        ("sendonly", "recvonly", False),
        ("recvonly", "sendonly", True),
        ("inactive", "inactive", False),
    ],
)
def test_direction_mapping(offered: str, answered: str, sends: bool) -> None:
    text = edit_section(read(CHROMIUM), "1", "a=sendrecv\r\n", f"a={offered}\r\n")
    result = answer(text)
    video = result.find("1")
    assert video.direction == answered
    assert (video.send_ssrc is not None) == sends
    part = section(result.sdp, "1")
    assert f"\r\na={answered}\r\n" in part
    assert ("a=ssrc:" in part) == sends
    assert ("a=msid:" in part) == sends
    assert (video.remote_ssrcs != ()) == (offered in ("sendrecv", "sendonly"))


def test_direction_defaults_and_session_level() -> None:
    text = drop_lines(read(CHROMIUM), "a=sendrecv")
    assert {m.direction for m in parse_offer(text).media} == {"sendrecv"}
    text = text.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    assert {m.direction for m in parse_offer(text).media} == {"sendonly"}


def test_send_only_where_we_send() -> None:
    # Sections the server does not send on need no SSRC.
    text = read(CHROMIUM).replace("a=sendrecv", "a=sendonly")
    result = answer(text, send_ssrcs={})
    assert {m.direction for m in result.media} == {"recvonly"}
    with pytest.raises(
        ValueError,
        match=re.escape("send_ssrcs has no SSRC for mid '1', which the answer makes sendrecv"),
    ):
        answer(read(CHROMIUM), send_ssrcs={"0": 5})


def test_codec_choice() -> None:
    base = read(CHROMIUM)
    # Without VP8, H.264 constrained baseline (42e01f, packetization-mode=1) alone.
    no_vp8 = edit_section(base, "1", "a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP7/90000")
    assert negotiated(answer(no_vp8))["1"] == [108]
    # Without 42e0, the 4200 profile Chrome also offers.
    no_42e0 = no_vp8.replace("profile-level-id=42e01f", "profile-level-id=64001f")
    assert negotiated(answer(no_42e0))["1"] == [102]
    # Main profile or packetization-mode=0 only: the video section is rejected.
    nothing = no_42e0.replace("profile-level-id=42001f", "profile-level-id=4d001f")
    result = answer(nothing)
    assert result.find("1").rejected and result.bundle == ("0",)
    assert section(result.sdp, "1").startswith("m=video 0 UDP/TLS/RTP/SAVPF 96\r\n")
    # Opus must be 48000/2.
    mono = edit_section(base, "0", "opus/48000/2", "opus/48000")
    result = answer(mono)
    assert result.find("0").rejected and result.bundle == ("1",)


def test_bundle_tag_moves_to_first_accepted() -> None:
    # The offerer-tagged audio section is rejected: the video section carries the
    # transport, with its own credentials.
    text = edit_section(read(CHROMIUM), "0", "opus/48000/2", "opus/48000")
    text = edit_section(text, "1", "a=ice-ufrag:gwse", "a=ice-ufrag:vide")
    text = edit_section(text, "1", "a=ice-pwd:0/Ae9XPhetpJSkBuUXbcmY1j", "a=ice-pwd:" + "v" * 22)
    offer = parse_offer(text)
    assert offer.ice_ufrag == "gwse"
    result = answer(offer)
    assert result.bundle == ("1",)
    assert (result.remote_ice_ufrag, result.remote_ice_pwd) == ("vide", "v" * 22)


def test_session_level_transport_attributes() -> None:
    # Firefox-style: fingerprint (and here ICE) at session level only.
    text = read(CHROMIUM)
    moved = ["a=ice-ufrag:gwse", "a=ice-pwd:0/Ae9XPhetpJSkBuUXbcmY1j", "a=setup:actpass"]
    moved.append(next(line for line in text.splitlines() if line.startswith("a=fingerprint")))
    for line in moved:
        text = text.replace(line + "\r\n", "")
    text = text.replace("t=0 0\r\n", "t=0 0\r\n" + "".join(line + "\r\n" for line in moved))
    offer = parse_offer(text)
    assert offer.ice_ufrag == "gwse"
    assert all(m.ice_ufrag == "gwse" and m.setup == "actpass" for m in offer.media)
    assert negotiated(answer(offer)) == {"0": [111], "1": [96, 108]}


def test_offer_without_bundle_single_section() -> None:
    text = read(CHROMIUM)
    text = text.replace("a=group:BUNDLE 0 1\r\n", "")
    text = text[: text.index("m=video")]
    offer = parse_offer(text)
    assert offer.bundle is None
    result = answer(offer)
    assert "a=group:BUNDLE" not in result.sdp
    assert result.bundle == ("0",)


def test_extmap_with_direction_and_attributes() -> None:
    text = edit_section(
        read(CHROMIUM),
        "0",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:4/sendrecv urn:ietf:params:rtp-hdrext:sdes:mid some-attribute",
    )
    audio = answer(text).find("0")
    assert (4, "urn:ietf:params:rtp-hdrext:sdes:mid") in [
        (e.id, e.uri) for e in audio.header_extensions
    ]


def test_answer_is_deterministic() -> None:
    first = answer(read(CHROMIUM)).sdp
    assert answer(read(CHROMIUM)).sdp == first
    assert re.search(r"^o=- \d+ 2 IN IP4 127.0.0.1\r$", first, re.MULTILINE)
    assert "o=- 42 2 " in answer(read(CHROMIUM), session_id=42).sdp


def test_answer_ipv6() -> None:
    result = answer(read(CHROMIUM), ip="2001:db8::5")
    assert "\r\nc=IN IP6 2001:db8::5\r\n" in result.sdp
    assert "a=candidate:1 1 udp 2130706431 2001:db8::5 40000 typ host" in result.sdp


@pytest.mark.parametrize("order", [("203.0.113.5", "2001:db8::5"), ("2001:db8::5", "203.0.113.5")])
def test_answer_dual_stack_has_a_host_candidate_per_family(order: tuple[str, str]) -> None:
    result = answer(read(CHROMIUM), ip=order)
    for mid in result.bundle:
        text = section(result.sdp, mid)
        # IPv4 first, whatever the order given, and a little higher (RFC 8445 5.1.2.1:
        # local preference 65535 and 65534); a foundation per family
        assert "\r\nc=IN IP4 203.0.113.5\r\n" in text
        assert (
            "a=candidate:1 1 udp 2130706431 203.0.113.5 40000 typ host\r\n"
            "a=candidate:2 1 udp 2130706175 2001:db8::5 40000 typ host\r\n"
            "a=end-of-candidates\r\n"
        ) in text
    # both parse back as host candidates (aiortc: what a peer sees)
    from aiortc.sdp import SessionDescription

    parsed = SessionDescription.parse(result.sdp)
    assert [(c.ip, c.priority, c.type) for c in parsed.media[0].ice_candidates] == [
        ("203.0.113.5", 2130706431, "host"),
        ("2001:db8::5", 2130706175, "host"),
    ]


@pytest.mark.parametrize(
    ("ip", "message"),
    [
        (("203.0.113.5", "203.0.113.6"), "ip: one address per family, not 203.0.113.5, 203.0.113.6"),
        ((), "ip: no address to announce"),
        (("203.0.113.5", "nope"), "ip 'nope' is not an IPv4 or IPv6 address"),
    ],
)
def test_answer_candidate_addresses_are_checked(ip: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        answer(read(CHROMIUM), ip=ip)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ice_ufrag": "a:b"}, "ice_ufrag 'a:b' is not 4 to 256 ice-chars"),
        ({"ice_pwd": "short"}, "ice_pwd 'short' is not 22 to 256 ice-chars"),
        ({"fingerprint": "ab:cd"}, "fingerprint 'ab:cd' is not a SHA-256 fingerprint"),
        ({"ip": "example.org"}, "ip 'example.org' is not an IPv4 or IPv6 address"),
        ({"port": 0}, "port 0 is not between 1 and 65535"),
        ({"cname": "two words"}, "cname 'two words' is not 1 to 64 token characters"),
        ({"stream_id": ""}, "stream_id '' is not 1 to 64 token characters"),
        ({"send_ssrcs": {"0": 0, "1": 1}}, "send SSRC 0 for mid '0' is not between 1 and 2**32-1"),
    ],
)
def test_answer_argument_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        answer(read(CHROMIUM), **kwargs)


def test_nothing_to_accept() -> None:
    text = edit_section(read(CHROMIUM), "0", "opus/48000/2", "opus/48000")
    text = text.replace("VP8/90000", "VP7/90000").replace("packetization-mode=1", "x=1")
    with pytest.raises(SdpError, match="offer has no m-section the server can accept"):
        answer(text)


# Offers we refuse, each with its reason

OFFER = read(CHROMIUM)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "offer does not start with 'v=' (RFC 8866 section 5)"),
        ("hello", "offer does not start with 'v=' (RFC 8866 section 5)"),
        (OFFER.replace("v=0", "v=1", 1), "line 1: 'v=1': only SDP version 0 exists"),
        (
            OFFER.replace("s=-\r\n", "s=-\r\nnonsense\r\n"),
            "line 4: 'nonsense' is not '<type>=<value>' (RFC 8866 section 5)",
        ),
        (OFFER[: OFFER.index("m=audio")], "offer has no m= section"),
        (
            OFFER.replace("m=audio 9 UDP/TLS/RTP/SAVPF", "m=audio nine UDP/TLS/RTP/SAVPF"),
            (
                "line 8: 'm=audio nine UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126' is not "
                "'m=<media> <port> <proto> <fmt> ...' (RFC 8866 section 5.14)"
            ),
        ),
        (
            OFFER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=audio 9 UDP/TLS/RTP/SAVPF 300"),
            "line 8: payload type '300' is not a number from 0 to 127",
        ),
        (
            OFFER.replace("m=audio 9 ", "m=audio 70000 "),
            "line 8: port 70000 is not between 0 and 65535",
        ),
        (drop_lines(OFFER, "a=ice-ufrag"), "m-section 0 (mid 0) has no a=ice-ufrag"),
        (drop_lines(OFFER, "a=ice-pwd"), "m-section 0 (mid 0) has no a=ice-pwd"),
        (
            drop_lines(OFFER, "a=fingerprint"),
            (
                "m-section 0 (mid 0) has no a=fingerprint, and neither has the session "
                "(RFC 8122 section 5)"
            ),
        ),
        (
            OFFER.replace("a=fingerprint:sha-256", "a=fingerprint:md5"),
            "m-section 0 (mid 0): no fingerprint uses a supported hash (offered: md5; ",
        ),
        (
            OFFER.replace("a=fingerprint:sha-256 4C", "a=fingerprint:sha-256 ZZ"),
            (
                "line 14: 'a=fingerprint:sha-256 ZZ:D3:F0:EE:8E:74:7B:D9:DC:CE:1B:40...' "
                "is not 'a=fingerprint:<hash> <XX:XX:...>'"
            ),
        ),
        (
            OFFER.replace("a=setup:actpass", "a=setup:passive"),
            (
                "m-section 0 (mid 0) has a=setup:passive, but the server is the DTLS server: "
                "the offer must say actpass or active (RFC 5763 section 5)"
            ),
        ),
        (
            OFFER.replace("a=setup:actpass", "a=setup:holdconn"),
            "m-section 0 (mid 0) has a=setup:holdconn",
        ),
        (
            OFFER.replace("a=setup:actpass", "a=setup:both"),
            "line 15: 'a=setup:both': unknown a=setup role",
        ),
        (
            drop_lines(OFFER, "a=rtcp-mux"),
            (
                "m-section 0 (mid 0) has no a=rtcp-mux; the server takes RTP and RTCP on one "
                "port (RFC 5761)"
            ),
        ),
        (
            OFFER.replace("t=0 0\r\n", "t=0 0\r\na=ice-lite\r\n"),
            (
                "offer is ice-lite; so is the server, and two lite agents never run "
                "connectivity checks (RFC 8445 section 6.1.1)"
            ),
        ),
        (
            OFFER.replace("a=ice-ufrag:gwse", "a=ice-ufrag:gw"),
            "line 11: 'a=ice-ufrag:gw': the ufrag must be 4 to 256 ice-chars",
        ),
        (
            OFFER.replace("a=ice-pwd:0/Ae9XPhetpJSkBuUXbcmY1j", "a=ice-pwd:short"),
            "line 12: 'a=ice-pwd:short': the password must be 22 to 256 ice-chars",
        ),
        (drop_lines(OFFER, "a=mid:1"), "m-section 1 has no a=mid (RFC 8843 section 7.1)"),
        (
            OFFER.replace("a=mid:1", "a=mid:0"),
            "m-section 1 (mid 0): mid '0' is used twice",
        ),
        (
            OFFER.replace("a=mid:1", "a=mid:"),
            "line 47: 'a=mid:': a mid is 1 to 64 token characters",
        ),
        (
            OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 7"),
            "a=group:BUNDLE names mid '7', which no m-section has",
        ),
        (
            OFFER.replace("a=group:BUNDLE 0 1\r\n", ""),
            (
                "offer has 2 enabled m= sections but no a=group:BUNDLE; the server carries "
                "them all on one transport (RFC 8843)"
            ),
        ),
        (
            OFFER.replace("m=audio 9", "m=audio 0").replace("m=video 9", "m=video 0"),
            "offer has no enabled m= section: every port is 0",
        ),
        (
            OFFER.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus"),
            (
                "line 26: 'a=rtpmap:111 opus' is not "
                "'a=rtpmap:<payload type> <encoding>/<clock rate>[/<channels>]'"
            ),
        ),
        (
            OFFER.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:200 opus/48000/2"),
            "line 26: payload type 200 is not between 0 and 127",
        ),
        (
            OFFER.replace("a=fmtp:111 minptime", "a=fmtp:x minptime"),
            (
                "line 28: 'a=fmtp:x minptime=10;useinbandfec=1' is not "
                "'a=fmtp:<payload type> <parameters>'"
            ),
        ),
        (
            OFFER.replace("a=rtcp-fb:111 transport-cc", "a=rtcp-fb:111"),
            "line 27: 'a=rtcp-fb:111' is not 'a=rtcp-fb:<payload type or *> <type>'",
        ),
        (
            OFFER.replace("a=extmap:1 urn", "a=extmap:0 urn"),
            "line 17: extmap id 0 is not between 1 and 4351",
        ),
        (
            OFFER.replace("a=extmap:1 urn", "a=extmap:one urn"),
            (
                "line 17: 'a=extmap:one urn:ietf:params:rtp-hdrext:ssrc-audio-level' is not "
                "'a=extmap:<id>[/<direction>] <uri>' (RFC 8285 section 8)"
            ),
        ),
        (
            OFFER.replace("a=ssrc:4081862208 cname", "a=ssrc:9999999999 cname"),
            "line 37: SSRC 9999999999 is not between 0 and 4294967295",
        ),
        (
            OFFER.replace("a=ssrc:4081862208 cname:", "a=ssrc:x cname:"),
            (
                "line 37: 'a=ssrc:x cname:CwkvhL+KblOSxMBV' is not "
                "'a=ssrc:<ssrc> <attribute>[:<value>]'"
            ),
        ),
        (
            OFFER.replace("a=ssrc-group:FID 1887242170", "a=ssrc-group:FID x"),
            (
                "line 157: 'a=ssrc-group:FID x 3990215698' is not "
                "'a=ssrc-group:<semantics> <ssrc> ...'"
            ),
        ),
        (
            OFFER + "x" * MAX_OFFER_LENGTH,
            (
                f"offer is {len(OFFER) + MAX_OFFER_LENGTH} characters long; the limit is "
                f"{MAX_OFFER_LENGTH}"
            ),
        ),
        (
            OFFER.replace("a=group:BUNDLE 0 1\r\n", "")[: OFFER.index("m=video") - 20]
            + "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n" * (MAX_MEDIA_SECTIONS + 1),
            f"offer has {MAX_MEDIA_SECTIONS + 2} m= sections; the limit is {MAX_MEDIA_SECTIONS}",
        ),
    ],
)
def test_refused_offers(text: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_offer(text)
    assert str(info.value).startswith(message), str(info.value)


def test_sdp_error_is_value_error() -> None:
    assert issubclass(SdpError, ValueError)


def test_our_answer_is_not_an_offer_we_take() -> None:
    # Two lite agents cannot connect: the answer itself is refused as an offer.
    with pytest.raises(SdpError, match="offer is ice-lite"):
        parse_offer(answer(read(CHROMIUM)).sdp)


def test_bundle_only_section_without_transport() -> None:
    text = read(CHROMIUM_DC)
    part = section(text, "2")
    bare = drop_lines(part, "a=ice-").replace("m=video 9 ", "m=video 0 ")
    bare = drop_lines(bare, "a=fingerprint").replace("a=mid:2\r\n", "a=mid:2\r\na=bundle-only\r\n")
    offer = parse_offer(text.replace(part, bare))
    media = offer.media[2]
    assert media.bundle_only and not media.disabled and media.ice_ufrag is None
    assert negotiated(answer(offer))["2"] == [96, 108]


# Fuzzing: only SdpError, whatever the text


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_random_text_raises_only_sdp_error(text: str) -> None:
    try:
        parse_offer(text)
    except SdpError:
        pass


@settings(max_examples=300)
@given(st.text(alphabet="v=0\r\nmaudiovideo 9UDP/TLS/RTP/SAVPF111:*/ -", max_size=300))
def test_sdp_shaped_text_raises_only_sdp_error(text: str) -> None:
    try:
        parse_offer(text)
    except SdpError:
        pass


_LINES = OFFER.split("\r\n")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(_LINES) - 1),
            st.sampled_from(["delete", "replace", "truncate", "duplicate"]),
            st.text(max_size=30),
        ),
        max_size=5,
    )
)
def test_mutated_offer(mutations: list[tuple[int, str, str]]) -> None:
    # A real offer with lines broken: refused with SdpError, or answered with an
    # answer aiortc's parser reads.
    lines = list(_LINES)
    for index, action, text in mutations:
        index %= len(lines)
        if action == "delete":
            del lines[index]
        elif action == "replace":
            lines[index] = lines[index][:2] + text
        elif action == "truncate":
            lines[index] = lines[index][: len(text)]
        else:
            lines.insert(index, lines[index])
        if not lines:
            lines = [""]
    try:
        result = answer("\r\n".join(lines))
    except SdpError:
        return
    SessionDescription.parse(result.sdp)


# Real peers accept the answer


@pytest.mark.netns
@pytest.mark.timeout(60)
@pytest.mark.parametrize("data_channel", [False, True])
def test_aiortc_accepts_answer(data_channel: bool) -> None:
    # setLocalDescription gathers candidates, so this runs in the namespace, with
    # no STUN server (aiortc would use a public one by default).
    async def run() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTrack(AudioStreamTrack())
            pc.addTrack(VideoStreamTrack())
            if data_channel:
                pc.createDataChannel("chat")  # its m-section is rejected
            offer = await pc.createOffer()
            await pc.setLocalDescription(offer)
            result = answer(pc.localDescription.sdp, ip=netns.SERVER_IP)
            assert [m.rejected for m in result.media] == [False, False, True][: 2 + data_channel]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=result.sdp, type="answer"))
            assert pc.signalingState == "stable"
            transceivers = pc.getTransceivers()
            assert [t.currentDirection for t in transceivers] == ["sendrecv", "sendrecv"]
            assert [t.mid for t in transceivers] == ["0", "1"]
            # aiortc sends with the codecs and payload types the answer kept.
            for transceiver in transceivers:
                kept = result.find(str(transceiver.mid)).codecs
                assert [(c.payloadType, c.mimeType.split("/")[1]) for c in transceiver._codecs] == [
                    (c.payload_type, c.name) for c in kept
                ]
        finally:
            await pc.close()

    asyncio.run(run())


_CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Runs in the page: an offer with one audio and one video track from fake devices,
# optionally a recvonly video transceiver and a data channel.
_OFFER_JS = """async ([extra, setLocal]) => {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
    const pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    if (extra) {
        pc.addTransceiver("video", {direction: "recvonly"});
        pc.createDataChannel("chat");
    }
    const offer = await pc.createOffer();
    if (setLocal) await pc.setLocalDescription(offer);
    window.pcs = (window.pcs || []).concat([pc]);
    return [window.pcs.length - 1, offer.sdp];
}"""

_ANSWER_JS = """async ([index, sdp]) => {
    const pc = window.pcs[index];
    await pc.setRemoteDescription({type: "answer", sdp});
    const result = {
        state: pc.signalingState,
        directions: pc.getTransceivers().map(t => t.currentDirection),
        codecs: pc.getSenders().filter(s => s.track).map(
            s => s.getParameters().codecs.map(c => [c.payloadType, c.mimeType])),
        sctp: pc.sctp === null,
    };
    pc.close();
    return result;
}"""


async def _with_chromium_page(body: Any) -> Any:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=_CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            # getUserMedia needs a secure context: localhost is one. The page is
            # served by Playwright itself, so nothing goes to the network.
            await page.route(
                "http://localhost/",
                lambda route: route.fulfill(status=200, content_type="text/html", body="<html>"),
            )
            await page.goto("http://localhost/")
            return await body(page)
        finally:
            await browser.close()


@pytest.mark.netns
@pytest.mark.timeout(90)
def test_chromium_accepts_answer() -> None:
    async def body(page: Any) -> None:
        for extra in (False, True):
            index, offer_sdp = await page.evaluate(_OFFER_JS, [extra, True])
            result = answer(offer_sdp, ip=netns.SERVER_IP)
            state = await page.evaluate(_ANSWER_JS, [index, result.sdp])
            assert state["state"] == "stable"
            if extra:
                # The rejected data channel leaves the transport without SCTP.
                assert state["directions"] == ["sendrecv", "sendrecv", "recvonly"]
                assert state["sctp"]
            else:
                assert state["directions"] == ["sendrecv", "sendrecv"]
            expected = [
                [[c.payload_type, f"{m.kind}/{c.name}"] for c in m.codecs] for m in result.media[:2]
            ]
            assert state["codecs"] == expected

    asyncio.run(_with_chromium_page(body))


# Regenerating the test data


async def _regenerate() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    pc.addTrack(VideoStreamTrack())
    offer = await pc.createOffer()
    await pc.close()
    (DATA / AIORTC).write_bytes(offer.sdp.encode())

    async def body(page: Any) -> None:
        for name, extra in ((CHROMIUM, False), (CHROMIUM_DC, True)):
            _, sdp = await page.evaluate(_OFFER_JS, [extra, False])
            (DATA / name).write_bytes(sdp.encode())

    await _with_chromium_page(body)


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"] or not netns.inside():
        sys.exit("usage: python -m mediaserver.netns -- python tests/sfu/test_sdp.py --regenerate")
    asyncio.run(_regenerate())
