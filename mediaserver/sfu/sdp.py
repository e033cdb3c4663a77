"""Parse a browser's SDP offer and build the server's answer.

The server is an ICE-lite (RFC 8445 section 2.5), DTLS-passive (RFC 5763) peer
that bundles everything it accepts on one transport (RFC 8843) with RTP and RTCP
multiplexed (RFC 5761). It forwards media without transcoding, so it accepts few
codecs: Opus for audio, VP8 then H.264 constrained baseline for video; and no RTX,
RED, ULPFEC or transport-cc.

:func:`parse_offer` reads an offer into an :class:`Offer`, raising :class:`SdpError`
with the reason when the offer cannot be answered. :func:`build_answer` writes the
answer text and returns it in an :class:`Answer` with what was negotiated per
m-section, the offer's payload types and header extension ids kept.

The offer is parsed here rather than with ``aiortc.sdp.SessionDescription.parse``:
that parser drops ``a=rtcp-rsize`` and the raw ``a=fmtp`` text, and fails on bad
input with assertions and whatever the failing line raised, where a signalling
server needs one error type and a message that names the line. The tests check
this parser against aiortc's on real offers, and aiortc's parser and
``RTCPeerConnection`` against the answers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Answer",
    "AnswerMedia",
    "Codec",
    "HeaderExtension",
    "Offer",
    "OfferMedia",
    "SdpError",
    "SsrcGroup",
    "build_answer",
    "parse_offer",
]

# Offers arrive from anonymous clients over the signalling socket: bound the work.
MAX_OFFER_LENGTH = 65536
MAX_MEDIA_SECTIONS = 32

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# RFC 3264 section 6.1: the answer's direction mirrors the offer's.
ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
RTP_PROTOCOL = "UDP/TLS/RTP/SAVPF"  # RFC 5764 section 8, the one WebRTC uses

# What the answer keeps.
KEPT_RTCP_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb")
KEPT_HEADER_EXTENSIONS = (
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
)
# RFC 6184 section 8.1: profile_idc 0x42 (baseline) with constraint_set1 (0xe0,
# constrained baseline, preferred) or without (0x00, what Chrome calls baseline
# and encodes as constrained baseline anyway); the level is left to the peers.
H264_PROFILE_PREFIXES = ("42e0", "4200")

# RFC 8122 section 5: the hash functions a fingerprint may use that we can check.
FINGERPRINT_ALGORITHMS = ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512")

# RFC 8445 section 5.1.2.1 with type preference 126 (host), local preference
# 65535, component 1.
CANDIDATE_PRIORITY = 2130706431
# The IPv6 host candidate, when there is one beside an IPv4 one: local preference
# 65534 (RFC 8445 5.1.2.1 wants them distinct). A dual-stack browser then keeps the
# IPv4 path it takes today, and an IPv6-only one still has its candidate.
CANDIDATE_PRIORITY_IPV6 = CANDIDATE_PRIORITY - 256
# The ICE-TCP candidates (RFC 6544 4.2): host, local preference 2^13 * 4 (passive
# only, the direction preference) + 8191 = 40959, so every TCP pair ranks below
# every UDP one and a browser takes TCP only where UDP fails.
CANDIDATE_PRIORITY_TCP = (126 << 24) + (40959 << 8) + 255
CANDIDATE_PRIORITY_TCP_IPV6 = CANDIDATE_PRIORITY_TCP - 256

_ICE_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")  # RFC 8839 section 5.4
_ICE_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}")  # RFC 8866 section 9
_LINE = re.compile(r"([a-z])=(.*)")
# RFC 8866 section 5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
_M_LINE = re.compile(r"(\S+) (\d{1,5})(?:/\d{1,5})? (\S+)((?: \S+)+)")
_RTPMAP = re.compile(r"(\d{1,3}) ([^/\s]+)/(\d{1,6})(?:/(\d{1,2}))?")  # RFC 8866 6.6
_FMTP = re.compile(r"(\d{1,3})(?: (.*))?")  # RFC 8866 section 6.15
_RTCP_FB = re.compile(r"(\d{1,3}|\*) (\S.*)")  # RFC 4585 section 4.2
_EXTMAP = re.compile(r"(\d{1,4})(?:/(\S+))? (\S+)(?: .*)?")  # RFC 8285 section 8
_SSRC = re.compile(r"(\d{1,10}) ([^:\s]+)(?::(.*))?")  # RFC 5576 section 4.1
_SSRC_GROUP = re.compile(r"(\S+)((?: \d{1,10})+)")  # RFC 5576 section 4.2
_FINGERPRINT = re.compile(r"(\S+) ([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+)")  # RFC 8122 5
_SHA256_FINGERPRINT = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2}){31}")


class SdpError(ValueError):
    """The offer cannot be parsed or answered; the message says why."""


@dataclass(frozen=True)
class Codec:
    """One payload type of an m-section (a=rtpmap, a=fmtp, a=rtcp-fb)."""

    payload_type: int
    """The payload type, as offered (the answer keeps it)."""

    name: str
    """The encoding name as written: ``opus``, ``VP8``, ``H264``, ``rtx``..."""

    clock_rate: int
    """RTP clock rate in Hz."""

    channels: int | None
    """Audio channels (1 when the rtpmap omits them); None for video."""

    fmtp: str = ""
    """The a=fmtp parameters, verbatim; empty when the offer has none."""

    rtcp_fb: tuple[str, ...] = ()
    """Feedback types, e.g. ``nack``, ``nack pli``, ``ccm fir``, ``goog-remb``."""

    @property
    def parameters(self) -> dict[str, str]:
        """The fmtp parameters; a parameter without ``=`` maps to ``""``."""
        params: dict[str, str] = {}
        for item in self.fmtp.split(";"):
            key, _, value = item.strip().partition("=")
            if key:
                params[key.strip().lower()] = value.strip()
        return params


@dataclass(frozen=True)
class HeaderExtension:
    """An RTP header extension (a=extmap, RFC 8285)."""

    id: int
    """The id in RTP packets."""

    uri: str
    """What the extension carries."""


@dataclass(frozen=True)
class SsrcGroup:
    """An a=ssrc-group line (RFC 5576 section 4.2)."""

    semantics: str
    """``FID`` (media SSRC, then its RTX SSRC), ``SIM``, ``FEC-FR``..."""

    ssrcs: tuple[int, ...]
    """The SSRCs, in the order given."""


@dataclass(frozen=True)
class OfferMedia:
    """One m-section of an offer."""

    index: int
    """Position in the offer (the answer keeps the order)."""

    mid: str
    """a=mid (RFC 8843 section 5)."""

    kind: str
    """``audio``, ``video``, ``application``, or whatever else the m-line says."""

    port: int
    """The m-line port; 0 means the offerer disabled the section (unless bundle-only)."""

    protocol: str
    """The m-line protocol, e.g. ``UDP/TLS/RTP/SAVPF`` or ``UDP/DTLS/SCTP``."""

    formats: tuple[str, ...]
    """The m-line formats, verbatim (payload types for RTP)."""

    direction: str
    """``sendrecv``, ``sendonly``, ``recvonly`` or ``inactive``, from the offerer's side."""

    codecs: tuple[Codec, ...] = ()
    """Payload types with an a=rtpmap, in the m-line's order of preference."""

    header_extensions: tuple[HeaderExtension, ...] = ()
    """a=extmap lines, media level then session level."""

    ssrcs: tuple[int, ...] = ()
    """SSRCs named by a=ssrc lines, in order of first appearance."""

    ssrc_groups: tuple[SsrcGroup, ...] = ()
    """a=ssrc-group lines."""

    cname: str | None = None
    """The first a=ssrc cname (RFC 5576 section 6.1)."""

    msid: str | None = None
    """a=msid, verbatim (``<stream id> <track id>``)."""

    rtcp_mux: bool = False
    """a=rtcp-mux (RFC 5761)."""

    rtcp_rsize: bool = False
    """a=rtcp-rsize (RFC 5506)."""

    bundle_only: bool = False
    """a=bundle-only (RFC 8843 section 6)."""

    ice_ufrag: str | None = None
    """a=ice-ufrag, media level or else session level."""

    ice_pwd: str | None = None
    """a=ice-pwd, media level or else session level."""

    fingerprints: tuple[tuple[str, str], ...] = ()
    """``(algorithm, value)`` pairs: algorithm lower case, value upper case."""

    setup: str | None = None
    """a=setup (RFC 4145): ``actpass`` or ``active``; None when absent."""

    @property
    def disabled(self) -> bool:
        """True when the offerer itself disabled the section (port 0, not bundle-only)."""
        return self.port == 0 and not self.bundle_only


@dataclass(frozen=True)
class Offer:
    """A parsed offer."""

    ice_ufrag: str
    """The peer's ufrag, from the offerer-tagged section (RFC 8843 section 7.2)."""

    ice_pwd: str
    """The peer's ICE password, from the same section."""

    fingerprints: tuple[tuple[str, str], ...]
    """The peer's certificate fingerprints, from the same section."""

    bundle: tuple[str, ...] | None
    """The mids of the first a=group:BUNDLE, or None when the offer has none."""

    media: tuple[OfferMedia, ...]
    """The m-sections, in order."""


@dataclass(frozen=True)
class AnswerMedia:
    """What the answer says for one m-section."""

    mid: str
    """a=mid, as offered."""

    kind: str
    """``audio``, ``video``, ...: the m-line media."""

    rejected: bool
    """True when the answer rejects the section (port 0); nothing below then applies."""

    direction: str = "inactive"
    """The answer's direction, from the server's side."""

    codecs: tuple[Codec, ...] = ()
    """Codecs kept, with the offer's payload types and only the kept rtcp-fb."""

    header_extensions: tuple[HeaderExtension, ...] = ()
    """Header extensions kept, with the offer's ids."""

    rtcp_rsize: bool = False
    """Reduced-size RTCP (RFC 5506) was offered, so the answer has it too."""

    remote_ssrcs: tuple[int, ...] = ()
    """The peer's media SSRCs (those of its RTX or FEC repair streams left out)."""

    send_ssrc: int | None = None
    """The SSRC the server sends with, when the direction includes sending."""


@dataclass(frozen=True)
class Answer:
    """The answer text and what it negotiated."""

    sdp: str
    """The answer, CRLF line ends."""

    media: tuple[AnswerMedia, ...]
    """One entry per offered m-section, in order."""

    bundle: tuple[str, ...]
    """The mids bundled on the one transport; the first is the answerer-tagged one."""

    remote_ice_ufrag: str
    """The peer's ufrag for the bundle transport: checks carry ``<ours>:<this>``."""

    remote_ice_pwd: str
    """The peer's ICE password for the bundle transport."""

    remote_fingerprints: tuple[tuple[str, str], ...]
    """The peer's certificate fingerprints for the bundle transport."""

    def find(self, mid: str) -> AnswerMedia:
        """The entry for ``mid``; KeyError when there is none."""
        for media in self.media:
            if media.mid == mid:
                return media
        raise KeyError(mid)


# Parsing


@dataclass
class _Transport:
    """ICE and DTLS attributes, session level or media level."""

    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    ice_lite: bool = False


@dataclass
class _Section:
    index: int
    kind: str
    port: int
    protocol: str
    formats: list[str]
    transport: _Transport = field(default_factory=_Transport)
    mid: str | None = None
    direction: str | None = None
    rtpmaps: dict[int, tuple[str, int, int | None]] = field(default_factory=dict)
    fmtps: dict[int, str] = field(default_factory=dict)
    feedback: list[tuple[str, str]] = field(default_factory=list)
    extensions: list[HeaderExtension] = field(default_factory=list)
    ssrcs: list[int] = field(default_factory=list)
    ssrc_groups: list[SsrcGroup] = field(default_factory=list)
    cname: str | None = None
    msid: str | None = None
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    bundle_only: bool = False

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.protocol

    def name(self) -> str:
        return f"m-section {self.index}" + ("" if self.mid is None else f" (mid {self.mid})")


def _int(text: str, low: int, high: int, what: str, where: str) -> int:
    value = int(text)  # callers' regexes bound the digits, so this cannot fail
    if not low <= value <= high:
        raise SdpError(f"{where}: {what} {value} is not between {low} and {high}")
    return value


def _short(line: str) -> str:
    return repr(line if len(line) <= 60 else line[:57] + "...")


def _transport_attribute(
    transport: _Transport, name: str, value: str | None, where: str, line: str
) -> bool:
    """Apply an ICE or DTLS attribute; False when ``name`` is not one."""
    if name == "ice-ufrag":
        if value is None or not _ICE_UFRAG.fullmatch(value):
            raise SdpError(f"{where}: {_short(line)}: the ufrag must be 4 to 256 ice-chars")
        transport.ice_ufrag = value
    elif name == "ice-pwd":
        if value is None or not _ICE_PWD.fullmatch(value):
            raise SdpError(f"{where}: {_short(line)}: the password must be 22 to 256 ice-chars")
        transport.ice_pwd = value
    elif name == "fingerprint":
        match = _FINGERPRINT.fullmatch(value or "")
        if match is None:
            raise SdpError(f"{where}: {_short(line)} is not 'a=fingerprint:<hash> <XX:XX:...>'")
        transport.fingerprints.append((match[1].lower(), match[2].upper()))
    elif name == "setup":
        if value not in ("actpass", "active", "passive", "holdconn"):
            raise SdpError(f"{where}: {_short(line)}: unknown a=setup role")
        transport.setup = value
    elif name == "ice-lite":
        transport.ice_lite = True
    else:
        return False
    return True


def parse_offer(sdp: str) -> Offer:
    """Parse an SDP offer (RFC 8866, as JSEP uses it) from a browser.

    Args:
        sdp: the offer's text.

    Returns:
        The offer's transport parameters and m-sections.

    Raises:
        SdpError: the text is not SDP, has no m-section, or cannot be answered by
            this server: no ICE credentials or fingerprint, no rtcp-mux on an RTP
            section, a=setup:passive (we are the DTLS server), an ice-lite offerer
            (two lite agents never check), several m-sections without BUNDLE...
    """
    if len(sdp) > MAX_OFFER_LENGTH:
        raise SdpError(f"offer is {len(sdp)} characters long; the limit is {MAX_OFFER_LENGTH}")
    try:
        sdp.encode("utf-8")  # lone surrogates (from JSON escapes) could reach the answer
    except UnicodeEncodeError:
        raise SdpError("offer is not valid Unicode text") from None
    lines = [line.removesuffix("\r") for line in sdp.split("\n")]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("offer does not start with 'v=' (RFC 8866 section 5)")
    if lines[0] != "v=0":
        raise SdpError(f"line 1: {_short(lines[0])}: only SDP version 0 exists")

    session = _Transport()
    session_direction: str | None = None
    session_extensions: list[HeaderExtension] = []
    groups: list[tuple[str, list[str]]] = []
    sections: list[_Section] = []

    for number, line in enumerate(lines, start=1):
        if not line:
            continue  # the final CRLF, or a stray blank line
        where = f"line {number}"
        match = _LINE.fullmatch(line)
        if match is None:
            raise SdpError(f"{where}: {_short(line)} is not '<type>=<value>' (RFC 8866 section 5)")
        kind, text = match[1], match[2]
        if kind == "m":
            sections.append(_parse_m_line(text, len(sections), number, line))
            continue
        if kind != "a":
            continue  # o=, s=, t=, c=, b=...: nothing the answer depends on
        name, colon, rest = text.partition(":")
        value = rest if colon else None
        section = sections[-1] if sections else None
        transport = section.transport if section else session
        if _transport_attribute(transport, name, value, where, line):
            continue
        if name in DIRECTIONS:
            if section is None:
                session_direction = name
            else:
                section.direction = name
        elif name == "extmap":
            extension = _parse_extmap(value, where, line)
            (section.extensions if section else session_extensions).append(extension)
        elif section is None:
            if name == "group" and value:
                semantics, *mids = value.split()
                groups.append((semantics, mids))
        else:
            _parse_media_attribute(section, name, value, where, line)

    if not sections:
        raise SdpError("offer has no m= section")
    if len(sections) > MAX_MEDIA_SECTIONS:
        raise SdpError(f"offer has {len(sections)} m= sections; the limit is {MAX_MEDIA_SECTIONS}")
    return _finish(session, session_direction, session_extensions, groups, sections)


def _parse_m_line(text: str, index: int, number: int, line: str) -> _Section:
    match = _M_LINE.fullmatch(text)
    if match is None:
        raise SdpError(
            f"line {number}: {_short(line)} is not 'm=<media> <port> <proto> <fmt> ...' "
            "(RFC 8866 section 5.14)"
        )
    section = _Section(
        index=index,
        kind=match[1],
        port=_int(match[2], 0, 65535, "port", f"line {number}"),
        protocol=match[3],
        formats=match[4].split(),
    )
    if section.is_rtp:
        for fmt in section.formats:
            if not fmt.isdigit() or len(fmt) > 3 or int(fmt) > 127:
                raise SdpError(f"line {number}: payload type {fmt!r} is not a number from 0 to 127")
    return section


def _parse_extmap(value: str | None, where: str, line: str) -> HeaderExtension:
    match = _EXTMAP.fullmatch(value or "")
    if match is None:
        raise SdpError(
            f"{where}: {_short(line)} is not 'a=extmap:<id>[/<direction>] <uri>' "
            "(RFC 8285 section 8)"
        )
    # RFC 8285 section 5: 1-14 one-byte, up to 255 two-byte, 4096-4351 in offers.
    return HeaderExtension(id=_int(match[1], 1, 4351, "extmap id", where), uri=match[3])


def _parse_media_attribute(
    section: _Section, name: str, value: str | None, where: str, line: str
) -> None:
    if name == "mid":
        if value is None or not _TOKEN.fullmatch(value):
            raise SdpError(f"{where}: {_short(line)}: a mid is 1 to 64 token characters")
        section.mid = value
    elif name == "rtcp-mux":
        section.rtcp_mux = True
    elif name == "rtcp-rsize":
        section.rtcp_rsize = True
    elif name == "bundle-only":
        section.bundle_only = True
    elif name == "msid":
        section.msid = value
    elif name == "rtpmap":
        match = _RTPMAP.fullmatch(value or "")
        if match is None:
            raise SdpError(
                f"{where}: {_short(line)} is not "
                "'a=rtpmap:<payload type> <encoding>/<clock rate>[/<channels>]'"
            )
        pt = _int(match[1], 0, 127, "payload type", where)
        channels = None if match[4] is None else _int(match[4], 1, 99, "channel count", where)
        section.rtpmaps.setdefault(pt, (match[2], int(match[3]), channels))
    elif name == "fmtp":
        match = _FMTP.fullmatch(value or "")
        if match is None:
            raise SdpError(f"{where}: {_short(line)} is not 'a=fmtp:<payload type> <parameters>'")
        pt = _int(match[1], 0, 127, "payload type", where)
        section.fmtps.setdefault(pt, match[2] or "")
    elif name == "rtcp-fb":
        match = _RTCP_FB.fullmatch(value or "")
        if match is None:
            raise SdpError(f"{where}: {_short(line)} is not 'a=rtcp-fb:<payload type or *> <type>'")
        section.feedback.append((match[1], " ".join(match[2].split())))
    elif name == "ssrc":
        match = _SSRC.fullmatch(value or "")
        if match is None:
            raise SdpError(f"{where}: {_short(line)} is not 'a=ssrc:<ssrc> <attribute>[:<value>]'")
        ssrc = _int(match[1], 0, 0xFFFFFFFF, "SSRC", where)
        if ssrc not in section.ssrcs:
            section.ssrcs.append(ssrc)
        if match[2] == "cname" and section.cname is None:
            section.cname = match[3]
    elif name == "ssrc-group":
        match = _SSRC_GROUP.fullmatch(value or "")
        if match is None:
            raise SdpError(f"{where}: {_short(line)} is not 'a=ssrc-group:<semantics> <ssrc> ...'")
        ssrcs = tuple(_int(s, 0, 0xFFFFFFFF, "SSRC", where) for s in match[2].split())
        section.ssrc_groups.append(SsrcGroup(semantics=match[1], ssrcs=ssrcs))
    # Anything else (candidates, rtcp, sctp-port, rtcp-xr, ...) does not shape the
    # answer: a lite agent learns peer addresses from the checks themselves.


def _finish(
    session: _Transport,
    session_direction: str | None,
    session_extensions: list[HeaderExtension],
    groups: list[tuple[str, list[str]]],
    sections: list[_Section],
) -> Offer:
    mids: set[str] = set()
    for section in sections:
        if section.mid is None:
            raise SdpError(f"{section.name()} has no a=mid (RFC 8843 section 7.1)")
        if section.mid in mids:
            raise SdpError(f"{section.name()}: mid {section.mid!r} is used twice")
        mids.add(section.mid)

    bundle: tuple[str, ...] | None = None
    for semantics, group_mids in groups:
        if semantics != "BUNDLE":
            continue
        for mid in group_mids:
            if mid not in mids:
                raise SdpError(f"a=group:BUNDLE names mid {mid!r}, which no m-section has")
        bundle = tuple(group_mids)
        break  # one transport: only the first BUNDLE group can be answered

    media: list[OfferMedia] = []
    for section in sections:
        item = _media(section, session, session_direction, session_extensions)
        if not item.disabled:
            _check_transport(section, item, session)
        media.append(item)

    live = [m for m in media if not m.disabled]
    if not live:
        raise SdpError("offer has no enabled m= section: every port is 0")
    if bundle is None and len(live) > 1:
        raise SdpError(
            f"offer has {len(live)} enabled m= sections but no a=group:BUNDLE; "
            "the server carries them all on one transport (RFC 8843)"
        )

    # The offerer-tagged section (RFC 8843 section 7.2.1) carries the transport;
    # bundle-only sections may carry none.
    with_transport = [m for m in live if m.ice_ufrag and m.ice_pwd and m.fingerprints]
    if not with_transport:
        raise SdpError("offer has no enabled m= section with ICE credentials")
    tagged = next((m for m in with_transport if bundle and m.mid == bundle[0]), with_transport[0])
    return Offer(
        ice_ufrag=tagged.ice_ufrag or "",
        ice_pwd=tagged.ice_pwd or "",
        fingerprints=tagged.fingerprints,
        bundle=bundle,
        media=tuple(media),
    )


def _media(
    section: _Section,
    session: _Transport,
    session_direction: str | None,
    session_extensions: list[HeaderExtension],
) -> OfferMedia:
    codecs: list[Codec] = []
    if section.is_rtp:
        for fmt in dict.fromkeys(section.formats):  # m-line order is preference order
            pt = int(fmt)
            rtpmap = section.rtpmaps.get(pt)
            if rtpmap is None:
                continue  # a static payload type without rtpmap: nothing we accept
            name, clock_rate, channels = rtpmap
            if section.kind == "audio" and channels is None:
                channels = 1  # RFC 8866 section 6.6: one channel when omitted
            feedback = tuple(
                dict.fromkeys(fb for target, fb in section.feedback if target in (fmt, "*"))
            )
            codecs.append(
                Codec(
                    payload_type=pt,
                    name=name,
                    clock_rate=clock_rate,
                    channels=channels,
                    fmtp=section.fmtps.get(pt, ""),
                    rtcp_fb=feedback,
                )
            )
    own = section.transport
    return OfferMedia(
        index=section.index,
        mid=section.mid or "",
        kind=section.kind,
        port=section.port,
        protocol=section.protocol,
        formats=tuple(section.formats),
        direction=section.direction or session_direction or "sendrecv",  # RFC 3264 5.1
        codecs=tuple(codecs),
        header_extensions=tuple(section.extensions + session_extensions),
        ssrcs=tuple(section.ssrcs),
        ssrc_groups=tuple(section.ssrc_groups),
        cname=section.cname,
        msid=section.msid,
        rtcp_mux=section.rtcp_mux,
        rtcp_rsize=section.rtcp_rsize,
        bundle_only=section.bundle_only,
        ice_ufrag=own.ice_ufrag or session.ice_ufrag,
        ice_pwd=own.ice_pwd or session.ice_pwd,
        fingerprints=tuple(own.fingerprints or session.fingerprints),
        setup=own.setup or session.setup,
    )


def _check_transport(section: _Section, media: OfferMedia, session: _Transport) -> None:
    name = section.name()
    if session.ice_lite or section.transport.ice_lite:
        raise SdpError(
            "offer is ice-lite; so is the server, and two lite agents never run "
            "connectivity checks (RFC 8445 section 6.1.1)"
        )
    if section.bundle_only and section.port == 0:
        return  # RFC 8843 section 7.2: it uses the tagged section's transport
    if media.ice_ufrag is None:
        raise SdpError(f"{name} has no a=ice-ufrag, and neither has the session")
    if media.ice_pwd is None:
        raise SdpError(f"{name} has no a=ice-pwd, and neither has the session")
    if not media.fingerprints:
        raise SdpError(
            f"{name} has no a=fingerprint, and neither has the session (RFC 8122 section 5)"
        )
    if not any(algorithm in FINGERPRINT_ALGORITHMS for algorithm, _ in media.fingerprints):
        offered = ", ".join(algorithm for algorithm, _ in media.fingerprints)
        raise SdpError(
            f"{name}: no fingerprint uses a supported hash (offered: {offered}; "
            f"supported: {', '.join(FINGERPRINT_ALGORITHMS)})"
        )
    if media.setup in ("passive", "holdconn"):
        raise SdpError(
            f"{name} has a=setup:{media.setup}, but the server is the DTLS server: the "
            "offer must say actpass or active (RFC 5763 section 5)"
        )
    if section.is_rtp and not section.rtcp_mux:
        raise SdpError(
            f"{name} has no a=rtcp-mux; the server takes RTP and RTCP on one port (RFC 5761)"
        )


# Answering


def _choose_codecs(media: OfferMedia) -> list[Codec]:
    if media.kind == "audio":
        for codec in media.codecs:
            if (codec.name.lower(), codec.clock_rate, codec.channels) == ("opus", 48000, 2):
                return [codec]
        return []
    if media.kind != "video":
        return []
    chosen: list[Codec] = []
    vp8 = next((c for c in media.codecs if c.name.lower() == "vp8" and c.clock_rate == 90000), None)
    if vp8 is not None:
        chosen.append(vp8)
    h264 = [(rank, c) for c in media.codecs if (rank := _h264_rank(c)) is not None]
    if h264:
        chosen.append(min(h264, key=lambda item: item[0])[1])  # first of the best profile
    return chosen


def _h264_rank(codec: Codec) -> int | None:
    """Preference of an H.264 payload type (lower is better), or None if refused."""
    if codec.name.lower() != "h264" or codec.clock_rate != 90000:
        return None
    parameters = codec.parameters
    # RFC 6184 section 8.1: mode 0 (single NAL unit) cannot carry FU-A fragments.
    if parameters.get("packetization-mode") != "1":
        return None
    profile = parameters.get("profile-level-id", "").lower()
    for rank, prefix in enumerate(H264_PROFILE_PREFIXES):
        if profile.startswith(prefix):
            return rank
    return None


def _remote_media_ssrcs(media: OfferMedia) -> tuple[int, ...]:
    # RFC 5576 section 4.2 / RFC 4588 section 8.1: in FID and FEC-FR groups the
    # first SSRC is the media, the others repair it (and RTX is not negotiated).
    repair = {
        ssrc
        for group in media.ssrc_groups
        if group.semantics in ("FID", "FEC-FR")
        for ssrc in group.ssrcs[1:]
    }
    return tuple(ssrc for ssrc in media.ssrcs if ssrc not in repair)


def _check_answer_arguments(
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: str,
    port: int,
    cname: str,
    stream_id: str,
    send_ssrcs: Mapping[str, int],
) -> None:
    if not _ICE_UFRAG.fullmatch(ice_ufrag):
        raise ValueError(f"ice_ufrag {ice_ufrag!r} is not 4 to 256 ice-chars")
    if not _ICE_PWD.fullmatch(ice_pwd):
        raise ValueError(f"ice_pwd {ice_pwd!r} is not 22 to 256 ice-chars")
    if not _SHA256_FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(
            f"fingerprint {fingerprint!r} is not a SHA-256 fingerprint 'AB:CD:...' "
            "(32 upper-case hex pairs)"
        )
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not between 1 and 65535")
    if not _TOKEN.fullmatch(cname):
        raise ValueError(f"cname {cname!r} is not 1 to 64 token characters")
    if not _TOKEN.fullmatch(stream_id):
        raise ValueError(f"stream_id {stream_id!r} is not 1 to 64 token characters")
    for mid, ssrc in send_ssrcs.items():
        if not 0 < ssrc <= 0xFFFFFFFF:
            raise ValueError(f"send SSRC {ssrc} for mid {mid!r} is not between 1 and 2**32-1")


def build_answer(
    offer: Offer,
    *,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: str,
    ip: str | Sequence[str],
    port: int,
    send_ssrcs: Mapping[str, int],
    cname: str,
    stream_id: str | None = None,
    session_id: int | None = None,
    session_version: int = 2,
    tcp_port: int | None = None,
) -> Answer:
    """Build the server's answer to ``offer``.

    Every m-section is answered in order. Audio keeps Opus/48000/2; video keeps VP8
    then one H.264 constrained baseline payload type with packetization-mode=1;
    both keep only nack, nack pli, ccm fir and goog-remb feedback and the mid,
    abs-send-time and ssrc-audio-level extensions. Other sections, and those with
    no such codec, are rejected (port 0) and left out of the BUNDLE group.

    Args:
        offer: from :func:`parse_offer`.
        ice_ufrag: the server's ufrag for this session.
        ice_pwd: the server's ICE password for this session.
        fingerprint: SHA-256 fingerprint of the server's DTLS certificate, ``AB:CD:...``.
        ip: the address the server's UDP port is reached at (IPv4 or IPv6), or
            one of each family: a host candidate each, IPv4 first and a little
            higher (CANDIDATE_PRIORITY_IPV6); c= names the first.
        port: that UDP port.
        send_ssrcs: the SSRC the server sends with, by mid; needed for every
            section the server sends on (offered sendrecv or recvonly).
        cname: the RTCP CNAME of the server's streams (RFC 7022).
        stream_id: the a=msid stream id of the server's tracks; the cname by default.
        session_id: the o= line session id; by default derived from ``ice_ufrag``.
        session_version: the o= line version: a later answer on the same session
            (an ICE restart) has a higher one (RFC 3264 section 8).
        tcp_port: the ICE-TCP port (RFC 6544): a `tcptype passive` host candidate
            per address after the UDP ones, lower in priority; None: UDP only.

    Returns:
        The answer text and what it negotiated.

    Raises:
        SdpError: no m-section of the offer can be accepted.
        ValueError: an argument is malformed, or a section the server sends on has
            no SSRC in ``send_ssrcs``.
    """
    stream_id = cname if stream_id is None else stream_id
    _check_answer_arguments(ice_ufrag, ice_pwd, fingerprint, port, cname, stream_id, send_ssrcs)
    candidates = _host_candidates((ip,) if isinstance(ip, str) else tuple(ip), port, tcp_port)
    connection = candidates[0]
    if session_id is None:
        session_id = int.from_bytes(hashlib.sha256(ice_ufrag.encode()).digest()[:8]) >> 1

    answers: list[AnswerMedia] = []
    for media in offer.media:
        codecs = _choose_codecs(media)
        if (
            media.disabled
            or media.protocol != RTP_PROTOCOL
            or not codecs
            or (offer.bundle is not None and media.mid not in offer.bundle)
        ):
            answers.append(AnswerMedia(mid=media.mid, kind=media.kind, rejected=True))
            continue
        direction = ANSWER_DIRECTION[media.direction]
        send_ssrc = None
        if direction in ("sendrecv", "sendonly"):
            if media.mid not in send_ssrcs:
                raise ValueError(
                    f"send_ssrcs has no SSRC for mid {media.mid!r}, which the answer "
                    f"makes {direction}"
                )
            send_ssrc = send_ssrcs[media.mid]
        answers.append(
            AnswerMedia(
                mid=media.mid,
                kind=media.kind,
                rejected=False,
                direction=direction,
                codecs=tuple(
                    Codec(
                        payload_type=c.payload_type,
                        name=c.name,
                        clock_rate=c.clock_rate,
                        channels=c.channels,
                        fmtp=c.fmtp,
                        rtcp_fb=tuple(fb for fb in c.rtcp_fb if fb in KEPT_RTCP_FEEDBACK),
                    )
                    for c in codecs
                ),
                header_extensions=tuple(
                    ext
                    for ext in media.header_extensions
                    if ext.uri in KEPT_HEADER_EXTENSIONS and ext.id <= 255
                ),
                rtcp_rsize=media.rtcp_rsize,
                remote_ssrcs=_remote_media_ssrcs(media)
                if media.direction in ("sendrecv", "sendonly")
                else (),
                send_ssrc=send_ssrc,
            )
        )

    accepted = {a.mid for a in answers if not a.rejected}
    if not accepted:
        raise SdpError(
            "offer has no m-section the server can accept: it takes audio with "
            "opus/48000/2 and video with VP8 or H264 constrained baseline "
            f"(packetization-mode=1), over {RTP_PROTOCOL}"
        )
    # RFC 8843 section 7.3.1: keep the offerer's order, so its tag stays first
    # when accepted (otherwise the next accepted mid becomes the tag).
    order = offer.bundle if offer.bundle is not None else tuple(m.mid for m in offer.media)
    bundle = tuple(mid for mid in order if mid in accepted)
    tagged = next(m for m in offer.media if m.mid == bundle[0])

    lines = [
        "v=0",
        f"o=- {session_id} {session_version} IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=ice-lite",
    ]
    if offer.bundle is not None:
        lines.append("a=group:BUNDLE " + " ".join(bundle))
    lines.append("a=msid-semantic: WMS")
    transport = [
        f"a=ice-ufrag:{ice_ufrag}",
        f"a=ice-pwd:{ice_pwd}",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:passive",
    ]
    for media, answer in zip(offer.media, answers):
        if answer.rejected:
            lines += _rejected_section(media, transport)
            continue
        lines += [
            f"m={media.kind} {port} {RTP_PROTOCOL} "
            + " ".join(str(c.payload_type) for c in answer.codecs),
            connection,
            *candidates[1:],
            "a=end-of-candidates",
            *transport,
            f"a=mid:{media.mid}",
        ]
        lines += [f"a=extmap:{ext.id} {ext.uri}" for ext in answer.header_extensions]
        lines.append(f"a={answer.direction}")
        if answer.send_ssrc is not None:
            lines.append(f"a=msid:{stream_id} {media.kind}-{media.mid}")
        lines.append("a=rtcp-mux")
        if answer.rtcp_rsize:
            lines.append("a=rtcp-rsize")
        for codec in answer.codecs:
            channels = f"/{codec.channels}" if codec.channels is not None else ""
            lines.append(f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}{channels}")
            lines += [f"a=rtcp-fb:{codec.payload_type} {fb}" for fb in codec.rtcp_fb]
            if codec.fmtp:
                lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
        if answer.send_ssrc is not None:
            lines.append(f"a=ssrc:{answer.send_ssrc} cname:{cname}")

    return Answer(
        sdp="\r\n".join(lines) + "\r\n",
        media=tuple(answers),
        bundle=bundle,
        remote_ice_ufrag=tagged.ice_ufrag or offer.ice_ufrag,
        remote_ice_pwd=tagged.ice_pwd or offer.ice_pwd,
        remote_fingerprints=tagged.fingerprints or offer.fingerprints,
    )


def _host_candidates(ips: tuple[str, ...], port: int, tcp_port: int | None = None) -> list[str]:
    """The c= line, then one a=candidate line per address (one per family at most),
    and one passive TCP candidate per address at `tcp_port` if there is one."""
    if tcp_port is not None and not 1 <= tcp_port <= 65535:
        raise ValueError(f"tcp_port {tcp_port} is not between 1 and 65535")
    if not ips:
        raise ValueError("ip: no address to announce")
    by_version: dict[int, str] = {}
    for ip in ips:
        try:
            version = ipaddress.ip_address(ip).version
        except ValueError:
            raise ValueError(f"ip {ip!r} is not an IPv4 or IPv6 address") from None
        if version in by_version:
            raise ValueError(f"ip: one address per family, not {', '.join(ips)}")
        by_version[version] = ip
    ordered = [(v, by_version[v]) for v in (4, 6) if v in by_version]  # IPv4 first
    lines = [f"c=IN IP{ordered[0][0]} {ordered[0][1]}"]
    for n, (_, ip) in enumerate(ordered, start=1):
        # the first keeps the highest priority; the foundation differs per family
        # (RFC 8445 5.1.1.3: another base address)
        priority = CANDIDATE_PRIORITY if n == 1 else CANDIDATE_PRIORITY_IPV6
        lines.append(f"a=candidate:{n} 1 udp {priority} {ip} {port} typ host")
    if tcp_port is not None:
        for n, (_, ip) in enumerate(ordered, start=len(ordered) + 1):
            # another transport, another foundation (RFC 8445 5.1.1.3)
            first = n == len(ordered) + 1
            priority = CANDIDATE_PRIORITY_TCP if first else CANDIDATE_PRIORITY_TCP_IPV6
            lines.append(
                f"a=candidate:{n} 1 tcp {priority} {ip} {tcp_port} typ host tcptype passive"
            )
    return lines


def _rejected_section(media: OfferMedia, transport: list[str]) -> list[str]:
    # RFC 3264 section 6 / RFC 8829 section 5.3.1: port 0, one offered format (an
    # m-line needs one), and the mid so the offerer can match it. The ICE and DTLS
    # lines are not needed there, but aiortc refuses an answer with any m-section
    # that lacks them, and Chromium ignores them on a rejected section.
    lines = [
        f"m={media.kind} 0 {media.protocol} {media.formats[0]}",
        "c=IN IP4 0.0.0.0",
        *transport,
        f"a=mid:{media.mid}",
    ]
    if "RTP/" in media.protocol:
        lines.append("a=inactive")
    return lines
